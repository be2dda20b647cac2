using System.CommandLine;
using PageCore.Stress.Scenarios;

namespace PageCore.Stress;

/// <summary>
/// <c>race-lab</c>: for every scenario of <see cref="ScenarioCatalog"/> with a legacy form (and, for the scenarios that
/// read through an epoch domain, the historical reclaim under their workload: <c>--legacy-reclaim</c>), the legacy form
/// runs until it is caught (at most <c>--max-legacy</c>, as many times as <c>--legacy-runs</c>) and the time to detection
/// is reported as measured; the fixed form runs its whole duration and must hold with every thread at work.
/// </summary>
public static class RaceLab
{
    /// <summary>The longest a legacy form may take to be caught by default: the bar is 5 s on 2 cores.</summary>
    public const string DefaultMaxLegacy = "5s";

    /// <summary>The race-lab command, sharing the run command's options.</summary>
    public static Command Command(Option<int> threads, Option<int?> seed, Option<bool> pin, Option<long> pages, Option<long?> minOps)
    {
        var perScenario = new Option<string>("--duration-per-scenario") { Description = "How long each fixed form runs (default 10s).", DefaultValueFactory = _ => "10s" };
        var maxLegacy = new Option<string>("--max-legacy")
        {
            Description = $"Each legacy form runs until it is caught, at most this long (default {DefaultMaxLegacy}); not caught by then is INCONCLUSIVE (exit 2). The table gives the time to detection as measured.",
            DefaultValueFactory = _ => DefaultMaxLegacy,
        };
        var legacyRuns = new Option<int>("--legacy-runs") { Description = "Runs of each legacy form, seeds seed, seed+1, ... (default 1); the table gives the median and the longest time to detection.", DefaultValueFactory = _ => 1 };
        var only = new Option<string?>("--scenarios") { Description = "Comma-separated scenario names (default: every scenario with a legacy form)." };
        var fixedOnly = new Option<bool>("--fixed-only") { Description = "Run only the fixed forms (for a slow platform such as emulation, where the legacy forms' budgets mean nothing); the verdict is then about the fixed forms alone." };
        var systematic = new Option<bool>("--systematic") { Description = "The scenarios' small configurations under the controlled scheduler instead of real timing: each legacy form explored from --legacy-runs seeds until caught, each fixed form for --schedules schedules." };
        var schedules = new Option<int>("--schedules") { Description = $"With --systematic: schedules per legacy run and for each fixed form (default {SystematicRun.DefaultSchedules:N0}).", DefaultValueFactory = _ => SystematicRun.DefaultSchedules };
        var strategy = new Option<string>("--strategy") { Description = "With --systematic: random or pct (default random).", DefaultValueFactory = _ => "random" };
        var command = new Command("race-lab", "For every scenario with a legacy form: the legacy form must be caught (run until caught, at most --max-legacy), the fixed form must hold with every thread at work.")
        {
            perScenario, maxLegacy, legacyRuns, only, fixedOnly, threads, seed, pin, pages, minOps, systematic, schedules, strategy,
        };
        command.SetAction(pr => pr.GetValue(systematic)
            ? SystematicLab.Run(pr.GetValue(schedules), pr.GetValue(legacyRuns), pr.GetValue(strategy)!, pr.GetValue(only), pr.GetValue(seed), Console.Out)
            : Run(
                pr.GetValue(perScenario)!, pr.GetValue(maxLegacy)!, pr.GetValue(legacyRuns), pr.GetValue(only), pr.GetValue(fixedOnly),
                pr.GetValue(threads), pr.GetValue(seed), pr.GetValue(pin), pr.GetValue(pages), pr.GetValue(minOps), Console.Out));
        return command;
    }

    /// <summary>A span as 45s, 3m15s or 1h02m.</summary>
    internal static string FormatSpan(TimeSpan span) =>
        span.TotalHours >= 1 ? $"{(int)span.TotalHours}h{span.Minutes:00}m"
        : span.TotalMinutes >= 1 ? $"{(int)span.TotalMinutes}m{span.Seconds:00}s"
        : $"{Math.Ceiling(span.TotalSeconds):F0}s";

