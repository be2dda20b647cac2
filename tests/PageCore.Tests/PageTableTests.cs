using Xunit;

namespace PageCore.Tests;

/// <summary>Page tables, single-threaded: each operation against a simple model, the PMD recheck, deposits, and the legacy forms.</summary>
public sealed class PageTableTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    private static AddressSpace NewMm(PageArena arena, bool legacyRecheck = false, bool legacyFree = false, EpochDomain? epochs = null) =>
        new(arena, new AddressSpaceOptions { LegacySkipPmdRecheck = legacyRecheck, LegacyFreeTablesAtOnce = legacyFree, Epochs = epochs });

    [Fact]
    public void GeometryFollowsTheFragmentSize()
    {
        using ArenaLease lease = TestSupport.Lease();
        using var mm = NewMm(lease.Arena);
        Assert.Equal(128, mm.PtesPerTable);
        Assert.Equal(256, mm.PmdsPerTable);
        Assert.Equal(7, mm.HugeOrder);
        Assert.Equal(128 * Page, mm.HugePageSize);
        Assert.Equal(1UL << 36, mm.AddressSpaceSize);
        Assert.Throws<ArgumentOutOfRangeException>(() => mm.Fault(mm.AddressSpaceSize));
        Assert.Throws<ArgumentOutOfRangeException>(() => mm.MapPage(5, lease.Arena.AllocPages(0)));
    }

    [Fact]
    public void OperationsMatchAModel()
    {
        int seed = TestSupport.Seed(output, nameof(OperationsMatchAModel));
        var rng = new Random(seed);
        using ArenaLease lease = TestSupport.Lease(pages: 8192, isChecked: true);
        PageArena arena = lease.Arena;
        var mm = NewMm(arena);
        ulong huge = mm.HugePageSize;
        const int Ranges = 4;
        var model = new Dictionary<ulong, (Pfn Page, bool Huge)>(); // page address -> page (and whether a huge PMD maps it)
        var own = new List<Pfn>(); // pages the test holds a reference on (MapPage keeps the caller's)
        for (int step = 0; step < 3000; step++)
        {
            ulong range = (ulong)rng.Next(Ranges) * huge + (ulong)rng.Next(3) * (huge << 8); // also other PMD tables
            ulong va = range + (ulong)rng.Next(mm.PtesPerTable) * Page;
            switch (rng.Next(9))
            {
                case 0:
                case 1:
                {
                    Pfn p = mm.Fault(va, write: rng.Next(2) == 0);
                    if (model.TryGetValue(va, out var m))
                    {
                        Assert.Equal(m.Page, p);
                    }
                    else
                    {
                        model[va] = (p, false);
                    }

                    break;
                }

                case 2:
                {
                    Pfn p = arena.AllocPages(0);
                    own.Add(p);
                    bool mapped = mm.MapPage(va, p);
                    Assert.Equal(!model.ContainsKey(va), mapped);
                    if (mapped)
                    {
                        model[va] = (p, false);
                    }

                    break;
                }

                case 3:
                {
                    ulong len = (ulong)(1 + rng.Next(200)) * Page;
                    len = Math.Min(len, mm.AddressSpaceSize - va);
                    long expected = model.Keys.Count(k => k >= va && k < va + len);
                    Assert.Equal(expected, mm.Zap(va, len));
                    foreach (ulong k in model.Keys.Where(k => k >= va && k < va + len).ToList()) model.Remove(k);

                    // A huge PMD only partly inside the range was split first: what is left of it is PTE-mapped.
                    foreach (ulong k in model.Keys.Where(k => model[k].Huge && (k / huge == va / huge || k / huge == (va + len - 1) / huge)).ToList())
                    {
                        model[k] = (model[k].Page, false);
                    }

                    break;
                }

                case 4:
                {
                    if (!arena.TryAllocFolio(mm.HugeOrder, out Pfn folio)) break;
                    bool any = Enumerable.Range(0, mm.PtesPerTable).Any(i => model.ContainsKey(range + (ulong)i * Page));
                    bool mapped = mm.MapHuge(range, folio);
                    if (any) Assert.False(mapped);
                    if (mapped)
                    {
                        for (int i = 0; i < mm.PtesPerTable; i++) model[range + (ulong)i * Page] = (folio + (uint)i, true);
                    }

                    arena.PutPage(folio); // the mapping holds its own reference
                    break;
                }

                case 5:
                {
                    bool isHuge = Enumerable.Range(0, mm.PtesPerTable).Any(i => model.TryGetValue(range + (ulong)i * Page, out var m) && m.Huge);
                    Assert.Equal(isHuge, mm.SplitHuge(va));
                    if (isHuge)
                    {
                        for (int i = 0; i < mm.PtesPerTable; i++) model[range + (ulong)i * Page] = (model[range + (ulong)i * Page].Page, false);
                    }

                    break;
                }

                case 6:
                {
                    var inRange = Enumerable.Range(0, mm.PtesPerTable).Select(i => range + (ulong)i * Page).Where(model.ContainsKey).ToList();
                    byte[][] contents = inRange.Select(a => arena.GetSpan(model[a].Page).ToArray()).ToArray();
                    foreach (ulong a in inRange) arena.GetSpan(model[a].Page)[7] = (byte)(a >> 12);
                    CollapseResult r = mm.Collapse(va);
                    bool busy = inRange.Any(a => own.Contains(model[a].Page)); // the test's own reference pins it
                    if (inRange.Count == 0 || inRange.All(a => model[a].Huge))
                    {
                        Assert.NotEqual(CollapseResult.Collapsed, r);
                    }
                    else if (busy)
                    {
                        Assert.Equal(CollapseResult.Busy, r);
                    }
                    else
                    {
                        Assert.Equal(CollapseResult.Collapsed, r);
                        Pfn folio = mm.Fault(range);
                        for (int i = 0; i < mm.PtesPerTable; i++)
                        {
                            ulong a = range + (ulong)i * Page;
                            byte expected = model.ContainsKey(a) ? (byte)(a >> 12) : (byte)0;
                            Assert.Equal(expected, arena.GetSpan(folio + (uint)i)[7]); // contents copied, holes zero
                            model[a] = (folio + (uint)i, true);
                        }
                    }

                    break;
                }

                case 7:
                {
                    bool empty = !Enumerable.Range(0, mm.PtesPerTable).Any(i => model.ContainsKey(range + (ulong)i * Page));
                    bool retracted = mm.RetractTable(va);
                    if (!empty) Assert.False(retracted);
                    break;
                }

                default:
                {
                    bool got = mm.TryGetUserPageFast(va, out Pfn p);
                    Assert.Equal(model.ContainsKey(va), got);
                    if (got)
                    {
                        Assert.Equal(model[va].Page, p);
                        arena.PutPage(p);
                    }

                    break;
                }
            }

            if (step % 100 == 0 || step == 2999)
            {
                AssertMatches(mm, model);
            }
        }

        mm.Epochs.Barrier();
        PageTableReport report = mm.VerifyTables();
        Assert.True(report.IsClean, report.ToString());
        output.WriteLine(report.ToString());
        mm.Dispose();
        foreach (Pfn p in own) arena.PutPage(p);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    private static void AssertMatches(AddressSpace mm, Dictionary<ulong, (Pfn Page, bool Huge)> model)
    {
        var seen = new Dictionary<ulong, (Pfn, bool)>();
        foreach (PageMapping m in mm.Mappings())
        {
            if (m.IsHuge)
            {
                for (uint i = 0; i < mm.PtesPerTable; i++) seen[m.Address + i * Page] = (m.Entry.Pfn + i, true);
            }
            else
            {
                seen[m.Address] = (m.Entry.Pfn, false);
            }
        }

        Assert.Equal(model.OrderBy(kv => kv.Key).Select(kv => (kv.Key, kv.Value.Page, kv.Value.Huge)),
            seen.OrderBy(kv => kv.Key).Select(kv => (kv.Key, kv.Value.Item1, kv.Value.Item2)));
    }

    [Fact]
    public void PteOffsetMapLockReturnsNullOnARetractedTable()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var mm = NewMm(arena);
        ulong va = 3 * mm.HugePageSize;
        mm.Fault(va);
        long tables = mm.PageTableCount;
        using (PteMapLocked locked = mm.PteOffsetMapLock(va + Page))
        {
            Assert.False(locked.IsNull);
            Assert.True(locked[0].IsPresent);
        }

        Assert.False(mm.RetractTable(va)); // not empty
        mm.Zap(va, Page);
        PteMap walker = mm.PteOffsetMap(va); // a lockless walker that read the PMD before the retract
        Assert.True(mm.RetractTable(va));
        using (PteMapLocked locked = mm.PteOffsetMapLock(va))
        {
            Assert.True(locked.IsNull);
        }

        Assert.True(mm.PteOffsetMap(va).IsNull);
        mm.Epochs.Reclaim();
        Assert.Equal(tables, mm.PageTableCount); // P2: not freed while the walker is inside
        Assert.True(walker.Entry.IsNone);        // an empty, intact table
        walker.Dispose();
        mm.Epochs.Barrier();
        Assert.Equal(tables - 1, mm.PageTableCount);
        Assert.True(mm.VerifyTables().IsClean);
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void DepositsStayBalancedAcrossMapSplitCollapseAndZap()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var mm = NewMm(arena);
        ulong h = mm.HugePageSize;
        Pfn folio = arena.AllocFolio(mm.HugeOrder);
        Assert.True(mm.MapHuge(0, folio));
        Assert.False(mm.MapHuge(0, folio));
        Assert.Equal(2, arena.RefCount(folio));
        arena.PutPage(folio);
        Assert.Equal((1L, 1L, 1L), (mm.DepositedTableCount, mm.HugeMappingCount, mm.PageTableCount));

        Assert.True(mm.SplitHuge(5 * Page)); // H4: 128 PTEs, 128 references
        Assert.Equal((0L, 0L, 1L), (mm.DepositedTableCount, mm.HugeMappingCount, mm.PageTableCount));
        Assert.Equal(mm.PtesPerTable, arena.RefCount(folio));
        Assert.True(mm.TryGetUserPageFast(9 * Page, out Pfn sub));
        Assert.Equal(folio + 9u, sub);
        arena.PutPage(sub);

        Assert.Equal(CollapseResult.Collapsed, mm.Collapse(0)); // the folio's 128 PTE references all go
        Assert.Equal((1L, 1L, 1L), (mm.DepositedTableCount, mm.HugeMappingCount, mm.PageTableCount));
        Assert.Equal(0, arena.RefCount(folio));

        Assert.True(mm.MapHuge(h, arena.AllocFolio(mm.HugeOrder)));
        arena.PutPage(mm.Fault(h)); // drop the allocation's reference: the mapping keeps its own
        Assert.Equal((2L, 2L, 2L), (mm.DepositedTableCount, mm.HugeMappingCount, mm.PageTableCount));
        Assert.Equal(2 * mm.PtesPerTable, mm.Zap(0, h + h + h)); // two huge PMDs zapped whole; the third range is empty
        Assert.Equal((0L, 0L), (mm.DepositedTableCount, mm.HugeMappingCount));
        mm.Epochs.Barrier();
        Assert.Equal(0, mm.PageTableCount);

        // A partial zap of a huge PMD splits it first.
        Assert.True(mm.MapHuge(0, folio = arena.AllocFolio(mm.HugeOrder)));
        arena.PutPage(folio);
        Assert.Equal(3, mm.Zap(4 * Page, 3 * Page));
        Assert.Equal(mm.PtesPerTable - 3, arena.RefCount(folio));
        Assert.Equal(mm.PtesPerTable - 3, mm.Mappings().Count);
        PageTableReport report = mm.VerifyTables();
        Assert.True(report.IsClean, report.ToString());
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    /// <summary>Seed 001: the table the mapper locked through its snapshot is retracted between the snapshot and the lock.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheRecheckCatchesARetractBetweenSnapshotAndLock(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var mm = NewMm(arena, legacyRecheck: legacy);
        ulong va = 2 * mm.HugePageSize;
        mm.Fault(va);
        mm.Zap(va, Page); // an empty table stays linked
        bool fired = false;
        mm.AfterPmdSnapshot = _ =>
        {
            if (!fired)
            {
                fired = true;
                Assert.True(mm.RetractTable(va)); // khugepaged: the PMD no longer references the snapshot's table
            }
        };
        Pfn p = arena.AllocPages(0);
        Assert.True(mm.MapPage(va + Page, p));
        mm.AfterPmdSnapshot = null;
        arena.PutPage(p);
        mm.Epochs.Barrier();
        bool visible = mm.Mappings().Any(m => m.Address == va + Page);
        PageTableReport report = mm.VerifyTables();
        output.WriteLine($"legacy={legacy}: mapping visible {visible}; {report}");
        if (legacy)
        {
            Assert.False(visible);                 // the mapping went into the detached table: lost
            Assert.NotEmpty(mm.ReportedBugs);      // and the table was freed with it inside (reported, leaked)
            Assert.Contains("seed 001", mm.ReportedBugs.First().Message);
        }
        else
        {
            Assert.True(visible);
            Assert.True(report.IsClean, report.ToString());
            mm.Dispose();
            TestSupport.AssertFullyFreeAndCoalesced(arena);
        }
    }

    /// <summary>Seed 004: a table a lockless walker still reads is detached (collapse deposits it) and then freed (zap).</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ADetachedTableOutlivesTheWalkersThatCanReachIt(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var mm = NewMm(arena, legacyFree: legacy);
        ulong va = mm.HugePageSize;
        for (int i = 0; i < 4; i++) mm.Fault(va + (ulong)i * Page, write: true);
        PteMap walker = mm.PteOffsetMap(va + Page); // read the PMD before the collapse
        Assert.False(walker.IsNull);
        Assert.Equal(CollapseResult.Collapsed, mm.Collapse(va)); // the walker's table is now the deposit
        Assert.Equal(mm.PtesPerTable, mm.Zap(va, mm.HugePageSize)); // zap_huge_pmd withdraws and frees it
        Pte seen = walker.Entry;
        walker.Dispose();
        output.WriteLine($"legacy={legacy}: the walker read {seen}");
        if (legacy)
        {
            Assert.True(seen.IsBad); // poison: the walker read a freed table
        }
        else
        {
            Assert.True(seen.IsNone); // collapse emptied it; it is intact until the walker leaves
            mm.Epochs.Barrier();
            Assert.True(mm.VerifyTables().IsClean);
            mm.Dispose();
            TestSupport.AssertFullyFreeAndCoalesced(arena);
        }
    }

    [Fact]
    public void AWriteFaultOnAReadOnlyMappingIsRefused()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        var mm = NewMm(arena);
        Pfn p = arena.AllocPages(0);
        Assert.True(mm.MapPage(0, p, writable: false));
        Assert.Equal(p, mm.Fault(0));
        Assert.Throws<InvalidOperationException>(() => mm.Fault(0, write: true));
        Assert.False(mm.TryGetUserPageFast(0, out _, write: true));
        Assert.True(mm.TryGetUserPageFast(0, out Pfn got));
        arena.PutPage(got);
        Assert.Throws<ArgumentException>(() => mm.MapHuge(0, p));
        mm.Dispose();
        arena.PutPage(p);
        Assert.Throws<ObjectDisposedException>(() => mm.Fault(0));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

