namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pagecache-lookup</c>: lock-free page-cache lookups (<c>filemap_get_entry</c>: epoch section, load, speculative
/// get, reload) against inserts, deletes, re-inserts, splits of cached folios, and free-and-reuse of their pages. A
/// lookup must never return a folio that does not hold the requested key; no reference may leak or underflow; every
/// page must come back after the run.
/// </summary>
/// <remarks>
/// With <c>--legacy-reclaim</c> the index's epoch domain reclaims with the historical algorithm
/// (<c>PageCore.Legacy.LegacyEpochReclaim</c>): retired index nodes are recycled while lookups still walk them, and the
/// index reports the recycled node a lookup reached.
/// </remarks>
public sealed class PageCacheLookupScenario : IScenario
{
    private const ulong Keys = 1 << 14;

    /// <inheritdoc />
    public string Name => "pagecache-lookup";

    /// <inheritdoc />
    public string KernelCounterpart => "filemap_get_entry (xas_load, folio_try_get, xas_reload) vs folio split and reuse";

    /// <inheritdoc />
    public string Rule => "rule 2";

    /// <inheritdoc />
    public bool HasLegacyForm => false;

    /// <inheritdoc />
    public string Description => "lookups against insert/delete/reinsert/split/free-and-reuse churn, identity checked";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("lookup hit", [ArenaCounter.SpeculativeGetRetries], []), new OpKind("lookup miss", [], []),
            new OpKind("insert", [], [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills], TakesLock: true),
            new OpKind("remove", [], [], TakesLock: true), new OpKind("split", [], [], TakesLock: true),
            new OpKind("epoch reclaim", [], [], TakesLock: true));
        EpochDomain epochs = EpochReclaimScenario.NewDomain(ctx.LegacyReclaim, lingerWhenBounded: false);
        // 64 buckets for 16K keys: chains of about 256 nodes, so a rewrite retires many nodes a lookup may be walking.
        var cache = new PageCacheIndex(arena, epochs, buckets: 1 << 6)
        {
            // Now and then a lookup is preempted in the middle of a chain, inside its section: the nodes it can still
            // reach must not be recycled meanwhile. Far more often while a pass of the historical reclaim lingers after
            // a bound that saw no reader (the same hook runs in the fixed form, where that window never opens).
        };

        // The hook sees the cache: while that window is open, the first node a lookup stands on is retired under it (the
        // lookup's own key is removed, so its chain is rewritten up to that key, this node included) and the lookup
        // stays there past the lingering pass, which runs what was deferred meanwhile. The fixed form never opens it.
        cache.TraversalHook = () =>
        {
            if (EpochReclaimScenario.StaleBoundOpen && t_lookupKey != NoKey)
            {
                ulong key = t_lookupKey;
                t_lookupKey = NoKey; // once per lookup
                cache.TryRemove(key, out _);
                Thread.Sleep(6);
            }
            else if (Random.Shared.Next(8192) == 0)
            {
                Thread.Sleep(1);
            }
        };
        int writers = Math.Max(1, ctx.Threads / 2);
        var writerThreads = Enumerable.Range(0, writers)
            .Select(i => ($"writer-{i}", (Action<Recorder>)(rec => Write(ctx, arena, cache, rec, i)))).ToList();
        var readers = Enumerable.Range(0, Math.Max(1, ctx.Threads - writers))
            .Select(i => ($"reader-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Read(ctx, arena, cache, rec, ctx.Seed ^ (0x510E527F * (i + 1)), stop))))
            .Concat(Enumerable.Range(0, 2).Select(i => ($"reclaimer-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => ReclaimLoop(epochs, rec, stop)))))
            .ToList();
        TimeSpan elapsed = Harness.Run(ctx, writerThreads, readers);
        for (ulong key = 0; key < Keys; key++)
        {
            while (cache.TryRemove(key, out _))
            {
            }
        }

        epochs.Barrier();
        if (cache.Count != 0)
        {
            ctx.Violation($"the index still counts {cache.Count} keys after every key was removed");
        }

        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Write(StressContext ctx, PageArena arena, PageCacheIndex cache, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        while (DateTime.UtcNow < ctx.Deadline)
        {
            int order = rng.Next(4);
            ulong key = (ulong)rng.NextInt64((long)(Keys >> order)) << order;
            Pfn folio;
            if (order == 0 ? !arena.TryAllocPages(0, out folio) : !arena.TryAllocFolio(order, out folio))
            {
                continue;
            }

            long t = rec.Begin();
            if (!cache.TryAdd(key, folio))
            {
                arena.FreePages(folio, order);
                t = rec.Begin();
                if (cache.TryRemove(key, out _))
                {
                    rec.End(3, t);
                }

                continue;
            }

            rec.End(2, t);
            t = rec.Begin();
            if (order > 0 && rng.Next(2) == 0 && cache.SplitFolio(folio, rng.Next(order)) == SplitResult.Done)
            {
                rec.End(4, t);
                int pieceOrder = arena.OrderOf(folio);
                for (uint k = 0; k < 1u << (order - pieceOrder); k++)
                {
                    arena.PutPage(folio + (k << pieceOrder));
                }
            }
            else
            {
                arena.PutPage(folio); // the cache keeps it
            }
        }
    }

    /// <summary>Two threads reclaim the epochs at once besides the library's own passes: retired nodes are recycled under concurrent passes.</summary>
    private static void ReclaimLoop(EpochDomain epochs, Recorder rec, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            long t = rec.Begin();
            epochs.Reclaim();
            rec.End(5, t);
            Thread.Yield();
        }
    }

    private const ulong NoKey = ulong.MaxValue;

    /// <summary>The key the calling reader is looking up (for the traversal hook), or <see cref="NoKey"/>.</summary>
    [ThreadStatic] private static ulong t_lookupKey;

    private static void Read(StressContext ctx, PageArena arena, PageCacheIndex cache, Recorder rec, int seed, CancellationToken stop)
    {
        var rng = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            for (int step = 0; step < 64; step++)
            {
                ulong key = (ulong)rng.NextInt64((long)Keys);
                long t = rec.Begin();
                t_lookupKey = key;
                if (cache.TryGet(key, out Pfn folio))
                {
                    ref Descriptors.PageDescriptor d = ref arena.DescriptorOf(folio);
                    ulong first = d.Index;
                    ulong nr = 1UL << arena.OrderOf(folio);
                    if (d.Mapping != cache.MappingId || key < first || key >= first + nr)
                    {
                        ctx.Violation($"lookup of key {key} returned {folio}, which holds keys {first}..{first + nr - 1} of mapping {d.Mapping}", folio);
                    }

                    arena.PutPage(folio);
                    rec.End(0, t);
                }
                else
                {
                    rec.Count(1);
                }
            }

            // Between batches a reader is outside any section a moment (reclaim passes then find no reader inside),
            // and now and then it is preempted.
            if (rng.Next(2) == 0)
            {
                Thread.Yield();
            }
            else
            {
                Thread.SpinWait(rng.Next(256));
            }
        }
    }
}
