using System.Runtime.CompilerServices;
using PageCore.Descriptors;
using PageCore.PerCpu;

namespace PageCore;

// The arena's side of the per-CPU caches: page pools, drain_all_pages, and blocks moving between a cache and the
// shared allocator.
public sealed unsafe partial class PageArena
{
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
}