[Collection(StressCollection.Name)]
public sealed class PageTableConcurrencyTests(ITestOutputHelper output)
{
    /// <summary>
    /// Faulters, zappers and khugepaged-like threads on the same two PMD ranges, with lockless walkers that take
    /// references and check what they read; at the end the tables verify and every page comes back.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task FaultZapCollapseSplitAndWalkersKeepTheTablesConsistent()
    {
        int seed = TestSupport.Seed(output, "page tables under churn");
        using ArenaLease lease = TestSupport.Lease(pages: 8192, isChecked: true);
        PageArena arena = lease.Arena;
        var mm = new AddressSpace(arena);
        ulong span = 2 * mm.HugePageSize;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long ops = 0, walks = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var workers = Enumerable.Range(0, 2 * Environment.ProcessorCount).Select(id => new Thread(() =>
            {
                var rng = new Random(seed + id);
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        ulong va = (ulong)rng.NextInt64((long)(span >> 12)) << 12;
                        ulong range = va & ~(mm.HugePageSize - 1);
                        switch (rng.Next(6))
                        {
                            case 0:
                            case 1:
                                Pfn p = mm.Fault(va, write: true);
                                if (arena.RefCount(p) < 0) errors.Enqueue("negative count");
                                break;
                            case 2:
                                mm.Zap(va, Math.Min((ulong)(1 + rng.Next(64)) << 12, span - va));
                                break;
                            case 3:
                                mm.Collapse(range);
                                break;
                            case 4:
                                mm.SplitHuge(range);
                                break;
                            default:
                                if (arena.TryAllocFolio(mm.HugeOrder, out Pfn folio))
                                {
                                    mm.MapHuge(range, folio);
                                    arena.PutPage(folio);
                                }

                                break;
                        }

                        Interlocked.Increment(ref ops);
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
            })).ToList();
            var walker = new Thread(() =>
            {
                var rng = new Random(~seed);
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        ulong va = (ulong)rng.NextInt64((long)(span >> 12)) << 12;
                        if (mm.TryGetUserPageFast(va, out Pfn page))
                        {
                            // The reference pins the page: it is allocated, not poisoned, and still this mapping's page or gone.
                            if (arena.RefCount(page) < 1) errors.Enqueue($"gup-fast returned {page} with no reference");
                            arena.PutPage(page);
                        }

                        using PteMapLocked map = mm.PteOffsetMapLock(va);
                        if (!map.IsNull && map.Entry.IsBad) errors.Enqueue($"a locked table holds {map.Entry}");
                        Interlocked.Increment(ref walks);
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
            });
            foreach (Thread t in workers) t.Start();
            walker.Start();
            TestSupport.JoinAll(workers, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
            stop.Cancel();
            TestSupport.JoinAll([walker], TimeSpan.FromSeconds(30));
        });

        output.WriteLine($"{ops} operations, {walks} walks");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        mm.Epochs.Barrier();
        PageTableReport report = mm.VerifyTables();
        output.WriteLine(report.ToString());
        Assert.True(report.IsClean, report.ToString());
        Assert.True(ops > 0 && walks > 0);
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
