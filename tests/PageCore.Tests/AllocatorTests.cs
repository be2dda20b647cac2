using Xunit;

namespace PageCore.Tests;

public sealed class AllocatorTests
{
    public static TheoryData<bool> CacheModes => new() { true, false };

    [Theory]
    [MemberData(nameof(CacheModes))]
    public void EveryOrderIsNaturallyAlignedAndDisjoint(bool caches)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 8192, caches: caches);
        PageArena arena = lease.Arena;
        var blocks = new List<(Pfn Pfn, int Order)>();
        var owner = new int[arena.PageCount];
        for (int round = 0; round < 3; round++)
        {
            for (int order = 0; order <= arena.MaxOrder; order++)
            {
                Pfn p = arena.AllocPages(order);
                Assert.True(p.IsAlignedTo(order), $"{p} is not aligned to order {order}");
                for (long i = p.Value; i < p.Value + (1L << order); i++)
                {
                    Assert.Equal(0, owner[i]);
                    owner[i] = blocks.Count + 1;
                }

                blocks.Add((p, order));
            }
        }

        Assert.True(arena.Verify().IsClean);
        foreach ((Pfn p, int order) in blocks)
        {
            arena.FreePages(p, order);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [MemberData(nameof(CacheModes))]
    public void WholeArenaAsMaxOrderBlocksThenAsPages(bool caches)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096, caches: caches);
        PageArena arena = lease.Arena;
        var big = new List<Pfn>();
        while (arena.TryAllocPages(arena.MaxOrder, out Pfn p))
        {
            big.Add(p);
        }

        Assert.Equal(4, big.Count);
        Assert.False(arena.TryAllocPages(0, out _));
        foreach (Pfn p in big)
        {
            arena.FreePages(p, arena.MaxOrder);
        }

        var small = new List<Pfn>();
        while (arena.TryAllocPages(0, out Pfn p))
        {
            small.Add(p);
        }

        Assert.Equal(4096, small.Count);
        Assert.Equal(4096, small.Select(p => p.Value).Distinct().Count());
        foreach (Pfn p in small)
        {
            arena.FreePages(p, 0);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [MemberData(nameof(CacheModes))]
    public void ExhaustionFailsCleanlyAndRecovers(bool caches)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 2048, caches: caches);
        PageArena arena = lease.Arena;
        var held = new List<Pfn>();
        while (arena.TryAllocPages(0, out Pfn p))
        {
            held.Add(p);
        }

        Assert.Equal(2048, held.Count);
        Assert.Equal(0, arena.FreePageCount);
        Assert.False(arena.TryAllocPages(0, out Pfn none));
        Assert.Equal(default, none);
        var ex = Assert.Throws<OutOfPagesException>(() => arena.AllocPages(0));
        Assert.Equal(0, ex.Order);
        Assert.Equal(0, ex.FreePages);
        Assert.Equal(2048, ex.PageCount);
        Assert.True(arena.Verify().IsClean);

        // Free a scattered half: order 0 works again, order 1 cannot (fragmentation), then everything comes back.
        for (int i = 0; i < held.Count; i++)
        {
            if (held[i].Value % 2 == 0)
            {
                arena.FreePages(held[i], 0);
            }
        }

        held.RemoveAll(p => p.Value % 2 == 0);
        Assert.False(arena.TryAllocPages(1, out _));
        var frag = Assert.Throws<OutOfPagesException>(() => arena.AllocPages(1));
        Assert.Contains("fragmentation", frag.Message);
        Assert.True(arena.TryAllocPages(0, out Pfn again));
        held.Add(again);
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());

        foreach (Pfn p in held)
        {
            arena.FreePages(p, 0);
        }

        Assert.True(arena.TryAllocPages(arena.MaxOrder, out Pfn whole));
        arena.FreePages(whole, arena.MaxOrder);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [MemberData(nameof(CacheModes))]
    public void FreeWithASpeculativeReferenceOnTheHeadLeaksNothing(bool caches)
    {
        // __free_pages: the put does not free the head, so the buddies are freed at once and the head later.
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: caches);
        PageArena arena = lease.Arena;
        Pfn block = arena.AllocPages(3);
        Assert.True(arena.TryGetPageUnlessZero(block));
        long before = arena.FreePageCount;
        arena.FreePages(block, 3);
        Assert.Equal(before + 7, arena.FreePageCount);
        Assert.Equal(1, arena.RefCount(block));
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        Assert.Equal(1, mid.AllocatedPages);

        Assert.True(arena.PutPage(block));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(9, true)]
    [InlineData(10, false)]
    [InlineData(10, true)]
    public void FreeOfAHugeBlockWithASpeculativeReferenceOnTheHeadLeaksNothing(int order, bool isChecked)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096, isChecked: isChecked);
        PageArena arena = lease.Arena;
        Pfn block = arena.AllocPages(order);
        Assert.True(arena.TryGetPageUnlessZero(block));
        arena.FreePages(block, order);
        Assert.Equal(arena.PageCount - 1, arena.FreePageCount);
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        Assert.Equal(1, mid.AllocatedPages);

        // The freed part is usable at once, around the head that is still held.
        var pages = new List<Pfn>();
        while (arena.TryAllocPages(0, out Pfn page))
        {
            Assert.NotEqual(block, page);
            pages.Add(page);
        }

        Assert.Equal(arena.PageCount - 1, pages.Count);
        foreach (Pfn page in pages)
        {
            arena.FreePages(page, 0);
        }

        Assert.True(arena.PutPage(block));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [MemberData(nameof(CacheModes))]
    public void EveryFreeMisuseThrowsAndChangesNothing(bool caches)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: caches);
        PageArena arena = lease.Arena;
        Pfn block = arena.AllocPages(2);

        var wrongOrder = Assert.Throws<PageBugException>(() => arena.FreePages(block, 1));
        Assert.Contains("wrong order", wrongOrder.Reason);
        var tail = Assert.Throws<PageBugException>(() => arena.FreePages(block + 1, 0));
        Assert.Contains("not the head", tail.Reason);
        Assert.Throws<ArgumentException>(() => arena.FreePages(block + 1, 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.FreePages(block, 11));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.FreePages(block, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.TryAllocPages(11, out _));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.AllocPages(-1));
        Assert.Equal(1, arena.RefCount(block));
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        Assert.Equal(4, mid.AllocatedPages);

        arena.FreePages(block, 2);
        var twice = Assert.Throws<PageBugException>(() => arena.FreePages(block, 2));
        Assert.Equal("__free_pages", twice.Operation);
        Assert.Contains("double free", twice.Reason);
        Assert.Contains("pfn:0x", twice.DescriptorDump);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void FreesFromAThreadThatNeverUsedTheArenaAreCachedAndNothingIsLost(bool isChecked)
    {
        // The cached free's fast path needs the thread's magazine; a thread that has none yet takes the slow path, which
        // creates it (and a checked arena poisons first). Either way the blocks land in a cache and come back whole.
        using ArenaLease lease = TestSupport.Lease(pages: 1024, isChecked: isChecked);
        PageArena arena = lease.Arena;
        var blocks = new List<(Pfn Pfn, int Order)>();
        for (int i = 0; i < 40; i++)
        {
            blocks.Add((arena.AllocPages(i % 4), i % 4));
        }

        long allocated = blocks.Sum(b => 1L << b.Order);
        Assert.Equal(arena.PageCount - allocated, arena.FreePageCount);
        long cachedBefore = arena.CachedPageCount;
        var freer = new Thread(() =>
        {
            foreach ((Pfn p, int order) in blocks)
            {
                arena.FreePages(p, order);
            }
        });
        freer.Start();
        freer.Join();

        Assert.Equal(arena.PageCount, arena.FreePageCount);
        Assert.True(arena.CachedPageCount > cachedBefore, "the freeing thread's new magazine holds some of the blocks");
        Assert.True(arena.Verify().IsClean);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void DoubleFreeOfAnOrderZeroPageIsCaughtWhileItSitsInACache()
    {
        using ArenaLease lease = TestSupport.Lease(caches: true);
        PageArena arena = lease.Arena;
        Pfn p = arena.AllocPages(0);
        arena.FreePages(p, 0);
        Assert.Throws<PageBugException>(() => arena.FreePages(p, 0));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void ScalarScansBehaveLikeVectorScans()
    {
        foreach (bool scalar in new[] { false, true })
        {
            using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 8192, ForceScalarScan = scalar });
            Assert.Equal(8192, arena.Options.Pages);
            var held = new List<(Pfn, int)>();
            for (int order = arena.MaxOrder; order >= 0; order--)
            {
                while (arena.TryAllocPages(order, out Pfn p))
                {
                    held.Add((p, order));
                }
            }

            Assert.Equal(0, arena.FreePageCount);
            Assert.Equal(8, held.Count(h => h.Item2 == arena.MaxOrder));
            foreach ((Pfn p, int o) in held)
            {
                arena.FreePages(p, o);
            }

            TestSupport.AssertFullyFreeAndCoalesced(arena);
        }
    }

    [Fact]
    public void SmallArenasAndSmallMaxOrderWork()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 24, maxOrder: 3);
        PageArena arena = lease.Arena;
        var held = new List<Pfn>();
        while (arena.TryAllocPages(3, out Pfn p))
        {
            held.Add(p);
        }

        Assert.Equal(3, held.Count);
        foreach (Pfn p in held)
        {
            arena.FreePages(p, 3);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void CheckedModeCatchesAWriteAfterFree()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        Pfn p = arena.AllocPages(0);
        Span<byte> stale = arena.GetSpan(p);
        arena.FreePages(p, 0);
        Assert.True(arena.GetSpan(p).IndexOfAnyExcept(PageArena.PoisonByte) < 0);
        stale[100] = 1; // use after free

        ArenaReport report = arena.Verify();
        Assert.False(report.IsClean);
        Assert.Contains(report.Violations, v => v.Contains("written after it was freed"));

        // Allocation of that page is refused with a bug report rather than handing out damaged memory.
        var ex = Assert.Throws<PageBugException>(() =>
        {
            for (int i = 0; i < 1024; i++)
            {
                arena.AllocPages(0);
            }
        });
        Assert.Equal("check_new_page", ex.Operation);
        arena.Dispose(force: true);
    }

    [Fact]
    public void CheckedModeRoundTripsCleanly()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 2048, isChecked: true);
        PageArena arena = lease.Arena;
        var held = new List<(Pfn, int)>();
        for (int i = 0; i < 200; i++)
        {
            int order = i % 5;
            Pfn p = arena.AllocPages(order);
            arena.GetSpan(p, order).Fill((byte)i);
            held.Add((p, order));
        }

        foreach ((Pfn p, int order) in held)
        {
            arena.FreePages(p, order);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void GenerationAdvancesOnEachAllocationInCheckedMode()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        Pfn p = arena.AllocPages(0);
        uint g = arena.Generation(p);
        arena.FreePages(p, 0);
        Pfn q = arena.AllocPages(0);
        Assert.Equal(p, q);
        Assert.Equal(g + 1, arena.Generation(q));
        arena.FreePages(q, 0);
    }
}
