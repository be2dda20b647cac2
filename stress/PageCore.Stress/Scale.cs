using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using PageCore.Stress.Scenarios;

namespace PageCore.Stress;

/// <summary>
/// <c>scale</c>: runs a scenario's fixed form at each thread count with fixed work per thread, measures the
/// private-counter ceiling with as many threads as the point ran right after it, and reports throughput per thread, latency
/// quantiles, fairness and the contention counters per operation; as a table, as JSON, and as a picture.
/// </summary>
public static class Scale
{
    /// <summary>Operations per thread at each point unless <c>--ops-per-thread</c> says otherwise.</summary>
    public const long DefaultOperationsPerThread = 1_000_000;

    /// <summary>The scale command, sharing the run command's options.</summary>
    public static Command Command(Option<int?> seed, Option<bool> pin, Option<long> pages)
    {
        var scenarioArg = new Argument<string>("scenario") { Description = "The scenario to run (see 'list'); its fixed form." };
        var threadList = new Option<string?>("--threads") { Description = "Comma-separated thread counts (default 1, 2, 4, ... up to 2 x the processor count)." };
        var opsPerThread = new Option<long>("--ops-per-thread")
        {
            Description = $"Operations per worker thread at each point (default {DefaultOperationsPerThread:N0}): a point ends when every worker did this many (and every background thread the scenario's minimum).",
            DefaultValueFactory = _ => DefaultOperationsPerThread,
        };
        var rounds = new Option<int>("--rounds") { Description = "Runs of every thread count, interleaved (default 3); the summary gives each figure's median.", DefaultValueFactory = _ => 3 };
        var maxDuration = new Option<string>("--max-duration") { Description = "The most one point may run (default 60s); a point stopped by it is marked capped.", DefaultValueFactory = _ => "60s" };
        var json = new Option<string?>("--json") { Description = "Write every point as JSON to this file." };
        var plot = new Option<string?>("--plot") { Description = "Draw throughput per thread (relative to the first point) and p99 latency against threads, beside the private-counter ceiling: FILE.svg or FILE.png." };
        var command = new Command("scale", "Run a scenario's fixed form at each thread count with fixed work per thread, next to the private-counter ceiling measured in the same run.")
        {
            scenarioArg, threadList, opsPerThread, rounds, maxDuration, json, plot, seed, pin, pages,
        };
        command.SetAction(pr => Run(
            pr.GetValue(scenarioArg)!, pr.GetValue(threadList), pr.GetValue(opsPerThread), pr.GetValue(rounds), pr.GetValue(maxDuration)!, pr.GetValue(json),
            pr.GetValue(plot), pr.GetValue(seed), pr.GetValue(pin), pr.GetValue(pages), Console.Out));
        return command;
    }

    /// <summary>Runs the study and writes its table to <paramref name="w"/>; returns the exit code.</summary>
    public static int Run(string name, string? threadText, long opsPerThread, int rounds, string maxDurationText, string? jsonPath, string? plotPath, int? seed, bool pin, long pages, TextWriter w)
    {
        IScenario? scenario = ScenarioCatalog.Find(name);
        if (scenario is null)
        {
            return Program.Bad($"unknown scenario '{name}'; known: {string.Join(", ", ScenarioCatalog.All.Select(s => s.Name))}.");
        }

        if (ParseThreads(threadText, out int[] counts) is { } threadProblem)
        {
            return Program.Bad(threadProblem);
        }

        if (opsPerThread is < 1000 or > 1_000_000_000)
        {
            return Program.Bad($"--ops-per-thread must be between 1,000 and 1,000,000,000 (got {opsPerThread}).");
        }

        if (rounds is < 1 or > 100)
        {
            return Program.Bad($"--rounds must be between 1 and 100 (got {rounds}).");
        }

        if (Program.Validate(counts.Max(), maxDurationText, pages, out TimeSpan maxDuration) is { } problem)
        {
            return Program.Bad(problem);
        }

        if (plotPath is not null && !(plotPath.EndsWith(".svg", StringComparison.OrdinalIgnoreCase) || plotPath.EndsWith(".png", StringComparison.OrdinalIgnoreCase)))
        {
            return Program.Bad($"--plot needs a file name ending in .svg or .png (got '{plotPath}').");
        }

        foreach ((string option, string? path) in new[] { ("--json", jsonPath), ("--plot", plotPath) })
        {
            if (path is not null && OutputPaths.CheckFile(option, path) is { } why)
            {
                return Program.Bad(why);
            }
        }

        int actualSeed = seed ?? Random.Shared.Next();
        w.WriteLine($"pagecore-stress scale {scenario.Name} --threads {string.Join(',', counts)} --ops-per-thread {opsPerThread} --rounds {rounds} --max-duration {maxDurationText} --seed {actualSeed} --arena-pages {pages}{(pin ? " --pin" : "")}");
        w.WriteLine($"machine: {Report.Machine()}");
        w.WriteLine(Header);
        StressContext Point(int threads, int seedOfRun, long ops) =>
            new(threads, maxDuration, seedOfRun, pages, legacy: false, pin, TextWriter.Null) { OperationsPerThread = ops, BackgroundOperations = scenario.MinimumOperationsPerThread };

        // A warm-up at the first thread count, not reported: the JIT's tiers and the arena's first page faults.
        Program.RunForm(scenario, Point(counts[0], actualSeed, Math.Max(1000, opsPerThread / 4)));
        // Rounds: every thread count once per round, the order reversed every other round, so that each point meets the
        // machine's slow and fast periods alike; the summary takes each figure's median over the rounds.
        var runs = counts.ToDictionary(t => t, _ => new List<ScalePoint>());
        bool anyFail = false, anyInconclusive = false;
        for (int round = 1; round <= rounds; round++)
        {
            foreach (int threads in round % 2 == 1 ? counts : counts.Reverse())
            {
                StressContext ctx = Point(threads, actualSeed + round - 1, opsPerThread);
                StressResult result = Program.RunForm(scenario, ctx);
                double ceiling = Ceiling(Math.Max(1, ctx.Recorders.Count)); // as many threads as the point ran
                ScalePoint point = ScalePoint.From(ctx, result, ceiling, scenario.MinimumOperationsPerThread);
                runs[threads].Add(point);
                w.WriteLine(Line($"{round,5}", point));
                foreach (string v in ctx.Violations.Take(3)) w.WriteLine($"    {v}");
                anyFail |= point.Outcome == Outcome.Fail;
                anyInconclusive |= point.Outcome != Outcome.Pass;
            }
        }

        List<ScalePoint> points = counts.Select(t => ScalePoint.Median(runs[t])).ToList();
        w.WriteLine();
        w.WriteLine($"medians over {rounds} round{(rounds == 1 ? "" : "s")}:");
        w.WriteLine(Header);
        foreach (ScalePoint point in points) w.WriteLine(Line("  med", point));
        w.WriteLine("  Mops/s/thread: all the scenario's operations over all its running threads and the point's wall time; ceiling: one Interlocked.Increment per operation on a line of the thread's own, as many threads as the point ran, measured right after it (Mops/s per thread); fairness: fewest / most operations of a worker.");
        if (jsonPath is not null)
        {
            ScaleReport.WriteJson(jsonPath, scenario.Name, counts, opsPerThread, rounds, maxDuration, actualSeed, pages, pin, points, runs);
            w.WriteLine($"  JSON: {jsonPath}");
        }

        if (plotPath is not null)
        {
            ScaleReport.Plot(plotPath, scenario.Name, points);
            w.WriteLine($"  plot: {plotPath}");
        }

        // A violation anywhere outweighs an inconclusive point; a study with any point that showed nothing is no pass.
        return anyFail ? Program.Violated : anyInconclusive ? Program.Inconclusive : Program.Pass;
    }

