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

// khugepaged: collapsing a PTE table into a huge PMD (collapse_huge_page) and retracting an empty table
// (retract_page_tables).
public sealed unsafe partial class AddressSpace
{
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

    // ---------------------------------------------------------------------------------------------------------------

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
}
