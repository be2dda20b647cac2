using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>tail-refcount</c> (rule 2, seed 002): owners allocate folios, take and drop references through random tail pages,
/// and split some of them, while PFN walkers call <c>get_page_unless_zero</c> on the pages the owners work on and on
/// random PFNs. A walker's get must never succeed on a tail page, and every count must add up at the end.
/// </summary>
/// <remarks>
/// Legacy form: the pre-2011 scheme, where a reference taken through a tail also raised the tail's own count
/// (<c>PageCore.Legacy.LegacyTailRefcount</c>); a walker's speculative get then succeeds on a tail, as Michel
/// Lespinasse found with a working-set scanner. Fixed form: tails keep a count of 0, gets and puts on a tail go to the
/// head.
/// </remarks>
public sealed class TailRefcountScenario : IScenario
{
    private const int Slots = 64;

    /// <inheritdoc />
    public string Name => "tail-refcount";

    /// <inheritdoc />
    public string KernelCounterpart => "get_page_unless_zero on THP tails vs __split_huge_page_refcount (seed 002)";

    /// <inheritdoc />
    public string Rule => "rule 2";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "walkers' speculative gets against references taken through tails and folio splits";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("folio alloc", [ArenaCounter.AllocCasRetries], [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills]),
            new OpKind("get+put via tail", [], []), new OpKind("split", [], []), new OpKind("walker get+put", [ArenaCounter.SpeculativeGetRetries], []),
            new OpKind("walker miss", [], []));
        long[] published = new long[Slots];
        int owners = Math.Max(1, ctx.Threads / 2);
        var ownerThreads = Enumerable.Range(0, owners)
            .Select(i => ($"owner-{i}", (Action<Recorder>)(rec => Own(ctx, arena, published, rec, i)))).ToList();
        var walkers = Enumerable.Range(0, Math.Max(1, ctx.Threads - owners))
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Blocks.Walk(ctx, arena, rec, 3, 4, ctx.Seed ^ (0x6A09E667 * (i + 1)), stop, published, randomOneIn: 4, maxSpin: 0)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, ownerThreads, walkers);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Own(StressContext ctx, PageArena arena, long[] published, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        var held = new List<Pfn>();
        while (DateTime.UtcNow < ctx.Deadline)
        {
            int order = rng.Next(2, 6);
            long t = rec.Begin();
            if (!arena.TryAllocFolio(order, out Pfn head))
            {
                continue;
            }

            rec.End(0, t);
            for (int i = 0; i < 4; i++)
            {
                Pfn tail = head + (uint)rng.Next(1, 1 << order);
                Volatile.Write(ref published[rng.Next(Slots)], tail.Value + 1L);
                t = rec.Begin();
                if (ctx.Legacy)
                {
                    LegacyTailRefcount.GetViaTail(arena, tail);
                    Thread.SpinWait(16); // holding the reference a little while, as I/O through a tail does
                    LegacyTailRefcount.PutViaTail(arena, tail);
                }
                else
                {
                    arena.GetPage(tail);
                    Thread.SpinWait(16);
                    arena.PutPage(tail);
                }

                rec.End(1, t);
            }

            int newOrder = rng.Next(order);
            t = rec.Begin();
            if (rng.Next(2) == 0 && arena.SplitFolio(head, newOrder) == SplitResult.Done)
            {
                rec.End(2, t);
                for (uint k = 0; k < 1u << (order - newOrder); k++)
                {
                    arena.FreePages(head + (k << newOrder), newOrder);
                }
            }
            else
            {
                arena.FreePages(head, order);
            }
        }
    }
}
