using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>What <see cref="AddressSpace.Collapse(ulong)"/> did.</summary>
public enum CollapseResult
{
    /// <summary>The range is now mapped by one huge PMD; the emptied table was deposited under it.</summary>
    Collapsed,

    /// <summary>There is no PTE table at the address (nothing mapped, or already huge).</summary>
    NoTable,

    /// <summary>The table maps nothing.</summary>
    NothingMapped,

    /// <summary>A mapped page has references besides its mappings in this table (a pin, a walker); nothing changed.</summary>
    Busy,

    /// <summary>No free folio of <see cref="AddressSpace.HugeOrder"/>; nothing changed.</summary>
    OutOfPages,
}

/// <summary>One mapping found by <see cref="AddressSpace.Mappings"/>.</summary>
/// <param name="Address">The virtual address the entry maps (the start of the huge range for a huge PMD).</param>
/// <param name="Entry">The PTE, or the huge PMD.</param>
public readonly record struct PageMapping(ulong Address, Pte Entry)
{
    /// <summary>True for a huge PMD mapping <see cref="AddressSpace.HugePageSize"/> bytes.</summary>
    public bool IsHuge => Entry.IsHuge;
}

/// <summary>Operations on an address space's mappings: map, fault, zap, huge map, split, collapse, retract, teardown.</summary>
public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// Maps <paramref name="page"/> at <paramref name="va"/> (<c>set_pte_at</c> after <c>pte_offset_map_lock</c>),
    /// allocating the PMD and PTE tables on the way. The mapping takes its own reference on the page's folio, dropped when
    /// the mapping is zapped; the caller keeps its own.
    /// </summary>
    /// <param name="va">A page-aligned virtual address.</param>
    /// <param name="page">An allocated page (a tail maps that page; the reference goes to its folio).</param>
    /// <param name="writable">Map it writable.</param>
    /// <returns>True when mapped; false when something is already mapped there (a PTE, or a huge PMD).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space or not page-aligned.</exception>
    /// <exception cref="PageBugException">The page is not allocated.</exception>
    /// <exception cref="OutOfPagesException">No page was free for a table.</exception>
    public bool MapPage(ulong va, Pfn page, bool writable = true)
    {
        CheckPageAddress(va, nameof(va));
        _arena.GetPage(page);
        bool mapped = false;
        try
        {
            Pte entry = Pte.Map(page, PteBits.Accessed | (writable ? PteBits.Write : PteBits.None));
            ulong* pmdSlot = PmdSlot(va, allocate: true);
            while (true)
            {
                var pmd = new Pte(Volatile.Read(ref *pmdSlot));
                if (pmd.IsHuge)
                {
                    return false;
                }

                if (pmd.IsNone)
                {
                    PteAlloc(pmdSlot);
                    continue;
                }

                LockedResult r = SetIfNone(va, entry);
                if (r != LockedResult.Retry)
                {
                    mapped = r == LockedResult.Done;
                    return mapped;
                }
            }
        }
        finally
        {
            if (!mapped)
            {
                _arena.PutPage(page);
            }
        }
    }

    /// <summary>
    /// A page fault at <paramref name="va"/> (<c>handle_mm_fault</c> for anonymous memory): if a page is mapped, marks it
    /// accessed (and dirty for a write); if not, allocates a zeroed page and maps it writable, populating tables on the way.
    /// </summary>
    /// <param name="va">A virtual address of the address space.</param>
    /// <param name="write">A write fault.</param>
    /// <returns>The page mapped at <paramref name="va"/>. No reference is given to the caller: to use the page's memory
    /// take one with <see cref="TryGetUserPageFast"/>.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="InvalidOperationException">A write fault on a read-only mapping.</exception>
    /// <exception cref="OutOfPagesException">No page was free.</exception>
    public Pfn Fault(ulong va, bool write = false)
    {
        CheckAddress(va, nameof(va));
        ulong* pmdSlot = PmdSlot(va, allocate: true);
        Pfn fresh = default;
        bool haveFresh = false;
        try
        {
            while (true)
            {
                var pmd = new Pte(Volatile.Read(ref *pmdSlot));
                if (pmd.IsHuge)
                {
                    if (TouchHuge(pmdSlot, write, out Pte huge))
                    {
                        return huge.Pfn + (uint)PteIndex(va);
                    }

                    continue;
                }

                if (pmd.IsNone)
                {
                    PteAlloc(pmdSlot);
                    continue;
                }

                if (!haveFresh && PeekPteNone(pmd, va))
                {
                    // do_anonymous_page: the PTE looks empty, so allocate before taking the lock (checked again under it).
                    fresh = _arena.AllocPages(0);
                    _arena.GetSpan(fresh).Clear();
                    haveFresh = true;
                }

                LockedResult r = FaultLocked(va, write, haveFresh ? fresh : null, out Pfn result);
                if (r == LockedResult.Done)
                {
                    if (haveFresh && result == fresh)
                    {
                        haveFresh = false; // the mapping owns it now
                    }

                    return result;
                }

                if (r == LockedResult.NeedPage)
                {
                    // do_anonymous_page: allocate outside the lock, then look again.
                    fresh = _arena.AllocPages(0);
                    _arena.GetSpan(fresh).Clear();
                    haveFresh = true;
                }
            }
        }
        finally
        {
            if (haveFresh)
            {
                _arena.FreePages(fresh, 0);
            }
        }
    }

    /// <summary>
    /// <c>zap_page_range</c> (MADV_DONTNEED): unmaps every page in [<paramref name="va"/>, <paramref name="va"/> +
    /// <paramref name="length"/>) and frees through a private <see cref="MmuGather"/>; huge PMDs wholly inside are zapped
    /// whole (their deposit freed after a grace period), huge PMDs partly inside are split first. Tables stay.
    /// </summary>
    /// <param name="va">Page-aligned start.</param>
    /// <param name="length">Bytes, a multiple of the page size.</param>
    /// <returns>How many pages were unmapped (a huge PMD counts its <see cref="PtesPerTable"/> pages).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is not page-aligned or leaves the address space.</exception>
    public long Zap(ulong va, ulong length)
    {
        MmuGather tlb = RentGather();
        try
        {
            return Zap(va, length, tlb);
        }
        finally
        {
            ReturnGather(tlb);
        }
    }

    /// <summary>
    /// <c>zap_page_range</c> into the caller's gather: entries are cleared under their table's lock, and the pages and
    /// tables go to <paramref name="tlb"/>, which frees them after its flush.
    /// </summary>
    /// <param name="va">Page-aligned start.</param>
    /// <param name="length">Bytes, a multiple of the page size.</param>
    /// <param name="tlb">A gather of this address space.</param>
    /// <returns>How many pages were unmapped.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The range is not page-aligned or leaves the address space.</exception>
    /// <exception cref="ArgumentException">The gather belongs to another address space.</exception>
    public long Zap(ulong va, ulong length, MmuGather tlb)
    {
        ArgumentNullException.ThrowIfNull(tlb);
        if (tlb.AddressSpace != this)
        {
            throw new ArgumentException("The gather belongs to another address space.", nameof(tlb));
        }

        CheckPageAddress(va, nameof(va));
        ulong pageMask = (1UL << _pageShift) - 1;
        if ((length & pageMask) != 0 || length > AddressSpaceSize - va)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, "The length must be a multiple of the page size and stay inside the address space.");
        }

        ulong end = va + length;
        ulong hugeMask = HugePageSize - 1;
        long zapped = 0;
        for (ulong addr = va; addr < end;)
        {
            ulong next = Math.Min((addr | hugeMask) + 1, end);
            ulong* pmdSlot = PmdSlot(addr, allocate: false);
            if (pmdSlot == null)
            {
                ulong topSpan = HugePageSize << _pmdBits;
                addr = Math.Min((addr | (topSpan - 1)) + 1, end);
                continue;
            }

            var pmd = new Pte(Volatile.Read(ref *pmdSlot));
            if (pmd.IsNone)
            {
                addr = next;
                continue;
            }

            if (pmd.IsHuge)
            {
                if ((addr & hugeMask) == 0 && next - addr == HugePageSize)
                {
                    if (ZapHugePmd(pmdSlot, tlb))
                    {
                        zapped += PtesPerTable;
                        addr = next;
                    }
                }
                else
                {
                    SplitHugePmd(pmdSlot);
                }

                continue; // on a lost race, look at the PMD again
            }

            long n = ZapPteRange(addr, next, tlb);
            if (n < 0)
            {
                continue; // the table went away under us: look at the PMD again
            }

            zapped += n;
            if (tlb.NeedsFlush)
            {
                tlb.Flush(); // no page-table lock is held here
            }

            addr = next;
        }

        return zapped;
    }

    /// <summary>
    /// Maps the folio <paramref name="folio"/> of order <see cref="HugeOrder"/> with one huge PMD at
    /// <paramref name="va"/> (<c>do_huge_pmd_anonymous_page</c>), depositing a preallocated PTE table so that a later split
    /// cannot fail (H5). The mapping takes its own reference on the folio.
    /// </summary>
    /// <param name="va">An address aligned to <see cref="HugePageSize"/>.</param>
    /// <param name="folio">The head of an allocated folio of order <see cref="HugeOrder"/>.</param>
    /// <param name="writable">Map it writable.</param>
    /// <returns>True when mapped; false when the PMD is not empty (a table or a huge mapping is there).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space or not aligned.</exception>
    /// <exception cref="ArgumentException">The page is not the head of a folio of order <see cref="HugeOrder"/>.</exception>
    /// <exception cref="OutOfPagesException">No page was free for the deposit.</exception>
    public bool MapHuge(ulong va, Pfn folio, bool writable = true)
    {
        CheckHugeAddress(va, nameof(va));
        if (!_arena.IsFolioHead(folio) || _arena.OrderOf(folio) != HugeOrder)
        {
            throw new ArgumentException($"A huge PMD maps the head of a folio of order {HugeOrder}; {folio} is not one.", nameof(folio));
        }

        ulong* pmdSlot = PmdSlot(va, allocate: true);
        _arena.GetPage(folio); // the PMD's reference
        PtFragment deposit;
        try
        {
            deposit = AllocTable();
        }
        catch
        {
            _arena.PutPage(folio);
            throw;
        }

        bool mapped = false;
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            if (Volatile.Read(ref *pmdSlot) == 0)
            {
                Deposit(pmdSlot, deposit);
                Volatile.Write(ref *pmdSlot, Pte.Map(folio, PteBits.Huge | PteBits.Accessed | (writable ? PteBits.Write : PteBits.None)).Value);
                Interlocked.Increment(ref _hugeMappings);
                mapped = true;
            }
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }

        if (!mapped)
        {
            FreeTableNow(deposit, throwOnBug: true); // never published
            _arena.PutPage(folio);
        }

        return mapped;
    }

    /// <summary>
    /// <c>__split_huge_pmd</c>: replaces the huge PMD at <paramref name="va"/> by the withdrawn deposit filled with one PTE
    /// per page of the folio (H4): every PTE is written before the PMD points at the table (release store), and the
    /// folio's references go from 1 to one per PTE. The folio itself stays one folio.
    /// </summary>
    /// <param name="va">Any address inside the huge mapping.</param>
    /// <returns>True when a huge PMD was split; false when there is none at the address.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    public bool SplitHuge(ulong va)
    {
        CheckAddress(va, nameof(va));
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        return pmdSlot != null && SplitHugePmd(pmdSlot);
    }

    /// <summary>
    /// khugepaged's <c>collapse_huge_page</c> for the PMD range of <paramref name="va"/>: under the PMD lock and the table's
    /// lock, the PTEs are cleared, the pages' references checked (a page with references besides these mappings makes it
    /// <see cref="CollapseResult.Busy"/>, with every PTE restored), their contents copied into a new folio, the PMD
    /// switched to a huge mapping of it, and the emptied table deposited under it. The old pages are freed through a
    /// gather after the locks are dropped.
    /// </summary>
    /// <param name="va">Any address in the PMD range.</param>
    /// <returns>What happened.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    public CollapseResult Collapse(ulong va)
    {
        MmuGather tlb = RentGather();
        try
        {
            return Collapse(va, tlb);
        }
        finally
        {
            ReturnGather(tlb);
        }
    }

    /// <summary><see cref="Collapse(ulong)"/> with the old pages going to the caller's gather.</summary>
    /// <param name="va">Any address in the PMD range.</param>
    /// <param name="tlb">A gather of this address space.</param>
    /// <returns>What happened.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="ArgumentException">The gather belongs to another address space.</exception>
    public CollapseResult Collapse(ulong va, MmuGather tlb)
    {
        ArgumentNullException.ThrowIfNull(tlb);
        if (tlb.AddressSpace != this)
        {
            throw new ArgumentException("The gather belongs to another address space.", nameof(tlb));
        }

        CheckAddress(va, nameof(va));
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        if (pmdSlot == null || !new Pte(Volatile.Read(ref *pmdSlot)).IsTable)
        {
            return CollapseResult.NoTable;
        }

        if (!_arena.TryAllocFolio(HugeOrder, out Pfn folio))
        {
            return CollapseResult.OutOfPages;
        }

        _arena.GetSpan(folio, HugeOrder).Clear();
        var old = new ulong[PtesPerTable];
        CollapseResult result = CollapseLocked(pmdSlot, va & ~(HugePageSize - 1), folio, old);
        if (result != CollapseResult.Collapsed)
        {
            _arena.FreePages(folio, HugeOrder);
            return result;
        }

        ulong start = va & ~(HugePageSize - 1);
        tlb.TrackRange(start, start + HugePageSize);
        for (int i = 0; i < old.Length; i++)
        {
            if (old[i] != 0)
            {
                tlb.RemovePage(new Pte(old[i]).Pfn, start + ((ulong)i << _pageShift)); // each cleared PTE's reference, dropped after the flush
            }
        }

        return result;
    }

    /// <summary>
    /// khugepaged's <c>retract_page_tables</c> for an empty table: under the PMD lock and the table's lock, a table with
    /// no entry is unlinked (the PMD cleared) and freed after a grace period (<c>pte_free_defer</c>), so a walker that
    /// still holds the old PMD value reads an empty, intact table and its lock recheck fails.
    /// </summary>
    /// <param name="va">Any address in the PMD range.</param>
    /// <returns>True when a table was retracted; false when there is none or it maps something.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    public bool RetractTable(ulong va)
    {
        CheckAddress(va, nameof(va));
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        if (pmdSlot == null)
        {
            return false;
        }

        PtFragment table;
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            var pmd = new Pte(Volatile.Read(ref *pmdSlot));
            if (!pmd.IsTable)
            {
                return false;
            }

            table = pmd.Fragment;
            ref PageDescriptor ptl = ref LockTable(table);
            try
            {
                if (new Span<ulong>(TableBase(table), PtesPerTable).IndexOfAnyExcept(0UL) >= 0)
                {
                    return false; // a PTE was installed meanwhile: not retractable
                }

                Volatile.Write(ref *pmdSlot, 0UL); // pmdp_collapse_flush, under both locks (P3)
            }
            finally
            {
                PtLock.Unlock(ref ptl);
            }
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }

        FreeTable(table);
        return true;
    }

    /// <summary>
    /// Every mapping, in address order (a quiescent read for tests and tools: concurrent changes may or may not show).
    /// </summary>
    /// <returns>The PTEs and huge PMDs that map something.</returns>
    public IReadOnlyList<PageMapping> Mappings()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _destroyed) != 0, this);
        var list = new List<PageMapping>();
        long top = Volatile.Read(ref _top);
        if (top == 0)
        {
            return list;
        }

        ulong* topBase = PageBase(new Pfn((uint)(top - 1)));
        for (int t = 0; t < 1 << _topBits; t++)
        {
            var te = new Pte(Volatile.Read(ref topBase[t]));
            if (!te.IsTable)
            {
                continue;
            }

            ulong* pmds = PageBase(te.Pfn);
            for (int i = 0; i < PmdsPerTable; i++)
            {
                var pmd = new Pte(Volatile.Read(ref pmds[i]));
                ulong addr = ((ulong)t << (_pageShift + _pteBits + _pmdBits)) | ((ulong)i << (_pageShift + _pteBits));
                if (pmd.IsHuge)
                {
                    list.Add(new PageMapping(addr, pmd));
                }
                else if (pmd.IsTable)
                {
                    ulong* ptes = TableBase(pmd.Fragment);
                    for (int j = 0; j < PtesPerTable; j++)
                    {
                        var pte = new Pte(Volatile.Read(ref ptes[j]));
                        if (!pte.IsNone)
                        {
                            list.Add(new PageMapping(addr | ((ulong)j << _pageShift), pte));
                        }
                    }
                }
            }
        }

        return list;
    }

    /// <summary>
    /// Address-space teardown (<c>exit_mmap</c>: unmap everything, <c>free_pgtables</c>, <c>pte_frag_destroy</c>), exactly
    /// once; idempotent. Every mapping's reference is dropped, every table freed after a grace period (pages come back to
    /// the arena once <see cref="Epochs"/> reclaims; a private domain is drained here). No other thread may use the
    /// address space meanwhile, as in the kernel at <c>mm_users == 0</c>. Fragments handed out by
    /// <see cref="AllocFragment"/> stay valid and are freed with <see cref="FreeFragment"/> as usual.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _destroyed, 1) != 0)
        {
            return;
        }

        if (_hash is not null)
        {
            _hash.InvalidateAll(_asid); // no hash entry may outlive the pages teardown frees (T1)
            HashBatch batch = HashBatch.Current;
            if (batch.Mm == this)
            {
                batch.Flush();
            }
        }

        TearDownTables();
        DestroyFragmentCache();
        if (_ownsEpochs)
        {
            _epochs.Barrier();
        }
    }

    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>The calling thread's spare gather for this address space's own zaps (an on-stack gather in the kernel).</summary>
    [ThreadStatic]
    private static MmuGather? t_spareGather;

    private MmuGather RentGather()
    {
        MmuGather? g = t_spareGather;
        if (g is null)
        {
            return new MmuGather(this);
        }

        t_spareGather = null; // a nested zap on this thread makes its own
        g.Rebind(this);
        return g;
    }

    private void ReturnGather(MmuGather g)
    {
        g.Dispose(); // tlb_finish_mmu: flush what is left
        g.Rebind(null);
        t_spareGather = g;
    }

    private enum LockedResult
    {
        Done,
        Exists,
        Retry,
        NeedPage,
    }

    private void CheckPageAddress(ulong va, string name)
    {
        CheckAddress(va, name);
        if ((va & ((1UL << _pageShift) - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(name, va, "The address must be page-aligned.");
        }
    }

    private void CheckHugeAddress(ulong va, string name)
    {
        CheckAddress(va, name);
        if ((va & (HugePageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(name, va, $"The address must be aligned to the huge page size (0x{HugePageSize:x}).");
        }
    }

    /// <summary>The split lock of a table named by a PMD that the caller's PMD lock keeps linked.</summary>
    private ref PageDescriptor LockTable(PtFragment table)
    {
        ref PageDescriptor ptl = ref _arena.DescriptorOf(table.Page);
        if (!PtLock.TryLock(ref ptl))
        {
            throw Bug(table.Page, "pte_lockptr", "a linked page table's lock word is poisoned");
        }

        return ref ptl;
    }

    /// <summary>
    /// <c>__pte_alloc</c> + <c>pmd_install</c>: allocate a table outside the lock, link it under the PMD lock if the PMD is
    /// still none (release store: the zeroed table is visible before the PMD names it), else give it back.
    /// </summary>
    private void PteAlloc(ulong* pmdSlot)
    {
        PtFragment table = AllocTable();
        bool linked = false;
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            if (Volatile.Read(ref *pmdSlot) == 0)
            {
                Volatile.Write(ref *pmdSlot, Pte.Table(table).Value);
                linked = true;
            }
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }

        if (!linked)
        {
            FreeTableNow(table, throwOnBug: true); // never published
        }
    }

    /// <summary>
    /// A lockless hint: does the PTE of <paramref name="va"/> in the table <paramref name="pmd"/> named look empty? Read
    /// outside any section: the arena's memory is never unmapped, and the answer is only used to allocate early; the
    /// locked path decides.
    /// </summary>
    private bool PeekPteNone(Pte pmd, ulong va) =>
        pmd.IsTable && Volatile.Read(ref TableBase(pmd.Fragment)[PteIndex(va)]) == 0;

    private LockedResult SetIfNone(ulong va, Pte entry)
    {
        using PteMapLocked map = PteOffsetMapLock(va);
        if (map.IsNull)
        {
            return LockedResult.Retry;
        }

        if (!map.Entry.IsNone)
        {
            return LockedResult.Exists;
        }

        map.Set(map.Index, entry);
        return LockedResult.Done;
    }

    private LockedResult FaultLocked(ulong va, bool write, Pfn? fresh, out Pfn result)
    {
        result = default;
        using PteMapLocked map = PteOffsetMapLock(va);
        if (map.IsNull)
        {
            return LockedResult.Retry;
        }

        Pte cur = map.Entry;
        if (cur.IsPresent)
        {
            if (write && (cur.Bits & PteBits.Write) == 0)
            {
                throw new InvalidOperationException($"PageCore: a write fault at 0x{va:x} on a read-only mapping.");
            }

            PteBits young = PteBits.Accessed | (write ? PteBits.Dirty : PteBits.None);
            if ((cur.Bits & young) != young)
            {
                map.Update(map.Index, PteBits.None, young); // ptep_set_access_flags under the lock
            }

            result = cur.Pfn;
            return LockedResult.Done;
        }

        if (fresh is not Pfn page)
        {
            return LockedResult.NeedPage;
        }

        map.Set(map.Index, Pte.Map(page, PteBits.Accessed | PteBits.Write | (write ? PteBits.Dirty : PteBits.None)));
        result = page;
        return LockedResult.Done;
    }

    /// <summary>Marks a huge PMD accessed (and dirty) under the PMD lock; false when it is no longer huge.</summary>
    private bool TouchHuge(ulong* pmdSlot, bool write, out Pte huge)
    {
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            huge = new Pte(Volatile.Read(ref *pmdSlot));
            if (!huge.IsHuge)
            {
                return false;
            }

            if (write && (huge.Bits & PteBits.Write) == 0)
            {
                throw new InvalidOperationException("PageCore: a write fault on a read-only huge mapping.");
            }

            Pte young = huge.With(PteBits.Accessed | (write ? PteBits.Dirty : PteBits.None));
            if (young != huge)
            {
                Volatile.Write(ref *pmdSlot, young.Value);
            }

            return true;
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }
    }

    /// <summary><c>zap_pte_range</c>: clears the present entries in [addr, end) under the table's lock; -1 when the table went away.</summary>
    private long ZapPteRange(ulong addr, ulong end, MmuGather tlb)
    {
        using PteMapLocked map = PteOffsetMapLock(addr);
        if (map.IsNull)
        {
            return -1;
        }

        int first = map.Index;
        int last = first + (int)((end - addr) >> _pageShift);
        long n = 0;
        EnterLazyMmu(); // inside the PTE lock: invalidations of hashed entries are batched...
        try
        {
            for (int i = first; i < last; i++)
            {
                Pte pte = map[i];
                if (pte.IsPresent)
                {
                    // Unhook first (ptep_get_and_clear_full); the page is freed only after the gather's flush.
                    ulong va = addr + ((ulong)(i - first) << _pageShift);
                    map.Set(i, Pte.None);
                    tlb.RemovePage(pte.Pfn, va);
                    n++;
                }
            }

            tlb.TrackRange(addr, end);
        }
        finally
        {
            LeaveLazyMmu(); // ...and drained here, before the lock is released (seed 003)
        }

        return n;
    }

    /// <summary><c>zap_huge_pmd</c>: clears a huge PMD under the PMD lock, withdraws its deposit; both freed by the gather.</summary>
    private bool ZapHugePmd(ulong* pmdSlot, MmuGather tlb)
    {
        Pte pmd;
        PtFragment? deposit;
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            pmd = new Pte(Volatile.Read(ref *pmdSlot));
            if (!pmd.IsHuge)
            {
                return false;
            }

            Volatile.Write(ref *pmdSlot, 0UL); // pmdp_huge_get_and_clear
            deposit = Withdraw(pmdSlot);         // after the PMD is cleared, as powerpc needs
            Interlocked.Decrement(ref _hugeMappings);
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }

        if (deposit is PtFragment table)
        {
            tlb.RemoveTable(table);
        }

        tlb.RemovePage(pmd.Pfn);
        return true;
    }

    /// <summary><c>__split_huge_pmd_locked</c> for an anonymous folio (H4, H5); false when the PMD is not huge.</summary>
    private bool SplitHugePmd(ulong* pmdSlot)
    {
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            var pmd = new Pte(Volatile.Read(ref *pmdSlot));
            if (!pmd.IsHuge)
            {
                return false;
            }

            PtFragment table = Withdraw(pmdSlot) ?? AllocTable(); // a corrupted deposit was reported and leaked
            ulong* ptes = TableBase(table);
            PteBits bits = pmd.Bits & ~PteBits.Huge;
            for (int i = 0; i < PtesPerTable; i++)
            {
                ptes[i] = Pte.Map(pmd.Pfn + (uint)i, bits).Value; // plain stores: the table is not reachable yet
            }

            // folio_ref_add(folio, HPAGE_PMD_NR - 1): the PMD's reference becomes the first PTE's.
            _arena.GetPages(pmd.Pfn, PtesPerTable - 1);

            // smp_wmb + pmd_populate: a release store, so the PTEs are visible before the PMD names the table. One store
            // replaces the huge entry, so a lockless walker sees either the huge mapping or the filled table.
            Volatile.Write(ref *pmdSlot, Pte.Table(table).Value);
            Interlocked.Decrement(ref _hugeMappings);
            return true;
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }
    }

    private CollapseResult CollapseLocked(ulong* pmdSlot, ulong collapseVa, Pfn folio, ulong[] old)
    {
        ref PageDescriptor pml = ref PmdLock(pmdSlot);
        try
        {
            var pmd = new Pte(Volatile.Read(ref *pmdSlot));
            if (!pmd.IsTable)
            {
                return CollapseResult.NoTable;
            }

            PtFragment table = pmd.Fragment;
            ulong* ptes = TableBase(table);
            ref PageDescriptor ptl = ref LockTable(table);
            try
            {
                // __collapse_huge_page_isolate: clear every PTE first, then check the references, so a lockless walker
                // either sees the cleared PTE on its recheck or is seen here (the fence orders the clears before the loads).
                int present = 0;
                PteBits dirty = PteBits.None;
                EnterLazyMmu();
                try
                {
                    for (int i = 0; i < old.Length; i++)
                    {
                        if (Volatile.Read(ref ptes[i]) != 0)
                        {
                            old[i] = PteSet(ptes + i, collapseVa + ((ulong)i << _pageShift), 0UL);
                            dirty |= new Pte(old[i]).Bits & PteBits.Dirty;
                            present++;
                        }
                        else
                        {
                            old[i] = 0;
                        }
                    }
                }
                finally
                {
                    LeaveLazyMmu();
                }

                if (present == 0)
                {
                    return CollapseResult.NothingMapped;
                }

                Interlocked.MemoryBarrier();
                if (!OnlyMappedHere(old))
                {
                    for (int i = 0; i < old.Length; i++)
                    {
                        if (old[i] != 0)
                        {
                            // The old entries' hash invalidations were queued and drained: restore them unhashed.
                            Volatile.Write(ref ptes[i], new Pte(old[i]).Without(PteBits.Hashed).WithHashSlot(0).Value);
                        }
                    }

                    return CollapseResult.Busy;
                }

                // __collapse_huge_page_copy: nobody else holds these pages.
                int pageSize = _arena.PageSize;
                Span<byte> target = _arena.GetSpan(folio, HugeOrder);
                for (int i = 0; i < old.Length; i++)
                {
                    if (old[i] != 0)
                    {
                        _arena.GetSpan(new Pte(old[i]).Pfn).CopyTo(target.Slice(i * pageSize, pageSize));
                    }
                }

                // The emptied table becomes the deposit (collapse_huge_page deposits the old table); then the huge PMD
                // replaces the table pointer with one release store, under both locks (P3).
                Deposit(pmdSlot, table);
                Volatile.Write(ref *pmdSlot, Pte.Map(folio, PteBits.Huge | PteBits.Accessed | PteBits.Write | dirty).Value);
                Interlocked.Increment(ref _hugeMappings);
                return CollapseResult.Collapsed;
            }
            finally
            {
                PtLock.Unlock(ref ptl);
            }
        }
        finally
        {
            PtLock.Unlock(ref pml);
        }
    }

    /// <summary>True when each folio mapped by <paramref name="old"/> has exactly as many references as entries here.</summary>
    private bool OnlyMappedHere(ulong[] old)
    {
        Span<uint> heads = old.Length <= 512 ? stackalloc uint[old.Length] : new uint[old.Length];
        int n = 0;
        foreach (ulong e in old)
        {
            if (e != 0)
            {
                heads[n++] = _arena.HeadOf(new Pte(e).Pfn).Value;
            }
        }

        heads = heads[..n];
        heads.Sort();
        for (int i = 0; i < n;)
        {
            int j = i;
            while (j < n && heads[j] == heads[i])
            {
                j++;
            }

            if (_arena.RefCount(new Pfn(heads[i])) != j - i)
            {
                return false;
            }

            i = j;
        }

        return true;
    }

    private void TearDownTables()
    {
        long top = Interlocked.Exchange(ref _top, 0);
        if (top == 0)
        {
            return;
        }

        var topPage = new Pfn((uint)(top - 1));
        ulong* topBase = PageBase(topPage);
        for (int t = 0; t < 1 << _topBits; t++)
        {
            var te = new Pte(topBase[t]);
            if (!te.IsTable)
            {
                continue;
            }

            ulong* pmds = PageBase(te.Pfn);
            for (int i = 0; i < PmdsPerTable; i++)
            {
                var pmd = new Pte(pmds[i]);
                if (pmd.IsHuge)
                {
                    pmds[i] = 0;
                    if (Withdraw(pmds + i) is PtFragment deposit)
                    {
                        FreeTable(deposit);
                    }

                    Interlocked.Decrement(ref _hugeMappings);
                    _arena.PutPage(pmd.Pfn);
                }
                else if (pmd.IsTable)
                {
                    pmds[i] = 0;
                    ulong* ptes = TableBase(pmd.Fragment);
                    for (int j = 0; j < PtesPerTable; j++)
                    {
                        var pte = new Pte(ptes[j]);
                        if (pte.IsPresent)
                        {
                            ptes[j] = 0;
                            _arena.PutPage(pte.Pfn);
                        }
                    }

                    FreeTable(pmd.Fragment);
                }
            }

            FreeDirectoryPage(te.Pfn);
        }

        FreeDirectoryPage(topPage);
    }

    private void FreeDirectoryPage(Pfn page)
    {
        if (_legacyFreeTablesAtOnce)
        {
            FreeDirectoryPageNow(page);
            return;
        }

        _epochs.Defer(static s => ((DeferredDirectory)s!).Run(), new DeferredDirectory(this, page));
    }

    private sealed class DeferredDirectory(AddressSpace owner, Pfn page)
    {
        public void Run() => owner.FreeDirectoryPageNow(page);
    }
}
