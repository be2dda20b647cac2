using System.Collections.Concurrent;
using Xunit;

namespace PageCore.Tests;

public sealed class PageCacheIndexTests
{
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void LookupsReturnTheFolioWithAReferenceAndMissAfterRemoval(bool collectorReclaimed)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        using var epochs = new EpochDomain();
        var cache = collectorReclaimed ? new PageCacheIndex(arena, buckets: 64) : new PageCacheIndex(arena, epochs, buckets: 64);
        Pfn folio = arena.AllocFolio(2);
        Assert.True(cache.TryAdd(8, folio));
        Pfn overlapping = arena.AllocFolio(1);
        Assert.False(cache.TryAdd(10, overlapping)); // keys 10..11 are taken
        Assert.Equal(1, arena.RefCount(overlapping));
        arena.FreePages(overlapping, 1);
        Assert.Equal(4, cache.Count);
        Assert.Equal(2, arena.RefCount(folio)); // caller + index
        for (ulong key = 8; key < 12; key++)
        {
            Assert.True(cache.TryGet(key, out Pfn got));
            Assert.Equal(folio, got);
            Assert.Equal(3, arena.RefCount(folio));
            arena.PutPage(got);
        }

        Assert.False(cache.TryGet(12, out _));
        Pfn misaligned = arena.AllocFolio(1);
        Assert.Throws<ArgumentException>(() => cache.TryAdd(9, misaligned));
        arena.FreePages(misaligned, 1);
        Assert.True(cache.TryRemove(9, out Pfn removed));
        Assert.Equal(folio, removed);
        Assert.False(cache.TryGet(8, out _));
        Assert.Equal(0, cache.Count);
        arena.FreePages(folio, 2);
        epochs.Barrier();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void SplittingACachedFolioStoresEveryPieceInItsSlots(bool collectorReclaimed)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        using var epochs = new EpochDomain();
        var cache = collectorReclaimed ? new PageCacheIndex(arena) : new PageCacheIndex(arena, epochs);
        Pfn folio = arena.AllocFolio(3);
        Assert.True(cache.TryAdd(16, folio));
        Assert.True(cache.TryGet(20, out Pfn extra)); // a stray reference makes the split refuse
        Assert.Equal(SplitResult.Busy, cache.SplitFolio(folio, 1));
        arena.PutPage(extra);
        Assert.Equal(SplitResult.Done, cache.SplitFolio(folio, 1));
        for (ulong key = 16; key < 24; key++)
        {
            Assert.True(cache.TryGet(key, out Pfn piece));
            Assert.Equal(folio + (uint)((key - 16) & ~1UL), piece);
            Assert.Equal(1, arena.OrderOf(piece));
            Assert.Equal(key & ~1UL, arena.DescriptorOf(piece).Index);
            arena.PutPage(piece);
        }

        for (uint k = 0; k < 4; k++)
        {
            Assert.True(cache.TryRemove(16 + (2 * k), out Pfn piece));
            arena.FreePages(piece, 1); // the caller's reference on the piece
        }

        epochs.Barrier();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

[Collection(StressCollection.Name)]
public sealed class PageCacheIndexConcurrencyTests(ITestOutputHelper output)
{
    /// <summary>
    /// Both ways of keeping nodes alive: an epoch domain (nodes recycled after a grace period) and the garbage collector
    /// (nodes never reused, lookups in no section); and the legacy form of the second, which recycles retired nodes at
    /// once and must be caught. With the collector, every lookup pauses at each node it passes (the traversal hook), the
    /// window in which a node it stands on could be reused, and <c>Find</c> checks that the node was not recycled
    /// meanwhile.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(false, false)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public async Task LookupsUnderInsertDeleteSplitAndReuseChurnNeverReturnTheWrongFolio(bool collectorReclaimed, bool legacyRecycle)
    {
        int seed = TestSupport.Seed(output, "page cache lookups vs churn");
        using ArenaLease lease = TestSupport.Lease(pages: 16384);
        PageArena arena = lease.Arena;
        using var epochs = new EpochDomain();
        var cache = collectorReclaimed
            ? new PageCacheIndex(arena, buckets: 1024) { LegacyRecycleAtOnce = legacyRecycle, TraversalHook = _ => Thread.SpinWait(20) }
            : new PageCacheIndex(arena, epochs, buckets: 1024);
        const ulong Keys = 4096;
        var errors = new ConcurrentQueue<string>();
        long hits = 0, misses = 0, splits = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var writers = Enumerable.Range(0, Environment.ProcessorCount).Select(id => new Thread(() =>
            {
                var rng = new Random(seed + id);
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        int order = rng.Next(4);
                        ulong key = (ulong)rng.NextInt64((long)(Keys >> order)) << order;
                        Pfn folio = order == 0 ? arena.AllocPages(0) : arena.AllocFolio(order);
                        if (!cache.TryAdd(key, folio))
                        {
                            arena.FreePages(folio, order);
                            // The range is taken: remove whatever holds the key (free and reuse churn).
                            if (cache.TryRemove(key, out _)) { }
                            continue;
                        }

                        if (order > 0 && rng.Next(2) == 0 && cache.SplitFolio(folio, rng.Next(order)) == SplitResult.Done)
                        {
                            Interlocked.Increment(ref splits);
                            int pieceOrder = arena.OrderOf(folio);
                            for (uint k = 0; k < 1u << (order - pieceOrder); k++) arena.PutPage(folio + (k << pieceOrder));
                        }
                        else
                        {
                            arena.PutPage(folio); // the cache keeps it alive
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"writer: {ex}");
                }
            })).ToList();
            var readers = Enumerable.Range(0, 2).Select(id => new Thread(() =>
            {
                var rng = new Random(~seed - id);
                try
                {
                    while (!stop.IsCancellationRequested)
                    {
                        ulong key = (ulong)rng.NextInt64((long)Keys);
                        if (cache.TryGet(key, out Pfn folio))
                        {
                            ref var d = ref arena.DescriptorOf(folio);
                            ulong first = d.Index;
                            ulong nr = 1UL << arena.OrderOf(folio);
                            if (d.Mapping != cache.MappingId || key < first || key >= first + nr)
                            {
                                errors.Enqueue($"lookup of {key} returned {folio} holding {first}..{first + nr - 1} of mapping {d.Mapping}");
                            }

                            Interlocked.Increment(ref hits);
                            arena.PutPage(folio);
                        }
                        else
                        {
                            Interlocked.Increment(ref misses);
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"reader: {ex}");
                }
            })).ToList();
            foreach (Thread t in writers.Concat(readers)) t.Start();
            TestSupport.JoinAll(writers, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
            stop.Cancel();
            TestSupport.JoinAll(readers, TimeSpan.FromSeconds(30));
        });

        for (ulong key = 0; key < Keys; key++)
        {
            while (cache.TryRemove(key, out _)) { }
        }

        epochs.Barrier();
        output.WriteLine($"hits {hits}, misses {misses}, splits {splits}, errors {errors.Count}; first: {errors.FirstOrDefault()?.Split(Environment.NewLine)[0]}");
        Assert.True(hits > 0 && splits > 0, "the race was not exercised");
        if (legacyRecycle)
        {
            Assert.False(errors.IsEmpty, "the legacy recycling (no grace period) was not caught");
            return; // a reused node may have left the index in any state: nothing more to check
        }

        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.Equal(0, cache.Count);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
