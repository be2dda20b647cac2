using System.Runtime.CompilerServices;
using PageCore.Allocator;
using PageCore.Descriptors;
using PageCore.PerCpu;

namespace PageCore;

// Freeing (__free_pages): the cached fast path into a magazine, the uncached, folio and shared frees, and handing a
// freed block to the caches or the shared allocator (free_frozen_pages).
public sealed unsafe partial class PageArena
{
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
}
