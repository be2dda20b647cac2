using System.Text;

namespace PageCore.Systematic;

/// <summary>How a controlled run ended.</summary>
internal enum RunOutcome
{
    /// <summary>Every thread finished and the final check (if any) passed.</summary>
    Completed,

    /// <summary>A thread threw, or the final check reported a violation.</summary>
    Violation,

    /// <summary>Every live thread waits for a lock another one holds: none can progress.</summary>
    Deadlock,

    /// <summary>The run passed its step bound: a livelock (threads spinning on each other) or a bound set too low.</summary>
    StepBound,
}

/// <summary>The result of one controlled run (one schedule).</summary>
/// <param name="Outcome">How the run ended.</param>
/// <param name="Message">The violation, deadlock or bound, in one paragraph; empty when completed.</param>
/// <param name="Steps">Schedule points passed.</param>
/// <param name="Trace">The last schedule points before the end, oldest first: step, thread, the operation it is about to
/// make and where; "paused, X runs" when the scheduler switched there (the operation is made when the thread runs again).</param>
/// <param name="Strategy">The strategy and its seed (what reproduces the run).</param>
internal sealed record RunResult(RunOutcome Outcome, string Message, long Steps, IReadOnlyList<string> Trace, string Strategy)
{
    /// <summary>Whether the run found nothing wrong.</summary>
    public bool Completed => Outcome == RunOutcome.Completed;

    /// <inheritdoc/>
    public override string ToString()
    {
        var text = new StringBuilder($"{Outcome} after {Steps} steps ({Strategy})");
        if (Message.Length > 0)
        {
            text.Append(": ").Append(Message);
        }

        foreach (string step in Trace)
        {
            text.AppendLine().Append("  ").Append(step);
        }

        return text.ToString();
    }
}

/// <summary>
/// A controlled scheduler (CHESS, Coyote, loom, shuttle): the logical threads of a run are real threads, but exactly
/// one of them runs at a time, and at every <see cref="SchedulePoint"/> the <see cref="ScheduleStrategy"/> chooses who
/// runs next. Given the strategy's seed, and code whose only nondeterminism is the interleaving at those points, a run
/// is a function of the seed: a violation found with a seed is found again with it, step for step.
/// </summary>
/// <remarks>
/// <para><b>Hand-over.</b> Every logical thread waits on a semaphore of its own. The running thread, at a point, picks
/// the next thread; if it is another, it releases that thread's semaphore and then waits on its own. Releasing a
/// semaphore and returning from a wait are full fences, so whatever the previous thread stored is visible to the next:
/// a controlled run explores interleavings under sequential consistency (weak-memory behaviour is the GenMC clients'
/// business, <c>native/weak</c>).</para>
/// <para><b>Locks</b> taken through <see cref="Atomic.Enter"/> are owned here: a thread that finds one held is blocked
/// (never chosen) until its owner leaves. When no live thread is enabled the run is a deadlock.</para>
/// <para><b>Ends.</b> A thread that throws ends the run as a violation; so does the final check. Every other thread is
/// then woken with an exception that unwinds it at its next point. A run that passes its step bound ends the same way,
/// as does one whose threads stop reaching points (a blocking call the layer does not know): after
/// <see cref="HangTimeout"/> the run reports it.</para>
/// </remarks>
internal sealed class ControlledScheduler
{
    /// <summary>The longest a run may wait for its running thread to reach a point or end before reporting a hang.</summary>
    public static readonly TimeSpan HangTimeout = TimeSpan.FromSeconds(30);

    private const int TraceLength = 24;

    [ThreadStatic] private static LogicalThread? t_current;

    private readonly ScheduleStrategy _strategy;
    private readonly long _maxSteps;
    private readonly List<LogicalThread> _threads = [];
    private readonly Dictionary<object, (LogicalThread Owner, int Depth)> _locks = new(ReferenceEqualityComparer.Instance);
    private readonly string[] _trace = new string[TraceLength];
    private readonly ManualResetEventSlim _ended = new(false);
    private readonly object _endGate = new();
    private long _steps;
    private int _alive;
    private RunOutcome _outcome = RunOutcome.Completed;
    private string _message = "";
    private volatile bool _aborted;

    private ControlledScheduler(ScheduleStrategy strategy, long maxSteps)
    {
        _strategy = strategy;
        _maxSteps = maxSteps;
    }

    /// <summary>Whether the calling thread is a logical thread of a controlled run.</summary>
    internal static bool InRun => Volatile.Read(ref s_activeRuns) != 0 && t_current is not null;