    /// <summary>Runs the lab and prints its table to <paramref name="w"/>; returns the exit code.</summary>
    public static int Run(string perScenarioText, string maxLegacyText, int legacyRuns, string? only, bool fixedOnly, int threads, int? seed, bool pin, long pages, long? minOps, TextWriter w)
    {
        if (Program.Validate(threads, perScenarioText, pages, out TimeSpan duration) is { } problem)
        {
            return Program.Bad(problem);
        }

        if (Program.DurationProblem(maxLegacyText, "--max-legacy", out TimeSpan maxLegacy) is { } legacyProblem)
        {
            return Program.Bad(legacyProblem);
        }

        if (legacyRuns is < 1 or > 1000)
        {
            return Program.Bad($"--legacy-runs must be between 1 and 1000 (got {legacyRuns}).");
        }

        if (minOps is < 0)
        {
            return Program.Bad($"--min-ops must be 0 or more (got {minOps}).");
        }

        LabEntry[] chosen = Entries().ToArray();
        if (only is not null)
        {
            string[] names = only.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
            if (names.FirstOrDefault(n => !chosen.Any(e => string.Equals(e.Scenario.Name, n, StringComparison.OrdinalIgnoreCase))) is { } unknown)
            {
                return Program.Bad($"'{unknown}' is not a scenario with a legacy form; those are: {string.Join(", ", chosen.Select(e => e.Scenario.Name).Distinct())}.");
            }

            chosen = chosen.Where(e => names.Contains(e.Scenario.Name, StringComparer.OrdinalIgnoreCase)).ToArray();
        }

        int actualSeed = seed ?? Random.Shared.Next();
        w.WriteLine($"pagecore-stress race-lab --duration-per-scenario {perScenarioText} --max-legacy {maxLegacyText} --legacy-runs {legacyRuns} --threads {threads} --seed {actualSeed} --arena-pages {pages}{(pin ? " --pin" : "")}{(minOps is { } m ? $" --min-ops {m}" : "")}{(fixedOnly ? " --fixed-only" : "")}");
        w.WriteLine($"machine: {Report.Machine()}");
        int legacyForms = fixedOnly ? 0 : chosen.Length * legacyRuns;
        int fixedForms = chosen.Select(e => e.Scenario).Distinct().Count();
        w.WriteLine($"{legacyForms} legacy run{(legacyForms == 1 ? "" : "s")} (each until caught, at most {maxLegacyText}) and {fixedForms} fixed form{(fixedForms == 1 ? "" : "s")} ({perScenarioText} each): at most {FormatSpan(legacyForms * maxLegacy + fixedForms * duration)} plus set-up; a line per run as it ends");
        var rows = new List<string>();
        int exit = Program.Pass;
        var fixedRuns = new Dictionary<IScenario, (Outcome Outcome, long Ops, long Fewest, long Violations)>();
        foreach ((IScenario s, bool reclaimOnly) in chosen)
        {
            string form = reclaimOnly ? "--legacy-reclaim" : "--legacy";
            // The legacy form, until caught: its deadline is pulled in to its first violation.
            var detections = new List<TimeSpan>();
            long legacyViolations = 0;
            for (int run = 0; run < (fixedOnly ? 0 : legacyRuns); run++)
            {
                int runSeed = unchecked(actualSeed + run);
                var legacyCtx = new StressContext(threads, maxLegacy, runSeed, pages, legacy: !reclaimOnly, pin, TextWriter.Null)
                {
                    StopAtFirstViolation = true,
                    LegacyReclaim = reclaimOnly,
                };
                StressResult legacyResult = Program.RunForm(s, legacyCtx);
                legacyViolations += legacyResult.Violations;
                bool caught = Verdict.Judge(legacyCtx, legacyResult, 0) == Outcome.Caught;
                if (caught)
                {
                    detections.Add(legacyResult.FirstViolationAt ?? legacyResult.Elapsed);
                }

                w.WriteLine(caught
                    ? $"  {s.Name} {form} --seed {runSeed}: caught after {Ms(detections[^1])} ({Clip(legacyCtx.Violations.FirstOrDefault())})"
                    : $"  {s.Name} {form} --seed {runSeed}: NOT caught within {maxLegacyText} ({legacyCtx.Recorders.Sum(r => r.Total):N0} operations)");
            }

            // The fixed form, its whole duration, every thread at work (once per scenario: a scenario's two legacy
            // forms share it).
            if (!fixedRuns.TryGetValue(s, out var fixedRun))
            {
                long minimum = minOps ?? s.MinimumOperationsPerThread;
                var fixedCtx = new StressContext(threads, duration, actualSeed, pages, legacy: false, pin, TextWriter.Null);
                StressResult fixedResult = Program.RunForm(s, fixedCtx);
                Outcome outcome = Verdict.Judge(fixedCtx, fixedResult, minimum);
                fixedRun = (outcome, fixedCtx.Recorders.Sum(r => r.Total), fixedCtx.Recorders.Count == 0 ? 0 : fixedCtx.Recorders.Min(r => r.Total), fixedResult.Violations);
                fixedRuns[s] = fixedRun;
                string capped = fixedCtx.ArenaPagesBuilt is > 0 and var built && built != pages ? $", arena capped at {built:N0} pages by the scenario" : "";
                w.WriteLine($"  {s.Name} --seed {actualSeed}: {FixedText(outcome)}, {fixedRun.Ops:N0} operations ({fixedRun.Ops / Math.Max(0.001, fixedResult.Elapsed.TotalSeconds):N0}/s), fewest per thread {fixedRun.Fewest:N0}{capped}");
                if (outcome == Outcome.Fail)
                {
                    foreach (string v in fixedCtx.Violations.Take(5)) w.WriteLine($"    fixed form of {s.Name}: {v}");
                }
                else if (outcome == Outcome.Inconclusive)
                {
                    w.WriteLine($"    fixed form of {s.Name}: {Verdict.IdleReason(fixedCtx, minimum)}");
                }
            }

            (Outcome fixedOutcome, long fixedOps, long fewest, long fixedViolations) = fixedRun;

            bool allCaught = fixedOnly || detections.Count == legacyRuns;
            string caughtText = fixedOnly ? "not run" : allCaught ? (legacyRuns == 1 ? "yes" : $"{legacyRuns} of {legacyRuns}") : $"NO ({detections.Count} of {legacyRuns})";
            string name = reclaimOnly ? $"{s.Name} --legacy-reclaim" : s.Name;
            rows.Add($"| {name} | {s.Rule} | {caughtText} | {Detection(detections)} | {legacyViolations:N0} | {FixedText(fixedOutcome)} | {fixedOps:N0} | {fewest:N0} | {fixedViolations:N0} |");
            if (fixedOutcome == Outcome.Fail)
            {
                exit = Program.Violated;
            }
            else if ((!allCaught || fixedOutcome == Outcome.Inconclusive) && exit == Program.Pass)
            {
                exit = Program.Inconclusive;
            }
        }

        w.WriteLine();
        w.WriteLine($"| scenario | rule | legacy caught (within {maxLegacyText}) | time to detection (median / max) | legacy violations | fixed form | fixed ops | fewest ops per thread | fixed violations |");
        w.WriteLine("|---|---|---|---|---|---|---|---|---|");
        foreach (string row in rows) w.WriteLine(row);
        if (chosen.Length == 0)
        {
            w.WriteLine("no scenario has a legacy form yet");
        }

        w.WriteLine(exit switch
        {
            Program.Pass => fixedOnly ? "PASS: every fixed form held with every thread at work (legacy forms not run: --fixed-only)" : "PASS: every legacy form was caught and every fixed form held with every thread at work",
            Program.Violated => "FAIL: a fixed form violated its invariants",
            _ => "INCONCLUSIVE: a legacy form was not caught in time, or a fixed form's thread did too little (not a pass)",
        });
        return exit;
    }