    private const string Header = "round threads running  seconds Mops/s/thread   ceiling   p50 ns    p99 ns   p99.9 ns  retry/op  slow/op fairness  outcome";

    private static string Line(string round, ScalePoint p) =>
        $"{round} {p.Threads,7} {p.Running,7} {p.Seconds,8:F2} {p.OpsPerSecondPerThread / 1e6,13:F3} {p.CeilingPerThread / 1e6,9:F1} {p.P50Ns,8:N0} {p.P99Ns,9:N0} {p.P999Ns,10:N0} {p.RetriesPerOp,9:F4} {p.SlowPathsPerOp,8:F4} {p.Fairness,8:P0}  {p.Outcome}{(p.Capped ? " (capped by --max-duration)" : "")}";

    /// <summary>Parses "1,2,4"; null when fine, else the problem. No list: 1, 2, 4, ... up to 2 x the processor count.</summary>
    internal static string? ParseThreads(string? text, out int[] counts)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            var list = new List<int>();
            for (int t = 1; t <= 2 * Environment.ProcessorCount; t *= 2) list.Add(t);
            if (list[^1] != 2 * Environment.ProcessorCount) list.Add(2 * Environment.ProcessorCount);
            counts = [.. list];
            return null;
        }

        counts = [];
        var parsed = new List<int>();
        foreach (string part in text.Split(',', StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out int t) || t is < 1 or > 1024)
            {
                return $"--threads takes comma-separated whole numbers between 1 and 1024, such as 1,2,4 (got '{part}' in '{text}').";
            }

            parsed.Add(t);
        }

        if (parsed.Distinct().Count() != parsed.Count)
        {
            return $"--threads lists a count twice ('{text}').";
        }

        counts = [.. parsed.Order()];
        return null;
    }

    /// <summary>
    /// The private-counter ceiling with <paramref name="threads"/> threads: each increments a counter on a line of its own
    /// (<see cref="Interlocked.Increment(ref long)"/>, the cheapest shared-memory atomic, with nothing shared), all
    /// started together; operations per second per thread over the slowest thread's wall time.
    /// </summary>
    internal static double Ceiling(int threads)
    {
        const int Pad = 32; // 256 bytes between two threads' counters
        const long n = 20_000_000; // about 0.15 s per thread on a 2-core VM
        long[] counters = new long[(threads + 2) * Pad];
        using var go = new ManualResetEventSlim();
        int ready = 0;
        var workers = Enumerable.Range(0, threads).Select(t => new Thread(() =>
        {
            Interlocked.Increment(ref ready);
            go.Wait();
            ref long c = ref counters[(t + 1) * Pad];
            for (long i = 0; i < n; i++) Interlocked.Increment(ref c);
        }) { IsBackground = true, Name = $"ceiling-{t}" }).ToList();
        workers.ForEach(t => t.Start());
        var spin = new SpinWait();
        while (Volatile.Read(ref ready) < threads) spin.SpinOnce();
        long start = Stopwatch.GetTimestamp();
        go.Set();
        workers.ForEach(t => t.Join());
        double seconds = Stopwatch.GetElapsedTime(start).TotalSeconds;
        return n / Math.Max(seconds, 1e-9);
    }
}
