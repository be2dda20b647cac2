using System.Buffers;
using BenchmarkDotNet.Attributes;
using PageCore.Buffers;

namespace PageCore.Benchmarks;

/// <summary>
/// What the arena's backing costs the hot paths: the same operations on an arena whose pages are one pinned array (the
/// default up to 2 GiB, so that pool buffers are arrays) and on one of native memory (<c>mmap</c>). Address and PFN
/// arithmetic is the same code on a base pointer either way; the pool's buffers differ (pre-pinned array memory
/// against memory over the manager).
/// </summary>
public class BackingBenchmarks
{
    private PageArena _arena = null!;
    private PageMemoryPool _pool = null!;
    private Pfn[] _pages = null!;

    /// <summary>Where the pages live.</summary>
    [Params(ArenaBacking.PinnedArray, ArenaBacking.Native)]
    public ArenaBacking Backing { get; set; }

    /// <summary>An arena of 64 MiB, 64 pages held for the address round trips, and a pool.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 14, Backing = Backing, ReturnFreeMemoryAfter = Timeout.InfiniteTimeSpan });
        _pool = new PageMemoryPool(_arena);
        _pages = new Pfn[64];
        for (int i = 0; i < _pages.Length; i++)
        {
            _pages[i] = _arena.AllocPages(0);
        }
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _arena.Dispose(force: true);
    }

    /// <summary><c>page_address</c> then <c>virt_to_pfn</c> over 64 held pages.</summary>
    [Benchmark(OperationsPerInvoke = 64, Description = "AddressOf+PfnOf")]
    public uint AddressRoundTrip()
    {
        uint sum = 0;
        foreach (Pfn p in _pages)
        {
            sum += _arena.PfnOf(_arena.AddressOf(p) + 100).Value;
        }

        return sum;
    }

    /// <summary>A page from the thread cache, one byte written through its span, freed.</summary>
    [Benchmark(Description = "AllocPages(0)+GetSpan write+FreePages")]
    public int AllocWriteFree()
    {
        Pfn p = _arena.AllocPages(0);
        _arena.GetSpan(p)[8] = 1;
        _arena.FreePages(p, 0);
        return (int)p.Value;
    }

    /// <summary>A pool rent, one byte written through <c>Memory.Span</c>, disposed.</summary>
    [Benchmark(Description = "PageMemoryPool Rent(4096)+Memory.Span write+Dispose")]
    public int RentWriteDispose()
    {
        using IMemoryOwner<byte> owner = _pool.Rent(4096);
        owner.Memory.Span[8] = 1;
        return owner.Memory.Length;
    }
}
