using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;
using PageCore.Allocator;

namespace PageCore.Benchmarks;

/// <summary>
/// The gain of the SIMD chunk scan (<see cref="ChunkScan"/>) over its scalar form, on the path where it matters: an
/// order-9 request against a 64 GiB arena (32,768 chunks) where every chunk is already in use, so the
/// allocator must scan every status word and fail (the exhaustion path); an order-0 request against the same arena
/// wholly allocated (every chunk's bitfield line compared); and the bare status scan.
/// </summary>
[MemoryDiagnoser]
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public unsafe class ScanBenchmarks
{
    private const int Chunks = 32768;
    private FrameAllocator _vector = null!;
    private FrameAllocator _scalar = null!;
    private FrameAllocator _fullVector = null!;
    private FrameAllocator _fullScalar = null!;
    private int[] _words = null!;

    /// <summary>Builds two allocators with one page used in every chunk, and a status array with one hit at the end.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _vector = Fill(new FrameAllocator((long)Chunks << FrameAllocator.ChunkShift, useVectors: true));
        _scalar = Fill(new FrameAllocator((long)Chunks << FrameAllocator.ChunkShift, useVectors: false));
        _fullVector = FillCompletely(new FrameAllocator((long)Chunks << FrameAllocator.ChunkShift, useVectors: true));
        _fullScalar = FillCompletely(new FrameAllocator((long)Chunks << FrameAllocator.ChunkShift, useVectors: false));
        _words = new int[Chunks];
        Array.Fill(_words, 511);
        _words[^1] = FrameAllocator.ChunkPages;
    }

    /// <summary>Releases the allocators.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _vector.Dispose();
        _scalar.Dispose();
        _fullVector.Dispose();
        _fullScalar.Dispose();
    }

    /// <summary>Failing order-9 request, scalar scan of 32,768 status words.</summary>
    [Benchmark(Baseline = true, Description = "order-9 miss over 32768 chunks, scalar")]
    [BenchmarkCategory("order-9 miss")]
    public bool HugeMissScalar() => _scalar.TryAlloc(9, out _);

    /// <summary>Failing order-9 request, SIMD scan.</summary>
    [Benchmark(Description = "order-9 miss over 32768 chunks, SIMD")]
    [BenchmarkCategory("order-9 miss")]
    public bool HugeMissVector() => _vector.TryAlloc(9, out _);

    /// <summary>Failing order-0 request on a full arena: every chunk's eight bitfield words compared, scalar.</summary>
    [Benchmark(Baseline = true, Description = "order-0 miss over 32768 full chunks, scalar")]
    [BenchmarkCategory("order-0 miss")]
    public bool SmallMissScalar() => _fullScalar.TryAlloc(0, out _);

    /// <summary>Failing order-0 request on a full arena, one 64-byte SIMD compare per chunk.</summary>
    [Benchmark(Description = "order-0 miss over 32768 full chunks, SIMD")]
    [BenchmarkCategory("order-0 miss")]
    public bool SmallMissVector() => _fullVector.TryAlloc(0, out _);

    /// <summary>The bare status scan, scalar.</summary>
    [Benchmark(Baseline = true, Description = "status scan of 32768 chunks, scalar")]
    [BenchmarkCategory("status scan")]
    public int FindScalar()
    {
        fixed (int* w = _words)
        {
            return ChunkScan.FindInRange(w, 0, Chunks, FrameAllocator.ChunkPages, FrameAllocator.ChunkPages, useVectors: false);
        }
    }

    /// <summary>The bare status scan, SIMD.</summary>
    [Benchmark(Description = "status scan of 32768 chunks, SIMD")]
    [BenchmarkCategory("status scan")]
    public int FindVector()
    {
        fixed (int* w = _words)
        {
            return ChunkScan.FindInRange(w, 0, Chunks, FrameAllocator.ChunkPages, FrameAllocator.ChunkPages, useVectors: true);
        }
    }

    private static FrameAllocator FillCompletely(FrameAllocator a)
    {
        uint[] batch = new uint[4096];
        while (a.AllocBulk(0, batch) > 0)
        {
        }

        return a;
    }

    private static FrameAllocator Fill(FrameAllocator a)
    {
        // One order-0 page spoils its chunk for order 9; every other chunk is then taken whole. Afterwards no status
        // word reads 512, and an order-9 request scans all of them and fails.
        a.TryAlloc(0, out _);
        while (a.TryAlloc(9, out _))
        {
        }

        return a;
    }
}
