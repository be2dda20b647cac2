namespace PageCore.Stress;

/// <summary>The outcome of one run of one scenario form.</summary>
public enum Outcome
{
    /// <summary>A fixed form: every invariant held and every thread did at least the minimum of operations.</summary>
    Pass,

    /// <summary>A fixed form violated an invariant.</summary>
    Fail,

    /// <summary>A legacy form was caught: it violated an invariant, as it must.</summary>
    Caught,

    /// <summary>
    /// Nothing was shown, which is never a pass: a legacy form that was not caught in time, or a fixed form in which
    /// some thread did fewer operations than the minimum (a run that did nothing proves nothing).
    /// </summary>
    Inconclusive,
}

/// <summary>Judges a finished run: violations, and whether every thread did enough work for the run to count.</summary>
public static class Verdict
{
    /// <summary>
    /// Operations each thread of a run (workers and background walkers) must record for a fixed form's run to count,
    /// unless the scenario (<see cref="Scenarios.IScenario.MinimumOperationsPerThread"/>) or <c>--min-ops</c> says
    /// otherwise. Far below what any scenario does in a second on a busy 2-core machine (thousands per thread), far above
    /// a thread that never got going.
    /// </summary>
    public const long DefaultMinimumOperations = 100;

    /// <summary>The threads of the run that recorded fewer than <paramref name="minimum"/> operations.</summary>
    public static IReadOnlyList<Recorder> BelowMinimum(StressContext ctx, long minimum) =>
        ctx.Recorders.Where(r => r.Total < minimum).ToList();

    /// <summary>
    /// The run's outcome. A legacy form is caught when it violated an invariant, else inconclusive. A fixed form fails
    /// on any violation; without one it passes only when it recorded threads and each did at least
    /// <paramref name="minimum"/> operations, and is inconclusive otherwise.
    /// </summary>
    public static Outcome Judge(StressContext ctx, StressResult result, long minimum)
    {
        if (ctx.Legacy || ctx.LegacyReclaim)
        {
            return result.Violations > 0 ? Outcome.Caught : Outcome.Inconclusive;
        }

        if (result.Violations > 0)
        {
            return Outcome.Fail;
        }

        return ctx.Recorders.Count == 0 || BelowMinimum(ctx, minimum).Count > 0 ? Outcome.Inconclusive : Outcome.Pass;
    }

    /// <summary>The exit code of an outcome: 0 pass, 1 an invariant violated (a fixed form failed, or a legacy form caught), 2 inconclusive.</summary>
    public static int ExitCode(Outcome outcome) => outcome switch
    {
        Outcome.Pass => Program.Pass,
        Outcome.Fail or Outcome.Caught => Program.Violated,
        _ => Program.Inconclusive,
    };

    /// <summary>Why a fixed form's run was inconclusive, in one line.</summary>
    public static string IdleReason(StressContext ctx, long minimum)
    {
        if (ctx.Recorders.Count == 0)
        {
            return "no thread recorded an operation";
        }

        IReadOnlyList<Recorder> idle = BelowMinimum(ctx, minimum);
        string names = string.Join(", ", idle.Take(12).Select(r => $"{r.Name} {r.Total:N0}")) + (idle.Count > 12 ? $", and {idle.Count - 12:N0} more" : "");
        return $"{idle.Count:N0} of {ctx.Recorders.Count:N0} threads did fewer than {minimum:N0} operations ({names}){CrowdHint(ctx)}";
    }

    /// <summary>
    /// When the run had many threads per processor: how much processor time each thread had at most, and the remedy.
    /// Empty otherwise.
    /// </summary>
    private static string CrowdHint(StressContext ctx)
    {
        int processors = Environment.ProcessorCount;
        int threads = ctx.Recorders.Count;
        if (threads <= 8 * processors)
        {
            return "";
        }

        double share = ctx.Duration.TotalMilliseconds * processors / threads;
        return $"; {threads:N0} threads on {processors} processors had about {share:N0} ms of processor time each: run longer (--duration) or with fewer threads";
    }
}
