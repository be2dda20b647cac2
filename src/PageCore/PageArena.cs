using System.Runtime.CompilerServices;
using PageCore.Allocator;
using PageCore.Arena;
using PageCore.Descriptors;
using PageCore.Diagnostics;
using PageCore.PerCpu;

namespace PageCore;
/// <summary>
/// A pinned native arena of pages with a 64-byte descriptor per page, kernel-exact refcounts, and a lock-free page
/// allocator with per-CPU caches: the kernel's <c>mem_map</c>, <c>page_ref.h</c>, buddy allocator and pcp lists.
/// </summary>
/// <remarks>
/// <para>The data pages are one pinned array (<see cref="ArenaBacking.PinnedArray"/>, the default up to 2 GiB) or one
/// native reservation (<c>mmap</c>), either way memory that becomes resident when touched, page-size aligned and never
/// moved; <see cref="AddressOf"/> and <see cref="PfnOf"/> are arithmetic. The descriptors are a
/// parallel native array, cache-line aligned, pinned for the arena's life.</para>
/// <para>Every member is thread-safe unless it says otherwise. Any thread may call <see cref="TryGetPageUnlessZero"/> and
/// <see cref="PutPage"/> on any PFN at any moment, as the kernel's PFN walkers do; the allocator stays correct under that
/// (see <see cref="FreePages"/>).</para>
/// <para>Pages are not zeroed: a page fresh from the arena reads as zero, a reused page holds what was last written to it
/// (or the poison pattern, in checked mode), as with <c>alloc_pages</c> without <c>__GFP_ZERO</c>.</para>
/// </remarks>
public sealed unsafe partial class PageArena : IDisposable
{
    /// <summary>The byte free pages of a checked arena are filled with (the kernel's <c>PAGE_POISON</c>).</summary>
    public const byte PoisonByte = 0xAA;

    private readonly NativeRegion _dataRegion;
    private readonly ArenaBacking _backing;
    private readonly NativeRegion _descRegion;
    private readonly byte* _base;
    private readonly PageDescriptor* _desc;
    private readonly FrameAllocator _core;
    private readonly PageCaches? _caches;

    /// <summary>
    /// <see cref="_caches"/> when the arena is not checked and the magazines' hand-over is asymmetric, else null: a
    /// thread's cached fast paths test this one field (<see cref="FastThreadCaches"/>), and a checked arena's cached
    /// operations (poisoning, checks) or a symmetric hand-over's (a fence in every operation) take the slow paths.
    /// </summary>
    private readonly PageCaches? _fastCaches;

    /// <summary><see cref="_caches"/> when the arena is not checked, else null: a pool's fast paths test this field
    /// (<see cref="FastPoolCaches"/>); a pool's magazine is never stolen, so the hand-over's form does not matter.</summary>
    private readonly PageCaches? _fastPoolCaches;

    /// <summary>How the magazines' hand-over is fenced, chosen at creation (<see cref="ProcessBarrier.HandOver"/>).</summary>
    private readonly HandOverForm _handOver;
    private readonly PageArenaOptions _options;
    private readonly ContentionCounters? _counters;
    private readonly long _pageCount;
    private readonly int _pageShift;
    private readonly int _maxOrder;
    private readonly bool _checked;

    // Bounds used on every hot path; both become 0 when the arena is disposed, so a late call fails its bounds check and
    // the cold path reports ObjectDisposedException instead of touching unmapped memory.
    private uint _pageLimit;
    private uint _orderLimit;

    // HeadOf's one-compare fast path: _pageLimit while no page of this arena can be a tail, 0 from the moment the
    // compound-page layer is about to publish the first compound page (set once, never raised again), and 0 once
    // disposed. A PFN below it is in bounds and is not a tail, so its descriptor is its head's. A caller that reaches a
    // tail PFN learned of it through whatever published that compound page, which happens after the store of 0. A checked
    // arena keeps it at 0 from the start: its gets and puts all take the checked paths.
    private uint _tailFreeLimit;
    private int _state; // 0 live, 1 disposing, 2 disposed

