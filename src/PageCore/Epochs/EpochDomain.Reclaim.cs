using System.Collections.Concurrent;
using System.Runtime.ExceptionServices;
using PageCore.Legacy;

namespace PageCore;

/// <summary>The points of a reclaim pass where a test may widen the race window (<see cref="EpochDomain.WindowHook"/>).</summary>
internal enum ReclaimWindow
{
    /// <summary>The pass computed its bound and has not taken any item yet.</summary>
    AfterBound,

    /// <summary>The historical form only: an item was peeked and checked, and is about to be dequeued.</summary>
    BetweenPeekAndDequeue,
}

/// <summary>Deferred items (<c>call_rcu</c>) and the reclaim passes that run them.</summary>
public sealed partial class EpochDomain
{
    /// <summary>Every this many deferrals, the deferring thread tries a reclaim pass itself.</summary>
    private const int AutoReclaimEvery = 64;

    /// <summary>Deferred items not yet taken by a pass: any thread enqueues, only the holder of <see cref="_gate"/> dequeues.</summary>
    private readonly ConcurrentQueue<Deferred> _deferred = new();

    /// <summary>
    /// Items a pass took and found too young: held back, only ever touched by the holder of <see cref="_gate"/>, and
    /// checked again by every later pass against that pass's own bound.
    /// </summary>
    private readonly Queue<Deferred> _held = new();

    /// <summary>One reclaim pass at a time (a <see cref="Monitor"/>: re-entrant, so a callback may call Reclaim).</summary>
    private readonly object _gate = new();

    private readonly bool _legacyReclaim;

    /// <summary>A lower bound of the tags in <see cref="_held"/> (long.MinValue: unknown). Under <see cref="_gate"/>.</summary>
    private long _heldMinTag = long.MaxValue;

    /// <summary><see cref="_held"/>'s count, written under <see cref="_gate"/>, read racily by <see cref="PendingDeferred"/>.</summary>
    private int _heldCount;

    private int _pendingSinceReclaim;

    /// <summary>The first exception a callback threw in a pass nobody waited for (timer, allocation); rethrown by the next explicit call.</summary>
    private ExceptionDispatchInfo? _backgroundFailure;

    /// <summary>Deferred items not yet run (a racy sum while other threads defer and reclaim).</summary>
    public int PendingDeferred => _deferred.Count + Volatile.Read(ref _heldCount);

    /// <summary>Whether this domain runs the historical reclaim (<see cref="CreateWithLegacyReclaim"/>).</summary>
    internal bool UsesLegacyReclaim => _legacyReclaim;

    /// <summary>
    /// Tests and the race lab only: called by reclaim passes of this domain at the points of <see cref="ReclaimWindow"/>,
    /// on the reclaiming thread, to widen a race window (never on a reader's path). Null by default.
    /// </summary>
    internal Action<ReclaimWindow>? WindowHook { get; set; }

    /// <summary>The items waiting for a pass, for the historical reclaim.</summary>
    internal ConcurrentQueue<Deferred> DeferredQueue => _deferred;

    /// <summary>
    /// <c>call_rcu</c>: runs <paramref name="callback"/> once no reader that was inside a section when this was called can
    /// still be inside it. It runs on whichever thread next reclaims (see <see cref="Reclaim"/>), so it must not assume a
    /// thread, and it must not block on a lock that an allocating or deferring thread may hold.
    /// </summary>
    /// <param name="callback">What to run once no reader can still see the object.</param>
    /// <param name="state">Passed to <paramref name="callback"/>.</param>
    public void Defer(Action<object?> callback, object? state)
    {
        ArgumentNullException.ThrowIfNull(callback);
        Enqueue(new Deferred(NextTag(), callback, state, null, 0, 0));
    }

    /// <summary>
    /// Frees a block after a grace period (<c>tlb_remove_table</c> / <c>pte_free_defer</c>): <see cref="PageArena.FreePages"/>
    /// of <paramref name="pfn"/> at <paramref name="order"/>, once no reader that could still reach it remains. The
    /// domain registers with <paramref name="arena"/> (weakly), so that an allocation about to fail there reclaims it.
    /// </summary>
    /// <param name="arena">The arena that owns the block.</param>
    /// <param name="pfn">The block's head; the caller's reference is handed over.</param>
    /// <param name="order">The block's order.</param>
    public void DeferFree(PageArena arena, Pfn pfn, int order)
    {
        ArgumentNullException.ThrowIfNull(arena);
        RegisterArena(arena);
        Enqueue(new Deferred(NextTag(), null, null, arena, pfn.Value, order));
    }