    /// <summary>A legacy form of the lab: a scenario's own (<c>--legacy</c>), or only its epoch domain's historical reclaim (<c>--legacy-reclaim</c>).</summary>
    private readonly record struct LabEntry(IScenario Scenario, bool ReclaimOnly);

    /// <summary>
    /// The lab's rows, in catalog order: every scenario with a legacy form, and after it, for the scenarios that read
    /// through an epoch domain besides <c>epoch-reclaim</c> (whose legacy form already is the historical reclaim), the
    /// historical reclaim under that scenario's own workload.
    /// </summary>
    private static IEnumerable<LabEntry> Entries()
    {
        foreach (IScenario s in ScenarioCatalog.All)
        {
            if (s.HasLegacyForm)
            {
                yield return new LabEntry(s, ReclaimOnly: false);
            }

            if (s is PgtableFreeScenario or PageCacheLookupScenario)
            {
                yield return new LabEntry(s, ReclaimOnly: true);
            }
        }
    }

    private static string FixedText(Outcome o) => o switch
    {
        Outcome.Pass => "held",
        Outcome.Fail => "FAILED",
        _ => "INCONCLUSIVE",
    };

    private static string Detection(List<TimeSpan> times)
    {
        if (times.Count == 0)
        {
            return "-";
        }

        TimeSpan[] sorted = [.. times.Order()];
        TimeSpan median = sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        return sorted.Length == 1 ? Ms(median) : $"{Ms(median)} / {Ms(sorted[^1])}";
    }

    private static string Clip(string? text) => text is null ? "" : text.Length <= 160 ? text : text[..157] + "...";

    private static string Ms(TimeSpan t) => t.TotalMilliseconds < 10 ? $"{t.TotalMilliseconds:F1} ms" : $"{t.TotalMilliseconds:F0} ms";
}
