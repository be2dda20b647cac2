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
/// <para>A gather counts itself in its address space's pending flushes from construction to <see cref="Dispose"/>
/// (<c>inc_tlb_flush_pending</c>): always dispose it, or every other gather on the address space takes itself for nested
/// and flushes its whole range.</para>
/// </remarks>
public sealed class MmuGather : IDisposable
{
    /// <summary>Pages batched before the gather asks for a flush (<c>MAX_GATHER_BATCH</c>-like).</summary>
    public const int BatchPages = 512;

    private AddressSpace _mm;
    private readonly List<Pfn> _pages = new(64);
    private readonly List<ulong> _addresses = new(64);
    private readonly List<PtFragment> _tables = new(4);
    private bool _finished;
    private ulong _start = ulong.MaxValue;
    private ulong _end;

    /// <summary><c>tlb_gather_mmu</c>: a gather for zapping <paramref name="mm"/>.</summary>
    /// <param name="mm">The address space being zapped.</param>
    public MmuGather(AddressSpace mm)
    {
        ArgumentNullException.ThrowIfNull(mm);
        _mm = mm;
        mm.IncTlbFlushPending();
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
    public void RemovePage(Pfn page) => RemovePage(page, NoAddress);

    /// <summary>
    /// <c>__tlb_remove_page</c> for a page unhooked from <paramref name="va"/>: as <see cref="RemovePage(Pfn)"/>, and the
    /// flush checks that no hash entry still translates <paramref name="va"/> to the page before it is freed (T1).
    /// </summary>
    /// <param name="page">The page the cleared entry mapped.</param>
    /// <param name="va">The address it was mapped at.</param>
    public void RemovePage(Pfn page, ulong va)
    {
        ObjectDisposedException.ThrowIf(_finished, this);
        _pages.Add(page);
        _addresses.Add(va);
    }

    /// <summary><c>tlb_flush_pte_range</c>: widens the range this gather unhooked, for a full flush at a nested finish.</summary>
    /// <param name="start">First address.</param>
    /// <param name="end">Address after the last.</param>
    public void TrackRange(ulong start, ulong end)
    {
        _start = Math.Min(_start, start);
        _end = Math.Max(_end, end);
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

        // tlb_flush_mmu_tlbonly: the hash MMU's pending invalidations of this thread (hash__tlb_flush drains the batch
        // "because the pages are going to be freed"); there is no other TLB here.
        Flushes++;
        _mm.DrainHashBatch();

        // tlb_flush_mmu_free: pages first, then tables (tlb_table_flush).
        PageArena arena = _mm.Arena;
        for (int i = 0; i < _pages.Count; i++)
        {
            if (_addresses[i] != NoAddress)
            {
                _mm.CheckNoTranslation(_addresses[i], _pages[i]);
            }

            arena.PutPage(_pages[i]);
        }

        _pages.Clear();
        _addresses.Clear();
        foreach (PtFragment t in _tables)
        {
            _mm.FreeTable(t);
        }

        _tables.Clear();
    }

    /// <summary>Reuses a finished gather for another zap (the address space's own zaps keep one per thread).</summary>
    internal void Rebind(AddressSpace? mm)
    {
        _mm = mm!;
        _finished = mm is null;
        Flushes = 0;
        _start = ulong.MaxValue;
        _end = 0;
        mm?.IncTlbFlushPending();
    }

    /// <summary>
    /// <c>tlb_finish_mmu</c>: flushes what is left. If another gather on the same address space ran meanwhile
    /// (<c>mm_tlb_flush_nested</c>), the whole range this gather covered is flushed, not only what it unhooked itself: the
    /// other one may have cleared entries here whose invalidation it has not flushed yet. Idempotent.
    /// </summary>
    public void Dispose()
    {
        if (_finished)
        {
            return;
        }

        if (_mm.TlbFlushNested)
        {
            _mm.FlushHashRange(_start, _end);
        }

        Flush();
        _finished = true;
        _mm.DecTlbFlushPending();
    }

    private const ulong NoAddress = ulong.MaxValue;
}
