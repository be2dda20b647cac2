using System.CommandLine;
using System.CommandLine.Parsing;
using PageCore.Stress.Scenarios;

namespace PageCore.Stress;

/// <summary>
/// <c>pagecore-stress</c>: runs PageCore's stress scenarios on real threads. Exit codes: 0 pass, 1 invariant violated,
/// 2 inconclusive (a legacy form that was not caught in time, or a fixed form's run in which some thread did fewer
/// operations than the minimum), 64 bad arguments (an output path that cannot be written included, checked before the
/// run), 71 set-up failure (the environment could not give the run what it needs).
/// </summary>
public static class Program
{
    /// <summary>Exit code: every invariant held (and, in the race lab, every legacy form was caught).</summary>
    public const int Pass = 0;

    /// <summary>Exit code: an invariant was violated.</summary>
    public const int Violated = 1;

    /// <summary>Exit code: nothing was shown (a legacy form not caught in time, or a thread that did too little); never a pass.</summary>
    public const int Inconclusive = 2;

    /// <summary>Exit code: bad arguments.</summary>
    public const int BadArguments = 64;

    /// <summary>Exit code: the environment could not give the run what it needs (memory for the arena, a permission);
    /// see <see cref="SetupFailedException"/>. Not a bug of PageCore.</summary>
    public const int SetupFailed = 71;

    /// <summary>The longest duration any command accepts.</summary>
    public static readonly TimeSpan MaxDuration = TimeSpan.FromHours(24);

