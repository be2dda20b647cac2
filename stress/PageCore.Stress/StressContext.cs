using System.Collections.Concurrent;
using System.Diagnostics;

namespace PageCore.Stress;

/// <summary>The settings of one run and the shared counters the scenario's threads report into.</summary>
public sealed class StressContext
{
    private readonly ConcurrentQueue<string> _violations = new();
    private long _violationCount;

    /// <summary>Creates a context.</summary>
    public StressContext(int threads, TimeSpan duration, int seed, long arenaPages, bool legacy, TextWriter log)
    {
        Threads = threads;
        Duration = duration;
        Seed = seed;
        ArenaPages = arenaPages;
        Legacy = legacy;
        Log = log;
        Clock = Stopwatch.StartNew();
        Deadline = DateTime.UtcNow + duration;
    }

    /// <summary>Worker threads.</summary>
    public int Threads { get; }

    /// <summary>How long the workload runs.</summary>
    public TimeSpan Duration { get; }

    /// <summary>The random seed; every thread derives its own from it.</summary>
    public int Seed { get; }

    /// <summary>Pages in the arena the scenario builds.</summary>
    public long ArenaPages { get; }

    /// <summary>Whether the legacy (historical, broken) form runs.</summary>
    public bool Legacy { get; }

    /// <summary>Where progress lines go.</summary>
    public TextWriter Log { get; }

    /// <summary>Time since the run started.</summary>
    public Stopwatch Clock { get; }

    /// <summary>When workers stop.</summary>
    public DateTime Deadline { get; }

    /// <summary>Violations so far.</summary>
    public long ViolationCount => Interlocked.Read(ref _violationCount);

    /// <summary>Time of the first violation, if any.</summary>
    public TimeSpan? FirstViolationAt { get; private set; }

    /// <summary>The first violations reported (at most 20 kept).</summary>
    public IReadOnlyCollection<string> Violations => _violations;

    /// <summary>Reports an invariant violation (thread-safe).</summary>
    public void Violation(string text)
    {
        if (Interlocked.Increment(ref _violationCount) == 1)
        {
            FirstViolationAt = Clock.Elapsed;
        }

        if (_violations.Count < 20)
        {
            _violations.Enqueue(text);
        }
    }
}

/// <summary>What one run measured and found.</summary>
/// <param name="Scenario">The scenario's name.</param>
/// <param name="Legacy">Whether the legacy form ran.</param>
/// <param name="Operations">Operations by type.</param>
/// <param name="Elapsed">Wall time of the workload.</param>
/// <param name="Violations">Invariant violations found.</param>
/// <param name="FirstViolationAt">When the first one was found.</param>
/// <param name="FinalReport">The arena's <c>Verify</c> at the end, as text.</param>
public sealed record StressResult(
    string Scenario,
    bool Legacy,
    IReadOnlyDictionary<string, long> Operations,
    TimeSpan Elapsed,
    long Violations,
    TimeSpan? FirstViolationAt,
    string FinalReport);
