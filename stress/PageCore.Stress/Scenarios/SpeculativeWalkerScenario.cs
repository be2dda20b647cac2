using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>speculative-walker</c> (rule 1): hostile PFN walkers take speculative references (<c>get_page_unless_zero</c>) on
/// pages their owners are busy with, as page-cache and GUP-fast lookups do, while the owners take several references at
/// once and drop them one by one. The owner of a page knows how many references it holds, so a page freed by one of
/// its own puts before its last one, a put at zero, or a page left allocated at the end, is a lost or invented count.
/// </summary>
/// <remarks>
/// Legacy form (<c>--legacy</c>): the owners take their references with <c>set_page_count</c> (read the count, store
/// count + n), the pattern Eric Dumazet's "net: fix races accessing page->_count" series removed from the networking
/// page-fragment caches, and the powerpc fragment allocator's bug of seed 000. A walker's get or put that lands between
/// the read and the store is wiped out; the harness must catch it. Fixed form: one atomic <c>page_ref_add</c>
/// (<see cref="PageArena.GetPages"/>).
/// </remarks>
public sealed class SpeculativeWalkerScenario : IScenario, ISystematicScenario
{
    private const int Slots = 64;

    /// <inheritdoc />
    public string Name => "speculative-walker";

    /// <inheritdoc />
    public string KernelCounterpart => "get_page_unless_zero by PFN walkers vs page_ref_add (net page_frag, seed 000)";

    /// <inheritdoc />
    public string Rule => "rule 1";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "walkers take speculative references on pages whose owners add and drop references";

    /// <inheritdoc />
    int ISystematicScenario.ProgramSteps => 12;

    /// <summary>
    /// The race in its smallest form: an owner takes two more references on its page (legacy: read the count, store count
    /// + 2) while a walker gets and puts it speculatively; then the owner puts its three. A get or put wiped out by the
    /// store shows as a put at zero (a bug report) or as a page left with a reference nobody holds.
    /// </summary>
    Systematic.SystematicProgram ISystematicScenario.Program(bool legacy)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024, PerCpuCaches = false });
        Pfn page = arena.AllocPages(0); // refcount 1: the owner's
        void Owner()
        {
            if (legacy)
            {
                LegacyPageCount.AddBySetPageCount(arena, page, 2);
            }
            else
            {
                arena.GetPages(page, 2);
            }

            for (int i = 0; i < 3; i++)
            {
                arena.PutPage(page); // the last one frees the page
            }
        }

        void Walker()
        {
            if (arena.TryGetPageUnlessZero(page))
            {
                arena.PutPage(page);
            }
        }

        string? Check()
        {
            int count = arena.RefCount(page);
            bool allocated = (arena.DescriptorOf(page).Flags & (uint)Descriptors.PageFlags.AllocatedHead) != 0;
            return count == 0 && !allocated ? null : $"the page is left with refcount {count}{(allocated ? ", still allocated" : "")}: a reference nobody holds";
        }

        return new Systematic.SystematicProgram([("owner", Owner), ("walker", Walker)], Check, () => arena.Dispose(force: true));
    }

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, new OpKind(ctx.Legacy ? "set_page_count" : "page_ref_add", [], []),
            new OpKind("owner put", [], [ArenaCounter.CoreFrees, ArenaCounter.CacheSpills]), Blocks.WalkerGet, Blocks.WalkerMiss);
        long[] published = new long[Slots];
        int owners = Math.Max(1, ctx.Threads / 2);
        int walkers = Math.Max(1, ctx.Threads - owners);
        int planted = ctx.Fault == PlantedFault.SkipOneGet ? 1 : 0;
        var ownerThreads = Enumerable.Range(0, owners)
            .Select(i => ($"owner-{i}", (Action<Recorder>)(rec => Own(ctx, arena, published, rec, i, owners, ref planted)))).ToList();
        var walkerThreads = Enumerable.Range(0, walkers)
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Blocks.Walk(ctx, arena, rec, 3, 4, ctx.Seed ^ (0x3C6EF372 * (i + 1)), stop, published, randomOneIn: 8, maxSpin: 16)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, ownerThreads, walkerThreads);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Own(StressContext ctx, PageArena arena, long[] published, Recorder rec, int id, int owners, ref int planted)
    {
        var rng = new Random(ctx.Seed + id);
        int slotsPerOwner = Math.Max(1, Slots / owners);
        while (DateTime.UtcNow < ctx.Deadline)
        {
            long t = rec.Begin();
            if (!arena.TryAllocPages(0, out Pfn page))
            {
                continue;
            }

            rec.End(0, t);
            Volatile.Write(ref published[((id * slotsPerOwner) + rng.Next(slotsPerOwner)) % Slots], page.Value + 1L);
            int extra = rng.Next(1, 8);

            // Take `extra` more references at once (the page-fragment cache's bias).
            t = rec.Begin();
            if (ctx.Legacy)
            {
                LegacyPageCount.AddBySetPageCount(arena, page, extra);
            }
            else if (Interlocked.Exchange(ref planted, 0) == 1)
            {
                // The planted fault: one increment skipped, as if a get had been lost.
                if (extra > 1) arena.GetPages(page, extra - 1);
            }
            else
            {
                arena.GetPages(page, extra);
            }

            rec.End(1, t);

            // Drop them one by one: none of these puts may free the page, the owner still holds one reference.
            for (int i = 0; i < extra; i++)
            {
                t = rec.Begin();
                if (!TryPut(ctx, arena, page, out bool freed))
                {
                    return;
                }

                rec.End(2, t);
                if (freed)
                {
                    ctx.Violation($"{page} was freed by its owner's put while the owner still held {extra - i} references: a reference count was lost", page);
                    return;
                }
            }

            try
            {
                arena.FreePages(page, 0);
            }
            catch (PageBugException bug)
            {
                ctx.Violation(bug);
                return;
            }
        }
    }

    private static bool TryPut(StressContext ctx, PageArena arena, Pfn page, out bool freed)
    {
        try
        {
            freed = arena.PutPage(page);
            return true;
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
            freed = false;
            return false;
        }
    }
}