    /// <summary>Entry point.</summary>
    public static int Main(string[] args)
    {
        SystematicRun.EnableIfRequested(args);
        var scenarioArg = new Argument<string>("scenario") { Description = "The scenario to run (see 'list')." };
        var legacy = new Option<bool>("--legacy") { Description = "Run the historical (broken) form of the scenario, where it has one." };
        var legacyReclaim = new Option<bool>("--legacy-reclaim") { Description = "pgtable-free, pagecache-lookup, epoch-reclaim: the epoch domain reclaims with the historical (broken) algorithm; judged like --legacy." };
        var threads = new Option<int>("--threads") { Description = "Worker threads (default: 2 x processor count).", DefaultValueFactory = _ => 2 * Environment.ProcessorCount };
        var duration = new Option<string>("--duration") { Description = "How long to run: 500ms, 10s, 2m (default 10s).", DefaultValueFactory = _ => "10s" };
        var seed = new Option<int?>("--seed") { Description = "Random seed (default: a random one, printed). It fixes every thread's own random choices (worker i's operations, each hook's yields and sleeps per thread name); it cannot fix how real threads interleave, so the pages a run meets and its timing differ between runs with one seed." };
        var pin = new Option<bool>("--pin") { Description = "Pin worker threads to CPUs round-robin (Linux sched_setaffinity)." };
        var json = new Option<string?>("--json") { Description = "Write the figures as JSON to this file." };
        var pages = new Option<long>("--arena-pages") { Description = "Pages in the arena (a multiple of 1024; default 65536 = 256 MiB).", DefaultValueFactory = _ => 65536 };
        var dumpOnBug = new Option<string?>("--dump-on-bug") { Description = "At the first bug report (PageBugException), write a process dump into this directory and print its path." };
        var pid = new Option<int>("--pid") { Description = "The process to attach to (see 'ps').", Required = true };
        var systematic = new Option<bool>("--systematic") { Description = "Run the scenario's small configuration under the controlled scheduler instead of real timing: schedule after schedule (seed S, S+1, ...) until a violation or --schedules. The first violation prints the seed that replays it exactly (with --schedules 1)." };
        var schedules = new Option<int>("--schedules") { Description = $"With --systematic: schedules to explore (default {SystematicRun.DefaultSchedules:N0}).", DefaultValueFactory = _ => SystematicRun.DefaultSchedules };
        var strategy = new Option<string>("--strategy") { Description = "With --systematic: random (a random walk) or pct (probabilistic concurrency testing, depth 3); default random.", DefaultValueFactory = _ => "random" };
        var minOps = new Option<long?>("--min-ops")
        {
            Description = $"Operations every thread (workers and walkers) must record for a fixed form's run to count; fewer ends INCONCLUSIVE (exit 2), never PASS (default: the scenario's minimum, {Verdict.DefaultMinimumOperations} unless it states another). The clock starts when every thread has started.",
        };

        var list = new Command("list", "List every scenario, its kernel counterpart, the rule it exercises, and whether it has a legacy form.");
        list.SetAction(_ => List());

        var run = new Command("run", "Run one scenario. The duration counts from the moment every thread has started.") { scenarioArg, legacy, legacyReclaim, threads, duration, seed, pin, json, pages, dumpOnBug, minOps, systematic, schedules, strategy };
        run.SetAction(pr => pr.GetValue(systematic)
            ? RunSystematic(pr.GetValue(scenarioArg)!, pr.GetValue(legacy), pr.GetValue(schedules), pr.GetValue(strategy)!, pr.GetValue(seed))
            : Run(
                pr.GetValue(scenarioArg)!, pr.GetValue(legacy), pr.GetValue(threads), pr.GetValue(duration)!,
                pr.GetValue(seed), pr.GetValue(pin), pr.GetValue(json), pr.GetValue(pages), pr.GetValue(dumpOnBug), pr.GetValue(minOps), pr.GetValue(legacyReclaim)));

        var ps = new Command("ps", "List the .NET processes that can be monitored.");
        ps.SetAction(_ => Ps());

        var watchFor = new Option<string>("--duration") { Description = "How long to watch (default: until the target exits, at most 24h).", DefaultValueFactory = _ => "24h" };
        var monitor = new Command("monitor", "Attach to a running process and show its PageCore meter live (pages allocated and freed per order, free pages, cache hits and misses, CAS retries, bug reports).")
        {
            pid, watchFor,
        };
        monitor.SetAction(pr => MonitorCommand(pr.GetValue(pid), pr.GetValue(watchFor)!));

        Command raceLab = RaceLab.Command(threads, seed, pin, pages, minOps);
        Command scale = Scale.Command(seed, pin, pages);

        var root = new RootCommand("pagecore-stress: PageCore's stress scenarios on real threads, with invariants checked while they run.") { list, run, raceLab, scale, ps, monitor };
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (ParseError error in parsed.Errors)
            {
                Console.Error.WriteLine($"pagecore-stress: {Plain(error.Message)}");
            }

            Console.Error.WriteLine("See 'pagecore-stress --help'.");
            return BadArguments;
        }

        try
        {
            // Without the library's own handler, so that a set-up failure reaches the catch below rather than being
            // printed as an unhandled exception with exit 1 (which means "invariant violated" here).
            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (SetupFailedException setup)
        {
            Console.Error.WriteLine($"pagecore-stress: set-up failed: {setup.Cause}; {setup.Remedy}");
            return SetupFailed;
        }
    }

    /// <summary>
    /// A parse error in words a user reads: "Cannot parse argument 'x' for option '--seed' as expected type
    /// 'System.Nullable`1[System.Int32]'" becomes "--seed takes a whole number, not 'x'".
    /// </summary>
    internal static string Plain(string message)
    {
        var m = System.Text.RegularExpressions.Regex.Match(message, @"^Cannot parse argument '(.*)' for option '(.*)' as expected type '(.*)'\.?$");
        if (!m.Success)
        {
            return message;
        }

        string type = m.Groups[3].Value;
        string what = type.Contains("Int32") || type.Contains("Int64") ? "a whole number"
            : type.Contains("Double") ? "a number"
            : type.Contains("Boolean") ? "true or false"
            : $"a value of type {type}";
        return $"{m.Groups[2].Value} takes {what}, not '{m.Groups[1].Value}'.";
    }

