namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pgtable-free</c> (rule 4, seed 004): lockless walkers (<c>get_user_pages_fast</c>, <c>pte_offset_map</c> readers
/// that work on a table a while) and <see cref="AddressSpace.PteOffsetMapLock"/> users against threads that map huge
/// PMDs, zap them (withdrawing and freeing the deposit, which collapse made from a table that was linked a moment
/// before), split them, collapse ranges and retract empty tables. A walker must never read an entry of, or take the lock
/// of, a table that was freed.
/// </summary>
/// <remarks>
/// Legacy form: detached tables are freed at once (<c>pte_free</c> without a grace period), so a walker that read the
/// PMD before the detach reads a poisoned table, or finds the lock in its page's descriptor poisoned. Fixed form: every
/// detached table waits for a grace period of the address space's epochs (<c>pte_free_defer</c>). With
/// <c>--legacy-reclaim</c>, the tables wait for a grace period but the epochs reclaim with the historical algorithm
/// (<c>PageCore.Legacy.LegacyEpochReclaim</c>), which frees them under walkers just the same.
/// </remarks>
public sealed class PgtableFreeScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "pgtable-free";

    /// <inheritdoc />
    public string KernelCounterpart => "deposited/retracted page tables vs lockless walkers, pte_free_defer (seed 004)";

    /// <inheritdoc />
    public string Rule => "rule 4";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "lockless walkers against huge map/zap/split, collapse deposits and retracts";

    /// <inheritdoc />
    /// <remarks>A reclaimer's operation is a whole reclaim pass, held in its windows by the hook of
    /// <see cref="EpochReclaimScenario.NewDomain"/> (in both forms), so a reclaimer records about a hundred passes a second
    /// on 2 cores beside two CPU hogs (95-146 seen in 1 s runs): 20 is real work.</remarks>
    public long MinimumOperationsPerThread => 20;

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 32768), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(PageTableWorkload.Operations);
        var mm = new AddressSpace(arena, new AddressSpaceOptions { Epochs = EpochReclaimScenario.NewDomain(ctx.LegacyReclaim), LegacyFreeTablesAtOnce = ctx.Legacy });

        // Weights of map, fault, zap, collapse, split, retract, map huge: tables are detached and freed often.
        var workload = new PageTableWorkload(ctx, arena, mm, ranges: 4, weights: [10, 30, 20, 12, 8, 10, 10]);
        TimeSpan elapsed = workload.Run(walkers: Math.Max(2, ctx.Threads / 2));
        return Harness.Finish(ctx, Name, arena, elapsed);
    }
}
