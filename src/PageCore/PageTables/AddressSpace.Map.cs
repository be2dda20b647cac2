using PageCore.Descriptors;

namespace PageCore;

// Mapping one page (MapPage: set_pte_at under the PTE lock) and populating a PTE table on the way (__pte_alloc);
// also the locked-path results the fault path shares and the page-alignment check the zap path shares.
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

    // ---------------------------------------------------------------------------------------------------------------

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
}
