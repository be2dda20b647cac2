using System.Runtime.CompilerServices;
using PageCore.PerCpu;

namespace PageCore;

/// <summary>
/// A caller-owned pool of pages in front of a <see cref="PageArena"/>: the counterpart of the kernel's <c>page_pool</c>,
/// which a network driver owns per receive queue. Orders 0..3 are recycled through the pool's own magazine, found
/// without a thread-local lookup and with no atomic instruction on a hit: a free by a caller that holds the only
/// reference hands that reference to the pool, and an allocation hands it back (<c>page_pool_recycle_in_cache</c>).
/// Larger orders, and misses, go to the arena.
/// </summary>
/// <remarks>
/// <para>Use a pool from one thread at a time (it may move between threads when the hand-over is synchronized, as a
/// <c>page_pool</c> moves with its NAPI context). Pages from a pool are ordinary arena pages: any thread may
/// <see cref="PageArena.GetPage"/>, <see cref="PageArena.PutPage"/> or <see cref="PageArena.FreePages"/> them, and a
/// page may be freed into a pool other than the one it came from.</para>
/// <para>The pool's magazine belongs to the pool alone: <see cref="PageArena.Drain"/> and the arena's reclaim on
/// allocation failure leave it alone (as <c>drain_all_pages</c> leaves a driver's page_pool alone), which is why its hit
/// path needs no hand-over protocol. It holds at most two batches per order. <see cref="Dispose"/> returns its pages to
/// the arena; dispose pools before the arena. A disposed pool passes its calls through to the arena.</para>
/// </remarks>
public sealed class PagePool : IDisposable
{
    private readonly PageArena _arena;
    private readonly Magazine _magazine;
    private int _disposed;

    internal PagePool(PageArena arena, Magazine magazine)
    {
        _arena = arena;
        _magazine = magazine;
    }

    /// <summary>The arena the pool draws from.</summary>
    public PageArena Arena => _arena;

    /// <summary><c>page_pool_alloc_pages</c>: like <see cref="PageArena.TryAllocPages"/>, through the pool.</summary>
    /// <param name="order">0..<see cref="PageArena.MaxOrder"/>; 0..3 are recycled by the pool.</param>
    /// <param name="pfn">The block's first page, with refcount 1.</param>
    /// <returns>False when no free block of that order exists.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The order is out of range.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAllocPages(int order, out Pfn pfn)
    {
        uint p = _arena.AllocVia(new PoolRoute(_magazine), order);
        pfn = new Pfn(p == PageCaches.NoPage ? 0 : p);
        return p != PageCaches.NoPage;
    }

    /// <summary>Like <see cref="PageArena.AllocPages"/>, through the pool.</summary>
    /// <param name="order">0..<see cref="PageArena.MaxOrder"/>.</param>
    /// <returns>The block's first page, with refcount 1.</returns>
    /// <exception cref="OutOfPagesException">No free block of that order.</exception>
    public Pfn AllocPages(int order)
    {
        uint p = _arena.AllocVia(new PoolRoute(_magazine), order);
        if (p == PageCaches.NoPage)
        {
            _arena.ThrowOutOfPages(order);
        }

        return new Pfn(p);
    }

    /// <summary><c>page_pool_put_page</c>: like <see cref="PageArena.FreePages"/>, recycling into the pool.</summary>
    /// <param name="pfn">The block's first page.</param>
    /// <param name="order">The order it was allocated with.</param>
    /// <exception cref="PageBugException">The same misuse reports as <see cref="PageArena.FreePages"/>.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void FreePages(Pfn pfn, int order) => _arena.FreeVia(new PoolRoute(_magazine), pfn, order);

    /// <summary><c>page_pool_destroy</c>: returns the pool's cached pages to the arena. Idempotent.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0)
        {
            _arena.RetirePool(_magazine);
        }
    }
}
