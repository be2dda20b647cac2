using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// Seed 003 in the race lab: <c>hash-batch --legacy</c> is caught however loaded the machine is, and the time it took is
/// reported. The run stops at the first violation (<see cref="HashBatchScenario.StopWhenCaught"/>), so the budget is a
/// maximum, not a duration.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class HashBatchDetectionTests(ITestOutputHelper output)
{
    /// <summary>The most the legacy run may take; on two loaded cores it was caught within about a second.</summary>
    private static readonly TimeSpan MaxBudget = TimeSpan.FromSeconds(30);

    [Fact(Timeout = 90_000)]
    public async Task TheLegacyBatchIsCaughtAndTheTimeToDetectionReported()
    {
        int seed = TestSupport.Seed(output, "hash-batch --legacy, until caught");
        var ctx = new StressContext(2 * Environment.ProcessorCount, MaxBudget, seed, 16384, legacy: true, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(new HashBatchScenario { StopWhenCaught = true }, ctx));
        output.WriteLine($"violations {result.Violations}; first after {result.FirstViolationAt?.TotalMilliseconds:F0} ms; the run ended after {result.Elapsed.TotalMilliseconds:F0} ms (at most {MaxBudget.TotalSeconds:F0} s)");
        output.WriteLine(string.Join(Environment.NewLine, ctx.Violations.Take(3)));
        Assert.True(result.Violations > 0, $"hash-batch --legacy was not caught within {MaxBudget.TotalSeconds:F0} s");
        Assert.Contains(ctx.Violations, v => v.Contains("duplicate hash entry"));
        Assert.All(ctx.Recorders, r => Assert.True(r.Total > 0, $"{r.Name} did no operation"));
    }

    [Fact(Timeout = 60_000)]
    public async Task TheFixedBatchHoldsWithStopWhenCaught()
    {
        int seed = TestSupport.Seed(output, "hash-batch fixed");
        var ctx = new StressContext(2 * Environment.ProcessorCount, TimeSpan.FromSeconds(2), seed, 16384, legacy: false, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(new HashBatchScenario { StopWhenCaught = true }, ctx));
        output.WriteLine(string.Join(Environment.NewLine, ctx.Violations));
        Assert.Equal(0, result.Violations);
        Assert.All(ctx.Recorders, r => Assert.True(r.Total > 0, $"{r.Name} did no operation"));
        Assert.Contains("no violations", result.FinalReport);
    }
}
