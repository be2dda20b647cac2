using PageCore.Descriptors;
using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>cached-contract</c> (the freed-page contract): owners free blocks of orders 0..3 into the per-CPU caches and at
/// once attack what they freed: speculative gets on every page of the block, <c>get_page</c>, <c>page_ref_add</c> and
/// <c>MapPage</c>, while PFN walkers take and drop speculative references all over the arena (so that caches release
/// blocks that a walker still holds). From <c>FreePages</c>' return until the block is handed out again, every one of
/// those gets must fail.
/// </summary>
/// <remarks>
/// <para>How a success is judged: the arena is checked (<see cref="PageArenaOptions.Checked"/>), so every hand-out of a
/// block increments its generation before the flags that make it gettable are published. An owner records the
/// generation of the block it frees; a get that succeeds afterwards is legitimate only if the generation moved (the
/// block was handed out again, to someone else, in between) or the head is still allocated (a walker held a reference
/// when the owner freed it, so <c>FreePages</c> only dropped the owner's reference, as <c>__free_pages</c> does; the
/// head is freed by the last put). While the attacker holds its reference neither can change under the check. The same
/// generation on a head that is not allocated means the get took a freed, cached block for a live one. Every reference
/// a get took is given back; the final drain checks that nothing leaked.</para>
/// <para>Legacy form (<c>--legacy</c>): the gets of <see cref="LegacyCachedGets"/>, which look at the count alone
/// (<c>get_page_unless_zero</c>) or refuse only clear flags (<c>get_page</c>): a freed block keeps the cache's reference
/// and its <c>Cached</c> flag, so both succeed on it. Caught on the first attack.</para>
/// </remarks>
public sealed class CachedContractScenario : IScenario, ISystematicScenario
{
    private const int Slots = 64;

    /// <inheritdoc />
    public string Name => "cached-contract";

    /// <inheritdoc />
    public string KernelCounterpart => "get_page_unless_zero / get_page on a page freed into pcp lists / page_pool";

    /// <inheritdoc />
    public string Rule => "freed-page contract";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "gets on blocks just freed into the per-CPU caches must fail until the block is handed out again";

    /// <inheritdoc />
    int ISystematicScenario.ProgramSteps => 60; // the allocation and free paths pass 40 to 70 points

