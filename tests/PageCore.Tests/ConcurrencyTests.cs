using System.Collections.Concurrent;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// Time-bounded concurrency tests: 2x cores threads, random orders, every block stamped with its owner in its memory and
/// checked at free, cross-thread frees, hostile PFN walkers, concurrent drains; the arena verified at the end.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class ConcurrencyTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 60_000;

    public static TheoryData<bool> CacheModes => new() { true, false };

    [Theory(Timeout = TestTimeoutMs)]
    [MemberData(nameof(CacheModes))]
    public async Task ChurnOfRandomOrdersNeverOverlapsAndConservesPages(bool caches)
    {
        int seed = TestSupport.Seed(output, $"churn caches={caches}");
        await Task.Run(() => RunChurn(seed, caches, walkers: 0, drainer: false));
    }

    [Theory(Timeout = TestTimeoutMs)]
    [MemberData(nameof(CacheModes))]
    public async Task ChurnWithHostilePfnWalkersStaysCorrect(bool caches)
    {
        int seed = TestSupport.Seed(output, $"churn+walkers caches={caches}");
        await Task.Run(() => RunChurn(seed, caches, walkers: 2, drainer: false));
    }

    /// <summary>Both magazine hand-over forms: the process's (asymmetric here) and the symmetric one, forced.</summary>
    public static TheoryData<bool> HandOverForms => new() { false, true };

    [Theory(Timeout = TestTimeoutMs)]
    [MemberData(nameof(HandOverForms))]
    public async Task ChurnWithConcurrentDrainsStaysCorrect(bool symmetricHandOver)
    {
        int seed = TestSupport.Seed(output, $"churn+drain symmetric={symmetricHandOver}");
        await Task.Run(() => RunChurn(seed, caches: true, walkers: 1, drainer: true, symmetricHandOver: symmetricHandOver));
    }

    [Theory(Timeout = TestTimeoutMs)]
    [MemberData(nameof(HandOverForms))]
    public async Task ChurnWithTinyBatchesDrivesTheDepotsAndStaysCorrect(bool symmetricHandOver)
    {
        // A batch of 2 makes magazines spill and refill every few operations: the depots and bulk paths run hot.
        int seed = TestSupport.Seed(output, $"churn batch=2 symmetric={symmetricHandOver}");
        await Task.Run(() => RunChurn(seed, caches: true, walkers: 1, drainer: false, batch: 2, symmetricHandOver: symmetricHandOver));
    }

    [Theory(Timeout = TestTimeoutMs)]
    [MemberData(nameof(CacheModes))]
    public async Task ExhaustionUnderConcurrencyFailsCleanlyAndRecovers(bool caches)
    {
        int seed = TestSupport.Seed(output, $"exhaustion caches={caches}");
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: caches);
        PageArena arena = lease.Arena;
        long allocs = 0, failures = 0;
        var errors = new ConcurrentQueue<string>();
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            var threads = new List<Thread>();
            for (int t = 0; t < 2 * Environment.ProcessorCount; t++)
            {
                int id = t;
                threads.Add(new Thread(() =>
                {
                    var rng = new Random(seed + id);
                    var held = new List<Block>();
                    try
                    {
                        while (DateTime.UtcNow < deadline)
                        {
                            // Hold on to what we get until an allocation fails, then let go of half.
                            int order = rng.Next(100) < 70 ? 0 : rng.Next(1, 6);
                            if (arena.TryAllocPages(order, out Pfn p))
                            {
                                var b = new Block(p, order, ((long)(id + 1) << 40) | (uint)held.Count);
                                Stamp(arena, b);
                                held.Add(b);
                                Interlocked.Increment(ref allocs);
                            }
                            else
                            {
                                Interlocked.Increment(ref failures);
                                for (int i = held.Count - 1; i >= 0; i -= 2)
                                {
                                    CheckAndFree(arena, held[i], errors);
                                    held.RemoveAt(i);
                                }
                            }
                        }
                    }
                    catch (Exception ex)
                    {
                        errors.Enqueue($"thread {id}: {ex}");
                    }
                    finally
                    {
                        foreach (Block b in held) CheckAndFree(arena, b, errors);
                    }
                }) { Name = $"exhaust-{id}" });
            }

            foreach (Thread t in threads) t.Start();
            TestSupport.JoinAll(threads, TestSupport.ChurnTime + TimeSpan.FromSeconds(40));
        });

        output.WriteLine($"allocs {allocs}, failed allocs {failures}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.True(failures > 0, "the arena never ran out: the test did not test exhaustion");
        Assert.True(allocs > failures, "allocation did not recover after frees");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task PagesCachedByThreadsThatExitAreNotLost()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096);
        PageArena arena = lease.Arena;
        await Task.Run(() =>
        {
            var threads = new List<Thread>();
            for (int t = 0; t < 8; t++)
            {
                var thread = new Thread(() =>
                {
                    var held = new List<(Pfn, int)>();
                    for (int i = 0; i < 40; i++)
                    {
                        int order = i % 4;
                        held.Add((arena.AllocPages(order), order));
                    }

                    foreach ((Pfn p, int o) in held)
                    {
                        arena.FreePages(p, o);
                    }
                }) { Name = $"exiting-{t}" };
                thread.Start();
                threads.Add(thread);
            }

            TestSupport.JoinAll(threads, TimeSpan.FromSeconds(30));
        });

        Assert.True(arena.CachedPageCount > 0, "the exited threads should have left pages in their magazines");
        Assert.Equal(arena.PageCount, arena.FreePageCount);
        Assert.True(arena.RegisteredMagazines >= 8);
        output.WriteLine($"cached after the threads exited: {arena.CachedPageCount} pages in {arena.RegisteredMagazines} magazines");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
        Assert.True(arena.RegisteredMagazines < 8, "the magazines of exited threads should be forgotten once drained");
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task AllocationReclaimsPagesFromOtherThreadsCaches()
    {
        // One thread fills its magazine and parks; the main thread must still be able to take every page.
        using ArenaLease lease = TestSupport.Lease(pages: 1024, maxOrder: 10);
        PageArena arena = lease.Arena;
        using var parked = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var holder = new Thread(() =>
        {
            var held = new List<Pfn>();
            for (int i = 0; i < 60; i++) held.Add(arena.AllocPages(0));
            foreach (Pfn p in held) arena.FreePages(p, 0);
            parked.Set();
            release.Wait(TimeSpan.FromSeconds(30));
        }) { Name = "parked-holder" };
        holder.Start();
        Assert.True(parked.Wait(TimeSpan.FromSeconds(30)));
        Assert.True(arena.CachedPageCount > 0);

        await Task.Run(() =>
        {
            Pfn whole = arena.AllocPages(10);
            arena.FreePages(whole, 10);
        });
        release.Set();
        TestSupport.JoinAll([holder], TimeSpan.FromSeconds(30));
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact(Timeout = TestTimeoutMs)]
    public async Task FreeOfHighOrderBlocksUnderSpeculativeGetsOnTheirHeadsLeaksNothing()
    {
        int seed = TestSupport.Seed(output, "free-vs-speculative-head");
        using ArenaLease lease = TestSupport.Lease(pages: 2048);
        PageArena arena = lease.Arena;
        long frees = 0, heldByWalker = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var walker = new Thread(() =>
            {
                var rng = new Random(seed ^ 0x5bd1e995);
                while (!stop.IsCancellationRequested && DateTime.UtcNow < deadline.AddSeconds(5))
                {
                    // Heads of order-3 blocks are the PFNs this test's owner uses: aim at them.
                    var pfn = new Pfn((uint)(rng.Next(2048 / 8) * 8));
                    if (arena.TryGetPageUnlessZero(pfn))
                    {
                        Interlocked.Increment(ref heldByWalker);
                        Thread.SpinWait(rng.Next(50));
                        arena.PutPage(pfn);
                    }
                }
            }) { Name = "walker" };
            walker.Start();

            var rng = new Random(seed);
            var held = new List<Pfn>();
            while (DateTime.UtcNow < deadline)
            {
                if (held.Count < 64 && arena.TryAllocPages(3, out Pfn p))
                {
                    held.Add(p);
                }

                if (held.Count > 0 && rng.Next(2) == 0)
                {
                    int i = rng.Next(held.Count);
                    arena.FreePages(held[i], 3);
                    held.RemoveAt(i);
                    frees++;
                }
            }

            foreach (Pfn p in held) arena.FreePages(p, 3);
            stop.Cancel();
            TestSupport.JoinAll([walker], TimeSpan.FromSeconds(30));
        });

        output.WriteLine($"order-3 frees {frees}, speculative references taken on heads {heldByWalker}");
        Assert.True(frees > 0 && heldByWalker > 0, "the race was not exercised");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    private void RunChurn(int seed, bool caches, int walkers, bool drainer, int batch = 32, bool symmetricHandOver = false)
    {
        const long Pages = 16384;
        int threads = 2 * Environment.ProcessorCount;
        using ArenaLease lease = TestSupport.Lease(pages: Pages, caches: caches, batch: batch, symmetricHandOver: symmetricHandOver);
        PageArena arena = lease.Arena;
        Assert.Equal(symmetricHandOver ? HandOverForm.Symmetric : ProcessBarrier.HandOver, arena.Statistics.HandOver);
        DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
        var handoff = new ConcurrentQueue<Block>();
        var errors = new ConcurrentQueue<string>();
        long allocs = 0, failures = 0, crossFrees = 0, walkerGets = 0;
        using var stop = new CancellationTokenSource();

        var workers = new List<Thread>();
        for (int t = 0; t < threads; t++)
        {
            int id = t + 1;
            workers.Add(new Thread(() =>
            {
                var rng = new Random(seed + id);
                var held = new List<Block>();
                long serial = 0;
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        if (held.Count < 48 && rng.Next(3) != 0)
                        {
                            int order = RandomOrder(rng, arena.MaxOrder);
                            if (arena.TryAllocPages(order, out Pfn p))
                            {
                                var b = new Block(p, order, ((long)id << 40) | ++serial);
                                Stamp(arena, b);
                                held.Add(b);
                                Interlocked.Increment(ref allocs);
                            }
                            else
                            {
                                Interlocked.Increment(ref failures);
                            }
                        }
                        else if (held.Count > 0)
                        {
                            int i = rng.Next(held.Count);
                            Block b = held[i];
                            held[i] = held[^1];
                            held.RemoveAt(held.Count - 1);
                            if (rng.Next(4) == 0)
                            {
                                handoff.Enqueue(b); // another thread frees it
                            }
                            else
                            {
                                CheckAndFree(arena, b, errors);
                            }
                        }

                        if (handoff.TryDequeue(out Block other))
                        {
                            CheckAndFree(arena, other, errors);
                            Interlocked.Increment(ref crossFrees);
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"worker {id}: {ex}");
                }
                finally
                {
                    foreach (Block b in held) CheckAndFree(arena, b, errors);
                }
            }) { Name = $"churn-{id}" });
        }

        for (int w = 0; w < walkers; w++)
        {
            int id = w;
            workers.Add(new Thread(() =>
            {
                var rng = new Random(seed ^ (0x2545F491 * (id + 1)));
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        var pfn = new Pfn((uint)rng.NextInt64(Pages));
                        if (arena.TryGetPageUnlessZero(pfn))
                        {
                            Interlocked.Increment(ref walkerGets);
                            if (arena.RefCount(pfn) < 1)
                            {
                                errors.Enqueue($"walker: holding a reference on {pfn} whose count reads {arena.RefCount(pfn)}");
                            }

                            arena.PutPage(pfn); // the page was not the one we wanted
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"walker {id}: {ex}");
                }
            }) { Name = $"walker-{id}" });
        }

        if (drainer)
        {
            workers.Add(new Thread(() =>
            {
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        arena.Drain();
                        Thread.Sleep(1);
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"drainer: {ex}");
                }
            }) { Name = "drainer" });
        }

        foreach (Thread t in workers) t.Start();
        TestSupport.JoinAll(workers.Take(threads), TestSupport.ChurnTime + TimeSpan.FromSeconds(40));
        while (handoff.TryDequeue(out Block left)) CheckAndFree(arena, left, errors);
        stop.Cancel();
        TestSupport.JoinAll(workers.Skip(threads), TimeSpan.FromSeconds(20));

        output.WriteLine($"allocs {allocs}, failed allocs {failures}, cross-thread frees {crossFrees}, walker refs {walkerGets}, cached before drain {arena.CachedPageCount}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.True(allocs > 0 && crossFrees > 0, "the churn did not run");
        if (walkers > 0) Assert.True(walkerGets > 0, "the walkers never took a reference");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    private static int RandomOrder(Random rng, int maxOrder)
    {
        int r = rng.Next(100);
        return r < 60 ? 0 : r < 75 ? 1 : r < 85 ? rng.Next(2, 4) : r < 97 ? rng.Next(4, Math.Min(9, maxOrder + 1)) : rng.Next(9, maxOrder + 1);
    }

    private static void Stamp(PageArena arena, Block b) => Blocks.Stamp(arena, b);

    private static void CheckAndFree(PageArena arena, Block b, ConcurrentQueue<string> errors)
    {
        if (Blocks.FindDamage(arena, b) is { } page)
        {
            errors.Enqueue($"{page} (block {b.Pfn} order {b.Order}): stamp overwritten, expected {b.Stamp:x}: two owners overlapped");
        }

        arena.FreePages(b.Pfn, b.Order);
    }
}
