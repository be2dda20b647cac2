namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>hash-batch</c> (rule 5, seed 003): accessing threads (loads and stores, through the software hash MMU) on read-only
/// and writable mappings against zappers (<c>unmap_mapping_range</c>-like) and mappers on the same pages. The hash MMU
/// refuses and reports a second entry for an address (T2); the gather checks that no entry still translates to a page it
/// is about to free (T1); every PTE unlock checks that the thread's batch is empty (T3); at the end every hash entry must
/// match its PTE, and every page must come back.
/// </summary>
/// <remarks>
/// Legacy form: the 2007 scheme, the batch drained only when the gather flushes, after the PTE lock was dropped; a store
/// to a page whose read-only entry is still batched faults in a new page and hashes a second entry. Fixed form: lazy-MMU
/// mode left (and the batch drained) inside the PTE lock.
/// </remarks>
public sealed class HashBatchScenario : IScenario
{
    private const int Pages = 64;

    /// <inheritdoc />
    public string Name => "hash-batch";

    /// <inheritdoc />
    public string KernelCounterpart => "ppc64 hash batching vs the PTE lock, arch_leave_lazy_mmu_mode (seed 003)";

    /// <inheritdoc />
    public string Rule => "rule 5";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "loads and stores through a hash MMU against zaps and read-only remaps of the same pages";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 16384), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("access (load)", [], []), new OpKind("access (store)", [], []), new OpKind("zap", [], []),
            new OpKind("map read-only", [], []), new OpKind("map writable", [], []));
        var hash = new HashMmu(groups: 256);
        var mm = new AddressSpace(arena, new AddressSpaceOptions { Epochs = new EpochDomain(), HashMmu = hash, LegacyHashBatchInGather = ctx.Legacy });
        var forwarded = new ForwardOnce();
        void Audit()
        {
            string[] found = hash.Violations.ToArray();
            forwarded.Forward(hash.ViolationCount, i => ctx.Violation(i < found.Length ? "hash MMU: " + found[i] : "hash MMU: (more violations)"));
        }

        var workers = Enumerable.Range(0, ctx.Threads).Select(i => ($"cpu-{i}", (Action<Recorder>)(rec =>
        {
            var rng = new Random(ctx.Seed * 7 + i);
            while (DateTime.UtcNow < ctx.Deadline)
            {
                ulong va = (ulong)rng.Next(Pages) << 12;
                int op = rng.Next(10) switch { < 3 => 0, < 6 => 1, < 8 => 2, 8 => 3, _ => 4 };
                long t = rec.Begin();
                try
                {
                    switch (op)
                    {
                        case 0:
                        case 1:
                            mm.Access(va, write: op == 1);
                            break;
                        case 2:
                            mm.Zap(va, Math.Min((ulong)(1 + rng.Next(16)) << 12, ((ulong)Pages << 12) - va));
                            break;
                        default:
                            if (arena.TryAllocPages(0, out Pfn p))
                            {
                                mm.MapPage(va, p, writable: op == 4);
                                arena.PutPage(p);
                            }

                            break;
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
                if (rng.Next(256) == 0)
                {
                    Audit();
                }
            }
        }))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, []);
        Audit();
        int stale = mm.VerifyHash();
        Audit();
        ctx.Log.WriteLine($"hash MMU: {hash.Inserts:N0} inserts, {hash.Evictions:N0} evictions, {hash.Invalidations:N0} invalidations, {stale} stale entries at the end");
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
}
