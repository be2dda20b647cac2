namespace PageCore.Systematic;

/// <summary>One schedule's program: fresh shared state, its logical threads, and the check made after they end.</summary>
/// <param name="Threads">The logical threads, each a name and a body.</param>
/// <param name="FinalCheck">Called after every thread ended: a violation's text, or null.</param>
/// <param name="Cleanup">Called after the run and its check, whatever the outcome (releases the program's arena).</param>
internal sealed record SystematicProgram(IReadOnlyList<(string Name, Action Body)> Threads, Func<string?>? FinalCheck = null, Action? Cleanup = null);

/// <summary>The result of exploring many schedules.</summary>
/// <param name="Schedules">Schedules run (up to and including the first that found something).</param>
/// <param name="FirstFailure">The first run that did not complete, or null.</param>
/// <param name="FailingSeed">That run's seed: with <c>schedules</c> 1 it reproduces the run.</param>
internal sealed record ExplorationResult(int Schedules, RunResult? FirstFailure, int? FailingSeed);

/// <summary>
/// Runs a program under many schedules, schedule i with seed <c>seed + i</c>, until one fails or all have run. A
/// failure names its own seed, so that <c>Explore(strategy, thatSeed, 1, ...)</c> replays it.
/// </summary>
internal static class Exploration
{
    /// <summary>The strategies by name: <c>random</c> (random walk) and <c>pct</c>.</summary>
    public static readonly string[] Strategies = ["random", "pct"];

    /// <summary>A strategy by name for one schedule's seed.</summary>
    /// <exception cref="ArgumentException">An unknown name.</exception>
    public static ScheduleStrategy Strategy(string name, int seed, int pctDepth = 3, long pctSteps = 1000) => name switch
    {
        "random" => new RandomWalkStrategy(seed),
        "pct" => new PctStrategy(seed, pctDepth, pctSteps),
        _ => throw new ArgumentException($"unknown schedule strategy '{name}'; known: {string.Join(", ", Strategies)}", nameof(name)),
    };

    /// <summary>
    /// Explores <paramref name="schedules"/> schedules of the program <paramref name="build"/> makes (called once per
    /// schedule with its seed), each bounded by <paramref name="maxSteps"/> points; stops at the first that does not
    /// complete.
    /// </summary>
    public static ExplorationResult Explore(string strategy, int seed, int schedules, long maxSteps, Func<int, SystematicProgram> build, int pctDepth = 3, long pctSteps = 1000)
    {
        for (int i = 0; i < schedules; i++)
        {
            int scheduleSeed = unchecked(seed + i);
            SystematicProgram program = build(scheduleSeed);
            RunResult run;
            try
            {
                run = ControlledScheduler.Run(Strategy(strategy, scheduleSeed, pctDepth, pctSteps), maxSteps, program.Threads, program.FinalCheck);
            }
            finally
            {
                program.Cleanup?.Invoke();
            }

            if (!run.Completed)
            {
                return new ExplorationResult(i + 1, run, scheduleSeed);
            }
        }

        return new ExplorationResult(schedules, null, null);
    }
}
