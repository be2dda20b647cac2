namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pagecache-gc</c>: the workload of <see cref="PageCacheLookupScenario"/> on an index whose retired nodes the garbage
/// collector reclaims (<c>new PageCacheIndex(arena)</c>): lookups enter no epoch section, so nothing but the runtime
/// keeps a node alive while a lookup stands on it. Every lookup pauses at each node it passes, the window in which that
/// node could be reused under it, and the index reports a node that was recycled meanwhile.
/// </summary>
/// <remarks>
/// Legacy form: the index recycles retired nodes at once (<c>PageCacheIndex.LegacyRecycleAtOnce</c>), as an index that
/// pools its nodes with no grace period at all would; a paused lookup then stands on a node that was reused.
/// </remarks>
public sealed class PageCacheCollectedScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "pagecache-gc";

    /// <inheritdoc />
    public string KernelCounterpart => "filemap_get_entry with the grace period kept by the garbage collector (SLAB_TYPESAFE_BY_RCU's role)";

    /// <inheritdoc />
    public string Rule => "rule 4";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "the pagecache-lookup churn on an index with no epoch domain, lookups paused at every node; legacy: nodes recycled at once";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("lookup hit", [ArenaCounter.SpeculativeGetRetries], []), new OpKind("lookup miss", [], []),
            new OpKind("insert", [], [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills], TakesLock: true),
            new OpKind("remove", [], [], TakesLock: true), new OpKind("split", [], [], TakesLock: true));

        // 64 buckets for 16K keys: chains of about 256 nodes, so a rewrite retires many nodes a lookup may be standing on.
        var cache = new PageCacheIndex(arena, buckets: 1 << 6)
        {
            LegacyRecycleAtOnce = ctx.Legacy,

            // The window: a lookup that stands on a node waits a moment before it moves on (writers walk chains under
            // the index's lock and are paused too; that only slows them).
            TraversalHook = _ => Thread.SpinWait(16),
        };
        int writers = Math.Max(1, ctx.Threads / 2);
        var writerThreads = Enumerable.Range(0, writers)
            .Select(i => ($"writer-{i}", (Action<Recorder>)(rec => PageCacheLookupScenario.Write(ctx, arena, cache, rec, i)))).ToList();
        var readers = Enumerable.Range(0, Math.Max(1, ctx.Threads - writers))
            .Select(i => ($"reader-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => PageCacheLookupScenario.Read(ctx, arena, cache, rec, ctx.Seed ^ (0x510E527F * (i + 1)), stop))))
            .ToList();
        TimeSpan elapsed = Harness.Run(ctx, writerThreads, readers);

        cache.TraversalHook = null;
        for (ulong key = 0; key < PageCacheLookupScenario.Keys; key++)
        {
            while (cache.TryRemove(key, out _))
            {
            }
        }

        if (cache.Count != 0)
        {
            ctx.Violation($"the index still counts {cache.Count} keys after every key was removed");
        }

        return Harness.Finish(ctx, Name, arena, elapsed);
    }
}