    /// <summary>
    /// The contract in its smallest form, on a checked arena with per-CPU caches: the owner allocates a page, publishes
    /// it, frees it into its cache (phase 1: the block sits free in the cache), then takes it back (phase 2) and frees it
    /// for good; a getter tries <c>get_page_unless_zero</c> on the published page. A get that succeeds while the phase
    /// read just before it and just after it both say 1 took a reference on a freed, cached block. Legacy: the get looks
    /// at the count alone, which a cached block keeps at 1 (the cache's own reference).
    /// </summary>
    Systematic.SystematicProgram ISystematicScenario.Program(bool legacy)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024, Checked = true, PerCpuCaches = true });
        int[] state = new int[2]; // published PFN + 1, phase
        string? violation = null;
        void Owner()
        {
            Pfn p = arena.AllocPages(0);
            Systematic.Atomic.Write(ref state[0], (int)p.Value + 1);
            arena.FreePages(p, 0);
            Systematic.Atomic.Write(ref state[1], 1);
            Systematic.Atomic.Write(ref state[1], 2);
            Pfn again = arena.AllocPages(0);
            arena.FreePages(again, 0);
        }

        void Getter()
        {
            var spinner = default(SpinWait);
            int published;
            while ((published = Systematic.Atomic.Read(ref state[0])) == 0)
            {
                Systematic.Atomic.SpinOnce(ref spinner);
            }

            var target = new Pfn((uint)(published - 1));
            int before = Systematic.Atomic.Read(ref state[1]);
            bool got = legacy ? LegacyCachedGets.TryGetPageUnlessZero(arena, target) : arena.TryGetPageUnlessZero(target);
            int after = Systematic.Atomic.Read(ref state[1]);
            if (got && before == 1 && after == 1)
            {
                violation = $"get_page_unless_zero took a reference on pfn {target.Value} while it sat free in a per-CPU cache";
                return; // the reference stays: a put on a cached block is refused in a checked arena
            }

            if (got)
            {
                arena.PutPage(target);
            }
        }

        string? Check()
        {
            if (violation is not null)
            {
                return violation;
            }

            arena.Drain();
            ArenaReport report = arena.Verify();
            return report.IsClean && report.FreePages == arena.PageCount ? null : $"the arena is not whole after the run: {report}";
        }

        return new Systematic.SystematicProgram([("owner", Owner), ("getter", Getter)], Check, () => arena.Dispose(force: true));
    }

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 1L << 15), Checked = true, PerCpuCaches = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, Blocks.Free, new OpKind("attack (refused)", [ArenaCounter.SpeculativeGetRetries], []),
            new OpKind("attack (live: reused or still held)", [], []), Blocks.WalkerGet, Blocks.WalkerMiss);
        long[] published = new long[Slots];
        int owners = Math.Max(1, ctx.Threads - Math.Max(1, ctx.Threads / 4));
        int walkers = Math.Max(1, ctx.Threads - owners);
        var ownerThreads = Enumerable.Range(0, owners)
            .Select(i => ($"owner-{i}", (Action<Recorder>)(rec => Own(ctx, arena, published, rec, i)))).ToList();
        var walkerThreads = Enumerable.Range(0, walkers)
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Blocks.Walk(ctx, arena, rec, 4, 5, ctx.Seed ^ (0x5851F42D * (i + 1)), stop, published, randomOneIn: 2, maxSpin: 8)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, ownerThreads, walkerThreads);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Own(StressContext ctx, PageArena arena, long[] published, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        using var space = new AddressSpace(arena);
        PagePool? pool = id % 2 == 1 ? arena.CreatePagePool() : null; // half the owners recycle through a pool's magazine
        try
        {
            ulong va = 0;
            while (DateTime.UtcNow < ctx.Deadline)
            {
                int order = rng.Next(4);
                long t = rec.Begin();
                Pfn p;
                if (pool is not null ? !pool.TryAllocPages(order, out p) : !arena.TryAllocPages(order, out p))
                {
                    continue;
                }

                rec.End(0, t);
                arena.GetSpan(p, order)[0] = (byte)id;
                Volatile.Write(ref published[rng.Next(Slots)], p.Value + 1L);
                uint generation = arena.Generation(p);
                t = rec.Begin();
                if (pool is not null)
                {
                    pool.FreePages(p, order);
                }
                else
                {
                    arena.FreePages(p, order);
                }

                rec.End(1, t);

                // The attack, right after FreePages returned: one kind per round, on a random page of the block.
                Pfn target = p + (uint)rng.Next(1 << order);
                int kind = rng.Next(4);
                t = rec.Begin();
                int taken = Attack(ctx, arena, space, target, kind, ref va);
                if (taken == 0)
                {
                    rec.End(2, t);
                    continue;
                }

                // The reference is held now, so the head can neither be freed nor handed out under the checks below.
                bool handedOutAgain = arena.Generation(p) != generation;
                bool stillAllocated = (Volatile.Read(ref arena.DescriptorOf(p).Flags) & (uint)PageFlags.AllocatedHead) != 0;
                if (!handedOutAgain && !stillAllocated)
                {
                    ctx.Violation($"{AttackName(kind, ctx.Legacy)} on page {target.Value - p.Value} of a block freed at generation {generation} took a reference on it while it sat free in a cache (owner-{id}, order {order})", p);
                }
                else
                {
                    // Handed out again meanwhile (to somebody else), or never freed: a walker held a reference when the
                    // owner freed it, so FreePages only dropped the owner's reference (the head is freed by the last put).
                    rec.End(3, t);
                }

                GiveBack(ctx, arena, space, target, taken, kind, ref va);
            }
        }
        finally
        {
            pool?.Dispose();
        }
    }

    private static string AttackName(int kind, bool legacy) => kind switch
    {
        0 => legacy ? "legacy get_page_unless_zero" : "get_page_unless_zero",
        1 => legacy ? "legacy get_page" : "get_page",
        2 => "page_ref_add",
        _ => "MapPage",
    };

    /// <summary>One attack on a page just freed; returns how many references it took (0 when refused, as it must be).</summary>
    private static int Attack(StressContext ctx, PageArena arena, AddressSpace space, Pfn target, int kind, ref ulong va)
    {
        try
        {
            switch (kind)
            {
                case 0:
                    return (ctx.Legacy ? LegacyCachedGets.TryGetPageUnlessZero(arena, target) : arena.TryGetPageUnlessZero(target)) ? 1 : 0;
                case 1:
                    if (ctx.Legacy)
                    {
                        LegacyCachedGets.GetPage(arena, target);
                    }
                    else
                    {
                        arena.GetPage(target);
                    }

                    return 1;
                case 2:
                    arena.GetPages(target, 2);
                    return 2;
                default:
                    va = (va + (ulong)arena.PageSize) % (64UL * (ulong)arena.PageSize); // a small window of the space
                    return space.MapPage(va, target) ? 1 : 0;
            }
        }
        catch (PageBugException)
        {
            return 0; // refused, nothing written: what the contract demands
        }
    }

    /// <summary>Drops the references an attack took, so that nothing leaks whichever form ran.</summary>
    private static void GiveBack(StressContext ctx, PageArena arena, AddressSpace space, Pfn target, int taken, int kind, ref ulong va)
    {
        try
        {
            if (kind == 3)
            {
                space.Zap(va, (ulong)arena.PageSize); // the mapping's reference goes with it
                return;
            }

            for (int i = 0; i < taken; i++)
            {
                // A legacy get's reference on a cached block goes back with the put of its time: checked mode's put
                // refuses any put on a cached block, since no reference there can be legitimate.
                _ = ctx.Legacy && kind < 2 ? LegacyCachedPut.PutPage(arena, target) : arena.PutPage(target);
            }
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
        }
    }
}