    private PageArena(PageArenaOptions options)
    {
        if (!BitConverter.IsLittleEndian)
        {
            // PageRef.Pair reads flags and count as one 8-byte word, flags in the low half.
            throw new PlatformNotSupportedException("PageCore needs a little-endian platform.");
        }

        _options = options;
        _pageCount = options.Pages;
        _pageShift = options.PageShift;
        _maxOrder = options.MaxOrder;
        _checked = options.Checked;
        _counters = options.CollectStatistics ? new ContentionCounters(options.MaxOrder) : null;

        nuint pageSize = (nuint)1 << _pageShift;
        nuint dataBytes = (nuint)_pageCount << _pageShift;
        nuint alignment = options.AdviseHugePages && dataBytes >= (2 << 20) ? Math.Max(pageSize, (nuint)(2 << 20)) : pageSize;
        alignment = Math.Max(alignment, (nuint)Environment.SystemPageSize); // a chunk's memory can be discarded whole
        _backing = options.Backing == ArenaBacking.Auto
            ? ((ulong)dataBytes + alignment <= (ulong)Array.MaxLength ? ArenaBacking.PinnedArray : ArenaBacking.Native)
            : options.Backing;
        _dataRegion = _backing == ArenaBacking.PinnedArray
            ? NativeRegion.ReservePinnedArray(dataBytes, alignment, options.AdviseHugePages)
            : NativeRegion.Reserve(dataBytes, alignment, options.AdviseHugePages);
        try
        {
            _descRegion = NativeRegion.Reserve((nuint)_pageCount * PageDescriptor.Size, (nuint)CacheLine.PaddedSize, adviseHugePages: false);
            _core = new FrameAllocator(_pageCount, useVectors: !options.ForceScalarScan, _counters);
        }
        catch
        {
            _dataRegion.Dispose();
            _descRegion?.Dispose();
            throw;
        }

        _base = _dataRegion.Pointer;
        _desc = (PageDescriptor*)_descRegion.Pointer;
        _handOver = options.LegacyStealWithoutRemoteBarrier ? HandOverForm.Asymmetric : ProcessBarrier.Resolve(options.ForceSymmetricHandOver);
        if (options.PerCpuCaches)
        {
            _caches = new PageCaches(this, _core, _desc, options.PerCpuBatch, _counters, _handOver, options.LegacyStealWithoutRemoteBarrier);
            _fastCaches = _checked || _handOver == HandOverForm.Symmetric ? null : _caches;
            _fastPoolCaches = _checked ? null : _caches;
        }

        _pageLimit = (uint)_pageCount;

        // A checked arena keeps the limit at 0, so that its puts take PutPageSlow, where checked mode's put lives,
        // without a test of _checked on the unchecked put's path.
        _tailFreeLimit = _checked ? 0 : _pageLimit;
        _orderLimit = (uint)_maxOrder + 1;
        StartReturnMemoryTimer();
    }

    /// <summary>Creates an arena (the kernel's <c>free_area_init</c> for one zone): every page free, refcount 0.</summary>
    /// <param name="options">The arena's shape; it is copied, later changes to it have no effect.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A setting is out of range; the message names it.</exception>
    /// <exception cref="OutOfMemoryException">The native reservation failed.</exception>
    public static PageArena Create(PageArenaOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        PageArenaOptions copy = options.Clone();
        copy.Validate();
        var arena = new PageArena(copy);
        PageCoreMetrics.Register(arena);
        return arena;
    }

    /// <summary>A copy of the options the arena was created with.</summary>
    public PageArenaOptions Options => _options.Clone();

    /// <summary>The page size in bytes (<c>PAGE_SIZE</c>).</summary>
    public int PageSize => 1 << _pageShift;

    /// <summary>log2 of <see cref="PageSize"/> (<c>PAGE_SHIFT</c>).</summary>
    public int PageShift => _pageShift;

    /// <summary>The number of pages in the arena (the zone's <c>managed_pages</c>).</summary>
    public long PageCount => _pageCount;

    /// <summary>The largest order <see cref="TryAllocPages"/> accepts (<c>MAX_PAGE_ORDER</c>).</summary>
    public int MaxOrder => _maxOrder;

    /// <summary>Whether the arena runs in checked mode (poisoning and per-page checks on free and allocation).</summary>
    public bool IsChecked => _checked;

    /// <summary>Whether orders 0..3 go through the per-thread and per-CPU caches.</summary>
    public bool PerCpuCachesEnabled => _caches is not null;

    /// <summary>Where the data pages live: <see cref="ArenaBacking.PinnedArray"/> or <see cref="ArenaBacking.Native"/> (never Auto).</summary>
    public ArenaBacking Backing => _backing;

    /// <summary>
    /// The bytes in one chunk of the allocator (512 pages: 2 MiB of 4 KiB pages), the unit in which free memory is given
    /// back to the operating system (<see cref="ReturnFreeMemory"/>).
    /// </summary>
    public long ChunkBytes => (long)PageSize << FrameAllocator.ChunkShift;

    /// <summary>Whether the kernel accepted <c>madvise(MADV_HUGEPAGE)</c> for the data pages.</summary>
    public bool HugePagesAdvised => _dataRegion.HugePagesAdvised;

    /// <summary>True once the arena's memory was released.</summary>
    internal bool IsDisposed => Volatile.Read(ref _state) == 2;

    /// <summary>
    /// Free pages: free in the shared allocator plus held free in the per-CPU caches (<c>NR_FREE_PAGES</c> + pcp
    /// counts). A racy sum while other threads allocate; exact when the arena is quiescent.
    /// </summary>
    public long FreePageCount => _core.FreePages + (_caches?.CachedPages ?? 0);

