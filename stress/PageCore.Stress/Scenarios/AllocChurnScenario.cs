using System.Collections.Concurrent;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>alloc-churn</c>: workers allocate blocks of random orders, hold them for a random number of steps, and free them,
/// a quarter on another thread; every block carries its owner's stamp, checked when it is freed. Hostile PFN walkers
/// run throughout. At the end the arena must be whole again.
/// </summary>
public sealed class AllocChurnScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "alloc-churn";

    /// <inheritdoc />
    public string KernelCounterpart => "alloc_pages / __free_pages through the pcp lists";

    /// <inheritdoc />
    public string Rule => "allocator (B1-B5)";

    /// <inheritdoc />
    public bool HasLegacyForm => false;

    /// <inheritdoc />
    public string Description => "random orders, random hold times, cross-thread frees, stamped blocks, a hostile PFN walker";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, Blocks.Free, new OpKind("cross-thread free", [ArenaCounter.FreeCasRetries], [ArenaCounter.CoreFrees, ArenaCounter.CacheSpills]),
            new OpKind("failed alloc", [], [ArenaCounter.Reclaims]), Blocks.WalkerGet, Blocks.WalkerMiss);
        var handoff = new ConcurrentQueue<Block>();
        var workers = Enumerable.Range(0, ctx.Threads)
            .Select(i => ($"churn-{i}", (Action<Recorder>)(rec => Work(ctx, arena, handoff, rec, i)))).ToList();
        var walkers = Enumerable.Range(0, Math.Max(1, ctx.Threads / 4))
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Blocks.Walk(ctx, arena, rec, 4, 5, ctx.Seed ^ (0x2545F491 * (i + 1)), stop)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, walkers);
        while (handoff.TryDequeue(out Block left)) Blocks.CheckAndFree(ctx, arena, left);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Work(StressContext ctx, PageArena arena, ConcurrentQueue<Block> handoff, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        var held = new List<Block>();
        long serial = 0;
        try
        {
            while (DateTime.UtcNow < ctx.Deadline)
            {
                // Eight steps between looks at the clock: a step can stamp a 4 MiB block, and with hundreds of workers
                // on a few cores a worker's steps are far apart, so a longer batch ran on long past the deadline.
                for (int step = 0; step < 8; step++)
                {
                    if (held.Count < 64 && rng.Next(3) != 0)
                    {
                        int order = Math.Min(RandomOrder(rng), arena.MaxOrder);
                        long t = rec.Begin();
                        if (arena.TryAllocPages(order, out Pfn p))
                        {
                            rec.End(0, t);
                            var b = new Block(p, order, ((long)(id + 1) << 40) | ++serial);
                            Blocks.Stamp(arena, b);
                            held.Add(b);
                        }
                        else
                        {
                            rec.Count(3);
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
                            handoff.Enqueue(b);
                        }
                        else
                        {
                            Blocks.Check(ctx, arena, b);
                            long t = rec.Begin();
                            arena.FreePages(b.Pfn, b.Order);
                            rec.End(1, t);
                        }
                    }

                    if (handoff.TryDequeue(out Block other))
                    {
                        Blocks.Check(ctx, arena, other);
                        long t = rec.Begin();
                        arena.FreePages(other.Pfn, other.Order);
                        rec.End(2, t);
                    }
                }
            }
        }
        finally
        {
            foreach (Block b in held) Blocks.CheckAndFree(ctx, arena, b);
        }
    }

    private static int RandomOrder(Random rng)
    {
        int r = rng.Next(100);
        return r < 60 ? 0 : r < 75 ? 1 : r < 85 ? rng.Next(2, 4) : r < 97 ? rng.Next(4, 9) : rng.Next(9, 11);
    }
}
