using Xunit;

namespace PageCore.Tests;

public sealed class PagePoolTests
{
    [Fact]
    public void PoolRecyclesItsOwnPagesAndReturnsThemOnDispose()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        PagePool pool = arena.CreatePagePool();
        Pfn p = pool.AllocPages(0);
        Assert.Equal(1, arena.RefCount(p));
        pool.FreePages(p, 0);
        Assert.Equal(0, arena.RefCount(p));                 // free to every caller
        Assert.Equal(1, arena.DescriptorOf(p).RefCount);    // the pool's own reference, as page_pool keeps
        Assert.Equal(p, pool.AllocPages(0));
        pool.FreePages(p, 0);

        // Drain leaves pools alone; the pool's Dispose gives its pages back.
        arena.Drain();
        Assert.True(arena.CachedPageCount > 0);
        Assert.Equal(arena.PageCount, arena.FreePageCount);
        ArenaReport mid = arena.Verify();
        Assert.True(mid.IsClean, mid.ToString());
        var refused = Assert.Throws<InvalidOperationException>(() => arena.Dispose());
        Assert.Contains("PagePools", refused.Message);

        pool.Dispose();
        pool.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);

        // A disposed pool passes its calls through to the arena.
        Pfn q = pool.AllocPages(2);
        pool.FreePages(q, 2);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void PoolPagesAreOrdinaryArenaPages()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        using PagePool pool = arena.CreatePagePool();
        Pfn a = pool.AllocPages(1);
        Pfn b = arena.AllocPages(0);
        arena.FreePages(a, 1);   // a pool page freed to the arena
        pool.FreePages(b, 0);    // an arena page freed into the pool
        Pfn big = pool.AllocPages(6);
        Assert.True(big.IsAlignedTo(6));
        pool.FreePages(big, 6);
        Assert.Throws<PageBugException>(() => pool.FreePages(b, 0)); // double free through the pool
        ArenaReport report = arena.Verify();
        Assert.True(report.IsClean, report.ToString());
    }

    [Fact]
    public void PoolNeedsPerCpuCaches()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false);
        Assert.Throws<InvalidOperationException>(() => lease.Arena.CreatePagePool());
    }
}

[Collection(StressCollection.Name)]
public sealed class PagePoolConcurrencyTests(ITestOutputHelper output)
{
    [Fact(Timeout = 60_000)]
    public async Task PoolsOnSeveralThreadsWithWalkersAndDrainsStayCorrect()
    {
        int seed = TestSupport.Seed(output, "pools+walkers+drain");
        using ArenaLease lease = TestSupport.Lease(pages: 4096);
        PageArena arena = lease.Arena;
        long allocs = 0, walkerRefs = 0;
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var threads = new List<Thread>();
            for (int t = 0; t < Environment.ProcessorCount; t++)
            {
                int id = t;
                threads.Add(new Thread(() =>
                {
                    var rng = new Random(seed + id);
                    using PagePool pool = arena.CreatePagePool();
                    var held = new List<(Pfn, int)>();
                    try
                    {
                        while (DateTime.UtcNow < deadline)
                        {
                            if (held.Count < 32 && rng.Next(2) == 0)
                            {
                                int order = rng.Next(4);
                                if (pool.TryAllocPages(order, out Pfn p))
                                {
                                    held.Add((p, order));
                                    Interlocked.Increment(ref allocs);
                                }
                            }
                            else if (held.Count > 0)
                            {
                                int i = rng.Next(held.Count);
                                pool.FreePages(held[i].Item1, held[i].Item2);
                                held.RemoveAt(i);
                            }
                        }
                    }
                    catch (Exception ex)
                    {
                        errors.Enqueue(ex.ToString());
                    }
                    finally
                    {
                        foreach ((Pfn p, int o) in held) pool.FreePages(p, o);
                    }
                }) { Name = $"pool-{id}" });
            }

            var walker = new Thread(() =>
            {
                var rng = new Random(~seed);
                while (!stop.IsCancellationRequested)
                {
                    var p = new Pfn((uint)rng.Next(4096));
                    if (arena.TryGetPageUnlessZero(p))
                    {
                        walkerRefs++;
                        arena.PutPage(p);
                    }

                    if (rng.Next(1000) == 0) arena.Drain();
                }
            }) { Name = "walker" };
            foreach (Thread t in threads) t.Start();
            walker.Start();
            TestSupport.JoinAll(threads, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
            stop.Cancel();
            TestSupport.JoinAll([walker], TimeSpan.FromSeconds(30));
        });

        output.WriteLine($"pool allocations {allocs}, walker references {walkerRefs}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors));
        Assert.True(allocs > 0 && walkerRefs > 0);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
