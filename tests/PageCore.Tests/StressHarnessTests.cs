using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;
using Xunit.Abstractions;

namespace PageCore.Tests;

/// <summary>
/// The stress executable's scenarios, run for a short bounded time: the fixed forms hold, the legacy form and a planted
/// fault are caught (the checks are shown able to fail), and the command line answers bad arguments with exit 64.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class StressHarnessTests(ITestOutputHelper output)
{
    private const int TimeoutMs = 60_000;

    public static TheoryData<string> ScenarioNames => new(ScenarioCatalog.All.Select(s => s.Name));

    [Theory(Timeout = TimeoutMs)]
    [MemberData(nameof(ScenarioNames))]
    public async Task EachScenarioRunsFromTheCommandLineAndExitsZero(string name)
    {
        int seed = TestSupport.Seed(output, $"pagecore-stress run {name}");
        string json = Path.Combine(Path.GetTempPath(), $"pagecore-{name}-{Environment.ProcessId}.json");
        try
        {
            int exit = await Task.Run(() => Program.Main(["run", name, "--duration", "1s", "--threads", "4", "--arena-pages", "16384", "--seed", seed.ToString(), "--json", json]));
            Assert.Equal(Program.Pass, exit);
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
            Assert.Equal(name, doc.RootElement.GetProperty("scenario").GetString());
            Assert.Equal(seed, doc.RootElement.GetProperty("options").GetProperty("seed").GetInt32());
            Assert.Equal(0, doc.RootElement.GetProperty("violations").GetInt64());
            Assert.True(doc.RootElement.GetProperty("operations")[0].GetProperty("ops").GetInt64() > 0);
            Assert.True(doc.RootElement.GetProperty("machine").GetProperty("processorCount").GetInt32() > 0);
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task ListAndTheRaceLabBehave()
    {
        Assert.Equal(Program.Pass, Program.Main(["list"]));
        int seed = TestSupport.Seed(output, "race-lab");
        // Keep what the race lab printed, so that a failure shows which form broke and how.
        TextWriter console = Console.Out, errors = Console.Error;
        var printed = new StringWriter();
        int exit;
        try
        {
            Console.SetOut(printed);
            Console.SetError(printed);
            exit = await Task.Run(() => Program.Main(["race-lab", "--duration-per-scenario", "2s", "--arena-pages", "16384", "--seed", seed.ToString()]));
        }
        finally
        {
            Console.SetOut(console);
            Console.SetError(errors);
        }

        output.WriteLine(printed.ToString());
        Assert.True(exit == Program.Pass, $"race-lab exited {exit}:{Environment.NewLine}{printed}");
    }

    [Theory(Timeout = TimeoutMs)]
    [MemberData(nameof(ScenarioNames))]
    public async Task EachScenarioHoldsInItsFixedForm(string name)
    {
        int seed = TestSupport.Seed(output, $"stress {name}");
        IScenario scenario = ScenarioCatalog.Find(name)!;
        var ctx = new StressContext(2 * Environment.ProcessorCount, TimeSpan.FromSeconds(1), seed, 16384, legacy: false, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(scenario, ctx));
        output.WriteLine(string.Join(Environment.NewLine, ctx.Violations));
        Assert.Equal(0, result.Violations);
        Assert.True(ctx.Recorders.Sum(r => r.Total) > 0, "the scenario did no work");
        Assert.Contains("no violations", result.FinalReport);
    }

    public static TheoryData<string> LegacyScenarioNames => new(ScenarioCatalog.All.Where(s => s.HasLegacyForm).Select(s => s.Name));

    /// <summary>
    /// Each legacy form is caught: rounds of <c>round</c> each, each with its own seed, until one catches it, at most
    /// <c>budget</c> in all. The budget adapts to a loaded machine (a form caught late in one round is not a failure
    /// while the budget lasts); the time to detection, counted over every round run, is printed.
    /// </summary>
    [Theory(Timeout = TimeoutMs)]
    [MemberData(nameof(LegacyScenarioNames))]
    public async Task EveryLegacyFormIsCaught(string name)
    {
        TimeSpan round = TimeSpan.FromSeconds(5), budget = TimeSpan.FromSeconds(20);
        int seed = TestSupport.Seed(output, $"{name} --legacy");
        TimeSpan spent = TimeSpan.Zero;
        for (int i = 0; ; i++)
        {
            var ctx = new StressContext(2 * Environment.ProcessorCount, round, seed + i, 16384, legacy: true, pin: false, TextWriter.Null);
            StressResult result = await Task.Run(() => Program.RunForm(ScenarioCatalog.Find(name)!, ctx));
            output.WriteLine($"round {i + 1} (seed {seed + i}): violations {result.Violations}, first after {result.FirstViolationAt}");
            if (result.Violations > 0)
            {
                Assert.NotNull(result.FirstViolationAt);
                output.WriteLine($"caught after {(spent + result.FirstViolationAt!.Value).TotalMilliseconds:F0} ms of running, in round {i + 1} (at most {budget.TotalSeconds:F0} s)");
                return;
            }

            spent += result.Elapsed;
            Assert.True(spent + round <= budget, $"the historical form of {name} was not caught in {i + 1} rounds ({spent.TotalSeconds:F1} s)");
        }
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task APlantedSkippedIncrementIsReported()
    {
        int seed = TestSupport.Seed(output, "planted fault");
        var ctx = new StressContext(2, TimeSpan.FromSeconds(2), seed, 16384, legacy: false, pin: false, TextWriter.Null)
        {
            Fault = PlantedFault.SkipOneGet,
        };
        StressResult result = await Task.Run(() => new SpeculativeWalkerScenario().Run(ctx));
        output.WriteLine(string.Join(Environment.NewLine, ctx.Violations));
        Assert.True(result.Violations > 0, "a skipped refcount increment went unnoticed");
    }

    [Theory]
    [InlineData("run", "no-such-scenario")]
    [InlineData("run", "alloc-churn", "--duration", "ten")]
    [InlineData("run", "alloc-churn", "--threads", "0")]
    [InlineData("run", "alloc-churn", "--arena-pages", "1000")]
    [InlineData("run", "alloc-churn", "--legacy")]
    [InlineData("run", "alloc-churn", "--threads", "many")]
    [InlineData("frobnicate")]
    public void BadArgumentsExitWith64(params string[] args) => Assert.Equal(Program.BadArguments, Program.Main(args));

    [Fact]
    public void DurationsParse()
    {
        Assert.True(Program.TryParseDuration("500ms", out TimeSpan a));
        Assert.Equal(TimeSpan.FromMilliseconds(500), a);
        Assert.True(Program.TryParseDuration("10s", out TimeSpan b));
        Assert.Equal(TimeSpan.FromSeconds(10), b);
        Assert.True(Program.TryParseDuration("2m", out TimeSpan c));
        Assert.Equal(TimeSpan.FromMinutes(2), c);
        Assert.False(Program.TryParseDuration("-1s", out _));
        Assert.False(Program.TryParseDuration("soon", out _));
    }

    [Fact]
    public void HistogramQuantilesAreWithinTheirBucket()
    {
        var h = new LatencyHistogram();
        for (int i = 1; i <= 10_000; i++) h.Record(i);
        Assert.Equal(10_000, h.Count);
        Assert.Equal(10_000, h.Max);
        Assert.InRange(h.Quantile(0.5), 5_000, 5_000 * 1.04);
        Assert.InRange(h.Quantile(0.99), 9_900, 9_900 * 1.04);
        Assert.Equal(10_000, h.Quantile(1.0));
        Assert.Equal(0, new LatencyHistogram().Quantile(0.5));
    }
}
