namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>hash-batch</c> (rule 5, seed 003): unmappers and faulters on the same read-only pages, through a hash MMU. The hash
/// MMU refuses and reports a second entry for an address (T2); the gather checks that no entry still translates to a
/// page it is about to free (T1); every PTE unlock checks that the thread's batch is empty (T3); at the end every hash
/// entry must match its PTE, and every page must come back.
/// </summary>
/// <remarks>
/// <para>The interleaving that breaks the legacy form (the 2007 scheme: the batch drained only when the gather flushes,
/// after the PTE lock was dropped): unmapper U maps a page read-only at A and loads from it (a read-only hash entry);
/// U zaps A into its gather (PTE cleared, the entry's invalidation batched) and drops the PTE lock; faulter F stores to
/// A: the hash MMU still translates A read-only, so F takes a hash fault, finds the PTE none, faults in a new page and
/// hashes it while the old entry is valid: a duplicate (T2). U's gather flushes only afterwards. Fixed form: lazy-MMU
/// mode is left, and the batch drained, inside the PTE lock, and F's fault needs that lock.</para>
/// <para>So that every run catches the legacy form within a few seconds on two loaded cores, the window is as wide as
/// the kernel's own: an unmapper unmaps a region of <see cref="Tables"/> page tables into one gather (as
/// <c>unmap_region</c> zaps every VMA, then frees page tables, then finishes the gather), and the first table's
/// invalidations stay batched while the others are zapped and the "free page tables" work runs. All threads work on
/// one small set of addresses (<see cref="PagesPerTable"/> in each table), half of them unmappers that make the pages
/// read-only and hashed before each unmap, half faulters that store to them, so nearly every store in a window
/// collides. Faulters also load, map, and zap on their own, so the fixed form runs every path.</para>
/// <para><see cref="StopWhenCaught"/> (tests) ends the run at the first violation: a test's budget is then a maximum,
/// and the run reports the time to detection.</para>
/// </remarks>
public sealed class HashBatchScenario : IScenario
{
    /// <summary>Page tables the shared addresses lie in (one range in each).</summary>
    public const int Tables = 4;

    /// <summary>Shared addresses per table.</summary>
    public const int PagesPerTable = 16;

    private const int Unmap = 5;

    /// <inheritdoc />
    public string Name => "hash-batch";

    /// <inheritdoc />
    public string KernelCounterpart => "ppc64 hash batching vs the PTE lock, arch_leave_lazy_mmu_mode (seed 003)";

    /// <inheritdoc />
    public string Rule => "rule 5";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "unmaps of read-only, hashed pages (one gather over several tables) against stores, loads, maps and zaps of the same pages";

