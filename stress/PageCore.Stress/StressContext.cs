using System.Collections.Concurrent;
using System.Diagnostics;

namespace PageCore.Stress;

/// <summary>Faults the harness can plant in a scenario, to show that its checks can fail.</summary>
public enum PlantedFault
{
    /// <summary>No fault.</summary>
    None,

    /// <summary>A worker drops a reference it never took once: a refcount increment skipped (a lost <c>get_page</c>).</summary>
    SkipOneGet,
}

/// <summary>One operation type of a scenario, and the arena counters that belong to it in the report.</summary>
/// <param name="Name">The operation's name in tables and JSON.</param>
/// <param name="Retries">Counters of CAS races lost by this kind of operation.</param>
/// <param name="SlowPaths">Counters of slow-path entries of this kind of operation.</param>
/// <param name="TakesLock">Whether the operation takes a lock (its waits are counted through <see cref="Monitor.LockContentionCount"/>).</param>
public sealed record OpKind(string Name, ArenaCounter[] Retries, ArenaCounter[] SlowPaths, bool TakesLock = false);

/// <summary>The settings of one run, the workers' recorders, and the violations found.</summary>
public sealed class StressContext
{
    private readonly ConcurrentQueue<string> _violations = new();
    private readonly List<Recorder> _recorders = [];
    private long _violationCount;
    private PageArena? _arena;
    private long _firstViolationTicks = -1;

    // The run's clock and deadline, both reset by Start when every thread of the run has checked in. Each is one 8-byte
    // field written with Volatile.Write and read with Volatile.Read: a reader sees the value of creation or the one
    // Start stored, never a torn mix, and the start gate's release orders Start's stores before any worker's first read.
    private long _startTimestamp;
    private long _deadlineTicks;
    private int _started;
    private int _stopped;