    /// <summary>
    /// Runs <paramref name="threads"/> as logical threads under <paramref name="strategy"/>, at most
    /// <paramref name="maxSteps"/> schedule points, then <paramref name="finalCheck"/> (a violation's text, or null).
    /// </summary>
    public static RunResult Run(ScheduleStrategy strategy, long maxSteps, IReadOnlyList<(string Name, Action Body)> threads, Func<string?>? finalCheck = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads.Count, 1);
        if (!SchedulePoint.Enabled)
        {
            throw new InvalidOperationException("Schedule points are off in this process: set the runtime switch PageCore.Systematic.Enabled (or PAGECORE_SYSTEMATIC=1) before PageCore is first used.");
        }

        var scheduler = new ControlledScheduler(strategy, maxSteps);
        Interlocked.Increment(ref s_activeRuns);
        try
        {
            return scheduler.Execute(threads, finalCheck);
        }
        finally
        {
            Interlocked.Decrement(ref s_activeRuns);
        }
    }

    /// <summary>
    /// Controlled runs under way in the process. While it is 0 a point costs one static load, not a thread-static
    /// lookup: real-thread runs in a process with the switch on (the test process) keep their timing.
    /// </summary>
    private static int s_activeRuns;

    /// <summary>A schedule point of the calling thread, if it is a logical thread of a run (see <see cref="SchedulePoint.At"/>).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal static void Point(PointKind kind, string member, int line)
    {
        if (Volatile.Read(ref s_activeRuns) != 0 && t_current is { } me)
        {
            me.Scheduler.Step(me, kind, member, line);
        }
    }

    /// <summary>A lock acquisition by a logical thread (see <see cref="Atomic.Enter"/>).</summary>
    internal static void EnterLock(object gate, string member, int line)
    {
        LogicalThread me = t_current!;
        ControlledScheduler s = me.Scheduler;
        s.Step(me, PointKind.LockEnter, member, line);
        while (s._locks.TryGetValue(gate, out var held) && held.Owner != me)
        {
            me.BlockedOn = gate;
            me.BlockedAt = $"{member}:{line}";
            s.SwitchAway(me);
        }

        s._locks[gate] = s._locks.TryGetValue(gate, out var mine) ? (me, mine.Depth + 1) : (me, 1);
        Monitor.Enter(gate); // free for this thread: no other logical thread holds it, and only one runs
    }

    /// <summary>A lock release by a logical thread (see <see cref="Atomic.Exit"/>).</summary>
    internal static void ExitLock(object gate, string member, int line)
    {
        LogicalThread me = t_current!;
        ControlledScheduler s = me.Scheduler;
        Monitor.Exit(gate);
        if (s._locks.TryGetValue(gate, out var held) && held.Owner == me)
        {
            if (held.Depth > 1)
            {
                s._locks[gate] = (me, held.Depth - 1);
            }
            else
            {
                s._locks.Remove(gate);
                foreach (LogicalThread t in s._threads)
                {
                    if (ReferenceEquals(t.BlockedOn, gate))
                    {
                        t.BlockedOn = null;
                    }
                }
            }
        }

        s.Step(me, PointKind.LockExit, member, line);
    }

    private RunResult Execute(IReadOnlyList<(string Name, Action Body)> bodies, Func<string?>? finalCheck)
    {
        _strategy.Start(bodies.Count);
        for (int i = 0; i < bodies.Count; i++)
        {
            _threads.Add(new LogicalThread(this, i, bodies[i].Name));
        }

        _alive = bodies.Count;
        var real = new List<Thread>();
        for (int i = 0; i < bodies.Count; i++)
        {
            LogicalThread lt = _threads[i];
            Action body = bodies[i].Body;
            var thread = new Thread(() => Body(lt, body)) { IsBackground = true, Name = lt.Name };
            real.Add(thread);
            thread.Start();
        }

        // The first thread the strategy picks starts the run.
        _threads[Choose(current: -1, PointKind.Read)].Turn.Release();
        while (!_ended.Wait(HangTimeout))
        {
            long before = Interlocked.Read(ref _steps);
            if (!_ended.Wait(HangTimeout) && Interlocked.Read(ref _steps) == before)
            {
                Abort(RunOutcome.StepBound, $"no schedule point reached for {2 * HangTimeout.TotalSeconds:F0} s: a thread blocks outside the schedule points (a wait the layer does not know)");
                break;
            }
        }

        foreach (Thread t in real)
        {
            t.Join(HangTimeout);
        }

        if (_outcome == RunOutcome.Completed && finalCheck?.Invoke() is { } violation)
        {
            _outcome = RunOutcome.Violation;
            _message = "final check: " + violation;
        }

        return new RunResult(_outcome, _message, _steps, TraceSnapshot(), _strategy.Description);
    }

    private void Body(LogicalThread me, Action body)
    {
        t_current = me;
        try
        {
            me.Turn.Wait();
            if (!_aborted)
            {
                body();
            }
        }
        catch (RunAborted)
        {
            // unwound by the end of the run
        }
        catch (Exception ex)
        {
            Abort(RunOutcome.Violation, $"{me.Name} threw {ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            t_current = null;
            Finish(me);
        }
    }

    /// <summary>The running thread passes a point: counted, traced, bounded; then the strategy may switch.</summary>
    private void Step(LogicalThread me, PointKind kind, string member, int line)
    {
        if (_aborted)
        {
            throw new RunAborted();
        }

        long step = ++_steps;
        _trace[step % TraceLength] = $"step {step}: {me.Name} {kind} at {member}:{line}";
        if (step > _maxSteps)
        {
            Abort(RunOutcome.StepBound, $"the run passed its bound of {_maxSteps} steps: a livelock (threads spinning on each other), or a bound too low for the program");
            throw new RunAborted();
        }

        int next = Choose(me.Index, kind);
        if (next != me.Index)
        {
            // The trace says who runs instead: this thread's operation is made only when it is chosen again.
            _trace[step % TraceLength] += $"; paused, {_threads[next].Name} runs";
            HandOver(me, _threads[next]);
        }
    }

    /// <summary>The running thread cannot go on (blocked on a lock): another enabled thread runs, or the run is a deadlock.</summary>
    private void SwitchAway(LogicalThread me)
    {
        if (!_threads.Any(t => t.Enabled))
        {
            Abort(RunOutcome.Deadlock, "no thread can progress: " + string.Join("; ", _threads.Where(t => !t.Done).Select(Describe)));
            throw new RunAborted();
        }

        HandOver(me, _threads[Choose(current: -1, PointKind.LockEnter)]);
    }

    private void HandOver(LogicalThread from, LogicalThread to)
    {
        to.Turn.Release();
        from.Turn.Wait();
        if (_aborted)
        {
            throw new RunAborted();
        }
    }

    private int Choose(int current, PointKind kind)
    {
        Span<int> enabled = stackalloc int[_threads.Count];
        int n = 0;
        foreach (LogicalThread t in _threads)
        {
            if (t.Enabled)
            {
                enabled[n++] = t.Index;
            }
        }

        return _strategy.Next(enabled[..n], current, kind, _steps);
    }

    /// <summary>A logical thread ended (or was unwound): the next one runs, or the run ends.</summary>
    private void Finish(LogicalThread me)
    {
        lock (_endGate)
        {
            me.Done = true;
            _alive--;
            if (_aborted)
            {
                if (_alive == 0)
                {
                    _ended.Set();
                }

                return;
            }

            if (_alive == 0)
            {
                _ended.Set();
                return;
            }
        }

        if (!_threads.Any(t => t.Enabled))
        {
            Abort(RunOutcome.Deadlock, "no thread can progress: " + string.Join("; ", _threads.Where(t => !t.Done).Select(Describe)));
            return;
        }

        _threads[Choose(current: -1, PointKind.Read)].Turn.Release();
    }

    /// <summary>Ends the run with <paramref name="outcome"/> (the first end wins) and wakes every waiting thread to unwind.</summary>
    private void Abort(RunOutcome outcome, string message)
    {
        lock (_endGate)
        {
            if (_aborted)
            {
                return;
            }

            _outcome = outcome;
            _message = message;
            _aborted = true;
            if (_alive == 0)
            {
                _ended.Set();
            }
        }

        foreach (LogicalThread t in _threads)
        {
            if (!t.Done && t.Turn.CurrentCount == 0)
            {
                try
                {
                    t.Turn.Release();
                }
                catch (SemaphoreFullException)
                {
                    // released meanwhile by a hand-over that was under way (an abort for a hang, from the controller)
                }
            }
        }
    }

    private string Describe(LogicalThread t)
    {
        if (t.BlockedOn is { } gate && _locks.TryGetValue(gate, out var held))
        {
            return $"{t.Name} waits at {t.BlockedAt} for a lock held by {held.Owner.Name}";
        }

        return $"{t.Name} is runnable";
    }

    private string[] TraceSnapshot()
    {
        long last = _steps;
        long first = Math.Max(1, last - TraceLength + 1);
        var steps = new List<string>();
        for (long s = first; s <= last; s++)
        {
            if (_trace[s % TraceLength] is { } line)
            {
                steps.Add(line);
            }
        }

        return [.. steps];
    }

    /// <summary>Thrown inside a logical thread at its next point once the run has ended, to unwind it.</summary>
    private sealed class RunAborted : Exception
    {
    }

    /// <summary>A logical thread: its real thread waits on <see cref="Turn"/> whenever another one runs.</summary>
    private sealed class LogicalThread(ControlledScheduler scheduler, int index, string name)
    {
        public ControlledScheduler Scheduler { get; } = scheduler;

        public int Index { get; } = index;

        public string Name { get; } = name;

        public SemaphoreSlim Turn { get; } = new(0, 1);

        public bool Done { get; set; }

        public object? BlockedOn { get; set; }

        public string BlockedAt { get; set; } = "";

        public bool Enabled => !Done && BlockedOn is null;
    }
}
