using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The race lab's scenarios that use an epoch domain, given the historical reclaim (<c>--legacy-reclaim</c>): each must
/// catch it. Adaptive budget: 2-second runs (new seed each) until one catches it, at most 30 s in all; the fixed forms
/// are held by <see cref="StressHarnessTests"/>.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class EpochReclaimLabTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Budget = TimeSpan.FromSeconds(30);

    [Theory(Timeout = 90_000)]
    [InlineData("epoch-reclaim")]
    [InlineData("pgtable-free")]
    [InlineData("pagecache-lookup")]
    public async Task TheHistoricalReclaimIsCaught(string name)
    {
        int seed = TestSupport.Seed(output, $"{name} --legacy-reclaim");
        IScenario scenario = ScenarioCatalog.Find(name)!;
        DateTime deadline = DateTime.UtcNow + Budget;
        for (int run = 0; DateTime.UtcNow < deadline; run++)
        {
            var ctx = new StressContext(2 * Environment.ProcessorCount, TimeSpan.FromSeconds(2), seed + run, 16384, legacy: false, pin: false, TextWriter.Null)
            {
                LegacyReclaim = true,
            };
            StressResult result = await Task.Run(() => Program.RunForm(scenario, ctx));
            output.WriteLine($"run {run} (seed {seed + run}): violations {result.Violations}, first after {result.FirstViolationAt}");
            if (result.Violations > 0)
            {
                output.WriteLine(ctx.Violations.First());
                return;
            }
        }

        Assert.Fail($"the historical reclaim was not caught by {name} within {Budget.TotalSeconds} s");
    }

    /// <summary>
    /// The interleaving that catches the historical reclaim (a pass lingers after a bound that saw no reader inside; a
    /// reader inside its section unlinks what it stands on, or has it unlinked, and stays on it past the pass) is driven
    /// against the fixed reclaim too: it must hold, and the run must show that the interleaving happened.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData("pagecache-lookup", "retired under lookup")]
    [InlineData("epoch-reclaim", "unlinked inside window")]
    public async Task TheFixedReclaimHoldsWhereTheHistoricalOneIsCaught(string name, string drivenOperation)
    {
        int seed = TestSupport.Seed(output, $"{name} (fixed reclaim, driven windows)");
        IScenario scenario = ScenarioCatalog.Find(name)!;
        var ctx = new StressContext(2 * Environment.ProcessorCount, TestSupport.Scaled(TimeSpan.FromSeconds(3)), seed, 16384, legacy: false, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(scenario, ctx));
        int op = ctx.Operations.Select((kind, i) => (kind, i)).Single(x => x.kind.Name == drivenOperation).i;
        long driven = ctx.Recorders.Sum(r => r.CountOf(op));
        output.WriteLine($"{drivenOperation}: {driven}; violations {result.Violations}");
        Assert.Equal(0, result.Violations);
        Assert.True(driven > 0, $"no '{drivenOperation}' happened: the run did not drive the interleaving");
    }
}
