using PageCore.Descriptors;

namespace PageCore;

// Unmapping (zap_page_range): PTE ranges and huge PMDs, freed through an MmuGather; the thread's spare gather.
public sealed unsafe partial class AddressSpace
{
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
}
