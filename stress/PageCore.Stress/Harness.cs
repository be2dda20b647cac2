using System.Diagnostics;
using Spectre.Console;

namespace PageCore.Stress;

/// <summary>Starts a scenario's threads, shows progress while they run, and makes the end-of-run checks.</summary>
public static class Harness
{
    /// <summary>
    /// Runs <paramref name="workers"/> until they return (they watch <see cref="StressContext.Deadline"/>), with
    /// <paramref name="background"/> threads (walkers) running until the workers are done or the deadline has passed,
    /// whichever comes first: a worker that is still finishing its last operations after the deadline does not share
    /// the processors with walkers (with hundreds of threads on a few cores, spinning walkers kept workers from
    /// finishing for minutes). Shows a live view on a
    /// terminal, one plain line per second otherwise. Returns the time from the start to the last worker's return.
    /// </summary>
    /// <remarks>
    /// The clock starts when every thread, workers and background threads alike, is running and has its recorder: each
    /// checks in at a <see cref="StartGate"/>, and the last one sets the deadline (<see cref="StressContext.Start"/>)
    /// before any of them runs its body. A scenario that builds its arena and threads slowly still runs its whole
    /// duration with every thread at work; scenarios need nothing of their own for this.
    /// </remarks>
    public static TimeSpan Run(
        StressContext ctx,
        IReadOnlyList<(string Name, Action<Recorder> Body)> workers,
        IReadOnlyList<(string Name, Action<Recorder, CancellationToken> Body)> background)
    {
        using var stop = new CancellationTokenSource();
        using var gate = new StartGate(workers.Count + background.Count, ctx.Start);
        var threads = new List<Thread>();
        for (int i = 0; i < workers.Count; i++)
        {
            (string name, Action<Recorder> body) = workers[i];
            int index = i;
            threads.Add(new Thread(() => Guard(ctx, name, () => body(CheckIn(ctx, gate, name, index, background: false)))) { Name = name, IsBackground = true });
        }

        var helpers = new List<Thread>();
        for (int i = 0; i < background.Count; i++)
        {
            (string name, Action<Recorder, CancellationToken> body) = background[i];
            int index = workers.Count + i;
            helpers.Add(new Thread(() => Guard(ctx, name, () => body(CheckIn(ctx, gate, name, index, background: true), stop.Token))) { Name = name, IsBackground = true });
        }

        foreach (Thread t in threads.Concat(helpers)) t.Start();
        WaitForStart(ctx, gate, threads.Count + helpers.Count);
        if (ctx.OperationsPerThread > 0)
        {
            WatchBudget(ctx, threads, stop);
        }
        else if (ctx.Live)
        {
            ShowLive(ctx, threads, stop);
        }
        else
        {
            ShowPlain(ctx, threads, stop);
        }

        foreach (Thread t in threads) t.Join();
        TimeSpan elapsed = ctx.Elapsed;
        stop.Cancel();
        foreach (Thread t in helpers) t.Join();
        foreach (string notice in ctx.Notices) ctx.Log.WriteLine($"note: {notice}");
        return elapsed;
    }

    /// <summary>
    /// Waits at the start gate; when the threads take more than a second to check in (hundreds of threads on a few
    /// cores), says so every second, so that a long start never looks like a hang.
    /// </summary>
    private static void WaitForStart(StressContext ctx, StartGate gate, int total)
    {
        while (!gate.Wait(TimeSpan.FromSeconds(1)))
        {
            ctx.Log.WriteLine($"[{ctx.Clock.Elapsed.TotalSeconds,5:F1}s] starting: {total - gate.Pending:N0} of {total:N0} threads running; the clock starts when all are");
        }
    }

