using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Allocator;
using PageCore.Arena;
using PageCore.Descriptors;
using PageCore.Diagnostics;

namespace PageCore.PerCpu;

/// <summary>
/// The caches in front of the shared <see cref="FrameAllocator"/> for orders 0..3 (the kernel's <c>per_cpu_pages</c>):
/// a per-thread <see cref="Magazine"/> with no atomic instruction on a hit, and behind it a per-CPU depot of whole
/// batches, each batch one word exchanged atomically.
/// </summary>
/// <remarks>
/// <para><b>Depot.</b> For each CPU and order there are <see cref="DepotSlots"/> slots. A slot is 0 (empty) or one
/// batch: <c>(count &lt;&lt; 32) | (first PFN + 1)</c>, the pages chained through <see cref="PageDescriptor.Next"/>. A
/// batch is published with a CAS from 0 (after its links were written: the CAS is a full fence) and taken whole with an
/// <see cref="Interlocked.Exchange(ref long, long)"/> (a full fence, so the taker sees the links). A chain belongs to
/// whoever took it; no ABA is possible because nobody reads a chain it has not taken.</para>
/// <para><b>CPU ids are hints.</b> <see cref="Thread.GetCurrentProcessorId"/> picks the depot to try first. A thread
/// that migrates right after reading it uses another CPU's depot; that costs locality, never correctness, because every
/// depot operation is a single atomic word operation that any thread may perform.</para>
/// <para><b>Batching.</b> A magazine that runs dry takes one batch from a depot or claims a batch from the shared
/// allocator with one CAS per bitfield word (<see cref="FrameAllocator.AllocBulk"/>); a full magazine moves its oldest
/// batch to a depot, or back to the shared allocator when every depot slot is full.</para>
/// <para><b>Cached blocks keep one reference.</b> A block in a magazine or a depot is owned by the cache: its head has
/// <see cref="PageFlags.Cached"/> and refcount 1, the cache's reference, exactly as page_pool keeps its recycled pages
/// (<c>page_pool_recycle_in_cache</c> when <c>page_ref_count(page) == 1</c>). A free by a caller that holds the only
/// reference hands that reference to the cache, and an allocation hands it back, so the hit path has no atomic
/// instruction at all. A speculative getter may take a reference on a cached block (and must recheck identity, as
/// always); a cache that gives a block back to the shared allocator drops its reference with a real put, and when a
/// speculative holder is still there, that holder's last put frees the block. The blocks the shared allocator holds
/// are free in the kernel's sense: refcount 0.</para>
/// </remarks>
internal sealed unsafe partial class PageCaches : IDisposable
{
    /// <summary>Orders that are cached: 0..3 (<c>PAGE_ALLOC_COSTLY_ORDER</c>).</summary>
    public const int Orders = 4;

    /// <summary>Depot slots per CPU and order.</summary>
    public const int DepotSlots = 8;

    /// <summary>Returned instead of a PFN when no block was found (never a valid PFN: see <see cref="PageArenaOptions.Pages"/>).</summary>
    public const uint NoPage = uint.MaxValue;

    [ThreadStatic] private static Magazine? t_magazine;
    [ThreadStatic] private static Magazine? t_magazines;

    private readonly PageArena _arena;
    private readonly FrameAllocator _core;
    private readonly PageDescriptor* _desc;
    private readonly int _batch0;
    private readonly int _stride;
    private readonly int _cpuCount;
    private readonly int _cpuStride;
    private readonly NativeRegion _depotRegion;
    private readonly long* _depot;
    private readonly ContentionCounters? _counters;
    private Magazine[] _magazines = [];
    private readonly long[] _retiredCounts = new long[3 * Orders];
    private int _stealer;

    /// <summary>
    /// Allocations of this arena now inside their reclaim before failing (<see cref="EnterPressure"/>). While above 0,
    /// refills from the shared allocator take one block instead of a batch. Written by those allocations only, read
    /// on the refill slow path only.
    /// </summary>
    private int _pressure;
    private volatile bool _disposed;
    private readonly bool _symmetric;
    private readonly bool _legacyNoRemoteBarrier;