    /// <summary>Workers stop at the first violation (tests measuring time to detection); the deadline stays the maximum.</summary>
    public bool StopWhenCaught { get; init; }

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 16384), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("access (load)", [], []), new OpKind("access (store)", [], []), new OpKind("zap", [], []),
            new OpKind("map read-only", [], []), new OpKind("map writable", [], []), new OpKind($"unmap {Tables} tables (gather)", [], []));
        var hash = new HashMmu(groups: 256);
        var mm = new AddressSpace(arena, new AddressSpaceOptions { Epochs = new EpochDomain(), HashMmu = hash, LegacyHashBatchInGather = ctx.Legacy });
        ulong tableSpan = (ulong)mm.PtesPerTable << 12;
        ulong[] addresses = [.. Enumerable.Range(0, Tables * PagesPerTable).Select(n => (ulong)(n / PagesPerTable) * tableSpan + ((ulong)(n % PagesPerTable) << 12))];
        var forwarded = new ForwardOnce();
        void Audit()
        {
            string[] found = hash.Violations.ToArray();
            forwarded.Forward(hash.ViolationCount, i => ctx.Violation(i < found.Length ? "hash MMU: " + found[i] : "hash MMU: (more violations)"));
        }

        // Every worker does at least one operation, even when another one caught the legacy form before it started.
        bool Running(long done) => DateTime.UtcNow < ctx.Deadline && !(StopWhenCaught && done > 0 && ctx.ViolationCount > 0);

        var workers = Enumerable.Range(0, ctx.Threads).Select(i => (IsUnmapper(i, ctx.Threads) ? $"unmapper-{i / 2}" : $"faulter-{i / 2}", (Action<Recorder>)(rec =>
        {
            var rng = new Random(ctx.Seed * 7 + i);
            bool unmapper = IsUnmapper(i, ctx.Threads);
            long seen = 0;
            for (long done = 0; Running(done); done++)
            {
                int op = unmapper ? Unmap : rng.Next(10) switch { < 2 => 0, < 7 => 1, 7 => 2, 8 => 3, _ => 4 };
                long t = rec.Begin();
                try
                {
                    if (op == Unmap)
                    {
                        UnmapCycle(mm, arena, addresses, tableSpan, rng);
                    }
                    else
                    {
                        ulong va = addresses[rng.Next(addresses.Length)];
                        Operate(mm, arena, va, op, rng, tableSpan);
                    }
                }
                catch (OutOfPagesException)
                {
                }
                catch (PageBugException bug)
                {
                    ctx.Violation(bug);
                }

                rec.End(op, t);
                long found = hash.ViolationCount;
                if (found != seen)
                {
                    seen = found;
                    Audit(); // forwarded at once, so the run's time to detection is the hash MMU's
                }
            }
        }))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, []);
        Audit();
        int stale = mm.VerifyHash();
        Audit();
        ctx.Log.WriteLine($"hash MMU: {hash.Inserts:N0} inserts, {hash.Evictions:N0} evictions, {hash.Invalidations:N0} invalidations, {stale} stale entries at the end");
        if (ctx.FirstViolationAt is { } caught)
        {
            ctx.Log.WriteLine($"hash-batch: first violation after {caught.TotalMilliseconds:F0} ms");
        }

        mm.Epochs.Barrier();
        PageTableReport report = mm.VerifyTables();
        foreach (string p in report.Problems)
        {
            ctx.Violation("page tables: " + p);
        }

        mm.Dispose();
        mm.Epochs.Barrier();
        if (hash.CountEntries(mm.Asid) != 0)
        {
            ctx.Violation($"T1: {hash.CountEntries(mm.Asid)} hash entries outlived the address space's teardown");
        }

        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    /// <summary>Half the workers unmap (the even ones); a lone worker faults, so a one-thread run still does every operation.</summary>
    private static bool IsUnmapper(int worker, int threads) => worker % 2 == 0 && threads > 1;

    /// <summary>
    /// An unmapper's cycle: map the shared pages read-only where nothing is mapped and load from each (read-only hash
    /// entries), then unmap them, table by table, into one gather, with the page-table freeing work before the finish.
    /// </summary>
    private static void UnmapCycle(AddressSpace mm, PageArena arena, ulong[] addresses, ulong tableSpan, Random rng)
    {
        foreach (ulong va in addresses)
        {
            if (arena.TryAllocPages(0, out Pfn p))
            {
                mm.MapPage(va, p, writable: false);
                arena.PutPage(p);
            }

            mm.Access(va, write: false);
        }

        using var tlb = new MmuGather(mm);
        for (int t = 0; t < Tables; t++)
        {
            mm.Zap((ulong)t * tableSpan, (ulong)PagesPerTable << 12, tlb);
        }

        Thread.SpinWait(rng.Next(64, 1024)); // free_pgtables and the rest of unmap_region, before tlb_finish_mmu
    }

    /// <summary>A faulter's operation on one shared address: a load, a store, a zap, or a map (read-only, then loaded).</summary>
    private static void Operate(AddressSpace mm, PageArena arena, ulong va, int op, Random rng, ulong tableSpan)
    {
        switch (op)
        {
            case 0:
            case 1:
                mm.Access(va, write: op == 1);
                break;
            case 2:
                ulong tableEnd = (va / tableSpan * tableSpan) + ((ulong)PagesPerTable << 12);
                mm.Zap(va, Math.Min((ulong)(1 + rng.Next(8)) << 12, tableEnd - va));
                break;
            default:
                if (arena.TryAllocPages(0, out Pfn p))
                {
                    mm.MapPage(va, p, writable: op == 4);
                    arena.PutPage(p);
                    mm.Access(va, write: false);
                }

                break;
        }
    }
}
