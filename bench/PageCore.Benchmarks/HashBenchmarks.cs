using BenchmarkDotNet.Attributes;

namespace PageCore.Benchmarks;

/// <summary>
/// The hash MMU's figure: a fault+zap cycle through the software hash MMU, per page, with lazy-MMU batching (the zap's
/// invalidations queued under the PTE lock and flushed together, one <c>tlbsync</c>) against the baseline without
/// batching (each PTE's invalidation flushed at once, one <c>tlbsync</c> each). Each invocation stores to 64 pages
/// (page fault, hash fault) and zaps them in one call.
/// </summary>
public class HashBenchmarks
{
    private const int Pages = 64;
    private PageArena _arena = null!;
    private AddressSpace _batched = null!;
    private AddressSpace _unbatched = null!;

    /// <summary>One arena and hash MMU, an address space of each kind, tables already present.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 14 });
        var hash = new HashMmu(groups: 4096);
        _batched = new AddressSpace(_arena, new AddressSpaceOptions { HashMmu = hash, HashBatching = true });
        _unbatched = new AddressSpace(_arena, new AddressSpaceOptions { HashMmu = hash, HashBatching = false });
        Cycle(_batched);
        Cycle(_unbatched);
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _batched.Dispose();
        _unbatched.Dispose();
        _arena.Dispose(force: true);
    }

    /// <summary>Baseline: every invalidation flushed at once.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "fault+zap per page, an invalidation per PTE")]
    public long Unbatched() => Cycle(_unbatched);

    /// <summary>The zap's invalidations batched in lazy-MMU mode and drained before the PTE lock is released.</summary>
    [Benchmark(OperationsPerInvoke = Pages, Description = "fault+zap per page, lazy-MMU batching")]
    public long Batched() => Cycle(_batched);

    private static long Cycle(AddressSpace mm)
    {
        for (ulong i = 0; i < Pages; i++)
        {
            mm.Access(i << 12, write: true);
        }

        return mm.Zap(0, (ulong)Pages << 12);
    }
}
