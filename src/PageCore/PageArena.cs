using System.Diagnostics.CodeAnalysis;
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
    /// <c>alloc_pages(order)</c>: allocates a naturally aligned block of <c>2^order</c> pages. The head comes back with
    /// refcount 1; the other pages of the block keep refcount 0 (a non-compound block, as without <c>__GFP_COMP</c>).
    /// </summary>
    /// <param name="order">0..<see cref="MaxOrder"/>.</param>
    /// <param name="pfn">The block's first page.</param>
    /// <returns>False when no free block of that order exists, even after the per-CPU caches were drained. A request can
    /// fail while lower orders still succeed: the free pages may be scattered (fragmentation).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0..<see cref="MaxOrder"/>.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAllocPages(int order, out Pfn pfn)
    {
        uint p = AllocVia(default(ThreadRoute), order);
        pfn = new Pfn(p == PageCaches.NoPage ? 0 : p);
        return p != PageCaches.NoPage;
    }

    /// <summary>
    /// The allocation path through <paramref name="route"/>'s magazine (the calling thread's, or a
    /// <see cref="PagePool"/>'s): one specialised copy per route. Returns the block's head, or
    /// <see cref="PageCaches.NoPage"/> (a return value rather than an <c>out</c> parameter, so the PFN stays in a
    /// register).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal uint AllocVia<TRoute>(TRoute route, int order)
        where TRoute : struct, IMagazineRoute
    {
        if ((uint)order >= _orderLimit)
        {
            ThrowBadOrder(order);
        }

        // The magazine is looked up first, not under a test of the caches, so that in a caller's loop the JIT hoists the
        // thread-static base out of the loop (see PageCaches.LastThreadMagazine). The order test folds away when the
        // order is a constant at the call site, as it nearly always is; it spares uncached orders the thread-local read.
        // Owner == the route's fast caches says at once: caches on, not checked, this magazine belongs to this arena,
        // and (for a thread) the hand-over needs no fence on this side. One field load, whichever route.
        Magazine? m = order < PageCaches.Orders ? route.Find() : null;
        if (m is not null && m.Owner == route.FastCaches(this))
        {
            uint p = route.Pop(m, order);
            if (p != PageCaches.NoPage)
            {
                m.Hot.Hits(order)++; // a hit: the owner's own counter on the line it writes anyway

                // PrepCachedPage without its _checked test: the owner test above already ruled out a checked arena.
                ref PageDescriptor d = ref _desc[p];
                if (d.Flags != (uint)PageFlags.Cached)
                {
                    PrepCachedPageSlow(p, order);
                }

                d.Flags = (uint)PageFlags.AllocatedHead;
                return p;
            }

            return AllocMiss(m.Owner, m, order);
        }

        return order < PageCaches.Orders && _caches is not null ? AllocUncommon(route, order) : AllocFromCore(order);
    }

    /// <summary>
    /// The magazine of <paramref name="route"/> in this arena's caches, or null: a thread whose last magazine belongs to
    /// another arena (or that has none) gets null here, and the slow paths find or create its own.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Magazine? MagazineIn<TRoute>(TRoute route, PageCaches caches)
        where TRoute : struct, IMagazineRoute
    {
        Magazine? m = route.Find();
        return m is not null && m.Owner == caches ? m : null;
    }

    /// <summary>
    /// A cached allocation off the fast path: a checked arena (the hit is checked, poison and state, before it is handed
    /// out), a symmetric hand-over (the pop fences), or a thread with no magazine in this arena's caches yet (the refill
    /// creates it).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint AllocUncommon<TRoute>(TRoute route, int order)
        where TRoute : struct, IMagazineRoute
    {
        PageCaches caches = _caches!;
        Magazine? m = MagazineIn(route, caches);
        if (m is not null)
        {
            uint p = route.PopAny(m, order);
            if (p != PageCaches.NoPage)
            {
                m.Hot.Hits(order)++;
                PrepCachedPage(p, order);
                return p;
            }
        }

        return AllocMiss(caches, m, order);
    }

    /// <summary>The magazine was empty (or the thread has none yet): refill from a depot or the shared allocator.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint AllocMiss(PageCaches caches, Magazine? m, int order)
    {
        uint p = caches.AllocSlow(m, order);
        if (p != PageCaches.NoPage)
        {
            CountMiss(m, order);
            PrepCachedPage(p, order);
            return p;
        }

        return AllocFromCore(order);
    }

    /// <summary>A cache miss that a refill served (the slow path counts it: misses are rare next to hits).</summary>
    private void CountMiss(Magazine? m, int order)
    {
        if (m is not null)
        {
            m.Hot.Misses(order)++;
        }
        else
        {
            _counters?.AddAlloc(order, slowPath: false); // the thread's first allocation: its magazine did not exist yet
        }
    }

    /// <summary>The shared allocator's path (orders above 3, caches off, or caches exhausted), with reclaim on failure.</summary>
    /// <remarks>
    /// Never inlined: behind the caches it is a slow path, and when the JIT inlined it (with the new-page checks under
    /// it) into a caller's loop of cached allocations, as dynamic PGO sometimes did, that loop's code doubled in size.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private uint AllocFromCore(int order)
    {
        if (_core.TryAlloc(order, out uint p) || TryAllocAfterReclaim(order, out p))
        {
            // Per order always; as a slow-path entry only where there is a fast path (with caches off every allocation
            // comes here). One call for both.
            _counters?.AddAlloc(order, slowPath: _caches is not null);
            PrepNewPage(p, order);
            return p;
        }

        _counters?.Add(ArenaCounter.FailedAllocs);
        return PageCaches.NoPage;
    }

    /// <summary><c>alloc_pages(order)</c> that throws on failure; see <see cref="TryAllocPages"/>.</summary>
    /// <param name="order">0..<see cref="MaxOrder"/>.</param>
    /// <returns>The block's first page, with refcount 1.</returns>
    /// <exception cref="OutOfPagesException">No free block of that order, with the order and the free counts.</exception>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="order"/> is outside 0..<see cref="MaxOrder"/>.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public Pfn AllocPages(int order)
    {
        uint p = AllocVia(default(ThreadRoute), order);
        if (p == PageCaches.NoPage)
        {
            ThrowOutOfPages(order);
        }

        return new Pfn(p);
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void ThrowOutOfPages(int order) => throw new OutOfPagesException(order, FreePageCount, _pageCount);

    /// <summary>
    /// <c>__free_pages(page, order)</c>: drops the caller's reference on a block from <see cref="TryAllocPages"/>. When
    /// that was the last reference the whole block is freed. When a speculative reference is still held on the head (a
    /// PFN walker's <see cref="TryGetPageUnlessZero"/>), the rest of the block is freed now, as buddies of orders
    /// <c>order-1</c> down to 0, and the head alone is freed by the last <see cref="PutPage"/>: nothing leaks.
    /// </summary>
    /// <param name="pfn">The block's first page.</param>
    /// <param name="order">The order it was allocated with.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena or the order outside 0..MaxOrder.</exception>
    /// <exception cref="ArgumentException">The PFN is not aligned to the order.</exception>
    /// <exception cref="PageBugException">A double free, a free of a page that is not a block head, a wrong order, or a
    /// free of a frozen page; nothing was changed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreePages(Pfn pfn, int order) => FreeVia(default(ThreadRoute), pfn, order);

    /// <summary>
    /// <see cref="FreePages"/> into <paramref name="route"/>'s magazine (the calling thread's, or a
    /// <see cref="PagePool"/>'s): one specialised copy per route.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeVia<TRoute>(TRoute route, Pfn pfn, int order)
        where TRoute : struct, IMagazineRoute
    {
        uint p = pfn.Value;
        ref PageDescriptor d = ref Descriptor(p);

        // The cached fast path: an allocated head of this order that only the caller holds goes to the magazine.
        // page_pool's recycle: the caller's reference is handed to the cache as it is. No write to the refcount, so a
        // speculative get that lands meanwhile (1 -> 2) is not lost: it just finds a cached page, and its put later takes
        // the count back to the cache's 1. The flags are the caller's own (a plain load); the count is read with acquire,
        // which orders the magazine's loads after it. Two 4-byte loads, not one 8-byte load of both: the allocation
        // that handed the block out stored the 4-byte flags, and a wider load over a recent narrower store cannot be
        // forwarded from the store buffer: it waits for the store to reach the cache (a PagePool alloc+free took 5.0 ns
        // with the one wide load, 2.4 ns with these two, on the AMD EPYC development machine). Plain flag store: the
        // caller owns the block.
        Magazine? m = order < PageCaches.Orders ? route.Find() : null; // first, as in AllocVia
        if (m is not null && m.Owner == route.FastCaches(this)
            && d.Flags == (uint)PageFlags.AllocatedHead && Volatile.Read(ref d.RefCount) == 1 && d.Order == order)
        {
            d.Flags = (uint)PageFlags.Cached;
            m.Hot.Frees(order)++;
            if (!route.Push(m, order, p))
            {
                m.Owner.FreeSlow(m, p, order);
            }

            return;
        }

        // An allocated head records its order, and heads are aligned to it: these two compares also rule out an order
        // outside 0..MaxOrder and a misaligned PFN (ThrowBadFree tells which).
        if (d.Flags != (uint)PageFlags.AllocatedHead || d.Order != order)
        {
            FreeFolioOrThrow(p, order);
            return;
        }

        if (order < PageCaches.Orders && _caches is not null && Volatile.Read(ref d.RefCount) == 1)
        {
            FreeIntoCaches(route, _caches, MagazineIn(route, _caches), p, order);
            return;
        }

        FreeUncached(ref d, p, order);
    }

    /// <summary>
    /// The cached free's rare cases: a checked arena (the block is poisoned first), a symmetric hand-over (the push
    /// fences), or a thread with no magazine in these caches yet (<see cref="PageCaches.FreeSlow"/> creates it).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeIntoCaches<TRoute>(TRoute route, PageCaches caches, Magazine? m, uint p, int order)
        where TRoute : struct, IMagazineRoute
    {
        if (_checked)
        {
            if (!FreezeIntoCache(p, order))
            {
                return; // a speculative getter holds the block: the free was a put, and the last put frees it
            }
        }
        else
        {
            _desc[p].Flags = (uint)PageFlags.Cached;
        }

        if (m is not null)
        {
            m.Hot.Frees(order)++;
            if (route.PushAny(m, order, p))
            {
                return;
            }
        }
        else
        {
            _counters?.AddFree(order, slowPath: false);
        }

        caches.FreeSlow(m, p, order);
    }

    /// <summary>The free of a block the caches do not take: the caller's reference is put, and the last put frees.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FreeUncached(ref PageDescriptor d, uint p, int order)
    {
        if (order == 0)
        {
            RefPut r = PageRef.PutTestZero(ref d, guess: 1);
            if (r == RefPut.Zero)
            {
                FreeBlock(p, 0);
            }
            else if (r == RefPut.Underflow)
            {
                ThrowBug(p, "__free_pages", "refcount is 0: the page is frozen, or a concurrent put raced this free");
            }

            return;
        }

        if (PageRef.TryPutLast(ref d))
        {
            // The caller held the only reference: the whole block goes back at once.
            FreeBlock(p, order);
            return;
        }

        FreeSharedBlock(p, order);
    }

    /// <summary>
    /// <c>__free_pages</c> on a compound page is <c>folio_put</c>: the last reference, whoever drops it, frees the whole
    /// folio (its tails are never handed out on their own). Anything else that is not an allocated head of that order
    /// is a misuse report.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeFolioOrThrow(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (d.Flags != (uint)(PageFlags.AllocatedHead | PageFlags.CompoundHead) || d.Order != order)
        {
            ThrowBadFree(p, order);
        }

        switch (PageRef.PutTestZero(ref d, guess: 1))
        {
            case RefPut.Zero:
                FreeBlock(p, order);
                break;
            case RefPut.Underflow:
                ThrowBug(p, "__free_pages", "refcount is 0: the folio is frozen, or a concurrent put raced this free");
                break;
        }
    }

    /// <summary>
    /// <c>__free_pages</c> when somebody else (a speculative getter) also holds a reference on the head: free everything
    /// but the head while the caller's reference still pins it, then drop that reference; the head alone, now an
    /// order-0 page, is freed by whichever put is last. Nothing leaks and nothing is freed twice.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeSharedBlock(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (PageRef.Count(ref d) <= 0)
        {
            ThrowBug(p, "__free_pages", "refcount is 0: the block is frozen, or a concurrent put raced this free");
        }

        // Plain store: the caller owns the block; the other holders only put, and no put can reach zero before the
        // caller's own (its reference keeps the count above zero), whose full fence publishes this store.
        d.Order = 0;
        FreeBuddiesOfHead(p, order);
        RefPut r = PageRef.PutTestZero(ref d, guess: 2);
        if (r == RefPut.Zero)
        {
            FreeBlock(p, 0);
        }
        else if (r == RefPut.Underflow)
        {
            ThrowBug(p, "__free_pages", "refcount reached 0 under a concurrent put while the block was being freed");
        }
    }

    /// <summary>
    /// Creates a caller-owned page pool in front of this arena (the kernel's <c>page_pool</c>): orders 0..3 are
    /// recycled through the pool's own magazine, found without a thread-local lookup. Use one pool from one thread at a
    /// time. Requires <see cref="PageArenaOptions.PerCpuCaches"/>.
    /// </summary>
    /// <exception cref="InvalidOperationException">The arena was created without per-CPU caches.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public PagePool CreatePagePool()
    {
        ThrowIfDisposed();
        if (_caches is null)
        {
            throw new InvalidOperationException("PageCore: a page pool needs an arena created with PerCpuCaches = true.");
        }

        return new PagePool(this, _caches.CreatePoolMagazine());
    }

    /// <summary>Magazines registered with the caches (threads that used the arena, live or not yet pruned, and pools).</summary>
    internal int RegisteredMagazines => _caches?.MagazineCount ?? 0;

    /// <summary>Returns a pool's blocks and forgets its magazine.</summary>
    internal void RetirePool(Magazine m)
    {
        if (Volatile.Read(ref _state) != 2)
        {
            _caches?.RetirePoolMagazine(m);
        }
    }

    /// <summary>
    /// <c>drain_all_pages</c>: returns every block held in per-thread magazines (of live threads and of threads that
    /// exited) and per-CPU depots to the shared allocator. Safe to call while other threads allocate; it waits only for
    /// magazine operations already in progress, which never block.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public void Drain()
    {
        ThrowIfDisposed();
        _caches?.Drain(wait: true);
    }

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

    // -------------------------------------------------------------------------------------------------------------------
    // Allocation internals.

    /// <summary>
    /// <c>prep_new_page</c> + <c>check_new_page</c> for a block from the shared allocator: the block is now ours; check
    /// its head, stamp order, flags and generation, and publish refcount 1 last (release).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrepNewPage(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (((d.Flags & ~(uint)PageFlags.Poisoned) | (uint)d.RefCount) != 0)
        {
            ThrowBadNewPage(p);
        }

        if (_checked)
        {
            CheckNewBlock(p, order);
            d.Generation++;
        }

        d.Order = (byte)order;
        d.Flags = (uint)PageFlags.AllocatedHead;
        PageRef.SetAllocated(ref d);
    }

    /// <summary>
    /// The allocation half of the cache hand-over: the cache's reference becomes the caller's, with no write to the
    /// refcount (it may read above 1 if a speculative getter holds the block right now; that getter will put).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrepCachedPage(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (d.Flags != (uint)PageFlags.Cached || _checked)
        {
            PrepCachedPageSlow(p, order);
        }

        d.Flags = (uint)PageFlags.AllocatedHead;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void PrepCachedPageSlow(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (!_checked || (d.Flags & ~(uint)PageFlags.Poisoned) != (uint)PageFlags.Cached || d.Order != order)
        {
            ThrowBug(p, "check_new_page", "the per-CPU cache handed out a block that is not a cached block of that order (bad page state)");
        }

        CheckNewBlock(p, order);
        d.Generation++;

        // Checked mode publishes the new generation before the flags that make the block gettable (a release store), so
        // that a speculative getter that reads the flags as allocated also reads the generation of this hand-out: the
        // use-after-free checks compare generations.
        Volatile.Write(ref d.Flags, (uint)PageFlags.AllocatedHead);
    }

    /// <summary>
    /// A free block from the shared allocator enters a cache: flags <see cref="PageFlags.Cached"/>, refcount 0 -> 1
    /// (the cache's reference, a release store: <see cref="PageRef.SetAllocated"/>).
    /// </summary>
    internal void AdoptIntoCache(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if ((d.Flags & ~(uint)PageFlags.Poisoned) != 0 || d.RefCount != 0)
        {
            ThrowBadNewPage(p);
        }

        d.Order = (byte)order;
        d.Flags = (uint)PageFlags.Cached | (d.Flags & (uint)PageFlags.Poisoned);
        PageRef.SetAllocated(ref d);
    }

    /// <summary>
    /// A cache gives a block back to the shared allocator: the cache drops its reference with 1 -> 0 and frees the block.
    /// When a speculative getter holds a reference at that moment (between its add and its flag check, or one taken just
    /// before the block was freed), the block is marked <see cref="PageFlags.Released"/> instead, the cache's reference
    /// is dropped, and the getter's last put frees it. The block never looks allocated on the way.
    /// </summary>
    internal void ReleaseCachedToCore(uint p, int order)
    {
        if (p >= _pageLimit)
        {
            // Only a broken hand-over (two owners of one magazine) can get here; report it instead of reading past the
            // descriptor array, which would take the whole process down.
            throw new PageBugException(new Pfn(p), "free_pcppages_bulk", "a cache held a PFN outside the arena (a magazine corrupted by two owners)", "");
        }

        ref PageDescriptor d = ref _desc[p];
        uint poisoned = d.Flags & (uint)PageFlags.Poisoned;
        if ((d.Flags & ~(uint)PageFlags.Poisoned) != (uint)PageFlags.Cached || d.Order != order)
        {
            ThrowBug(p, "free_pcppages_bulk", "a cached block's descriptor does not say cached, or says another order");
        }

        if (PageRef.TryPutLast(ref d))
        {
            // Only the cache held it: it is the cache's to free (the CAS is a full fence).
            d.Flags = poisoned;
            d.Order = 0;
            FreeToCore(p, order, userFree: false); // a spill: the user's free was counted when it reached the cache
            return;
        }

        ReleaseCachedShared(ref d, p);
    }

    /// <summary>
    /// <see cref="ReleaseCachedToCore"/> while a speculative holder also has a reference: hand the final free to
    /// whichever put is last.
    /// </summary>
    /// <remarks>
    /// Invariant: the block is free for every getter throughout (no <see cref="PageFlags.AllocatedHead"/>), and exactly
    /// one put takes the count to 0 and frees it. The <see cref="PageFlags.Released"/> mark is a plain store made before
    /// the cache's fully ordered put; a holder whose put then finds the count at 1 read that count from (or after) the
    /// cache's put, so it also reads the mark, and frees the block to the shared allocator
    /// (<see cref="FreeReleasedCached"/>) instead of refusing a put on a cached block.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReleaseCachedShared(ref PageDescriptor d, uint p)
    {
        d.Flags |= (uint)PageFlags.Released;
        switch (PageRef.PutTestZero(ref d, guess: 2))
        {
            case RefPut.Zero:
                FreeReleasedCached(p); // the holder put first after all
                break;
            case RefPut.Live:
                _counters?.Add(ArenaCounter.SpeculativeGetRetries);
                break;
            default:
                ThrowBug(p, "free_pcppages_bulk", "a cached block had refcount 0");
                break;
        }
    }

    /// <summary>The last put on a block its cache released (<see cref="PageFlags.Released"/>): free it to the shared allocator.</summary>
    private void FreeReleasedCached(uint p)
    {
        ref PageDescriptor d = ref _desc[p];
        int order = d.Order;
        d.Flags &= (uint)PageFlags.Poisoned;
        d.Order = 0;
        FreeToCore(p, order, userFree: false);
    }

    /// <summary>
    /// <c>free_frozen_pages</c>: the block's refcount is 0 and the caller owns it; clear the head and hand the block to
    /// the caches (which take a reference of their own) or to the shared allocator.
    /// </summary>
    private void FreeBlock(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if ((d.Flags & (uint)PageFlags.CompoundHead) != 0)
        {
            ClearCompoundTails(p, order);
        }

        d.Flags = 0;
        d.Order = 0;
        if (_checked)
        {
            PoisonBlock(p, order);
        }

        PageCaches? caches = _caches;
        if (order < PageCaches.Orders && caches is not null)
        {
            _counters?.AddFree(order, slowPath: false);
            AdoptIntoCache(p, order);
            caches.Free(p, order);
        }
        else
        {
            FreeToCore(p, order);
        }
    }

    /// <summary>Gives a block whose descriptor is clean to the shared allocator.</summary>
    private void FreeToCore(uint p, int order, bool userFree = true)
    {
        if (userFree)
        {
            _counters?.AddFree(order, slowPath: _caches is not null);
        }
        else
        {
            _counters?.Add(ArenaCounter.CoreFrees);
        }

        if (!_core.TryFree(p, order))
        {
            ThrowCoreFreeFailed(p, order);
        }
    }

    /// <summary>
    /// The buddies of a block's head, orders <c>order-1</c> down to 0 (the loop at the end of <c>__free_pages</c>),
    /// leaving the head (now order 0) to the last putter.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeBuddiesOfHead(uint p, int order)
    {
        if (order >= FrameAllocator.ChunkShift)
        {
            // A huge block is held as whole chunks, not bits: the allocator frees everything but the head in one step,
            // which is the same as freeing the buddies of orders order-1..0 one by one.
            if (_checked)
            {
                for (int o = order - 1; o >= 0; o--)
                {
                    PoisonBlock(p + (1u << o), o);
                }
            }

            if (!_core.TryReleaseHugeExceptHead(p, order))
            {
                ThrowCoreFreeFailed(p, order);
            }

            if (_counters is { } counters)
            {
                for (int o = order - 1; o >= 0; o--)
                {
                    counters.AddFree(o, slowPath: false); // the buddies freed in that one step, as the loop below counts them
                }
            }

            return;
        }

        for (int o = order - 1; o >= 0; o--)
        {
            FreeBlock(p + (1u << o), o);
        }
    }

    /// <summary>The shared allocator had no block: reclaim (caches, then epoch domains), then try again (PageArena.Reclaim.cs).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryAllocAfterReclaim(int order, out uint p) => ReclaimAndRetry(order, out p);

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
