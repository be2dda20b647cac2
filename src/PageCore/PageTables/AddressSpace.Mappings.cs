namespace PageCore;

/// <summary>One mapping found by <see cref="AddressSpace.Mappings"/>.</summary>
/// <param name="Address">The virtual address the entry maps (the start of the huge range for a huge PMD).</param>
/// <param name="Entry">The PTE, or the huge PMD.</param>
public readonly record struct PageMapping(ulong Address, Pte Entry)
{
    /// <summary>True for a huge PMD mapping <see cref="AddressSpace.HugePageSize"/> bytes.</summary>
    public bool IsHuge => Entry.IsHuge;
}

// Listing every mapping (a quiescent read for tests and tools).
public sealed unsafe partial class AddressSpace
{
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
}
