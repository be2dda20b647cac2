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
    internal const ulong Keys = 1 << 14;

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
    /// <remarks>A reclaimer's operation is a whole reclaim pass, held in its windows by the hook of
    /// <see cref="EpochReclaimScenario.NewDomain"/> (in both forms), so a reclaimer records about a hundred passes a second
    /// on 2 cores beside two CPU hogs (95-146 seen in 1 s runs): 20 is real work.</remarks>
    public long MinimumOperationsPerThread => 20;

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("lookup hit", [ArenaCounter.SpeculativeGetRetries], []), new OpKind("lookup miss", [], []),
            new OpKind("insert", [], [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills], TakesLock: true),
            new OpKind("remove", [], [], TakesLock: true), new OpKind("split", [], [], TakesLock: true),
            new OpKind("epoch reclaim", [], [], TakesLock: true), new OpKind("retired under lookup", [], [], TakesLock: true));
        EpochDomain epochs = EpochReclaimScenario.NewDomain(ctx.LegacyReclaim, lingerWhenBounded: false);
        // 64 buckets for 16K keys: chains of about 256 nodes, so a rewrite retires many nodes a lookup may be walking.
        var cache = new PageCacheIndex(arena, epochs, buckets: 1 << 6);

        // Now and then a lookup is preempted in the middle of a chain, inside its section: the nodes it can still reach
        // must not be recycled meanwhile. And whenever a reclaim pass lingers after a bound that saw no reader inside
        // (both forms; see EpochReclaimScenario.Linger), one lookup claims that window: the first node it stands on is
        // retired under it (that node's key is removed, so the chain is rewritten up to it, the node included) and the
        // lookup stays there past the lingering pass, which then goes on to its items. The
        // historical reclaim runs that node's recycling then; the fixed one must hold it back.
        cache.TraversalHook = standingOn =>
        {
            if (t_mayUseWindow && EpochReclaimScenario.TryClaimStaleWindow())
            {
                t_mayUseWindow = false; // once per lookup
                if (cache.TryRemove(standingOn, out _)) // the chain is rewritten up to that node: it is retired
                {
                    t_recorder!.Count(6); // the interleaving was driven: shown in the report, in both forms
                }

                EpochReclaimScenario.StaleWindowUsed();
                Thread.Sleep(6); // the lingering pass runs what was deferred, this node included, meanwhile
            }
            else if (SeededChance.Next(8192) == 0)
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

        // The teardown below removes every key (tens of thousands of deferrals, hundreds of passes with no reader
        // inside): the adversary's hooks have nothing left to widen there and would only make each pass linger.
        epochs.WindowHook = null;
        cache.TraversalHook = null;
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

    internal static void Write(StressContext ctx, PageArena arena, PageCacheIndex cache, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        // A writer's deferrals may start passes under the index's lock, which the reader that uses a window needs.
        EpochReclaimScenario.MarkNoLinger();
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

    /// <summary>
    /// Whether the calling thread's current lookup may still use a stale window: once per lookup, readers only (writers
    /// walk chains too, under the index's lock, and are never paused).
    /// </summary>
    [ThreadStatic] private static bool t_mayUseWindow;

    /// <summary>The calling reader's recorder (the hook counts the windows it used there).</summary>
    [ThreadStatic] private static Recorder? t_recorder;

    internal static void Read(StressContext ctx, PageArena arena, PageCacheIndex cache, Recorder rec, int seed, CancellationToken stop)
    {
        var rng = new Random(seed);
        t_recorder = rec;
        while (!stop.IsCancellationRequested)
        {
            for (int step = 0; step < 64; step++)
            {
                ulong key = (ulong)rng.NextInt64((long)Keys);
                long t = rec.Begin();
                t_mayUseWindow = true;
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
