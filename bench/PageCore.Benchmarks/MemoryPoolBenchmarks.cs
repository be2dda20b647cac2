using System.Buffers;
using BenchmarkDotNet.Attributes;
using PageCore.Buffers;

namespace PageCore.Benchmarks;

/// <summary>
/// The memory pool's figure: renting and returning a 4 KiB buffer through <see cref="MemoryPool{T}"/>: PageCore's
/// <see cref="PageMemoryPool"/> against <c>MemoryPool&lt;byte&gt;.Shared</c> (the baseline) and the
/// <c>ArrayPool&lt;byte&gt;.Shared</c> that sits under it, in the same run.
/// </summary>
[MemoryDiagnoser]
public class MemoryPoolBenchmarks
{
    private PageArena _arena = null!;
    private PageMemoryPool _pool = null!;

    /// <summary>The arena and the pool.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 14 });
        _pool = new PageMemoryPool(_arena);
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _pool.Dispose();
        _arena.Dispose(force: true);
    }

    /// <summary>Baseline: the framework's shared memory pool (an owner object per rent over ArrayPool).</summary>
    [Benchmark(Baseline = true, Description = "MemoryPool<byte>.Shared Rent(4096)+Dispose")]
    public int SharedMemoryPool()
    {
        using IMemoryOwner<byte> owner = MemoryPool<byte>.Shared.Rent(4096);
        return owner.Memory.Length;
    }

    /// <summary>The array pool under it, which hands out arrays rather than owners.</summary>
    [Benchmark(Description = "ArrayPool<byte>.Shared Rent(4096)+Return")]
    public int SharedArrayPool()
    {
        byte[] array = ArrayPool<byte>.Shared.Rent(4096);
        ArrayPool<byte>.Shared.Return(array);
        return array.Length;
    }

    /// <summary>PageCore's pool: a page from the thread cache and its reused manager.</summary>
    [Benchmark(Description = "PageMemoryPool Rent(4096)+Dispose")]
    public int PagePool()
    {
        using IMemoryOwner<byte> owner = _pool.Rent(4096);
        return owner.Memory.Length;
    }
}
