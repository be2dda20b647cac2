using PageCore.Descriptors;

namespace PageCore;

// The page fault path (handle_mm_fault for anonymous memory), on a PTE or on a huge PMD.
public sealed unsafe partial class AddressSpace
{
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

    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// A lockless hint: does the PTE of <paramref name="va"/> in the table <paramref name="pmd"/> named look empty? Read
    /// outside any section: the arena's memory is never unmapped, and the answer is only used to allocate early; the
    /// locked path decides.
    /// </summary>
    private bool PeekPteNone(Pte pmd, ulong va) =>
        pmd.IsTable && Volatile.Read(ref TableBase(pmd.Fragment)[PteIndex(va)]) == 0;

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
}
