namespace PageCore;

/// <summary>What <see cref="AddressSpace.VerifyTables"/> found.</summary>
public sealed class PageTableReport
{
    /// <summary>PTE tables linked from a PMD.</summary>
    public long LinkedTables { get; init; }

    /// <summary>PTE tables deposited under huge PMDs.</summary>
    public long DepositedTables { get; init; }

    /// <summary>Detached tables waiting for their grace period.</summary>
    public long PendingTableFrees { get; init; }

    /// <summary>PTEs mapping a page.</summary>
    public long MappedPtes { get; init; }

    /// <summary>Huge PMD mappings.</summary>
    public long HugeMappings { get; init; }

    /// <summary>Every broken invariant found, one line each; empty when clean.</summary>
    public IReadOnlyList<string> Problems { get; init; } = [];

    /// <summary>True when no problem was found.</summary>
    public bool IsClean => Problems.Count == 0;

    /// <inheritdoc />
    public override string ToString() =>
        $"{LinkedTables} linked + {DepositedTables} deposited + {PendingTableFrees} pending tables, {MappedPtes} PTEs, {HugeMappings} huge PMDs" +
        (IsClean ? ", clean" : $", {Problems.Count} problem(s): " + string.Join("; ", Problems.Take(8)));
}

/// <summary>The quiescent check of the page tables.</summary>
public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// A full check of the page tables; call it when no other thread changes the address space. Checks that every entry
    /// is valid, every mapped page is allocated, every huge PMD maps a folio of <see cref="HugeOrder"/> and has exactly one
    /// deposit while no other PMD has one (H5), and that tables linked + deposited + waiting for a grace period =
    /// <see cref="PageTableCount"/> (P5). Bugs collected in <see cref="ReportedBugs"/> are listed too.
    /// </summary>
    /// <returns>The counts and the problems found.</returns>
    public PageTableReport VerifyTables()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _destroyed) != 0, this);
        var problems = new List<string>();
        long linked = 0, deposited = 0, ptes = 0, huge = 0;
        long top = Volatile.Read(ref _top);
        if (top != 0)
        {
            ulong* topBase = PageBase(new Pfn((uint)(top - 1)));
            for (int t = 0; t < 1 << _topBits; t++)
            {
                var te = new Pte(Volatile.Read(ref topBase[t]));
                if (te.IsNone)
                {
                    continue;
                }

                if (!te.IsTable)
                {
                    problems.Add($"top entry {t} is {te}");
                    continue;
                }

                ulong* pmds = PageBase(te.Pfn);
                for (int i = 0; i < PmdsPerTable; i++)
                {
                    var pmd = new Pte(Volatile.Read(ref pmds[i]));
                    var dep = new Pte(Volatile.Read(ref pmds[PmdsPerTable + i]));
                    string where = $"PMD {t}/{i}";
                    if (pmd.IsHuge)
                    {
                        huge++;
                        if (!_arena.IsFolioHead(pmd.Pfn) || _arena.OrderOf(pmd.Pfn) != HugeOrder || _arena.RefCount(pmd.Pfn) < 1)
                        {
                            problems.Add($"{where} maps {pmd.Pfn}, not a live folio of order {HugeOrder}");
                        }

                        if (!dep.IsTable)
                        {
                            problems.Add($"{where} is huge with no deposited table (H5)");
                        }
                        else
                        {
                            deposited++;
                            CheckTableEmpty(dep.Fragment, $"the deposit of {where}", problems);
                        }

                        continue;
                    }

                    if (!dep.IsNone)
                    {
                        problems.Add($"{where} is not huge but has a deposit {dep} (H5)");
                    }

                    if (pmd.IsNone)
                    {
                        continue;
                    }

                    if (!pmd.IsTable)
                    {
                        problems.Add($"{where} is {pmd}");
                        continue;
                    }

                    linked++;
                    ulong* entries = TableBase(pmd.Fragment);
                    for (int j = 0; j < PtesPerTable; j++)
                    {
                        var pte = new Pte(Volatile.Read(ref entries[j]));
                        if (pte.IsNone)
                        {
                            continue;
                        }

                        if (!pte.IsPresent || pte.IsHuge)
                        {
                            problems.Add($"{where} PTE {j} is {pte}");
                            continue;
                        }

                        ptes++;
                        if (_arena.RefCount(pte.Pfn) < 1)
                        {
                            problems.Add($"{where} PTE {j} maps {pte.Pfn}, which has no reference");
                        }
                    }
                }
            }
        }

        long pending = Interlocked.Read(ref _pendingTableFrees);
        if (linked + deposited + pending != PageTableCount)
        {
            problems.Add($"P5: {linked} linked + {deposited} deposited + {pending} pending tables != {PageTableCount} allocated");
        }

        if (deposited != DepositedTableCount || huge != HugeMappingCount)
        {
            problems.Add($"counters: {deposited} deposits and {huge} huge PMDs found, {DepositedTableCount} and {HugeMappingCount} counted");
        }

        foreach (PageBugException bug in _bugs)
        {
            problems.Add(bug.Message);
        }

        return new PageTableReport
        {
            LinkedTables = linked, DepositedTables = deposited, PendingTableFrees = pending, MappedPtes = ptes, HugeMappings = huge, Problems = problems,
        };
    }

    private void CheckTableEmpty(PtFragment table, string what, List<string> problems)
    {
        int live = new Span<ulong>(TableBase(table), PtesPerTable).IndexOfAnyExcept(0UL);
        if (live >= 0)
        {
            problems.Add($"{what} ({table.Page}#{table.Index}) has entry {live} set");
        }
    }
}