    /// <summary>Parses 500ms, 10s, 2m, 1h, or a plain number of seconds, up to <see cref="MaxDuration"/>.</summary>
    public static bool TryParseDuration(string text, out TimeSpan duration) => DurationProblem(text, "the duration", out duration) is null;

    /// <summary>
    /// Parses a duration as <see cref="TryParseDuration"/> does; returns why <paramref name="text"/> is not one (in one
    /// line naming <paramref name="what"/>), or null.
    /// </summary>
    public static string? DurationProblem(string text, string what, out TimeSpan duration)
    {
        if (!TryParseAnyDuration(text, out duration))
        {
            return $"{what} '{text}' is not a duration such as 500ms, 10s, 2m or 1h.";
        }

        if (duration > MaxDuration)
        {
            duration = default;
            return $"{what} '{text}' is longer than the limit of 24h.";
        }

        return null;
    }

    private static bool TryParseAnyDuration(string text, out TimeSpan duration)
    {
        duration = default;
        text = text.Trim();
        (string number, double scale) = text switch
        {
            _ when text.EndsWith("ms", StringComparison.OrdinalIgnoreCase) => (text[..^2], 0.001),
            _ when text.EndsWith('s') || text.EndsWith('S') => (text[..^1], 1.0),
            _ when text.EndsWith('m') || text.EndsWith('M') => (text[..^1], 60.0),
            _ when text.EndsWith('h') || text.EndsWith('H') => (text[..^1], 3600.0),
            _ => (text, 1.0),
        };
        if (!double.TryParse(number, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value)
            || value <= 0 || !double.IsFinite(value * scale) || value * scale > 1e9)
        {
            return false;
        }

        duration = TimeSpan.FromSeconds(value * scale);
        return true;
    }

    /// <summary>Runs one scenario form with the given settings and returns its result (used by run, race-lab and tests).</summary>
    public static (StressContext Context, StressResult Result) Execute(IScenario scenario, StressContext ctx) => (ctx, RunForm(scenario, ctx));

    /// <summary>
    /// Runs one form of a scenario. An exception that escapes the scenario's own checks (a legacy form's corruption can
    /// surface in its teardown, after the workers stopped) is a violation of that run, not a crash of the tool: it is
    /// recorded, the arena is released, and the result says so (a fixed form that ends this way fails).
    /// </summary>
    public static StressResult RunForm(IScenario scenario, StressContext ctx)
    {
        SeededChance.Reset(ctx.Seed);
        try
        {
            return scenario.Run(ctx);
        }
        catch (Exception ex) when (ctx.Arena is null && ex is OutOfMemoryException or UnauthorizedAccessException)
        {
            // The arena was never built: the environment refused the memory (mmap, a pinned array) or a permission. Not
            // a violation of anything; the command reports it as a set-up failure.
            throw new SetupFailedException(
                $"the arena of {ctx.ArenaPages:N0} pages ({Report.Bytes(ctx.ArenaPages * 4096)}) could not be created: {ex.Message.TrimEnd('.')}",
                "lower --arena-pages, or give the process more memory (ulimit -v, the container's memory limit)",
                ex);
        }
        catch (Exception ex)
        {
            // A bug report, or any other failure a corrupted state leads to (a legacy form's teardown can meet either).
            if (ex is PageBugException bug)
            {
                ctx.Violation(bug);
            }
            else
            {
                ctx.Violation($"the run ended in {ex.GetType().Name}: {ex.Message}");
            }

            string final = $"the run ended in an exception outside the workers: {ex.GetType().Name}: {ex.Message}";
            try
            {
                ctx.Arena?.Dispose(force: true);
            }
            catch (PageBugException)
            {
                // a corrupted arena; its memory is released anyway by the forced dispose's own path or at exit
            }

            return new StressResult(scenario.Name, ctx.Legacy, ctx.Elapsed, ctx.ViolationCount, ctx.FirstViolationAt,
                new ArenaStatistics(new long[Enum.GetValues<ArenaCounter>().Length], 0), final, 0);
        }
    }

