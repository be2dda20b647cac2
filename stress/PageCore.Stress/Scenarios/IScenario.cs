namespace PageCore.Stress.Scenarios;

/// <summary>
/// One stress scenario: a workload on real threads with invariants checked while it runs and at the end. Adding a
/// scenario is one file implementing this interface plus one line in <see cref="ScenarioCatalog"/>.
/// </summary>
public interface IScenario
{
    /// <summary>The name scripts use, e.g. <c>alloc-churn</c>.</summary>
    string Name { get; }

    /// <summary>The kernel code path the scenario mirrors.</summary>
    string KernelCounterpart { get; }

    /// <summary>The rule of ARCHITECTURE.md it exercises, or "allocator" for the allocator's own invariants.</summary>
    string Rule { get; }

    /// <summary>Whether a historical (legacy) form exists behind <c>--legacy</c>.</summary>
    bool HasLegacyForm { get; }

    /// <summary>One line saying what it does.</summary>
    string Description { get; }

    /// <summary>
    /// Operations each of its threads (workers and walkers) must record for a run of the fixed form to count; fewer,
    /// and the run is inconclusive, never a pass. <see cref="Verdict.DefaultMinimumOperations"/> unless the scenario
    /// states its own.
    /// </summary>
    long MinimumOperationsPerThread => Verdict.DefaultMinimumOperations;

    /// <summary>
    /// Runs the scenario until <see cref="StressContext.Deadline"/> and returns what it measured and found. Its threads
    /// run through <see cref="Harness.Run"/>, which starts the clock once every one of them has started.
    /// </summary>
    StressResult Run(StressContext context);
}

/// <summary>The scenarios the executable knows.</summary>
public static class ScenarioCatalog
{
    /// <summary>Every scenario, by name.</summary>
    public static IReadOnlyList<IScenario> All { get; } =
        [
            new AllocChurnScenario(), new PcpPingPongScenario(), new SpeculativeWalkerScenario(), new ExhaustionScenario(),
            new TailRefcountScenario(), new PageCacheLookupScenario(), new PtFragScenario(), new PteMapLockScenario(),
            new PgtableFreeScenario(), new HashBatchScenario(), new CachedContractScenario(), new PutAtZeroScenario(),
            new EpochReclaimScenario(), new ReturnMemoryScenario(), new PageCacheCollectedScenario(),
        ];

    /// <summary>Finds a scenario by name (case-insensitive), or null.</summary>
    public static IScenario? Find(string name) =>
        All.FirstOrDefault(s => string.Equals(s.Name, name, StringComparison.OrdinalIgnoreCase));
}