    /// <summary>Creates a context.</summary>
    public StressContext(int threads, TimeSpan duration, int seed, long arenaPages, bool legacy, bool pin, TextWriter log, bool live = false)
    {
        Threads = threads;
        Duration = duration;
        Seed = seed;
        ArenaPages = arenaPages;
        Legacy = legacy;
        Pin = pin;
        Log = log;
        Live = live;
        Clock = Stopwatch.StartNew();
        _startTimestamp = Stopwatch.GetTimestamp();
        _deadlineTicks = (DateTime.UtcNow + duration).Ticks;
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

    /// <summary>
    /// Whether the scenario's epoch domain runs the historical reclaim (<c>--legacy-reclaim</c>: a stale bound, peek
    /// then dequeue, no driver), with the rest of the scenario in its fixed form.
    /// </summary>
    public bool LegacyReclaim { get; init; }

    /// <summary>Whether workers are pinned to CPUs round-robin.</summary>
    public bool Pin { get; }

    /// <summary>Whether progress is drawn as a live view (a terminal) rather than plain lines.</summary>
    public bool Live { get; }

    /// <summary>A fault to plant (tests only).</summary>
    public PlantedFault Fault { get; init; }

    /// <summary>Where progress lines go.</summary>
    public TextWriter Log { get; }

    /// <summary><see cref="Monitor.LockContentionCount"/> when the context was created (lock waits are the difference).</summary>
    public long LockContentionAtStart { get; } = Monitor.LockContentionCount;

    /// <summary>
    /// Stops the run at its first violation: the deadline is pulled in to that moment, so a legacy form runs until it is
    /// caught (at most <see cref="Duration"/>), and <see cref="FirstViolationAt"/> is its time to detection.
    /// </summary>
    public bool StopAtFirstViolation { get; init; }

    /// <summary>
    /// Called by every thread of <see cref="Harness.Run"/> with its name and index before it checks in at the start gate
    /// (tests only: a thread that is slow to start, as under emulation).
    /// </summary>
    public Action<string, int>? BeforeCheckIn { get; init; }

    /// <summary>
    /// Fixed work per thread (<c>scale</c>): when above 0, the run ends as by <see cref="StopNow"/> once every worker
    /// recorded this many operations and every background thread <see cref="BackgroundOperations"/>;
    /// <see cref="Duration"/> still caps it. Workers that finish first keep going until then, so that every thread of the
    /// run is loaded for its whole length.
    /// </summary>
    public long OperationsPerThread { get; init; }

    /// <summary>With <see cref="OperationsPerThread"/>: what each background thread (walker, reader) must have recorded
    /// before the run may end (the scenario's minimum, so that the run counts).</summary>
    public long BackgroundOperations { get; init; }

    /// <summary>Time since the context was created (set-up included); see <see cref="Elapsed"/> for the run's own clock.</summary>
    public Stopwatch Clock { get; }

    /// <summary>
    /// Time since every thread of the run checked in at the start gate (<see cref="Start"/>); before that, time since
    /// the context was created.
    /// </summary>
    public TimeSpan Elapsed => Stopwatch.GetElapsedTime(Volatile.Read(ref _startTimestamp));

    /// <summary>
    /// When workers stop: <see cref="Duration"/> after the last thread checked in at the start gate (before that,
    /// <see cref="Duration"/> after the context was created); pulled in to the first violation under
    /// <see cref="StopAtFirstViolation"/>.
    /// </summary>
    public DateTime Deadline => new(Volatile.Read(ref _deadlineTicks), DateTimeKind.Utc);

    /// <summary>Whether every thread of the run checked in and the clock started.</summary>
    public bool Started => Volatile.Read(ref _started) != 0;

    /// <summary>The arena under test, once the scenario built it; setting it records <see cref="ArenaPagesBuilt"/>.</summary>
    public PageArena? Arena
    {
        get => _arena;
        set
        {
            _arena = value;
            if (value is not null)
            {
                ArenaPagesBuilt = value.PageCount;
            }
        }
    }

    /// <summary>
    /// Pages in the arena the scenario built (0 until it built one): <see cref="ArenaPages"/>, or less where the scenario
    /// caps the arena (a checked arena poisons and verifies every page, so several scenarios keep it small).
    /// </summary>
    public long ArenaPagesBuilt { get; private set; }

    /// <summary>The scenario's operation types.</summary>
    public IReadOnlyList<OpKind> Operations { get; private set; } = [];

    /// <summary>One recorder per worker, in creation order.</summary>
    public IReadOnlyList<Recorder> Recorders
    {
        get
        {
            lock (_recorders)
            {
                return [.. _recorders];
            }
        }
    }

    /// <summary>Messages about pinning, printed once.</summary>
    public ConcurrentQueue<string> Notices { get; } = new();

    /// <summary>Violations so far.</summary>
    public long ViolationCount => Interlocked.Read(ref _violationCount);

    /// <summary>Time of the first violation, if any.</summary>
    public TimeSpan? FirstViolationAt
    {
        get
        {
            long t = Interlocked.Read(ref _firstViolationTicks);
            return t < 0 ? null : TimeSpan.FromTicks(t);
        }
    }

    /// <summary>The first violations reported (at most 20 kept).</summary>
    public IReadOnlyCollection<string> Violations => _violations;

    /// <summary>
    /// Starts the clock: the deadline becomes now + <see cref="Duration"/> (now, when the run was already stopped by a
    /// violation found during set-up or at the same moment) and <see cref="Elapsed"/> counts from now. Called by
    /// <see cref="Harness.Run"/>, by the last thread to check in, before it opens the start gate (a scenario that runs
    /// its threads in two phases gets the whole duration in each).
    /// </summary>
    public void Start()
    {
        DateTime now = DateTime.UtcNow;
        Volatile.Write(ref _startTimestamp, Stopwatch.GetTimestamp());
        Volatile.Write(ref _deadlineTicks, (now + Duration).Ticks);

        // A StopNow racing with this start must not be undone by the store above. Here: deadline store, full fence
        // (Interlocked), load of the stop flag. StopNow: flag set with a full fence, then its deadline store. Either this
        // load sees the flag and stores "now" itself, or the flag was set after this fence, so StopNow's deadline store
        // comes after the one above and wins.
        Interlocked.Exchange(ref _started, 1);
        if (Volatile.Read(ref _stopped) != 0)
        {
            Volatile.Write(ref _deadlineTicks, now.Ticks);
        }
    }

    /// <summary>Ends the run now: the deadline becomes the present moment (workers finish their current step).</summary>
    public void StopNow()
    {
        Interlocked.Exchange(ref _stopped, 1);
        Volatile.Write(ref _deadlineTicks, DateTime.UtcNow.Ticks);
    }

    /// <summary>Declares the scenario's operation types (before any recorder is created).</summary>
    public void DeclareOperations(params OpKind[] operations) => Operations = operations;

    /// <summary>Creates the recorder of one worker; pins the calling thread first when <see cref="Pin"/> is set.</summary>
    public Recorder Enlist(string name, int index, bool background = false)
    {
        if (Pin)
        {
            string? problem = Affinity.PinCurrentThread(index % Environment.ProcessorCount);
            if (problem is not null && Notices.Count < 1)
            {
                Notices.Enqueue(problem);
            }
        }

        var r = new Recorder(name, Operations.Count) { Background = background };
        lock (_recorders)
        {
            _recorders.Add(r);
        }

        return r;
    }

    /// <summary>Reports an invariant violation (thread-safe): what, on which page with its descriptor, and the seed.</summary>
    public void Violation(string what, Pfn? pfn = null)
    {
        if (Interlocked.CompareExchange(ref _firstViolationTicks, Math.Max(0, Elapsed.Ticks), -1) == -1 && StopAtFirstViolation)
        {
            StopNow();
        }

        Interlocked.Increment(ref _violationCount);
        if (_violations.Count < 20)
        {
            string page = "";
            if (pfn is { } p && Arena is { } arena)
            {
                try
                {
                    page = " " + arena.DumpPage(p);
                }
                catch (ArgumentOutOfRangeException)
                {
                }
            }

            _violations.Enqueue($"{what}{page} (seed {Seed})");
        }
    }

    /// <summary>Records a refused page operation as a violation, with the report's own page dump.</summary>
    public void Violation(PageBugException bug) =>
        Violation($"{bug.Operation}: {bug.Reason}. {bug.DescriptorDump}");
}

/// <summary>What one run measured and found.</summary>
/// <param name="Scenario">The scenario's name.</param>
/// <param name="Legacy">Whether the legacy form ran.</param>
/// <param name="Elapsed">Wall time of the workload, from the moment every thread had started.</param>
/// <param name="Violations">Invariant violations found.</param>
/// <param name="FirstViolationAt">When the first one was found, from the moment every thread had started (the time to detection).</param>
/// <param name="Statistics">The arena's contention counters at the end.</param>
/// <param name="FinalReport">The arena's <c>Verify</c> at the end, as text.</param>
/// <param name="LockWaits">Lock contentions in the process during the run (<see cref="Monitor.LockContentionCount"/>).</param>
public sealed record StressResult(
    string Scenario,
    bool Legacy,
    TimeSpan Elapsed,
    long Violations,
    TimeSpan? FirstViolationAt,
    ArenaStatistics Statistics,
    string FinalReport,
    long LockWaits);