    private static int List()
    {
        Console.WriteLine($"{"scenario",-20} {"legacy",-6} {"rule",-20} kernel counterpart");
        foreach (IScenario s in ScenarioCatalog.All)
        {
            Console.WriteLine($"{s.Name,-20} {(s.HasLegacyForm ? "yes" : "no"),-6} {s.Rule,-20} {s.KernelCounterpart}");
            Console.WriteLine($"{"",-20} {s.Description}");
        }

        return Pass;
    }

    /// <summary>Checks the options shared by run and race-lab; returns the problem, or null.</summary>
    internal static string? Validate(int threads, string durationText, long pages, out TimeSpan duration)
    {
        duration = default;
        if (threads is < 1 or > 1024)
        {
            return $"--threads must be between 1 and 1024 (got {threads}).";
        }

        if (DurationProblem(durationText, "the duration", out duration) is { } problem)
        {
            return problem;
        }

        return ArenaPagesProblem(pages);
    }

    /// <summary>
    /// Whether an arena of <paramref name="pages"/> pages is a size the stress tool accepts: a multiple of 1024, at most
    /// 2^31 pages, and no more memory (4 KiB per page and its 64-byte descriptor) than the machine makes available to
    /// this process (the container's limit included). Returns the problem, or null.
    /// </summary>
    internal static string? ArenaPagesProblem(long pages)
    {
        if (pages < 1024 || pages % 1024 != 0 || pages > (1L << 31))
        {
            return $"--arena-pages must be a multiple of 1024 between 1024 and 2^31 (got {pages}).";
        }

        long available = GC.GetGCMemoryInfo().TotalAvailableMemoryBytes;
        const long BytesPerPage = 4096 + 64;
        if (available > 0 && pages > available / BytesPerPage)
        {
            long most = available / BytesPerPage / 1024 * 1024;
            return $"--arena-pages {pages} needs {Report.Bytes(pages * BytesPerPage)} (4 KiB pages and their 64-byte descriptors); this machine makes {Report.Bytes(available)} available: at most {most} pages here.";
        }

        return null;
    }

    private static int Ps()
    {
        Console.WriteLine($"{"pid",8}  {"name",-20} command line");
        foreach ((int p, string name, string cmd) in ProcessMonitor.Processes())
        {
            Console.WriteLine($"{p,8}  {name,-20} {cmd}");
        }

        return Pass;
    }

    private static int MonitorCommand(int pid, string durationText)
    {
        if (DurationProblem(durationText, "the duration", out TimeSpan duration) is { } problem)
        {
            return Bad(problem);
        }

        if (!ProcessMonitor.Processes().Any(p => p.Pid == pid))
        {
            return Bad($"no .NET process with pid {pid} publishes a diagnostics endpoint (see 'ps').");
        }

        Console.WriteLine($"pagecore-stress monitor --pid {pid}: the PageCore meter, refreshed every second (Ctrl+C to stop)");
        int received = ProcessMonitor.Watch(pid, duration, Console.Out);
        Console.WriteLine($"monitor: {received} values received");
        return Pass;
    }

    private static int RunSystematic(string name, bool legacy, int schedules, string strategy, int? seed)
    {
        IScenario? scenario = ScenarioCatalog.Find(name);
        if (scenario is null)
        {
            return Bad($"unknown scenario '{name}'; known: {string.Join(", ", ScenarioCatalog.All.Select(s => s.Name))}.");
        }

        if (legacy && !scenario.HasLegacyForm)
        {
            return Bad($"scenario '{scenario.Name}' has no legacy form (see 'list').");
        }

        return SystematicRun.Run(scenario, legacy, schedules, strategy, seed, Console.Out);
    }

