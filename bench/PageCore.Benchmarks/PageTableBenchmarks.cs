using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// The page-table figures, each against a simple baseline in the same run: a "page table" that is a
/// <see cref="Dictionary{TKey, TValue}"/> from address to page under one <see cref="Lock"/> (the whole table behind
/// <c>mm->page_table_lock</c>). The fault+zap cycle allocates, zeroes and frees a 4 KiB page on both sides.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class PageTableBenchmarks
{
    private const int Pages = 512;
    private PageArena _arena = null!;
    private AddressSpace _mm = null!;
    private AddressSpace _mmAsymmetric = null!;
    private Dictionary<ulong, Pfn> _table = null!;
    private readonly Lock _lock = new();
    private ulong _next;

    /// <summary>Maps 512 pages in both page tables (4 PMD ranges) and keeps one range empty for the fault+zap cycle.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 14 });
        _mm = new AddressSpace(_arena);
        _mmAsymmetric = new AddressSpace(_arena, new AddressSpaceOptions { Epochs = new EpochDomain(asymmetricAnnounce: true) });
        _table = new Dictionary<ulong, Pfn>();
        for (ulong i = 0; i < Pages; i++)
        {
            ulong va = i << 12;
            _mm.Fault(va, write: true);
            _mmAsymmetric.Fault(va, write: true);
            Pfn p = _arena.AllocPages(0);
            _table[va] = p;
        }

        _mm.Fault(FaultAddress); // the PTE table of the fault+zap address exists, as it does in a process that runs
        _mm.Zap(FaultAddress, 4096);
    }

    private static ulong FaultAddress => 1UL << 30;

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _mm.Dispose();
        _mmAsymmetric.Dispose();
        foreach (Pfn p in _table.Values)
        {
            _arena.FreePages(p, 0);
        }

        _arena.Dispose(force: true);
    }

    /// <summary>Baseline: fault = lock, lookup, allocate+zero+insert; zap = lock, remove, free.</summary>
    [Benchmark(Baseline = true, Description = "Dictionary under a lock: fault+zap 4 KiB")]
    [BenchmarkCategory("fault+zap")]
    public Pfn DictionaryFaultZap()
    {
        ulong va = FaultAddress;
        Pfn p;
        lock (_lock)
        {
            if (!_table.TryGetValue(va, out p))
            {
                p = _arena.AllocPages(0);
                _arena.GetSpan(p).Clear();
                _table.Add(va, p);
            }
        }

        lock (_lock)
        {
            _table.Remove(va, out p);
        }

        _arena.FreePages(p, 0);
        return p;
    }

    /// <summary>A page fault (tables present, page allocated and zeroed, PTE set under the split lock) and a zap of it through an mmu_gather.</summary>
    [Benchmark(Description = "AddressSpace.Fault + Zap 4 KiB")]
    [BenchmarkCategory("fault+zap")]
    public long FaultZap()
    {
        _mm.Fault(FaultAddress, write: true);
        return _mm.Zap(FaultAddress, 4096);
    }

    /// <summary>Baseline: the walk as a lookup under the lock.</summary>
    [Benchmark(Baseline = true, Description = "Dictionary under a lock: lookup")]
    [BenchmarkCategory("walk")]
    public Pfn DictionaryWalk()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        lock (_lock)
        {
            return _table[va];
        }
    }

    /// <summary>A lockless walk of one address that only reads: epoch section, PMD and PTE read with acquire.</summary>
    [Benchmark(Description = "PteOffsetMap read (lockless, no reference)")]
    [BenchmarkCategory("walk")]
    public Pfn LocklessWalk()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        using PteMap map = _mm.PteOffsetMap(va);
        return map.Entry.Pfn;
    }

    /// <summary>GUP-fast: the lockless walk that also takes a speculative reference, rechecks, and the put.</summary>
    [Benchmark(Description = "TryGetUserPageFast + PutPage (lockless, reference taken)")]
    [BenchmarkCategory("walk")]
    public bool GupFast()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        _mm.TryGetUserPageFast(va, out Pfn p);
        return _arena.PutPage(p);
    }

    /// <summary>GUP-fast in an address space whose epoch domain announces asymmetrically (the fence moves to grace periods).</summary>
    [Benchmark(Description = "TryGetUserPageFast + PutPage (asymmetric epochs)")]
    [BenchmarkCategory("walk")]
    public bool GupFastAsymmetric()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        _mmAsymmetric.TryGetUserPageFast(va, out Pfn p);
        return _arena.PutPage(p);
    }

    /// <summary>The read-only lockless walk with asymmetric epochs.</summary>
    [Benchmark(Description = "PteOffsetMap read (asymmetric epochs)")]
    [BenchmarkCategory("walk")]
    public Pfn LocklessWalkAsymmetric()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        using PteMap map = _mmAsymmetric.PteOffsetMap(va);
        return map.Entry.Pfn;
    }

    /// <summary>Baseline: the mm-wide lock taken and released around a lookup.</summary>
    [Benchmark(Baseline = true, Description = "Dictionary under a lock: lock + lookup + unlock")]
    [BenchmarkCategory("map lock")]
    public Pfn DictionaryLock() => DictionaryWalk();

    /// <summary><c>pte_offset_map_lock</c> + <c>pte_unmap_unlock</c>: snapshot, split lock, PMD recheck, unlock.</summary>
    [Benchmark(Description = "PteOffsetMapLock + unlock")]
    [BenchmarkCategory("map lock")]
    public Pfn MapLock()
    {
        ulong va = (_next++ & (Pages - 1)) << 12;
        using PteMapLocked map = _mm.PteOffsetMapLock(va);
        return map.Entry.Pfn;
    }
}
