using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Arena;

namespace PageCore;

/// <summary>
/// Epoch-based reclamation, the RCU of user space: read-side sections that lockless walkers enter and leave,
/// <see cref="Synchronize()"/> that waits until every reader that started before it has left (a grace period), and
/// deferred frees run after a grace period (<c>call_rcu</c>, <c>tlb_remove_table</c>).
/// </summary>
/// <remarks>
/// <para><b>Readers.</b> Each thread owns a slot padded to its own cache line. <see cref="Enter"/> announces the current
/// global epoch in the slot with <see cref="Interlocked.Exchange(ref long, long)"/>: a full fence, so the announce is
/// visible before any load the reader makes inside the section (a plain store could be reordered after those loads even
/// on x64, the use-after-free that Garnet's LightEpoch fix #2015 closed). An opt-in asymmetric mode moves that fence to
/// the reclaiming side (see the constructor). <see cref="EpochGuard.Dispose"/> clears the
/// slot with a release store, ordering every load of the section before it. Sections nest; only the outermost touches
/// the slot.</para>
/// <para><b>Grace periods.</b> <see cref="Synchronize()"/> advances the global epoch with a full-fence increment to
/// <c>e</c>, then waits until no slot holds an epoch below <c>e</c>. Whatever was unlinked before the call is then
/// unreachable: a reader that announced before the increment is waited for, and one that announces after it runs its
/// loads after the unlink.</para>
/// <para><b>Threads that exit or never return.</b> A slot whose owner thread has exited is treated as quiescent (its
/// epoch is cleared by the next grace period that meets it), so a thread that dies, even inside a section, blocks
/// nothing. A thread that stays alive inside a section (blocked, or leaking a guard) holds every later grace period:
/// <see cref="Synchronize(TimeSpan)"/> then returns false after its timeout, and deferred frees simply stay queued;
/// memory is held back, never freed early. Calling <see cref="Synchronize()"/> from inside a section of the same
/// domain would wait for itself and is refused.</para>
/// <para><b>Deferred items</b> (<see cref="Defer"/>, <see cref="DeferFree"/>) and the threads that run them: see
/// <see cref="Reclaim"/>.</para>
/// </remarks>
public sealed partial class EpochDomain : IDisposable
{
    private const int SlotSize = CacheLine.PaddedSize;

    [ThreadStatic] private static ThreadState? t_state;

    private readonly Slot[] _slots;
    private readonly Thread?[] _owners;
    private readonly bool _asymmetric;
    private PaddedEpoch _epoch;

    /// <summary>Creates a domain with room for <paramref name="maxThreads"/> reader threads at a time.</summary>
    /// <param name="maxThreads">Slots (threads that may be registered at once), 1..65536. Default 1024.</param>
    /// <param name="asymmetricAnnounce">
    /// False (the default): readers announce with a full fence (<see cref="Interlocked.Exchange(ref long, long)"/>).
    /// True: readers announce with a release store only, and every grace period and reclaim pays a process-wide barrier
    /// (<see cref="Interlocked.MemoryBarrierProcessWide"/>, a <c>membarrier</c>) instead, the user-space RCU of liburcu's
    /// "memb" flavour: cheaper sections, dearer grace periods. Both are correct; the plain store that Garnet's LightEpoch
    /// once used was wrong only because nothing on the reclaiming side made up for the missing fence. Honoured only
    /// where that barrier is known to run on every CPU (<see cref="ProcessBarrier.HandOver"/>); elsewhere the domain
    /// announces with a full fence, as with false. <see cref="AsymmetricAnnounce"/> tells which.
    /// </param>
    public EpochDomain(int maxThreads = 1024, bool asymmetricAnnounce = false)
        : this(maxThreads, asymmetricAnnounce, forceSymmetric: false, legacyReclaim: false)
    {
    }

