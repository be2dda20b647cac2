using PageCore.Stress.Scenarios;
using PageCore.Systematic;

namespace PageCore.Stress;

/// <summary>
/// <c>run &lt;scenario&gt; [--legacy] --systematic [--schedules N] [--strategy random|pct] [--seed S]</c>: the scenario's
/// small configuration under the controlled scheduler, schedule i with seed S+i, until the first violation or N
/// schedules. A legacy form must be caught (exit 1, with the seed that replays it); a fixed form must hold (exit 0).
/// </summary>
internal static class SystematicRun
{
    /// <summary>Schedules explored when <c>--schedules</c> is not given.</summary>
    public const int DefaultSchedules = 1000;

    /// <summary>Schedule points one schedule may pass before it counts as a livelock.</summary>
    public const long MaxSteps = 100_000;

    /// <summary>The runtime switch must be set before PageCore's schedule points are first used: call at the top of Main.</summary>
    public static void EnableIfRequested(string[] args)
    {
        if (args.Contains("--systematic"))
        {
            AppContext.SetSwitch("PageCore.Systematic.Enabled", true);
        }
    }

    /// <summary>Runs the exploration and prints its outcome to <paramref name="w"/>; returns the exit code.</summary>
    public static int Run(IScenario scenario, bool legacy, int schedules, string strategy, int? seed, TextWriter w)
    {
        if (scenario is not ISystematicScenario systematic)
        {
            string have = string.Join(", ", ScenarioCatalog.All.Where(s => s is ISystematicScenario).Select(s => s.Name));
            return Program.Bad($"scenario '{scenario.Name}' has no configuration for the controlled scheduler yet; those that have: {have}.");
        }

        if (schedules is < 1 or > 100_000_000)
        {
            return Program.Bad($"--schedules must be between 1 and 100,000,000 (got {schedules}).");
        }

        if (!Exploration.Strategies.Contains(strategy))
        {
            return Program.Bad($"--strategy takes {string.Join(" or ", Exploration.Strategies)}, not '{strategy}'.");
        }

        if (!SchedulePoint.Enabled)
        {
            return Program.Bad("schedule points are off in this process: --systematic must be on the command line when it starts.");
        }

        int actualSeed = seed ?? Random.Shared.Next();
        string form = legacy ? " --legacy" : "";
        w.WriteLine($"pagecore-stress run {scenario.Name}{form} --systematic --strategy {strategy} --schedules {schedules} --seed {actualSeed}");
        w.WriteLine($"machine: {Report.Machine()}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        ExplorationResult result = Exploration.Explore(strategy, actualSeed, schedules, MaxSteps, _ => systematic.Program(legacy), pctDepth: 3, pctSteps: systematic.ProgramSteps);
        w.WriteLine($"{scenario.Name}{(legacy ? " (legacy form)" : "")}: {result.Schedules:N0} schedules in {clock.Elapsed.TotalSeconds:F1}s, {strategy}");
        if (result.FirstFailure is { } failure)
        {
            w.WriteLine($"  first violation at schedule {result.Schedules:N0}, seed {result.FailingSeed}: {failure}");
            w.WriteLine($"  replay: pagecore-stress run {scenario.Name}{form} --systematic --strategy {strategy} --seed {result.FailingSeed} --schedules 1");
        }

        Outcome outcome = (legacy, result.FirstFailure) switch
        {
            (true, not null) => Outcome.Caught,
            (true, null) => Outcome.Inconclusive,
            (false, null) => Outcome.Pass,
            _ => Outcome.Fail,
        };
        w.WriteLine(outcome switch
        {
            Outcome.Caught => $"CAUGHT: the legacy form violated its invariants at schedule {result.Schedules:N0}",
            Outcome.Inconclusive => $"INCONCLUSIVE: the legacy form held for {result.Schedules:N0} schedules (not a pass); explore more schedules",
            Outcome.Pass => $"PASS: every invariant held in {result.Schedules:N0} schedules",
            _ => $"FAIL: a violation at schedule {result.Schedules:N0} (replay it with the line above)",
        });
        return Verdict.ExitCode(outcome);
    }
}
