namespace PageCore;

// Address-space teardown (exit_mmap, free_pgtables): Dispose, and freeing every table and directory page.
public sealed unsafe partial class AddressSpace
{
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