    /// <summary>
    /// The checks every scenario ends with, on a quiescent arena: drain the caches, <see cref="PageArena.Verify"/>, every
    /// page free again (conservation), and the free arena whole blocks of MaxOrder (coalescing). Then the arena is
    /// released (forced: a run that found violations may have left pages allocated, and a corrupted arena must not stop
    /// the report).
    /// </summary>
    public static StressResult Finish(StressContext ctx, string scenario, PageArena arena, TimeSpan elapsed)
    {
        string final;
        try
        {
            arena.Drain();
            ArenaReport report = arena.Verify();
            foreach (string v in report.Violations) ctx.Violation("verify: " + v);
            if (report.FreePages != arena.PageCount)
            {
                ctx.Violation($"conservation: after every block was freed and the caches drained, {report.FreePages} of {arena.PageCount} pages are free");
            }
            else if (report.FreeBlocksByOrder[arena.MaxOrder] != arena.PageCount >> arena.MaxOrder)
            {
                ctx.Violation($"coalescing: the free arena is not {arena.PageCount >> arena.MaxOrder} blocks of order {arena.MaxOrder}");
            }

            final = report.ToString();
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
            final = $"the final drain hit a corrupted page: {bug.Message}";
        }

        ArenaStatistics stats = arena.Statistics;
        arena.Dispose(force: true);
        return new StressResult(scenario, ctx.Legacy, elapsed, ctx.ViolationCount, ctx.FirstViolationAt, stats, final, Monitor.LockContentionCount - ctx.LockContentionAtStart);
    }

    /// <summary>
    /// A thread's start: the test hook, its recorder (pinning it first), then the start gate. The check-in happens even
    /// when the hook or the enlisting throws, so that the other threads are not held at the gate for ever.
    /// </summary>
    private static Recorder CheckIn(StressContext ctx, StartGate gate, string name, int index, bool background)
    {
        try
        {
            ctx.BeforeCheckIn?.Invoke(name, index);
            return ctx.Enlist(name, index, background);
        }
        finally
        {
            gate.CheckInAndWait();
        }
    }

