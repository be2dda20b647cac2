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
public sealed class TailRefcountScenario : IScenario, ISystematicScenario
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
    int ISystematicScenario.ProgramSteps => 30;

    /// <summary>
    /// The race in its smallest form: the owner allocates an order-1 folio, publishes its tail, takes and drops a
    /// reference through the tail, then frees the folio; a walker calls <c>get_page_unless_zero</c> on the published
    /// tail. In the fixed form a tail's count stays 0 and the get fails; in the legacy form the reference through the
    /// tail raises the tail's own count, the walker's get lands on it, and the counts stop adding up: a bug report, or a
    /// freed page still counted (the final <see cref="PageArena.Verify"/>).
    /// </summary>
    Systematic.SystematicProgram ISystematicScenario.Program(bool legacy)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024, PerCpuCaches = false });
        int[] published = new int[1];
        string? violation = null;
        void Owner()
        {
            Pfn head = arena.AllocFolio(1);
            Pfn tail = head + 1;
            Systematic.Atomic.Write(ref published[0], (int)tail.Value + 1);
            if (legacy)
            {
                LegacyTailRefcount.GetViaTail(arena, tail);
                LegacyTailRefcount.PutViaTail(arena, tail);
            }
            else
            {
                arena.GetPage(tail);
                arena.PutPage(tail);
            }

            arena.FreePages(head, 1);
        }

        void Walker()
        {
            var spinner = default(SpinWait);
            int seen;
            while ((seen = Systematic.Atomic.Read(ref published[0])) == 0)
            {
                Systematic.Atomic.SpinOnce(ref spinner);
            }

            var tail = new Pfn((uint)(seen - 1));
            if (arena.TryGetPageUnlessZero(tail))
            {
                violation = $"get_page_unless_zero succeeded on pfn {tail.Value}, a tail page (rule 2: a tail's count is 0 at all times)";
            }
        }

        string? Check()
        {
            if (violation is not null)
            {
                return violation;
            }

            ArenaReport report = arena.Verify();
            return report.IsClean && report.FreePages == arena.PageCount ? null : $"the arena is not whole after the run: {report}";
        }

        return new Systematic.SystematicProgram([("owner", Owner), ("walker", Walker)], Check, () => arena.Dispose(force: true));
    }

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
