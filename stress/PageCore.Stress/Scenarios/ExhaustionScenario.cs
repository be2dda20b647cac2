namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>exhaustion</c>: the arena held near empty. Workers allocate random small orders and keep what they get; when an
/// allocation fails they free half of what they hold. Failures must be clean (false, nothing changed), allocation must
/// recover after frees, blocks must never overlap (stamps), and the arena must be whole at the end.
/// </summary>
public sealed class ExhaustionScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "exhaustion";

    /// <inheritdoc />
    public string KernelCounterpart => "alloc_pages failure path (drain_all_pages, __alloc_pages_slowpath)";

    /// <inheritdoc />
    public string Rule => "allocator (B1-B4)";

    /// <inheritdoc />
    public bool HasLegacyForm => false;

    /// <inheritdoc />
    public string Description => "the arena held near empty: clean failures, reclaim from other threads' caches, recovery";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 4096) });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, Blocks.Free, new OpKind("failed alloc", [], [ArenaCounter.Reclaims]));
        long[] recoveries = new long[ctx.Threads];
        var workers = Enumerable.Range(0, ctx.Threads)
            .Select(i => ($"exhaust-{i}", (Action<Recorder>)(rec => Work(ctx, arena, rec, i, recoveries)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, []);
        StressResult result = Harness.Finish(ctx, Name, arena, elapsed);
        long failures = ctx.Recorders.Sum(r => r.CountOf(2));
        if (failures == 0 && ctx.Duration >= TimeSpan.FromSeconds(1))
        {
            ctx.Log.WriteLine("note: the arena never ran out; nothing about exhaustion was shown (use fewer --arena-pages)");
        }
        else if (failures > 0 && recoveries.Sum() == 0)
        {
            ctx.Violation("allocation never succeeded again after a failure, although every worker freed half of its blocks");
            result = result with { Violations = ctx.ViolationCount };
        }

        return result;
    }

    private static void Work(StressContext ctx, PageArena arena, Recorder rec, int id, long[] recoveries)
    {
        var rng = new Random(ctx.Seed + id);
        var held = new List<Block>();
        long serial = 0;
        bool failedBefore = false;
        try
        {
            while (DateTime.UtcNow < ctx.Deadline)
            {
                int order = rng.Next(100) < 70 ? 0 : rng.Next(1, 6);
                long t = rec.Begin();
                if (arena.TryAllocPages(order, out Pfn p))
                {
                    rec.End(0, t);
                    if (failedBefore)
                    {
                        recoveries[id]++;
                        failedBefore = false;
                    }

                    var b = new Block(p, order, ((long)(id + 1) << 40) | ++serial);
                    Blocks.Stamp(arena, b);
                    held.Add(b);
                }
                else
                {
                    rec.Count(2);
                    failedBefore = true;
                    for (int i = held.Count - 1; i >= 0; i -= 2)
                    {
                        Blocks.Check(ctx, arena, held[i]);
                        t = rec.Begin();
                        arena.FreePages(held[i].Pfn, held[i].Order);
                        rec.End(1, t);
                        held.RemoveAt(i);
                    }
                }
            }
        }
        finally
        {
            foreach (Block b in held) Blocks.CheckAndFree(ctx, arena, b);
        }
    }
}
