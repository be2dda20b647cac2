using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;
using Xunit.Abstractions;

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
    /// The interleaving that catches the historical reclaim in <c>pagecache-lookup</c> (a pass lingers after a bound that
    /// saw no reader; a lookup retires the node it stands on and stays there past the pass) is driven against the fixed
    /// reclaim too: it must hold, and the run must show that the interleaving happened.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task TheFixedReclaimHoldsWhereTheHistoricalOneIsCaught()
    {
        int seed = TestSupport.Seed(output, "pagecache-lookup (fixed reclaim, driven windows)");
        IScenario scenario = ScenarioCatalog.Find("pagecache-lookup")!;
        var ctx = new StressContext(2 * Environment.ProcessorCount, TimeSpan.FromSeconds(3), seed, 16384, legacy: false, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(scenario, ctx));
        int retiredUnderLookup = ctx.Operations.Select((op, i) => (op, i)).Single(x => x.op.Name == "retired under lookup").i;
        long driven = ctx.Recorders.Sum(r => r.CountOf(retiredUnderLookup));
        output.WriteLine($"nodes retired under a lookup inside a stale window: {driven}; violations {result.Violations}");
        Assert.Equal(0, result.Violations);
        Assert.True(driven > 0, "no lookup had the node it stood on retired during a lingering pass: the run did not drive the interleaving");
    }
}
