using System.Buffers;
using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// Single-thread cost of PageCore's hot paths against what a .NET developer would use instead, each group with its
/// baseline in the same class and the same run: allocation against <see cref="ArrayPool{T}.Shared"/>, refcount pairs
/// against raw <see cref="Interlocked"/> operations on one field. Every method copies the fields it uses into locals
/// first, the baselines included, as a hot loop in user code would: otherwise the JIT reloads a field after each locked
/// instruction, and that reload, not the code under test, would be measured.
/// </summary>
[MemoryDiagnoser]
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public unsafe class PageBenchmarks
{
    private PageArena _cached = null!;
    private PageArena _uncached = null!;
    private PagePool _pool = null!;
    private PageArena _cachedNoStats = null!;
    private PageArena _uncachedNoStats = null!;
    private Pfn _held;
    private int _counter;
    private int _speculative;

    /// <summary>Creates the arenas (1 GiB of address space each; only touched pages cost memory).</summary>
    [GlobalSetup]
    public void Setup()
    {
        _cached = PageArena.Create(new PageArenaOptions { Pages = 1 << 18 });
        _uncached = PageArena.Create(new PageArenaOptions { Pages = 1 << 18, PerCpuCaches = false });
        _pool = _cached.CreatePagePool();
        _cachedNoStats = PageArena.Create(new PageArenaOptions { Pages = 1 << 18, CollectStatistics = false });
        _uncachedNoStats = PageArena.Create(new PageArenaOptions { Pages = 1 << 18, PerCpuCaches = false, CollectStatistics = false });
        _held = _cached.AllocPages(0);
        _counter = 1;
        _speculative = 1;
    }

    /// <summary>Releases the arenas.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _cached.FreePages(_held, 0);
        _pool.Dispose();
        _cached.Dispose();
        _cachedNoStats.Dispose();
        _uncachedNoStats.Dispose();
        _uncached.Dispose();
    }

    // ---- allocation: baseline ArrayPool<byte>.Shared ----

    /// <summary><c>ArrayPool&lt;byte&gt;.Shared.Rent(4096)</c> + <c>Return</c>: what users pick for 4 KiB buffers.</summary>
    [Benchmark(Baseline = true, Description = "ArrayPool.Shared Rent+Return 4K")]
    [BenchmarkCategory("alloc")]
    public int ArrayPoolRentReturn()
    {
        byte[] a = ArrayPool<byte>.Shared.Rent(4096);
        int n = a.Length;
        ArrayPool<byte>.Shared.Return(a);
        return n;
    }

    /// <summary><c>NativeMemory.AlignedAlloc(4096, 4096)</c> + <c>AlignedFree</c>: page-aligned native memory.</summary>
    [Benchmark(Description = "NativeMemory.AlignedAlloc+Free 4K")]
    [BenchmarkCategory("alloc")]
    public nint AlignedAllocFree()
    {
        void* p = NativeMemory.AlignedAlloc(4096, 4096);
        NativeMemory.AlignedFree(p);
        return (nint)p;
    }

    /// <summary>PageCore order 0 through the per-thread magazine and per-CPU caches.</summary>
    [Benchmark(Description = "PageCore order-0 alloc+free (thread caches)")]
    [BenchmarkCategory("alloc")]
    public uint Order0Cached()
    {
        PageArena arena = _cached;
        Pfn p = arena.AllocPages(0);
        arena.FreePages(p, 0);
        return p.Value;
    }

    /// <summary>PageCore order 0 through a caller-owned <see cref="PagePool"/> (no thread-local lookup), as page_pool.</summary>
    [Benchmark(Description = "PageCore order-0 alloc+free (PagePool)")]
    [BenchmarkCategory("alloc")]
    public uint Order0Pool()
    {
        PagePool pool = _pool;
        Pfn p = pool.AllocPages(0);
        pool.FreePages(p, 0);
        return p.Value;
    }

    /// <summary>PageCore order 0 straight from the lock-free frame allocator.</summary>
    [Benchmark(Description = "PageCore order-0 alloc+free (caches off)")]
    [BenchmarkCategory("alloc")]
    public uint Order0Uncached()
    {
        PageArena arena = _uncached;
        Pfn p = arena.AllocPages(0);
        arena.FreePages(p, 0);
        return p.Value;
    }

    /// <summary>The thread-cache path with the contention counters off: their cost is the difference.</summary>
    [Benchmark(Description = "PageCore order-0 alloc+free (thread caches, statistics off)")]
    [BenchmarkCategory("alloc")]
    public uint Order0CachedNoStats()
    {
        PageArena arena = _cachedNoStats;
        Pfn p = arena.AllocPages(0);
        arena.FreePages(p, 0);
        return p.Value;
    }

    /// <summary>The shared allocator alone with the contention counters off.</summary>
    [Benchmark(Description = "PageCore order-0 alloc+free (caches off, statistics off)")]
    [BenchmarkCategory("alloc")]
    public uint Order0UncachedNoStats()
    {
        PageArena arena = _uncachedNoStats;
        Pfn p = arena.AllocPages(0);
        arena.FreePages(p, 0);
        return p.Value;
    }

    /// <summary>PageCore order 3 (32 KiB), cached.</summary>
    [Benchmark(Description = "PageCore order-3 alloc+free")]
    [BenchmarkCategory("alloc")]
    public uint Order3()
    {
        PageArena arena = _cached;
        Pfn p = arena.AllocPages(3);
        arena.FreePages(p, 3);
        return p.Value;
    }

    /// <summary>PageCore order 9 (2 MiB): one chunk claimed whole.</summary>
    [Benchmark(Description = "PageCore order-9 alloc+free")]
    [BenchmarkCategory("alloc")]
    public uint Order9()
    {
        PageArena arena = _cached;
        Pfn p = arena.AllocPages(9);
        arena.FreePages(p, 9);
        return p.Value;
    }

    // ---- refcount: baseline a raw Interlocked increment + decrement ----

    /// <summary>Raw <c>Interlocked.Increment</c> + <c>Interlocked.Decrement</c> on one field.</summary>
    [Benchmark(Baseline = true, Description = "Interlocked Increment+Decrement")]
    [BenchmarkCategory("refcount")]
    public int InterlockedPair()
    {
        ref int counter = ref _counter;
        Interlocked.Increment(ref counter);
        return Interlocked.Decrement(ref counter);
    }

    /// <summary><c>GetPage</c> + <c>PutPage</c> on a held page.</summary>
    [Benchmark(Description = "PageCore GetPage+PutPage")]
    [BenchmarkCategory("refcount")]
    public bool GetPut()
    {
        PageArena arena = _cached;
        Pfn page = _held;
        arena.GetPage(page);
        return arena.PutPage(page);
    }

    // ---- speculative: baseline a raw add-unless-zero CAS loop + decrement ----

    /// <summary>A raw add-unless-zero CAS loop + <c>Interlocked.Decrement</c>.</summary>
    [Benchmark(Baseline = true, Description = "CAS add-unless-zero+Decrement")]
    [BenchmarkCategory("speculative")]
    public int CasPair()
    {
        ref int counter = ref _speculative;
        int v = Volatile.Read(ref counter);
        while (v != 0)
        {
            int seen = Interlocked.CompareExchange(ref counter, v + 1, v);
            if (seen == v)
            {
                break;
            }

            v = seen;
        }

        return Interlocked.Decrement(ref counter);
    }

    /// <summary><c>TryGetPageUnlessZero</c> + <c>PutPage</c> on a live page.</summary>
    [Benchmark(Description = "PageCore TryGetPageUnlessZero+PutPage")]
    [BenchmarkCategory("speculative")]
    public bool TryGetPut()
    {
        PageArena arena = _cached;
        Pfn page = _held;
        arena.TryGetPageUnlessZero(page);
        return arena.PutPage(page);
    }
}