    /// <summary>Creates the caches.</summary>
    /// <param name="arena">The arena, for bug reports.</param>
    /// <param name="core">The shared allocator behind the caches.</param>
    /// <param name="descriptors">The descriptor array (for batch links).</param>
    /// <param name="batch">Order-0 pages per batch; order <c>o</c> moves <c>max(1, batch &gt;&gt; o)</c> blocks.</param>
    /// <param name="counters">Where refills and spills are counted, or null.</param>
    /// <param name="handOver">How the magazines' hand-over to a stealer is fenced (see <see cref="Magazine"/>).</param>
    /// <param name="legacyNoRemoteBarrier">Tests only: the broken <see cref="Legacy.LegacyHandOver"/> stealer.</param>
    public PageCaches(PageArena arena, FrameAllocator core, PageDescriptor* descriptors, int batch, ContentionCounters? counters, HandOverForm handOver, bool legacyNoRemoteBarrier = false)
    {
        _symmetric = handOver == HandOverForm.Symmetric;
        _legacyNoRemoteBarrier = legacyNoRemoteBarrier;
        _counters = counters;
        _arena = arena;
        _core = core;
        _desc = descriptors;
        _batch0 = batch;
        _stride = 2 * batch;
        _cpuCount = Math.Max(1, Environment.ProcessorCount);
        int perCpu = Orders * DepotSlots * sizeof(long);
        int padded = (perCpu + CacheLine.PaddedSize - 1) / CacheLine.PaddedSize * CacheLine.PaddedSize;
        _cpuStride = padded / sizeof(long);
        _depotRegion = NativeRegion.Reserve((nuint)(padded * _cpuCount), (nuint)CacheLine.PaddedSize, adviseHugePages: false);
        _depot = (long*)_depotRegion.Pointer;
    }

    /// <summary>
    /// How the magazines' hand-over is fenced. <see cref="HandOverForm.Symmetric"/>: the owner's operations run
    /// <see cref="EnterSymmetric"/> and never the inlined <see cref="TryPop"/>/<see cref="TryPush"/> (the arena keeps
    /// these caches off its fast path), and the stealer fences locally.
    /// </summary>
    public HandOverForm HandOver => _symmetric ? HandOverForm.Symmetric : HandOverForm.Asymmetric;

    /// <summary>Blocks of order <paramref name="order"/> moved per batch.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Batch(int order) => Math.Max(1, _batch0 >> order);

    /// <summary>Blocks of order <paramref name="order"/> a magazine holds at most (two batches).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int Capacity(int order) => Math.Max(2, _stride >> order);

    /// <summary>Magazines registered: threads' (live, or exited and not yet drained) and pools'.</summary>
    public int MagazineCount => Volatile.Read(ref _magazines).Length;

    /// <summary>Free pages held in magazines and depots (a racy sum; exact when quiescent).</summary>
    public long CachedPages
    {
        get
        {
            long total = 0;
            foreach (Magazine m in Volatile.Read(ref _magazines))
            {
                for (int o = 0; o < Orders; o++)
                {
                    total += (long)(Volatile.Read(ref m.Hot.Count(o)) + (Volatile.Read(ref m.Hot.Top(o)) != NoPage ? 1 : 0)) << o;
                }
            }

            for (int cpu = 0; cpu < _cpuCount; cpu++)
            {
                for (int o = 0; o < Orders; o++)
                {
                    long* slots = DepotOf(cpu, o);
                    for (int s = 0; s < DepotSlots; s++)
                    {
                        total += (Volatile.Read(ref slots[s]) >> 32) << o;
                    }
                }
            }

            return total;
        }
    }

    /// <summary>The calling thread's magazine for these caches, if it has one yet (one thread-local read).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Magazine? ThreadMagazine()
    {
        Magazine? m = t_magazine;
        return m is not null && m.Owner == this ? m : null;
    }

    /// <summary>
    /// The calling thread's most recently used magazine, for whichever caches (its <see cref="Magazine.Owner"/> says which),
    /// or null: one thread-local read and nothing else. The read does not depend on any argument, so a caller can make
    /// it first and unconditionally: in a loop, the JIT then computes the thread-static base once, before the loop (it is
    /// invariant for the thread running the loop), as a C compiler hoists a thread-local address.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Magazine? LastThreadMagazine() => t_magazine;

