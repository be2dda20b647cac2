using System.Collections.Concurrent;
using Xunit;

namespace PageCore.Tests;

public sealed class FolioTests
{
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void TailsPointAtTheHeadAndKeepACountOfZero(bool caches)
    {
        using ArenaLease lease = TestSupport.Lease(caches: caches, isChecked: true);
        PageArena arena = lease.Arena;
        Pfn head = arena.AllocFolio(3);
        Assert.True(arena.IsFolioHead(head));
        Assert.Equal(3, arena.OrderOf(head));
        for (uint i = 1; i < 8; i++)
        {
            Pfn tail = head + i;
            Assert.Equal(head, arena.HeadOf(tail));
            Assert.Equal(0, arena.DescriptorOf(tail).RefCount);
            Assert.False(arena.TryGetPageUnlessZero(tail)); // rule 2: never on a tail
        }

        arena.GetPage(head + 5);
        Assert.Equal(2, arena.RefCount(head));
        Assert.Equal(0, arena.DescriptorOf(head + 5).RefCount);
        Assert.True(arena.TryGetFolioSpeculative(head + 7, out Pfn got));
        Assert.Equal(head, got);
        Assert.Equal(3, arena.RefCount(head + 2));
        Assert.False(arena.PutPage(head + 5));
        Assert.False(arena.PutPage(got));
        Assert.True(arena.Verify().IsClean);

        Assert.Throws<PageBugException>(() => arena.FreePages(head + 2, 0)); // a tail is not freed on its own
        arena.FreePages(head, 3);
        Assert.Equal(head + 3, arena.HeadOf(head + 3)); // links cleared on free
        Assert.False(arena.TryGetFolioSpeculative(head + 3, out _));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void TheLastPutOfASpeculativeHolderFreesTheWholeFolio()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        Pfn head = arena.AllocFolio(4);
        Assert.True(arena.TryGetFolioSpeculative(head + 9, out Pfn got));
        arena.FreePages(head, 4);
        Assert.Equal(1, arena.RefCount(head));
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        Assert.Equal(16, mid.AllocatedPages);
        Assert.True(arena.PutPage(got));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(3, 0)]
    [InlineData(3, 1)]
    [InlineData(5, 2)]
    [InlineData(9, 0)]
    [InlineData(9, 3)]
    [InlineData(10, 9)]
    [InlineData(10, 4)]
    public void SplitMakesIndependentPiecesThatFreeOnTheirOwn(int order, int newOrder)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096, isChecked: true);
        PageArena arena = lease.Arena;
        Pfn head = arena.AllocFolio(order);
        Assert.Equal(SplitResult.Done, arena.SplitFolio(head, newOrder));
        uint pieces = 1u << (order - newOrder);
        for (uint k = 0; k < pieces; k++)
        {
            Pfn piece = head + (k << newOrder);
            Assert.Equal(1, arena.RefCount(piece));
            Assert.Equal(newOrder, arena.OrderOf(piece));
            Assert.Equal(newOrder > 0, arena.IsFolioHead(piece));
            if (newOrder > 0)
            {
                Assert.Equal(piece, arena.HeadOf(piece + 1));
            }
        }

        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        Assert.Equal(pieces, mid.AllocatedBlocks);
        for (uint k = 0; k < pieces; k++)
        {
            arena.FreePages(head + (k << newOrder), newOrder);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void SplitRefusesWithAStrayReferenceAndChangesNothing()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        Pfn head = arena.AllocFolio(3);
        Assert.True(arena.TryGetFolioSpeculative(head + 4, out _)); // a speculative holder
        Assert.Equal(SplitResult.Busy, arena.SplitFolio(head, 0));
        Assert.Equal(2, arena.RefCount(head));
        Assert.Equal(head, arena.HeadOf(head + 4));
        Assert.Equal(3, arena.OrderOf(head));
        Assert.True(arena.Verify().IsClean);
        Assert.False(arena.PutPage(head));
        Assert.Equal(SplitResult.Done, arena.SplitFolio(head, 0));
        Assert.Throws<PageBugException>(() => arena.SplitFolio(head, 0)); // no longer a folio
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.SplitFolio(arena.AllocFolio(2), 2));
        for (uint i = 0; i < 8; i++) arena.FreePages(head + i, 0);
    }
}

[Collection(StressCollection.Name)]
public sealed class FolioConcurrencyTests(ITestOutputHelper output)
{
    [Fact(Timeout = 60_000)]
    public async Task TailCountsStayZeroUnderGetsPutsSplitsAndSpeculativeWalkers()
    {
        int seed = TestSupport.Seed(output, "folios+split+walkers");
        using ArenaLease lease = TestSupport.Lease(pages: 16384);
        PageArena arena = lease.Arena;
        var errors = new ConcurrentQueue<string>();
        long splits = 0, busy = 0, folioGets = 0, tailGets = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var owners = Enumerable.Range(0, Environment.ProcessorCount).Select(id => new Thread(() =>
            {
                var rng = new Random(seed + id);
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        int order = rng.Next(10) == 0 ? 9 : rng.Next(1, 6);
                        if (!arena.TryAllocFolio(order, out Pfn head)) continue;
                        for (int i = 0; i < 8; i++)
                        {
                            Pfn tail = head + (uint)rng.Next(1, 1 << order);
                            arena.GetPage(tail);
                            if (arena.DescriptorOf(tail).RefCount != 0) errors.Enqueue($"tail {tail} has count {arena.DescriptorOf(tail).RefCount}");
                            arena.PutPage(tail);
                        }

                        int newOrder = rng.Next(order);
                        SplitResult r = arena.SplitFolio(head, newOrder);
                        if (r == SplitResult.Done)
                        {
                            Interlocked.Increment(ref splits);
                            for (uint k = 0; k < 1u << (order - newOrder); k++) arena.FreePages(head + (k << newOrder), newOrder);
                        }
                        else
                        {
                            Interlocked.Increment(ref busy);
                            arena.FreePages(head, order); // a walker held it; its last put frees the folio
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
            }) { Name = $"folio-owner-{id}" }).ToList();
            var walkers = Enumerable.Range(0, 2).Select(id => new Thread(() =>
            {
                var rng = new Random(~seed - id);
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        var p = new Pfn((uint)rng.Next(16384));
                        if (arena.TryGetPageUnlessZero(p))
                        {
                            // Holding a reference, p cannot become a tail: if it is one now, the get succeeded on a tail.
                            if ((arena.DescriptorOf(p).CompoundInfo & 1) != 0) errors.Enqueue($"get_page_unless_zero succeeded on tail {p}");
                            Interlocked.Increment(ref tailGets);
                            arena.PutPage(p);
                        }

                        if (arena.TryGetFolioSpeculative(p, out Pfn head))
                        {
                            Pfn now = arena.HeadOf(p);
                            if (now != head) errors.Enqueue($"folio get returned head {head} but {p} belongs to {now}");
                            Interlocked.Increment(ref folioGets);
                            arena.PutPage(head);
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
            }) { Name = $"folio-walker-{id}" }).ToList();
            foreach (Thread t in owners.Concat(walkers)) t.Start();
            TestSupport.JoinAll(owners, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
            stop.Cancel();
            TestSupport.JoinAll(walkers, TimeSpan.FromSeconds(30));
        });

        output.WriteLine($"splits {splits}, busy splits {busy}, folio gets {folioGets}, page gets {tailGets}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.True(splits > 0 && folioGets > 0, "the race was not exercised");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