    private static void Guard(StressContext ctx, string name, Action body)
    {
        try
        {
            body();
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
        }
        catch (Exception ex)
        {
            ctx.Violation($"{name}: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static long[] Totals(StressContext ctx)
    {
        long[] totals = new long[ctx.Operations.Count];
        foreach (Recorder r in ctx.Recorders)
        {
            for (int i = 0; i < totals.Length; i++) totals[i] += r.CountOf(i);
        }

        return totals;
    }

    /// <summary>
    /// Fixed work per thread: ends the run once every worker recorded <see cref="StressContext.OperationsPerThread"/>
    /// operations and every background thread <see cref="StressContext.BackgroundOperations"/>, looking every
    /// millisecond (the overshoot is what the threads do in that time).
    /// </summary>
    private static void WatchBudget(StressContext ctx, List<Thread> threads, CancellationTokenSource stop)
    {
        IReadOnlyList<Recorder> recorders = ctx.Recorders; // every thread enlisted before the gate opened
        while (threads.Any(t => t.IsAlive))
        {
            threads.FirstOrDefault(t => t.IsAlive)?.Join(1);
            StopBackgroundAfterDeadline(ctx, stop);
            if (recorders.All(r => r.Total >= (r.Background ? ctx.BackgroundOperations : ctx.OperationsPerThread)))
            {
                ctx.StopNow();
            }
        }
    }

    /// <summary>
    /// Waits up to <paramref name="period"/> for the workers to end, looking every 20 ms whether the deadline has passed
    /// (then the background threads are told to stop).
    /// </summary>
    private static void Tick(StressContext ctx, List<Thread> threads, TimeSpan period, CancellationTokenSource stop)
    {
        long end = Stopwatch.GetTimestamp() + (long)(period.TotalSeconds * Stopwatch.Frequency);
        while (Stopwatch.GetTimestamp() < end)
        {
            StopBackgroundAfterDeadline(ctx, stop);
            // FirstOrDefault: the last worker may end between a look at IsAlive and this look-up.
            Thread? alive = threads.FirstOrDefault(t => t.IsAlive);
            if (alive is null || alive.Join(TimeSpan.FromMilliseconds(20)) && !threads.Any(t => t.IsAlive))
            {
                return;
            }
        }
    }

    /// <summary>Tells the background threads to stop once the deadline has passed (see <see cref="Run"/>).</summary>
    private static void StopBackgroundAfterDeadline(StressContext ctx, CancellationTokenSource stop)
    {
        if (ctx.Started && !stop.IsCancellationRequested && DateTime.UtcNow >= ctx.Deadline)
        {
            stop.Cancel();
        }
    }

    private static void ShowPlain(StressContext ctx, List<Thread> threads, CancellationTokenSource stop)
    {
        long[] previous = Totals(ctx);
        TimeSpan last = ctx.Elapsed;
        while (threads.Any(t => t.IsAlive))
        {
            Tick(ctx, threads, TimeSpan.FromSeconds(1), stop);
            TimeSpan now = ctx.Elapsed;
            if (now - last < TimeSpan.FromSeconds(0.9))
            {
                continue; // a line covers about a second; the tail after the last full second shows in the summary
            }

            long[] current = Totals(ctx);
            double seconds = (now - last).TotalSeconds;
            string rates = string.Join(", ", ctx.Operations.Select((op, i) => $"{op.Name} {Report.Rate((current[i] - previous[i]) / seconds)}/s"));
            ctx.Log.WriteLine($"[{now.TotalSeconds,5:F1}s] {rates}; violations {ctx.ViolationCount}");
            previous = current;
            last = now;
        }
    }

    private static void ShowLive(StressContext ctx, List<Thread> threads, CancellationTokenSource stop)
    {
        var table = new Table().Border(TableBorder.Rounded).AddColumn("operation").AddColumn(new TableColumn("ops/s").RightAligned()).AddColumn(new TableColumn("total").RightAligned());
        foreach (OpKind op in ctx.Operations) table.AddRow(op.Name, "", "");
        table.Caption("starting");
        AnsiConsole.Live(table).Start(live =>
        {
            long[] previous = Totals(ctx);
            TimeSpan last = ctx.Elapsed;
            while (threads.Any(t => t.IsAlive))
            {
                Tick(ctx, threads, TimeSpan.FromMilliseconds(500), stop);
                TimeSpan now = ctx.Elapsed;
                long[] current = Totals(ctx);
                double seconds = Math.Max(1e-3, (now - last).TotalSeconds);
                for (int i = 0; i < current.Length; i++)
                {
                    table.UpdateCell(i, 1, Report.Rate((current[i] - previous[i]) / seconds));
                    table.UpdateCell(i, 2, current[i].ToString("N0"));
                }

                long violations = ctx.ViolationCount;
                table.Caption($"{now.TotalSeconds:F1}s of {ctx.Duration.TotalSeconds:F0}s, violations: {(violations == 0 ? "[green]0[/]" : $"[red]{violations}[/]")}");
                live.Refresh();
                previous = current;
                last = now;
            }

            // The last frame stays on the screen: the whole run's rates, not those of its last half-second (which are
            // 0 once the workers have ended).
            TimeSpan elapsed = ctx.Elapsed;
            long[] totals = Totals(ctx);
            table.Columns[1].Header = new Text("ops/s (run)");
            for (int i = 0; i < totals.Length; i++)
            {
                table.UpdateCell(i, 1, Report.Rate(totals[i] / Math.Max(1e-3, elapsed.TotalSeconds)));
                table.UpdateCell(i, 2, totals[i].ToString("N0"));
            }

            table.Caption($"done: {elapsed.TotalSeconds:F1}s, violations: {(ctx.ViolationCount == 0 ? "[green]0[/]" : $"[red]{ctx.ViolationCount}[/]")}");
            live.Refresh();
        });
    }
}