    /// <summary>
    /// Runs every deferred item whose grace period has completed, without waiting for readers; returns how many ran.
    /// </summary>
    /// <remarks>
    /// <para><b>Who runs deferred items, on which thread.</b> A pass runs on: the thread that calls <see cref="Reclaim"/>,
    /// <see cref="Barrier"/> or <see cref="Dispose"/>; a thread whose <see cref="Defer"/> or <see cref="DeferFree"/> is the
    /// 64th since the last such pass (outside a section, and only if no pass is running: it never waits); a thread-pool
    /// thread of the domain's one-shot timer, armed whenever items remain after a pass or a deferral (1 ms, doubling to
    /// 256 ms while passes find nothing to run; the timer never keeps a process alive and is disposed with the domain);
    /// and a thread whose allocation is about to fail in an arena this domain deferred frees into (or an
    /// <see cref="AddressSpace"/> over it), before that allocation gives up. Callbacks therefore run on any of those
    /// threads. They may defer, and may call <see cref="Reclaim"/> (a nested pass, on the same thread).</para>
    /// <para><b>One pass at a time.</b> Passes are serialized by a lock; an explicit call waits for a running pass (inside
    /// a section of this domain it only tries, so that it cannot wait on a callback that waits for its section), the
    /// implicit ones only try. A pass takes each item off the queue before it checks it, and the item it checked is the
    /// item it runs; items too young are held back and checked again by later passes.</para>
    /// <para>An exception thrown by a callback propagates to the caller of an explicit call or of the deferral that ran
    /// the pass; one thrown on the timer or an allocation path is kept and rethrown by the next explicit call.</para>
    /// </remarks>
    /// <returns>How many deferred items ran.</returns>
    public int Reclaim()
    {
        if (_legacyReclaim)
        {
            return LegacyEpochReclaim.Reclaim(this);
        }

        ThrowBackgroundFailure();
        if (InSection)
        {
            if (!Monitor.TryEnter(_gate))
            {
                return 0;
            }
        }
        else
        {
            Monitor.Enter(_gate);
        }

        try
        {
            return Pass(SafeBound());
        }
        finally
        {
            Monitor.Exit(_gate);
            AfterPass();
        }
    }

    /// <summary>
    /// <c>rcu_barrier</c>: waits for a grace period, then runs every deferred item queued before the call (waiting for a
    /// pass in progress on another thread to end first).
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from inside a section of this domain.</exception>
    public void Barrier()
    {
        if (_legacyReclaim)
        {
            Synchronize();
            LegacyEpochReclaim.Reclaim(this);
            return;
        }

        ThrowBackgroundFailure();
        Synchronize(Timeout.InfiniteTimeSpan, out long target);
        lock (_gate)
        {
            try
            {
                // Every item deferred before the call was tagged below target (its increment preceded the grace period's),
                // and the grace period that just completed covers exactly those: no reader that announced below target is
                // still inside, and one that announced later loads after their unlinks. Either bound is enough on its own.
                Pass(Math.Max(target - 1, SafeBound()));
            }
            finally
            {
                AfterPass();
            }
        }
    }

    /// <summary>Runs every pending deferred item after a grace period, and disposes the domain's timer.</summary>
    public void Dispose()
    {
        Barrier();
        StopDriver();
    }

    /// <summary>
    /// An implicit pass (the 64th deferral, the timer, an allocation about to fail): only if no pass is running and the
    /// calling thread is not inside one already. With <paramref name="keepFailure"/>, a callback's exception is kept for
    /// the next explicit call instead of thrown here.
    /// </summary>
    /// <param name="keepFailure">Keep a callback's exception for the next explicit call instead of throwing it.</param>
    /// <param name="waitMs">How long to wait for a pass in progress on another thread (0: not at all).</param>
    internal int TryReclaim(bool keepFailure, int waitMs = 0)
    {
        if (Monitor.IsEntered(_gate) || !Monitor.TryEnter(_gate, waitMs))
        {
            return 0;
        }

        try
        {
            return Pass(SafeBound());
        }
        catch (Exception ex) when (keepFailure)
        {
            Interlocked.CompareExchange(ref _backgroundFailure, ExceptionDispatchInfo.Capture(ex), null);
            return 0;
        }
        finally
        {
            Monitor.Exit(_gate);
            AfterPass();
        }
    }

    /// <summary>
    /// The reclaim bound: every item tagged at or below it may run now. Read once per pass, and only items deferred
    /// before it was read can pass it.
    /// </summary>
    /// <remarks>
    /// <para>Order: (1) <c>limit</c> = the global epoch, an acquire load; (2) the scan fence; (3) the slots. The bound is
    /// <c>min(limit, oldest epoch announced by a live reader)</c>. An item X tagged <c>t</c> runs only if
    /// <c>t &lt;= bound</c>. Its deferrer unlinked X, then took the tag with a full-fence increment; <c>t &lt;= limit</c>
    /// means that increment is in the release sequence the acquire of (1) read from, so the unlink happens before (2).
    /// Take any reader W that could hold X:</para>
    /// <para>- its slot read 0 in (3) (not yet announced, or between sections): the chain is unlink -> increment ->
    /// limit read (1) -> fence (2) -> slot read empty (3) -> W's announce (an exchange, a full fence) -> W's load. Two
    /// full fences with a store before each and a load after: at least one load sees the other side's store; the scan
    /// did not see W's announce, so W's load sees the unlink and cannot reach X. With asymmetric announces W's store has
    /// no fence after it, and (2) is a process-wide barrier instead: it acts as a full fence on W's CPU at some point of
    /// W's program; if that point is after W's announce, the scan sees the announce; if before, every load W makes after
    /// its announce comes after the barrier and sees the unlink.</para>
    /// <para>- its slot read <c>a</c>: the bound is at most <c>a</c>, so X runs only if <c>t &lt;= a</c>; then W's
    /// announce loaded an epoch written at or after the increment that tagged X (same release sequence), so its loads see
    /// the unlink.</para>
    /// <para>Without the <c>limit</c> term, a pass that saw no reader would run items deferred after its scan (seen
    /// by no check at all): the stale bound of <see cref="LegacyEpochReclaim"/>.</para>
    /// </remarks>
    private long SafeBound()
    {
        long limit = Volatile.Read(ref _epoch.Value);
        return Math.Min(limit, OldestAnnounced());
    }

