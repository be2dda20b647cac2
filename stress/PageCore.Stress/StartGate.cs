namespace PageCore.Stress;

/// <summary>
/// The start barrier of one run: every thread of the run checks in once it is running and enlisted; the last one to
/// check in starts the run's clock (<see cref="StressContext.Start"/>) and opens the gate, and no thread passes the gate
/// before that. A run's duration therefore counts from the moment all of its threads exist and can work, however long
/// creating them took (a slow platform, an emulator, a loaded machine).
/// </summary>
internal sealed class StartGate : IDisposable
{
    // A kernel-style event, not a ManualResetEventSlim: Set wakes every waiter on its own wait object, where a slim
    // event's waiters must each reacquire one shared lock on the way out of Monitor.Wait. With a thousand threads on two
    // cores beside threads already spinning, that chain of reacquisitions took minutes before the last thread passed.
    private readonly ManualResetEvent _open = new(false);
    private readonly Action _onOpen;
    private int _pending;

    /// <summary>A gate for <paramref name="threads"/> threads; with none, <paramref name="onOpen"/> runs at once.</summary>
    public StartGate(int threads, Action onOpen)
    {
        _onOpen = onOpen;
        _pending = threads;
        if (threads == 0)
        {
            Open();
        }
    }

    /// <summary>Checks the calling thread in, then waits until every thread has.</summary>
    /// <remarks>
    /// Interlocked.Decrement is a full fence and returns each count once, so exactly one thread sees zero and opens the
    /// gate. That thread's stores in <c>onOpen</c> (the deadline) come before <see cref="EventWaitHandle.Set()"/>, and a
    /// wait on the event returns only after it observed the set state; the wait subsystem takes a lock on both sides,
    /// which orders the waiter's later loads after those stores on any architecture.
    /// </remarks>
    public void CheckInAndWait()
    {
        if (Interlocked.Decrement(ref _pending) == 0)
        {
            Open();
        }

        _open.WaitOne();
    }

    /// <summary>Threads that have not checked in yet.</summary>
    public int Pending => Math.Max(0, Volatile.Read(ref _pending));

    /// <summary>Waits until the gate is open (every thread checked in), at most <paramref name="timeout"/>.</summary>
    /// <returns>Whether the gate is open.</returns>
    public bool Wait(TimeSpan timeout) => _open.WaitOne(timeout);

    /// <inheritdoc />
    public void Dispose() => _open.Dispose();

    private void Open()
    {
        _onOpen();
        _open.Set();
    }
}
