using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using PageCore.Descriptors;
using PageCore.PerCpu;

namespace PageCore;

// Allocation (alloc_pages): the cached fast path through a magazine, misses and refills, the shared allocator's
// path, and preparing a block for its caller (prep_new_page).
public sealed unsafe partial class PageArena
{
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

    /// <summary>The shared allocator had no block: reclaim (caches, then epoch domains), then try again (PageArena.Reclaim.cs).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool TryAllocAfterReclaim(int order, out uint p) => ReclaimAndRetry(order, out p);
}