    /// <summary>The scan fence, then the smallest epoch a live reader announced, or <see cref="long.MaxValue"/> with none inside.</summary>
    internal long OldestAnnounced()
    {
        // The fence orders the caller's earlier loads (the limit, and what they synchronize with) before the slot reads.
        ScanFence();
        long min = long.MaxValue;
        for (int i = 0; i < _slots.Length; i++)
        {
            long e = Volatile.Read(ref _slots[i].Epoch);
            if (e != 0 && e < min && OwnerAlive(i))
            {
                min = e;
            }
        }

        return min;
    }

    /// <summary>
    /// One pass under <see cref="_gate"/>: the held-back items, then the queue as it stands now, each item taken, then
    /// checked against <paramref name="safe"/>, then run or held back. Bounded: items deferred during the pass (by its
    /// own callbacks or by other threads) wait for the next one, so a pass ends under any load.
    /// </summary>
    private int Pass(long safe)
    {
        WindowHook?.Invoke(ReclaimWindow.AfterBound);
        int ran = 0;
        if (safe >= _heldMinTag)
        {
            ran += RunHeld(safe);
        }

        for (int budget = _deferred.Count; budget > 0 && _deferred.TryDequeue(out Deferred d); budget--)
        {
            if (d.Tag <= safe)
            {
                d.Run();
                ran++;
            }
            else
            {
                Hold(d);
            }
        }

        if (ran > 0)
        {
            Volatile.Write(ref _driverDelayMs, MinDriverDelayMs); // progress: the timer comes back soon again
        }

        return ran;
    }

    /// <summary>
    /// Checks every held-back item against <paramref name="safe"/>. Robust to a nested pass inside a callback (same
    /// thread, same lock): every item is taken before it is checked, and the minimum tag is recomputed only once the
    /// loop completed (an exception leaves it unknown, so the next pass looks at every held item).
    /// </summary>
    private int RunHeld(long safe)
    {
        _heldMinTag = long.MinValue;
        int ran = 0;
        for (int n = _held.Count; n > 0 && _held.TryDequeue(out Deferred d); n--)
        {
            Volatile.Write(ref _heldCount, _held.Count);
            if (d.Tag <= safe)
            {
                d.Run();
                ran++;
            }
            else
            {
                Hold(d);
            }
        }

        long min = long.MaxValue;
        foreach (Deferred d in _held)
        {
            min = Math.Min(min, d.Tag);
        }

        _heldMinTag = min;
        return ran;
    }

    private void Hold(Deferred d)
    {
        _held.Enqueue(d);
        _heldMinTag = Math.Min(_heldMinTag, d.Tag);
        Volatile.Write(ref _heldCount, _held.Count);
    }

    /// <summary>After every pass (fixed form): if items remain, make sure the timer will come back for them.</summary>
    private void AfterPass()
    {
        if (PendingDeferred > 0)
        {
            ArmDriver();
        }
    }

    private void ThrowBackgroundFailure() => Interlocked.Exchange(ref _backgroundFailure, null)?.Throw();

    /// <summary>A deferral's tag: the global epoch after a full-fence increment, ordered after the caller's unlink.</summary>
    private long NextTag() => Interlocked.Increment(ref _epoch.Value);

    private void Enqueue(Deferred d)
    {
        _deferred.Enqueue(d);
        if (Interlocked.Increment(ref _pendingSinceReclaim) >= AutoReclaimEvery && !InSection)
        {
            Volatile.Write(ref _pendingSinceReclaim, 0);
            if (_legacyReclaim)
            {
                LegacyEpochReclaim.Reclaim(this);
                return;
            }

            TryReclaim(keepFailure: false);
        }
        else if (!_legacyReclaim)
        {
            ArmDriver();
        }
    }

    /// <summary>One deferred item: a callback with its state, or a block to free; <see cref="Tag"/> is its deferral's epoch.</summary>
    internal readonly record struct Deferred(long Tag, Action<object?>? Callback, object? State, PageArena? Arena, uint Pfn, int Order)
    {
        /// <summary>Runs the callback, or frees the block.</summary>
        public void Run()
        {
            if (Callback is not null)
            {
                Callback(State);
            }
            else
            {
                Arena!.FreePages(new Pfn(Pfn), Order);
            }
        }
    }
}