    /// <summary>
    /// The magazine hit path of an allocation, asymmetric form: pops a cache-owned block of <paramref name="order"/>
    /// (0..3; flags <see cref="PageFlags.Cached"/>, refcount &gt;= 1) with no atomic instruction and no fence.
    /// <see cref="NoPage"/> when the magazine is empty or a stealer holds it. Only for caches whose
    /// <see cref="HandOver"/> is <see cref="HandOverForm.Asymmetric"/>; <see cref="OwnerPop"/> picks the form.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint TryPop(Magazine m, int order) => PopAsOwner(m, order, symmetric: false);

    /// <summary>
    /// The magazine hit path of a free, asymmetric form: pushes a cache-owned block with no atomic instruction and no
    /// fence. False when the magazine is full or a stealer holds it. Only for asymmetric caches, as <see cref="TryPop"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryPush(Magazine m, int order, uint pfn) => PushAsOwner(m, order, pfn, symmetric: false);

    /// <summary>The owner's pop in the form these caches use (off the inlined fast path: a checked arena, a symmetric hand-over).</summary>
    public uint OwnerPop(Magazine m, int order) => PopAsOwner(m, order, _symmetric);

    /// <summary>The owner's push in the form these caches use (see <see cref="OwnerPop"/>).</summary>
    public bool OwnerPush(Magazine m, int order, uint pfn) => PushAsOwner(m, order, pfn, _symmetric);

    /// <summary>A pop inside the owner's side of the hand-over; <paramref name="symmetric"/> is a constant at every inlined call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint PopAsOwner(Magazine m, int order, bool symmetric)
    {
        if (symmetric ? EnterSymmetric(m) : EnterAsymmetric(m))
        {
            uint pfn = PoolPop(m, order);
            LeaveOwner(m);
            return pfn;
        }

        LeaveOwner(m);
        return NoPage;
    }

    /// <summary>A push inside the owner's side of the hand-over (see <see cref="PopAsOwner"/>).</summary>
    /// <remarks>Written with one exit per outcome (no flag variable), so the inlined caller branches on the outcome directly.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool PushAsOwner(Magazine m, int order, uint pfn, bool symmetric)
    {
        if ((symmetric ? EnterSymmetric(m) : EnterAsymmetric(m)) && PoolPush(m, order, pfn))
        {
            LeaveOwner(m);
            return true;
        }

        LeaveOwner(m);
        return false;
    }

    /// <summary>
    /// Owner transition, asymmetric form: outside -> inside (<c>Busy</c> 0 -> 1), then whether the magazine is the
    /// owner's (no <c>StealPending</c>). True: the owner may touch the slots until <see cref="LeaveOwner"/>.
    /// </summary>
    /// <remarks>
    /// Invariant: the owner and a stealer never both work on the slots. Ordering: a release store, then an acquire
    /// load, and no fence between them: the hardware may perform the load before the store is visible (x64's store
    /// buffer; arm64 with an RCpc <c>ldapr</c>), and the JIT keeps the two in program order (volatile accesses are not
    /// reordered with each other). The missing store-load order is supplied by the stealer's
    /// <see cref="Interlocked.MemoryBarrierProcessWide"/> (<see cref="AnnounceSteal"/>), assumed to run a full barrier on
    /// every CPU that runs a thread of the process, at an instruction boundary of whatever runs there (a thread that is
    /// not running passed a full barrier when it was switched out): if that barrier lands on the owner's CPU before this
    /// store, the stealer's <c>StealPending</c> store, made before it, is visible to this load; if it lands after this
    /// store, the store is visible to the stealer's load of <c>Busy</c>, made after it. Either way one side sees the
    /// other's flag. That assumption holds only where <see cref="ProcessBarrier.Kind"/> says so; elsewhere the caches
    /// use <see cref="EnterSymmetric"/>.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool EnterAsymmetric(Magazine m)
    {
        Volatile.Write(ref m.Hot.Busy, 1);
        return Volatile.Read(ref m.Hot.StealPending) == 0;
    }

    /// <summary>Owner transition, symmetric form: as <see cref="EnterAsymmetric"/>, with a full fence between the store and the load.</summary>
    /// <remarks>
    /// Invariant: as <see cref="EnterAsymmetric"/>. Ordering: Dekker with a full fence on both sides. The owner stores
    /// <c>Busy</c> = 1, fences, loads <c>StealPending</c>; the stealer stores <c>StealPending</c> = 1, fences
    /// (<see cref="AnnounceSteal"/>), loads <c>Busy</c>. Whichever fence comes second in the fences' total order makes
    /// the other side's store visible to the load after it, so at least one side sees the other's flag. No trust in
    /// any process-wide barrier.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool EnterSymmetric(Magazine m)
    {
        Volatile.Write(ref m.Hot.Busy, 1);
        Interlocked.MemoryBarrier();
        return Volatile.Read(ref m.Hot.StealPending) == 0;
    }