    private static int Run(string name, bool legacy, int threads, string durationText, int? seed, bool pin, string? jsonPath, long pages, string? dumpOnBug, long? minOps, bool legacyReclaim = false)
    {
        IScenario? scenario = ScenarioCatalog.Find(name);
        if (scenario is null)
        {
            return Bad($"unknown scenario '{name}'; known: {string.Join(", ", ScenarioCatalog.All.Select(s => s.Name))}.");
        }

        if (legacy && !scenario.HasLegacyForm)
        {
            return Bad($"scenario '{scenario.Name}' has no legacy form (see 'list').");
        }

        if (legacyReclaim && scenario is not (PgtableFreeScenario or PageCacheLookupScenario or EpochReclaimScenario))
        {
            return Bad($"scenario '{scenario.Name}' uses no epoch domain; --legacy-reclaim applies to pgtable-free, pagecache-lookup and epoch-reclaim.");
        }

        if (Validate(threads, durationText, pages, out TimeSpan duration) is { } problem)
        {
            return Bad(problem);
        }

        if (minOps is < 0)
        {
            return Bad($"--min-ops must be 0 or more (got {minOps}).");
        }

        string? output = (jsonPath is null ? null : OutputPaths.CheckFile("--json", jsonPath))
            ?? (dumpOnBug is null ? null : OutputPaths.CheckDirectory("--dump-on-bug", dumpOnBug));
        if (output is not null)
        {
            return Bad(output);
        }

        long minimum = minOps ?? scenario.MinimumOperationsPerThread;
        if (dumpOnBug is not null)
        {
            ProcessMonitor.DumpOnFirstBug(dumpOnBug, Console.Out);
        }

        int actualSeed = seed ?? Random.Shared.Next();
        Console.WriteLine($"pagecore-stress run {scenario.Name}{(legacy ? " --legacy" : "")}{(legacyReclaim ? " --legacy-reclaim" : "")} --threads {threads} --duration {durationText} --seed {actualSeed} --arena-pages {pages}{(pin ? " --pin" : "")}");
        Console.WriteLine($"machine: {Report.Machine()}");
        bool live = !Console.IsOutputRedirected && !Console.IsErrorRedirected && Environment.GetEnvironmentVariable("CI") is null;
        var ctx = new StressContext(threads, duration, actualSeed, pages, legacy, pin, Console.Out, live) { LegacyReclaim = legacyReclaim };
        StressResult result = RunForm(scenario, ctx);
        Report.Print(Console.Out, ctx, result, minimum);
        if (jsonPath is not null)
        {
            Report.WriteJson(jsonPath, ctx, result, minimum);
            Console.WriteLine($"  JSON: {jsonPath}");
        }

        Outcome outcome = Verdict.Judge(ctx, result, minimum);
        Console.WriteLine(outcome switch
        {
            Outcome.Caught => $"CAUGHT: the legacy form violated its invariants ({result.Violations} violations, first after {result.FirstViolationAt?.TotalMilliseconds:F0} ms)",
            Outcome.Inconclusive when legacy || legacyReclaim => "INCONCLUSIVE: the legacy form was not caught in time (not a pass); run longer or with more threads",
            Outcome.Inconclusive => $"INCONCLUSIVE: {Verdict.IdleReason(ctx, minimum)}; the run showed nothing (not a pass)",
            Outcome.Pass => "PASS: every invariant held",
            _ => $"FAIL: {result.Violations} invariant violations (rerun with --seed {actualSeed} for the same choices per thread; the interleaving will differ)",
        });
        return Verdict.ExitCode(outcome);
    }

    /// <summary>Prints a bad-arguments message and returns <see cref="BadArguments"/>.</summary>
    internal static int Bad(string message)
    {
        Console.Error.WriteLine($"pagecore-stress: {message}");
        return BadArguments;
    }
}