    /// <summary>
    /// The figures behind the <c>PageCore</c> meter (<see cref="PageCoreMetrics"/>), summed over threads with racy reads:
    /// blocks allocated and freed per order, cache hits and misses. All zero when
    /// <see cref="PageArenaOptions.CollectStatistics"/> is off, except what the caches count for themselves.
    /// </summary>
    internal (long[] Allocated, long[] Freed, long Hits, long Misses) UsageByOrder()
    {
        long[] allocated = new long[MaxOrder + 1];
        long[] freed = new long[MaxOrder + 1];
        long hits = 0, misses = 0;
        if (_counters?.SumOrders() is { } core)
        {
            for (int o = 0; o <= MaxOrder; o++)
            {
                allocated[o] = core[o];
                freed[o] = core[MaxOrder + 1 + o];
            }
        }

        if (_caches?.SumCounts() is { } cached)
        {
            for (int o = 0; o < PageCaches.Orders && o <= MaxOrder; o++)
            {
                hits += cached[o];
                misses += cached[PageCaches.Orders + o];
                allocated[o] += cached[o] + cached[PageCaches.Orders + o];
                freed[o] += cached[(2 * PageCaches.Orders) + o];
            }
        }

        return (allocated, freed, hits, misses);
    }

    /// <summary>
    /// The contention counters summed over every thread (all zero when <see cref="PageArenaOptions.CollectStatistics"/>
    /// is off): CAS retries and slow-path entries per operation type.
    /// </summary>
    public ArenaStatistics Statistics
    {
        get
        {
            ArenaStatistics s = _counters?.Snapshot() ?? new ArenaStatistics(new long[Enum.GetValues<ArenaCounter>().Length], 0);
            s.HandOver = _handOver;
            return s;
        }
    }

    /// <summary>How the magazines' hand-over to a stealer is fenced in this arena (also in <see cref="Statistics"/>).</summary>
    internal HandOverForm HandOver => _handOver;

    /// <summary>The arena's per-CPU caches, or null; for tests (their hooks).</summary>
    internal PageCaches? CachesForTests => _caches;

    /// <summary>The caches a thread's magazine is popped and pushed inline for (see <see cref="_fastCaches"/>).</summary>
    internal PageCaches? FastThreadCaches
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _fastCaches;
    }

    /// <summary>The caches a pool's magazine is popped and pushed inline for (see <see cref="_fastPoolCaches"/>).</summary>
    internal PageCaches? FastPoolCaches
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => _fastPoolCaches;
    }

    /// <summary>Free pages held in per-thread magazines and per-CPU depots (the kernel's <c>pcp->count</c> summed).</summary>
    public long CachedPageCount => _caches?.CachedPages ?? 0;

    /// <summary>
    /// Releases the arena's native memory. Refuses, with <see cref="InvalidOperationException"/>, while pages are still
    /// allocated; see <see cref="Dispose(bool)"/> to force it. Idempotent once it succeeded.
    /// </summary>
    /// <exception cref="InvalidOperationException">Pages are still allocated; the message says how many.</exception>
    public void Dispose() => Dispose(force: false);

    /// <summary>
    /// Releases the arena's native memory. Without <paramref name="force"/>, drains the caches and refuses while any page
    /// is still allocated; with it, releases everything at once, and any span or address still in use dangles.
    /// Not safe to call while other threads still use the arena.
    /// </summary>
    /// <param name="force">Release even if pages are still allocated.</param>
    /// <exception cref="InvalidOperationException">Pages are still allocated and <paramref name="force"/> is false.</exception>
    public void Dispose(bool force)
    {
        if (Interlocked.CompareExchange(ref _state, 1, 0) != 0)
        {
            return;
        }

        if (!force)
        {
            _caches?.Drain(wait: true);
            long inUse = _pageCount - _core.FreePages;
            if (inUse != 0)
            {
                Volatile.Write(ref _state, 0);
                int pools = _caches?.LivePools ?? 0;
                throw new InvalidOperationException(
                    $"PageCore: the arena still has {inUse} of {_pageCount} pages allocated" +
                    (pools > 0 ? $" ({pools} PagePools not disposed hold theirs)" : "") +
                    "; free them first, or call Dispose(force: true) to release the memory anyway.");
            }
        }

        StopReturningMemory(); // waits out a return pass in progress: no discard of released memory
        PageCoreMetrics.Unregister(this); // waits out an observation in progress: no reads of released memory
        _tailFreeLimit = 0; // first: HeadOf's fast compare must not pass once _pageLimit refuses every PFN
        _pageLimit = 0;
        _orderLimit = 0;
        _caches?.Dispose();
        _core.Dispose();
        _descRegion.Dispose();
        _dataRegion.Dispose();
        Volatile.Write(ref _state, 2);
    }

    /// <summary>The descriptor of <paramref name="p"/>, after the bounds check every public entry does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref PageDescriptor Descriptor(uint p)
    {
        if (p >= _pageLimit)
        {
            ThrowBadPfn(p);
        }

        return ref _desc[p];
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _state) == 2)
        {
            throw new ObjectDisposedException(nameof(PageArena));
        }
    }
}
