using PageCore.Stress.Scenarios;
using PageCore.Systematic;

namespace PageCore.Stress;

/// <summary>
/// <c>race-lab --systematic</c>: every scenario with a configuration for the controlled scheduler, its legacy form
/// explored from several seeds until caught (the table gives the schedules to the first catch, median and most, and the
/// seed that replays the first), its fixed form explored for the whole budget. Exit 0 only when every legacy run was
/// caught and every fixed form held.
/// </summary>
internal static class SystematicLab
{
    /// <summary>Runs the lab and prints its table to <paramref name="w"/>; returns the exit code.</summary>
    public static int Run(int schedules, int legacyRuns, string strategy, string? only, int? seed, TextWriter w)
    {
        if (schedules is < 1 or > 100_000_000)
        {
            return Program.Bad($"--schedules must be between 1 and 100,000,000 (got {schedules}).");
        }

        if (legacyRuns is < 1 or > 1000)
        {
            return Program.Bad($"--legacy-runs must be between 1 and 1000 (got {legacyRuns}).");
        }

        if (!Exploration.Strategies.Contains(strategy))
        {
            return Program.Bad($"--strategy takes {string.Join(" or ", Exploration.Strategies)}, not '{strategy}'.");
        }

        if (!SchedulePoint.Enabled)
        {
            return Program.Bad("schedule points are off in this process: --systematic must be on the command line when it starts.");
        }

        IScenario[] chosen = ScenarioCatalog.All.Where(s => s is ISystematicScenario && s.HasLegacyForm).ToArray();
        if (only is not null)
        {
            string[] names = only.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (names.FirstOrDefault(n => !chosen.Any(s => string.Equals(s.Name, n, StringComparison.OrdinalIgnoreCase))) is { } unknown)
            {
                return Program.Bad($"'{unknown}' has no configuration for the controlled scheduler; those that have: {string.Join(", ", chosen.Select(s => s.Name))}.");
            }

            chosen = chosen.Where(s => names.Contains(s.Name, StringComparer.OrdinalIgnoreCase)).ToArray();
        }

        int actualSeed = seed ?? Random.Shared.Next();
        w.WriteLine($"pagecore-stress race-lab --systematic --strategy {strategy} --schedules {schedules} --legacy-runs {legacyRuns} --seed {actualSeed}");
        w.WriteLine($"machine: {Report.Machine()}");
        w.WriteLine($"{chosen.Length} scenarios with a configuration for the controlled scheduler; not yet: {string.Join(", ", ScenarioCatalog.All.Where(s => s is not ISystematicScenario && s.HasLegacyForm).Select(s => s.Name))}");
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var rows = new List<string>();
        bool allCaught = true, allHeld = true;
        foreach (IScenario s in chosen)
        {
            var program = (ISystematicScenario)s;
            var catches = new List<int>();
            int? firstSeed = null;
            for (int run = 0; run < legacyRuns; run++)
            {
                // Run r explores seeds S + r*N .. S + r*N + N-1: no schedule is counted twice.
                int runSeed = unchecked(actualSeed + (run * schedules));
                ExplorationResult legacy = Exploration.Explore(strategy, runSeed, schedules, SystematicRun.MaxSteps, _ => program.Program(legacy: true), pctDepth: 3, pctSteps: program.ProgramSteps);
                if (legacy.FirstFailure is not null)
                {
                    catches.Add(legacy.Schedules);
                    firstSeed ??= legacy.FailingSeed;
                }

                w.WriteLine(legacy.FirstFailure is { } f
                    ? $"  {s.Name} --legacy --seed {runSeed}: caught at schedule {legacy.Schedules:N0} (replay: --seed {legacy.FailingSeed} --schedules 1): {Clip(f.Message)}"
                    : $"  {s.Name} --legacy --seed {runSeed}: NOT caught in {schedules:N0} schedules");
            }

            ExplorationResult fixedForm = Exploration.Explore(strategy, actualSeed, schedules, SystematicRun.MaxSteps, _ => program.Program(legacy: false), pctDepth: 3, pctSteps: program.ProgramSteps);
            w.WriteLine(fixedForm.FirstFailure is { } bad
                ? $"  {s.Name} --seed {actualSeed}: FAILED at schedule {fixedForm.Schedules:N0} (replay: --seed {fixedForm.FailingSeed} --schedules 1): {bad}"
                : $"  {s.Name} --seed {actualSeed}: held for {fixedForm.Schedules:N0} schedules");
            allCaught &= catches.Count == legacyRuns;
            allHeld &= fixedForm.FirstFailure is null;
            string toCatch = catches.Count == 0 ? "-" : $"{Median(catches):N0} / {catches.Max():N0}";
            rows.Add($"| {s.Name} | {s.Rule} | {catches.Count} of {legacyRuns} | {toCatch} | {(firstSeed is { } fs ? fs.ToString() : "-")} | {(fixedForm.FirstFailure is null ? "held" : "FAILED")} | {fixedForm.Schedules:N0} |");
        }

        w.WriteLine();
        w.WriteLine($"| scenario | rule | legacy caught ({strategy}, within {schedules:N0} schedules) | schedules to the first catch (median / most) | seed of the first catch | fixed form | schedules explored |");
        w.WriteLine("|---|---|---|---|---|---|---|");
        foreach (string row in rows) w.WriteLine(row);
        w.WriteLine($"{clock.Elapsed.TotalSeconds:F1}s");
        if (chosen.Length == 0)
        {
            w.WriteLine("INCONCLUSIVE: no scenario ran (not a pass)");
            return Program.Inconclusive;
        }

        w.WriteLine(allCaught && allHeld ? "PASS: every legacy form was caught and every fixed form held"
            : !allHeld ? "FAIL: a fixed form violated its invariants under the controlled scheduler"
            : "INCONCLUSIVE: a legacy form was not caught within its schedules (not a pass)");
        return !allHeld ? Program.Violated : allCaught ? Program.Pass : Program.Inconclusive;
    }

    private static double Median(List<int> values)
    {
        int[] sorted = [.. values.Order()];
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[(sorted.Length / 2) - 1] + sorted[sorted.Length / 2]) / 2.0;
    }

    private static string Clip(string text) => text.Length <= 140 ? text : text[..137] + "...";
}