    /// <summary>
    /// Creates a domain. <paramref name="forceSymmetric"/> (tests) announces with a full fence even where the asymmetric
    /// form is trusted. With <paramref name="legacyReclaim"/>, deferred items are reclaimed by the historical, broken
    /// algorithm (<see cref="Legacy.LegacyEpochReclaim"/>: a stale bound, peek then dequeue, no driver), for the race lab
    /// and the tests only. Never the default: see <see cref="CreateWithLegacyReclaim"/>.
    /// </summary>
    internal EpochDomain(int maxThreads, bool asymmetricAnnounce, bool forceSymmetric, bool legacyReclaim = false)
    {
        _asymmetric = asymmetricAnnounce && ProcessBarrier.Resolve(forceSymmetric) == HandOverForm.Asymmetric;
        _legacyReclaim = legacyReclaim;
        ArgumentOutOfRangeException.ThrowIfLessThan(maxThreads, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(maxThreads, 65536);
        _slots = GC.AllocateArray<Slot>(maxThreads, pinned: true);
        _owners = new Thread?[maxThreads];
        _epoch.Value = 1;
    }

    /// <summary>
    /// A domain whose <see cref="Reclaim"/> is the historical, broken one (<see cref="Legacy.LegacyEpochReclaim"/>), for the
    /// race lab (<c>epoch-reclaim --legacy</c>, <c>--legacy-reclaim</c>) and the tests that show it caught.
    /// </summary>
    internal static EpochDomain CreateWithLegacyReclaim(int maxThreads = 1024, bool asymmetricAnnounce = false) =>
        new(maxThreads, asymmetricAnnounce, forceSymmetric: false, legacyReclaim: true);

    /// <summary>The current global epoch (starts at 1; advanced by every grace period and deferral).</summary>
    public long CurrentEpoch => Volatile.Read(ref _epoch.Value);

    /// <summary>
    /// Whether readers announce with a release store and the reclaiming side with a process-wide barrier: true only when
    /// the domain was created with <c>asymmetricAnnounce</c> and <see cref="ProcessBarrier.HandOver"/> is
    /// <see cref="HandOverForm.Asymmetric"/>.
    /// </summary>
    public bool AsymmetricAnnounce => _asymmetric;

    /// <summary>
    /// <c>rcu_read_lock</c>: enters a read-side section; dispose the guard to leave it (<c>rcu_read_unlock</c>). Memory
    /// unlinked after the section started is not reclaimed until it ends.
    /// </summary>
    /// <returns>The guard; dispose it on the same thread.</returns>
    /// <exception cref="InvalidOperationException">More threads than slots are inside this domain.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public EpochGuard Enter()
    {
        ThreadState? s = t_state;
        if (s is null || s.Domain != this)
        {
            s = Register();
        }

        if (s.Depth++ == 0)
        {
            Announce(ref _slots[s.Slot].Epoch);
        }

        return new EpochGuard(this, s);
    }

    /// <summary>
    /// The reader's announce (<c>rcu_read_lock</c>): the current global epoch into the reader's slot.
    /// </summary>
    /// <remarks>
    /// Keeps the grace-period invariant: a grace period that starts after the announce is visible waits for this reader;
    /// one that started before it has its unlinks visible to this reader's loads. Default: a full fence
    /// (<see cref="Interlocked.Exchange(ref long, long)"/>), so no load of the section can be performed before the slot is
    /// visible. Asymmetric: a release store, and the reclaiming side's process-wide barrier supplies the store-load
    /// order (see <see cref="ScanFence"/>).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Announce(ref long slot)
    {
        long e = Volatile.Read(ref _epoch.Value);
        if (_asymmetric)
        {
            Volatile.Write(ref slot, e);
        }
        else
        {
            Interlocked.Exchange(ref slot, e);
        }
    }

    /// <summary>
    /// The reclaiming side's fence before it scans the slots. With full-fence announces a local full fence suffices;
    /// with asymmetric announces it is a process-wide barrier: after it, every reader's announce made before it is
    /// visible, and every reader load after it sees what was unlinked before it.
    /// </summary>
    /// <remarks>
    /// What <see cref="Interlocked.MemoryBarrierProcessWide"/> is assumed to do here: run a full barrier on every CPU
    /// that runs a thread of the process, between two instructions of whatever runs there, before it returns (Linux's
    /// expedited <c>membarrier</c>, Windows' <c>FlushProcessWriteBuffers</c>, Apple's register snapshot). A reader whose
    /// release-store announce and first load of the section straddle that point is then fenced between them. The
    /// runtime's <c>mprotect</c> fallback does not promise that, so there the domain never takes this path
    /// (<see cref="AsymmetricAnnounce"/> is false).
    /// </remarks>
    private void ScanFence()
    {
        if (_asymmetric)
        {
            Interlocked.MemoryBarrierProcessWide();
        }
        else
        {
            Interlocked.MemoryBarrier();
        }
    }

    /// <summary>Whether the calling thread is inside a section of this domain.</summary>
    /// <remarks>
    /// A thread keeps one registration per domain it used, newest first, and <see cref="Enter"/> finds an older one
    /// without moving it to the front: after sections of A, then B, a thread inside A again has B's registration first.
    /// The whole list is searched, so that <see cref="Synchronize()"/>, <see cref="Barrier"/> and <c>Dispose</c> called
    /// inside a section of this domain are refused rather than waiting for the calling thread itself.
    /// </remarks>
    public bool InSection
    {
        get
        {
            for (ThreadState? s = t_state; s is not null; s = s.Next)
            {
                if (s.Domain == this)
                {
                    return s.Depth > 0;
                }
            }

            return false;
        }
    }

    /// <summary>
    /// <c>synchronize_rcu</c>: returns after every reader that was inside a section when it was called has left.
    /// </summary>
    /// <exception cref="InvalidOperationException">Called from inside a section of this domain.</exception>
    public void Synchronize() => Synchronize(Timeout.InfiniteTimeSpan);

    /// <summary><see cref="Synchronize()"/> that gives up after <paramref name="timeout"/> (a reader stuck inside a section).</summary>
    /// <param name="timeout">How long to wait, or <see cref="Timeout.InfiniteTimeSpan"/>.</param>
    /// <returns>True when the grace period completed; false on timeout (nothing was reclaimed early).</returns>
    public bool Synchronize(TimeSpan timeout)
    {
        return Synchronize(timeout, out _);
    }

    /// <summary>
    /// A grace period: advances the global epoch to <paramref name="target"/> with a full-fence increment, then waits
    /// until no live reader holds an epoch below it. On true, every item tagged below <paramref name="target"/> (deferred
    /// before the call) is unreachable to every reader (see <see cref="Barrier"/>).
    /// </summary>
    private bool Synchronize(TimeSpan timeout, out long target)
    {
        if (InSection)
        {
            throw new InvalidOperationException("PageCore: Synchronize was called inside a read-side section of the same domain; it would wait for itself.");
        }

        target = Interlocked.Increment(ref _epoch.Value);
        ScanFence();
        return WaitForReadersBefore(target, timeout);
    }

    internal void Exit(ThreadState s)
    {
        if (--s.Depth == 0)
        {
            // rcu_read_unlock: a release store, so every load of the section completes before the slot reads empty.
            Volatile.Write(ref _slots[s.Slot].Epoch, 0L);
        }
        else if (s.Depth < 0)
        {
            s.Depth = 0;
            throw new InvalidOperationException("PageCore: an epoch guard was disposed twice or on another thread.");
        }
    }

    private bool WaitForReadersBefore(long target, TimeSpan timeout)
    {
        long deadline = timeout == Timeout.InfiniteTimeSpan ? long.MaxValue : Environment.TickCount64 + (long)timeout.TotalMilliseconds;
        for (int i = 0; i < _slots.Length; i++)
        {
            var spin = new SpinWait();
            while (true)
            {
                long e = Volatile.Read(ref _slots[i].Epoch);
                if (e == 0 || e >= target)
                {
                    break;
                }

                if (!OwnerAlive(i))
                {
                    // The reader's thread exited (possibly inside a section): it can read nothing any more.
                    Interlocked.CompareExchange(ref _slots[i].Epoch, 0L, e);
                    break;
                }

                if (Environment.TickCount64 > deadline)
                {
                    return false;
                }

                spin.SpinOnce();
            }
        }

        return true;
    }

    private bool OwnerAlive(int slot) => Volatile.Read(ref _owners[slot]) is not { IsAlive: false };

    private ThreadState Register()
    {
        for (ThreadState? s = t_state; s is not null; s = s.Next)
        {
            if (s.Domain == this)
            {
                return s;
            }
        }

        Thread me = Thread.CurrentThread;
        for (int i = 0; i < _owners.Length; i++)
        {
            Thread? owner = Volatile.Read(ref _owners[i]);
            if ((owner is null || !owner.IsAlive) && Interlocked.CompareExchange(ref _owners[i], me, owner) == owner)
            {
                Volatile.Write(ref _slots[i].Epoch, 0L);
                var created = new ThreadState(this, i) { Next = t_state };
                t_state = created;
                return created;
            }
        }

        throw new InvalidOperationException($"PageCore: more than {_slots.Length} threads use this epoch domain at once; create it with a larger maxThreads.");
    }

    /// <summary>One reader slot, alone on its cache line.</summary>
    [StructLayout(LayoutKind.Explicit, Size = SlotSize)]
    private struct Slot
    {
        /// <summary>0 outside a section; else the global epoch announced on entry. Written by its owner (exchange to
        /// announce, release store to leave) and by a grace period clearing the slot of an exited thread (CAS).</summary>
        [FieldOffset(0)] public long Epoch;
    }

    /// <summary>The global epoch, padded.</summary>
    [StructLayout(LayoutKind.Explicit, Size = 3 * CacheLine.PaddedSize)]
    private struct PaddedEpoch
    {
        [FieldOffset(CacheLine.PaddedSize)] public long Value;
    }

    /// <summary>A thread's registration with one domain.</summary>
    internal sealed class ThreadState(EpochDomain domain, int slot)
    {
        public readonly EpochDomain Domain = domain;
        public readonly int Slot = slot;
        public int Depth;
        public ThreadState? Next;
    }
}

/// <summary>A read-side section of an <see cref="EpochDomain"/>; dispose it to leave (<c>rcu_read_unlock</c>).</summary>
public readonly struct EpochGuard : IDisposable
{
    private readonly EpochDomain? _domain;
    private readonly EpochDomain.ThreadState? _state;

    internal EpochGuard(EpochDomain domain, EpochDomain.ThreadState state)
    {
        _domain = domain;
        _state = state;
    }

    /// <summary>Leaves the section (the outermost one clears the thread's slot with a release store).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Dispose()
    {
        if (_state is not null)
        {
            _domain!.Exit(_state);
        }
    }
}
