namespace PageCore.Stress.Scenarios;

/// <summary>
/// The page-table churn both page-table scenarios run: mappers, faulters and zappers against khugepaged-like collapse,
/// split, retract and huge maps on a few PMD ranges of one address space, with lockless walkers
/// (<c>get_user_pages_fast</c>, <c>pte_offset_map</c> readers, <c>pte_offset_map_lock</c> readers) in the background.
/// Every entry a walker reads must be a valid entry or none; every bug the address space reports on a deferred path is
/// a violation; at the end the tables are verified (P5, H5) and every page must come back.
/// </summary>
internal sealed class PageTableWorkload
{
    public const int Map = 0, Fault = 1, Zap = 2, Collapse = 3, Split = 4, Retract = 5, MapHuge = 6, GupFast = 7, MapLock = 8, MapRead = 9, Reclaim = 10;

    private readonly StressContext _ctx;
    private readonly PageArena _arena;
    private readonly AddressSpace _mm;
    private readonly int _ranges;
    private readonly int[] _weights;
    private readonly ForwardOnce _bugsForwarded = new();

    /// <param name="ctx">The run.</param>
    /// <param name="arena">A checked arena (freed tables are poisoned).</param>
    /// <param name="mm">The address space under test.</param>
    /// <param name="ranges">How many PMD ranges the threads share.</param>
    /// <param name="weights">Relative weights of Map..MapHuge for the workers.</param>
    public PageTableWorkload(StressContext ctx, PageArena arena, AddressSpace mm, int ranges, int[] weights)
    {
        _ctx = ctx;
        _arena = arena;
        _mm = mm;
        _ranges = ranges;
        _weights = weights;
    }

    public static OpKind[] Operations =>
    [
        new("map page", [], []), new("fault", [], []), new("zap", [], []), new("collapse", [], []), new("split huge", [], []),
        new("retract", [], []), new("map huge", [], []), new("gup-fast walk", [ArenaCounter.SpeculativeGetRetries], []),
        new("pte_offset_map_lock", [], [], TakesLock: true), new("pte_offset_map scan", [], []),
        new("epoch reclaim", [], [], TakesLock: true),
    ];

