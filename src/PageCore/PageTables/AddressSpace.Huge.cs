using PageCore.Descriptors;

namespace PageCore;

// Huge PMDs: mapping a folio with one PMD (do_huge_pmd_anonymous_page) and splitting it (__split_huge_pmd).
public sealed unsafe partial class AddressSpace
{
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

    // ---------------------------------------------------------------------------------------------------------------

    private void CheckHugeAddress(ulong va, string name)
    {
        CheckAddress(va, name);
        if ((va & (HugePageSize - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(name, va, $"The address must be aligned to the huge page size (0x{HugePageSize:x}).");
        }
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
}