    /// <summary>Owner transition: inside -> outside (<c>Busy</c> 1 -> 0), in both forms.</summary>
    /// <remarks>
    /// Invariant: a stealer that reads <c>Busy</c> = 0 after announcing its steal finds the owner's last operation
    /// complete. Ordering: a release store, so every slot and count access of the operation is visible before it; the
    /// stealer reads <c>Busy</c> with acquire.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LeaveOwner(Magazine m) => Volatile.Write(ref m.Hot.Busy, 0);

    /// <summary>
    /// Pops a block from a magazine the caller owns right now: the one-entry top first, then the slot stack. A
    /// <see cref="PagePool"/>'s magazine is never stolen (see <see cref="Drain"/>), so a pool calls this directly; a
    /// thread's magazine calls it inside the hand-over protocol (<see cref="TryPop"/>). <see cref="NoPage"/> when empty.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint PoolPop(Magazine m, int order)
    {
        ref uint top = ref m.Hot.Top(order);
        uint hot = top;
        if (hot != NoPage)
        {
            top = NoPage;
            return hot;
        }

        ref int count = ref m.Hot.Count(order);
        int c = count - 1;
        if (c < 0)
        {
            return NoPage;
        }

        count = c;
        return Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(m.Slots), (order * m.Stride) + c);
    }

    /// <summary>Pushes a block on a magazine the caller owns right now (see <see cref="PoolPop"/>). False when full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool PoolPush(Magazine m, int order, uint pfn)
    {
        ref uint top = ref m.Hot.Top(order);
        if (top == NoPage && m.Hot.Capacity(order) != 0)
        {
            top = pfn;
            return true;
        }

        ref int count = ref m.Hot.Count(order);
        int c = count;
        if (c >= m.Hot.Capacity(order))
        {
            return false;
        }

        Unsafe.Add(ref MemoryMarshal.GetArrayDataReference(m.Slots), (order * m.Stride) + c) = pfn;
        count = c + 1;
        return true;
    }

    /// <summary>
    /// Gives a cache-owned block of <paramref name="order"/> (0..3; flags <see cref="PageFlags.Cached"/>, the cache's
    /// reference held) to the calling thread's magazine, else a depot, else the shared allocator.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Free(uint pfn, int order)
    {
        Magazine? m = ThreadMagazine();
        if (m is null || !OwnerPush(m, order, pfn))
        {
            FreeSlow(m, pfn, order);
        }
    }

    /// <summary>Creates and registers the magazine of a <see cref="PagePool"/>.</summary>
    public Magazine CreatePoolMagazine()
    {
        ObjectDisposedException.ThrowIf(_disposed, typeof(PageArena));
        var m = new Magazine(this, _stride, forPool: true);
        Register(m);
        return m;
    }

    /// <summary>
    /// Returns a pool's blocks to the shared allocator and unregisters its magazine (the pool's Dispose, run by the
    /// pool's owner, so nobody else touches the magazine). A retired magazine stays full: every later push finds no
    /// room and every pop finds nothing, so a disposed pool passes its calls through to the arena.
    /// </summary>
    public void RetirePoolMagazine(Magazine m)
    {
        EmptyMagazine(m);
        for (int o = 0; o < Orders; o++)
        {
            m.Hot.Capacity(o) = 0;
        }

        Volatile.Write(ref m.Hot.StealPending, 1);
        Forget([m]);
    }

    /// <summary>The magazines' metric counts (hits, misses, frees per order; see <see cref="MagazineHot.Hits0"/>), live and retired, summed (a racy read).</summary>
    public long[] SumCounts()
    {
        long[] sum = new long[3 * Orders];
        for (int i = 0; i < sum.Length; i++)
        {
            sum[i] = Volatile.Read(ref _retiredCounts[i]);
        }

        foreach (Magazine m in Volatile.Read(ref _magazines))
        {
            long[] counts = CountsOf(m);
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] += counts[i];
            }
        }

        return sum;
    }

    /// <summary>A magazine's metric counters: per order hits, then misses, then frees (racy reads).</summary>
    private static long[] CountsOf(Magazine m)
    {
        long[] c = new long[3 * Orders];
        for (int o = 0; o < Orders; o++)
        {
            c[o] = Volatile.Read(ref m.Hot.Hits(o));
            c[Orders + o] = Volatile.Read(ref m.Hot.Misses(o));
            c[(2 * Orders) + o] = Volatile.Read(ref m.Hot.Frees(o));
        }

        return c;
    }

    /// <summary>
    /// An allocation is about to fail and reclaims (drains, then retries): until <see cref="ExitPressure"/>, another
    /// thread's refill from the shared allocator takes one block, not a batch, so that a batch the drain just gave back
    /// is not carried off into that thread's magazine between the drain and the retry (it would sit unused there while
    /// the allocation fails). Ordering: an increment (a full fence) before the drain; a refill that misses it takes a
    /// batch, which the next drain of the same reclaim returns (see <c>PageArena.ReclaimAndRetry</c>).
    /// </summary>
    public void EnterPressure() => Interlocked.Increment(ref _pressure);

    /// <summary>The reclaim of <see cref="EnterPressure"/> is over (the allocation succeeded or failed).</summary>
    public void ExitPressure() => Interlocked.Decrement(ref _pressure);

    /// <summary>Blocks of <paramref name="order"/> a refill from the shared allocator takes now: a batch, or one under pressure.</summary>
    private int RefillCount(int order) => Volatile.Read(ref _pressure) == 0 ? Batch(order) : 1;

    /// <summary>Pools not yet disposed.</summary>
    public int LivePools => Array.FindAll(Volatile.Read(ref _magazines), m => m.Thread is null).Length;

    /// <summary>
    /// Returns every cached block to the shared allocator, dropping the cache's reference on each: all depots, and every
    /// thread's magazine, of live threads and of threads that exited (<c>drain_all_pages</c>). A block on which a
    /// speculative getter still holds a reference is freed by that getter's last put instead. The magazines of
    /// <see cref="PagePool"/>s are left alone, as <c>drain_all_pages</c> leaves a driver's page_pool alone: a pool's
    /// Dispose returns its blocks. With <paramref name="wait"/> it waits for a magazine whose owner is in the
    /// middle of an operation (a few instructions); without it, such a magazine is skipped, so the call never waits.
    /// </summary>
    /// <returns>Pages returned.</returns>
    public long Drain(bool wait)
    {
        if (!EnterStealer(wait))
        {
            return 0;
        }

        long moved = 0;
        try
        {
            Magazine[] mags = Array.FindAll(Volatile.Read(ref _magazines), m => m.Thread is not null);
            AnnounceSteal(mags);

            List<Magazine>? exited = null;
            foreach (Magazine m in mags)
            {
                if (Volatile.Read(ref m.Hot.Busy) != 0)
                {
                    if (!wait)
                    {
                        Volatile.Write(ref m.Hot.StealPending, 0);
                        continue;
                    }

                    // The owner is inside one magazine operation, which never blocks: wait for its release store.
                    var spin = new SpinWait();
                    while (Volatile.Read(ref m.Hot.Busy) != 0)
                    {
                        spin.SpinOnce(sleep1Threshold: -1);
                    }
                }

                // Whether the owner exited is read before the magazine is emptied, never after: a thread seen dead runs
                // nothing more, so its emptied magazine stays empty and may be forgotten. An owner seen alive may free
                // blocks into its magazine the moment StealPending is cleared below, and then exit; a magazine judged
                // after that would be forgotten with those blocks in it (they were lost: cached, and in no cache).
                bool exitedBeforeEmptied = m.OwnerExited;
                moved += EmptyMagazine(m);
                Volatile.Write(ref m.Hot.StealPending, 0);
                AfterReleaseHook?.Invoke(m);
                if (exitedBeforeEmptied)
                {
                    (exited ??= []).Add(m);
                }
            }

            moved += DrainDepots();
            if (exited is not null)
            {
                Forget(exited);
            }
        }
        finally
        {
            Volatile.Write(ref _stealer, 0);
        }

        return moved;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _disposed = true;
        _depotRegion.Dispose();
    }
}