    /// <summary>Runs the workers and walkers, then the end-of-run checks on the address space; disposes it.</summary>
    public TimeSpan Run(int walkers)
    {
        var workers = Enumerable.Range(0, _ctx.Threads)
            .Select(i => ($"mm-{i}", (Action<Recorder>)(rec => Work(rec, i)))).ToList();
        var background = Enumerable.Range(0, walkers)
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Walk(rec, i, stop))))
            .Concat(Enumerable.Range(0, 2).Select(i => ($"reclaimer-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => ReclaimLoop(rec, stop)))))
            .ToList();
        TimeSpan elapsed = Harness.Run(_ctx, workers, background);
        AuditBugs();
        _mm.Epochs.Barrier();
        AuditBugs();
        PageTableReport report = _mm.VerifyTables();
        foreach (string p in report.Problems.Take(report.Problems.Count - _mm.ReportedBugs.Count))
        {
            _ctx.Violation("page tables: " + p);
        }

        _ctx.Log.WriteLine($"page tables at the end: {report}");
        _mm.Dispose();
        _mm.Epochs.Barrier();
        return elapsed;
    }

    private ulong RandomAddress(Random rng) => (ulong)rng.Next(_ranges) * _mm.HugePageSize + ((ulong)rng.Next(_mm.PtesPerTable) << 12);

    private void Work(Recorder rec, int id)
    {
        EpochReclaimScenario.MarkNoLinger();
        var rng = new Random(_ctx.Seed * 31 + id);
        int total = _weights.Sum();
        ulong huge = _mm.HugePageSize;
        while (DateTime.UtcNow < _ctx.Deadline)
        {
            int pick = rng.Next(total), op = 0;
            while (pick >= _weights[op])
            {
                pick -= _weights[op++];
            }

            ulong va = RandomAddress(rng);
            ulong range = va & ~(huge - 1);
            long t = rec.Begin();
            try
            {
                switch (op)
                {
                    case Map:
                        if (_arena.TryAllocPages(0, out Pfn p))
                        {
                            _arena.GetSpan(p).Clear();
                            _mm.MapPage(va, p);
                            _arena.PutPage(p); // the mapping keeps its own reference
                        }

                        break;
                    case Fault:
                        _mm.Fault(va, write: rng.Next(2) == 0);
                        break;
                    case Zap:
                        ulong len = Math.Min((ulong)(1 + rng.Next(2 * _mm.PtesPerTable)) << 12, (ulong)_ranges * huge - va);
                        _mm.Zap(va, len);
                        break;
                    case Collapse:
                        _mm.Collapse(range);
                        break;
                    case Split:
                        _mm.SplitHuge(range);
                        break;
                    case Retract:
                        _mm.RetractTable(range);
                        break;
                    case MapHuge:
                        if (_arena.TryAllocFolio(_mm.HugeOrder, out Pfn folio))
                        {
                            _mm.MapHuge(range, folio);
                            _arena.PutPage(folio);
                        }

                        break;
                }
            }
            catch (OutOfPagesException)
            {
                // a full arena is a normal outcome here; the operation changed nothing
            }
            catch (PageBugException bug)
            {
                _ctx.Violation(bug);
            }

            rec.End(op, t);
            if ((id & 3) == 0 && rng.Next(64) == 0)
            {
                AuditBugs();
            }
        }
    }

    private void Walk(Recorder rec, int id, CancellationToken stop)
    {
        var rng = new Random(_ctx.Seed * 17 + 1000 + id);
        while (!stop.IsCancellationRequested)
        {
            ulong va = RandomAddress(rng);
            int kind = rng.Next(3);
            long t = rec.Begin();
            try
            {
                if (kind == 0)
                {
                    if (_mm.TryGetUserPageFast(va, out Pfn page))
                    {
                        _arena.PutPage(page);
                    }

                    rec.End(GupFast, t);
                }
                else if (kind == 1)
                {
                    using PteMapLocked map = _mm.PteOffsetMapLock(va);
                    for (int i = 0; !map.IsNull && i < map.Count && CheckEntry(map.Pmd, i, map[i]); i++)
                    {
                    }

                    rec.End(MapLock, t);
                }
                else
                {
                    using PteMap map = _mm.PteOffsetMap(va);
                    if (!map.IsNull)
                    {
                        // A walker that works on the table a while (a fault-around, a page-table dump): every entry it
                        // reads must be an entry or none, however long it takes.
                        bool ok = true;
                        for (int i = 0; ok && i < 4 * map.Count; i++)
                        {
                            ok = CheckEntry(map.Pmd, i % map.Count, map[i % map.Count]);
                        }

                        if (ok && rng.Next(4) == 0)
                        {
                            // Now and then the walker is preempted on the table and reads it all again afterwards: an
                            // anchor that stays inside its section across many deferrals and reclaim passes.
                            Thread.Yield();
                            for (int i = 0; ok && i < map.Count; i++)
                            {
                                ok = CheckEntry(map.Pmd, i, map[i]);
                            }
                        }
                    }

                    rec.End(MapRead, t);
                }
            }
            catch (PageBugException bug)
            {
                _ctx.Violation(bug);
            }
        }
    }

    /// <summary>
    /// Two threads reclaim the epochs at once besides the library's own passes (every 64th deferral, the timer, a
    /// failing allocation): concurrent passes are part of the adversary a grace period must hold against.
    /// </summary>
    private void ReclaimLoop(Recorder rec, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            long t = rec.Begin();
            _mm.Epochs.Reclaim();
            rec.End(Reclaim, t);
            Thread.Yield();
        }
    }

    /// <summary>An entry a walker read must be an entry or none; false (and a violation) when it is poison or garbage.</summary>
    private bool CheckEntry(Pte pmd, int index, Pte e)
    {
        if (!e.IsBad)
        {
            return true;
        }

        _ctx.Violation($"a walker read entry {index} = {e} of page table {pmd.Fragment.Page}#{pmd.Fragment.Index}: the table was freed (and poisoned) while the walker could still reach it (P2, seed 004)", pmd.Fragment.Page);
        return false;
    }

    private void AuditBugs()
    {
        PageBugException[] bugs = _mm.ReportedBugs.ToArray();
        _bugsForwarded.Forward(bugs.Length, i => _ctx.Violation(bugs[i]));
    }
}
