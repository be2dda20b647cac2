namespace PageCore;

/// <summary>
/// <c>struct mmu_gather</c>: collects what a zap unhooked (pages whose mappings were cleared, detached page tables) and
/// frees it in the kernel's order: unhook (under the page-table lock, by the caller) -> flush the TLB -> free the pages
/// -> free the tables after a grace period. One gather belongs to one thread and one address space, like the kernel's
/// on-stack gather; dispose it (<c>tlb_finish_mmu</c>) to flush what is left.
/// </summary>
/// <remarks>
/// A page queued here is still referenced by the gather: the mapping's reference is dropped only after the flush, so
/// nothing that a TLB (or the hash MMU of a later layer) may still translate to is freed (the unhook -> flush -> free
/// order). Tables go to <see cref="AddressSpace"/>'s deferred free after the flush, so a lockless walker inside a section
/// never reads a reused table.
/// </remarks>
public sealed class MmuGather : IDisposable
{
    /// <summary>Pages batched before the gather asks for a flush (<c>MAX_GATHER_BATCH</c>-like).</summary>
    public const int BatchPages = 512;

    private AddressSpace _mm;
    private readonly List<Pfn> _pages = new(64);
    private readonly List<PtFragment> _tables = new(4);
    private bool _finished;

    /// <summary><c>tlb_gather_mmu</c>: a gather for zapping <paramref name="mm"/>.</summary>
    /// <param name="mm">The address space being zapped.</param>
    public MmuGather(AddressSpace mm)
    {
        ArgumentNullException.ThrowIfNull(mm);
        _mm = mm;
    }

    /// <summary>The address space this gather zaps.</summary>
    public AddressSpace AddressSpace => _mm;

    /// <summary>Pages unhooked and not yet freed.</summary>
    public int PendingPages => _pages.Count;

    /// <summary>Tables detached and not yet handed to the deferred free.</summary>
    public int PendingTables => _tables.Count;

    /// <summary>How many times this gather flushed.</summary>
    public long Flushes { get; private set; }

    /// <summary>True when the page batch is full: the caller drops its page-table lock and calls <see cref="Flush"/>.</summary>
    public bool NeedsFlush => _pages.Count >= BatchPages;

    /// <summary>
    /// <c>__tlb_remove_page</c>: takes over the reference of a mapping the caller just cleared; it is dropped after the
    /// next flush.
    /// </summary>
    /// <param name="page">The page the cleared entry mapped (a tail goes to its folio's head when put).</param>
    public void RemovePage(Pfn page)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        _pages.Add(page);
    }

    /// <summary>
    /// <c>tlb_remove_table</c>: takes over a page table the caller detached; it is freed after the next flush and a
    /// grace period.
    /// </summary>
    /// <param name="table">The detached table, empty.</param>
    public void RemoveTable(PtFragment table)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        _tables.Add(table);
    }

    /// <summary>
    /// <c>tlb_flush_mmu</c>: flushes the TLB for everything unhooked so far, then drops the pages' references, then
    /// hands the tables to the deferred free. Call it without holding a page-table lock.
    /// </summary>
    public void Flush()
    {
        if (_pages.Count == 0 && _tables.Count == 0)
        {
            return;
        }

        // tlb_flush_mmu_tlbonly: there is no hardware TLB here; the count records that the flush came before the frees.
        Flushes++;

        // tlb_flush_mmu_free: pages first, then tables (tlb_table_flush).
        PageArena arena = _mm.Arena;
        foreach (Pfn p in _pages)
        {
            arena.PutPage(p);
        }

        _pages.Clear();
        foreach (PtFragment t in _tables)
        {
            _mm.FreeTable(t);
        }

        _tables.Clear();
    }

    /// <summary>Reuses a finished gather for another zap (the address space's own zaps keep one per thread).</summary>
    internal void Rebind(AddressSpace mm)
    {
        _mm = mm;
        _finished = false;
        Flushes = 0;
    }

    /// <summary><c>tlb_finish_mmu</c>: flushes what is left. Idempotent.</summary>
    public void Dispose()
    {
        if (!_finished)
        {
            Flush();
            _finished = true;
        }
    }
}
