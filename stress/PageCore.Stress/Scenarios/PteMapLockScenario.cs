namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pte-map-lock</c> (rule 3, seed 001): mappers, faulters and zappers write PTEs through
/// <see cref="AddressSpace.PteOffsetMapLock"/> while khugepaged-like threads collapse the same ranges into huge PMDs
/// (depositing the emptied table), split them again, and retract empty tables. A writer that locked a table through a
/// snapshot of the PMD must find, under the lock, that the PMD still names that table.
/// </summary>
/// <remarks>
/// Legacy form: the recheck does not compare (powerpc's 4K-hash <c>hash__pmd_same</c> after the "return 1" quick fix),
/// so a write lands in a table the PMD no longer references: the mapping is lost, and the table is withdrawn or freed
/// with the entry inside (reported by the address space), or the page's reference leaks. Fixed form: the real
/// comparison; the writer retries and finds the huge PMD or a new table.
/// </remarks>
public sealed class PteMapLockScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "pte-map-lock";

    /// <inheritdoc />
    public string KernelCounterpart => "pte_offset_map_lock's pmd_same recheck vs collapse/retract (seed 001)";

    /// <inheritdoc />
    public string Rule => "rule 3";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "PTE writers against collapse, split and retract of the same PMD ranges";

    /// <inheritdoc />
    /// <remarks>A reclaimer's operation is a whole reclaim pass followed by a yield, which beside two CPU hogs gives the
    /// core away for a time slice: about a hundred passes a second on 2 cores (86 seen in a 1 s run): 20 is real work.</remarks>
    public long MinimumOperationsPerThread => 20;

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 32768), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(PageTableWorkload.Operations);
        var mm = new AddressSpace(arena, new AddressSpaceOptions { Epochs = new EpochDomain(), LegacySkipPmdRecheck = ctx.Legacy });

        // Weights of map, fault, zap, collapse, split, retract, map huge: writers outnumber khugepaged.
        var workload = new PageTableWorkload(ctx, arena, mm, ranges: 4, weights: [30, 30, 12, 12, 6, 6, 4]);
        TimeSpan elapsed = workload.Run(walkers: 1);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }
}
