namespace PageCore.Descriptors;

/// <summary>
/// Bits of <see cref="PageDescriptor.Flags"/> (the kernel's <c>page->flags</c> and <c>page_type</c>).
/// </summary>
/// <remarks>
/// The flags word is written only by the thread that owns the page at that moment (the allocator while the page is
/// free, the holder of the allocation while it is allocated, the last putter while it is freed), with plain stores
/// ordered before the refcount transition that publishes them (the release store of <see cref="PageRef.SetAllocated"/>
/// or the fully fenced puts of <see cref="PageRef"/>). Speculative getters never write it.
/// </remarks>
[Flags]
internal enum PageFlags : uint
{
    /// <summary>No flag: a free page, a cached page, or a non-head page of a non-compound block.</summary>
    None = 0,

    /// <summary>The first page of an allocated block: its descriptor holds the block's order and the refcount.</summary>
    AllocatedHead = 1u << 0,

    /// <summary>The head of a compound page (<c>PG_head</c>); set by the compound-page layer.</summary>
    CompoundHead = 1u << 1,

    /// <summary>The page holds a page table (<c>PG_table</c> / <c>PGTY_table</c>); set by the page-table layer.</summary>
    PageTable = 1u << 2,

    /// <summary>Free pages of a checked arena are poisoned; this bit says the poison is in place.</summary>
    Poisoned = 1u << 3,

    /// <summary>
    /// The head of a block held by a per-thread magazine or a per-CPU depot. Such a block keeps one reference, the
    /// cache's own, as page_pool's recycled pages do: handing it out or taking it back moves that reference without
    /// touching the refcount. It is free all the same: every get refuses a head without <see cref="AllocatedHead"/>
    /// (a speculative get after its add, giving the reference back), and a put that would take the cache's reference
    /// is refused.
    /// </summary>
    Cached = 1u << 4,

    /// <summary>A page-table page one of whose fragments was freed through <c>pte_free_defer</c>: its final free waits
    /// for a grace period (the kernel marks the folio Active for this).</summary>
    DeferredFree = 1u << 5,

    /// <summary>
    /// With <see cref="Cached"/>: the cache gave the block back to the shared allocator while a speculative getter still
    /// held a reference for the instant between its add and its flag check (or a reference taken just before the block
    /// was freed). The cache has dropped its own reference; whichever put takes the count to 0 frees the block to the
    /// shared allocator. Set with a plain store before the cache's fully ordered put, which publishes it.
    /// </summary>
    Released = 1u << 6,
}
