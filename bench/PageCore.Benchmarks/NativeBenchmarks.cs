using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// The native comparison: each C# hot path next to the C reference of the same algorithm (native/, C11 atomics) in the
/// same run. The C side runs its loop in C, called once per invocation through an unmanaged function pointer with the
/// GC transition suppressed, so the figure is the C loop's alone; both sides do <see cref="Ops"/> operations per
/// invocation. The C library comes from <c>cmake -S native -B native/build &amp;&amp; cmake --build native/build</c>
/// (or the path in PAGECORE_NATIVE_LIB).
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public unsafe class NativeBenchmarks
{
    /// <summary>Operations per invocation, on both sides.</summary>
    public const int Ops = 1 << 16;
    private nint _lib;
    private nint _native;
    private int* _refcount;
    private delegate* unmanaged[SuppressGCTransition]<int*, long, void> _loopGetPut;
    private delegate* unmanaged[SuppressGCTransition]<nint, uint, long, void> _loopGetPutPage;
    private uint _nativePage;
    private delegate* unmanaged[SuppressGCTransition]<nint, long, void> _loopCache;
    private delegate* unmanaged[SuppressGCTransition]<nint, long, void> _loopCacheGd;
    private delegate* unmanaged[SuppressGCTransition]<nint, long, void> _loopCacheChecked;
    private delegate* unmanaged[SuppressGCTransition]<nint, long, void> _loopCore;
    private delegate* unmanaged[SuppressGCTransition]<nint, long, void> _loopFrag;
    private delegate* unmanaged<nint, void> _destroy;
    private PageArena _arena = null!;
    private PageArena _uncached = null!;
    private PagePool _pool = null!;
    private AddressSpace _mm = null!;
    private Pfn _page;

    /// <summary>Loads the C library and builds both sides' state.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _lib = NativeLibrary.Load(FindLibrary());
        _loopGetPut = (delegate* unmanaged[SuppressGCTransition]<int*, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_get_put");
        _loopGetPutPage = (delegate* unmanaged[SuppressGCTransition]<nint, uint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_get_put_page");
        _loopCache = (delegate* unmanaged[SuppressGCTransition]<nint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_cache");
        _loopCacheGd = (delegate* unmanaged[SuppressGCTransition]<nint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_cache_gd");
        _loopCacheChecked = (delegate* unmanaged[SuppressGCTransition]<nint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_cache_checked");
        _loopCore = (delegate* unmanaged[SuppressGCTransition]<nint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_core");
        _loopFrag = (delegate* unmanaged[SuppressGCTransition]<nint, long, void>)NativeLibrary.GetExport(_lib, "pcn_loop_frag");
        _destroy = (delegate* unmanaged<nint, void>)NativeLibrary.GetExport(_lib, "pcn_arena_destroy");
        var create = (delegate* unmanaged<uint, nint>)NativeLibrary.GetExport(_lib, "pcn_arena_create");
        _native = create(1u << 16);
        _nativePage = ((delegate* unmanaged<nint, uint>)NativeLibrary.GetExport(_lib, "pcn_core_alloc"))(_native); // refcount 1
        _refcount = (int*)NativeMemory.AlignedAlloc(128, 128);
        *_refcount = 1;

        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 16 });
        // The C reference keeps no statistics; the C# side neither, on this path where every operation would count.
        _uncached = PageArena.Create(new PageArenaOptions { Pages = 1 << 16, PerCpuCaches = false, CollectStatistics = false });
        _pool = _arena.CreatePagePool();
        _mm = new AddressSpace(_arena, fragmentsPerPage: 16);
        _page = _arena.AllocPages(0);
    }

    /// <summary>Releases both sides.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _destroy(_native);
        NativeMemory.AlignedFree(_refcount);
        _mm.Dispose();
        _pool.Dispose();
        _arena.Dispose(force: true);
        _uncached.Dispose(force: true);
        NativeLibrary.Free(_lib);
    }

    /// <summary>
    /// C: the same algorithm as the C# API: the PFN checked against the arena and its descriptor found for each call,
    /// then the add-unless-zero CAS and the fetch-sub whose result decides the free.
    /// </summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "C: get_page_unless_zero + put_page (PFN)")]
    [BenchmarkCategory("get+put")]
    public void CGetPutPage() => _loopGetPutPage(_native, _nativePage, Ops);

    /// <summary>C: the two locked instructions alone, on a counter the caller points at (no PFN to resolve).</summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C: the same on a bare counter")]
    [BenchmarkCategory("get+put")]
    public void CGetPut() => _loopGetPut(_refcount, Ops);

    /// <summary>C#: <see cref="PageArena.TryGetPageUnlessZero"/> + <see cref="PageArena.PutPage"/>.</summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: TryGetPageUnlessZero + PutPage")]
    [BenchmarkCategory("get+put")]
    public void GetPut()
    {
        PageArena arena = _arena;
        Pfn p = _page;
        for (int i = 0; i < Ops; i++)
        {
            arena.TryGetPageUnlessZero(p);
            arena.PutPage(p);
        }
    }

    /// <summary>
    /// C#: the same pair in the 0.x form kept in <c>Legacy/</c> (no flag recheck after the speculative add; a put that
    /// decrements and undoes at zero), so that the freed-page contract's cost is measured against it in one run.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: 0.x get+put (no flag recheck, decrement put)")]
    [BenchmarkCategory("get+put")]
    public void GetPutLegacy()
    {
        PageArena arena = _arena;
        Pfn p = _page;
        for (int i = 0; i < Ops; i++)
        {
            Legacy.LegacyCachedGets.TryGetPageUnlessZero(arena, p);
            Legacy.LegacyPutAtZero.PutPage(arena, p);
        }
    }

    /// <summary>C: the thread-local magazine's pop + push.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "C: per-thread cache alloc + free")]
    [BenchmarkCategory("cache")]
    public void CCache() => _loopCache(_native, Ops);

    /// <summary>
    /// C: the same pop + push with the magazine found through <c>__tls_get_addr</c> once per operation, which is how
    /// CoreCLR's JIT reaches a [ThreadStatic] on linux-x64 (the row above uses a segment-relative access, which managed
    /// code gets only under NativeAOT).
    /// </summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C: per-thread cache, TLS via __tls_get_addr")]
    [BenchmarkCategory("cache")]
    public void CCacheTlsGetAddr() => _loopCacheGd(_native, Ops);

    /// <summary>
    /// C: the baseline's pop + push with the work the C# API does around them on the same path: the order checked
    /// against the arena's limit, the hit and free counters, the popped block's flags checked (check_new_page), the freed
    /// PFN checked against the arena and its flags and order checked. Sets apart what the API's checks cost from what
    /// the language costs.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C: per-thread cache with the C# API's checks")]
    [BenchmarkCategory("cache")]
    public void CCacheChecked() => _loopCacheChecked(_native, Ops);

    /// <summary>
    /// C#: the thread's magazine, found through a thread-static whose base the JIT hoists out of this loop (as gcc
    /// hoists the C row's initial-exec offset); a lone call pays the <c>__tls_get_addr</c> of the row above, once.
    /// </summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: thread-cache AllocPages(0) + FreePages")]
    [BenchmarkCategory("cache")]
    public void Cache()
    {
        PageArena arena = _arena;
        for (int i = 0; i < Ops; i++)
        {
            arena.FreePages(arena.AllocPages(0), 0);
        }
    }

    /// <summary>C#: a <see cref="PagePool"/>'s magazine (held by the caller).</summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: PagePool AllocPages(0) + FreePages")]
    [BenchmarkCategory("cache")]
    public void Pool()
    {
        PagePool pool = _pool;
        for (int i = 0; i < Ops; i++)
        {
            pool.FreePages(pool.AllocPages(0), 0);
        }
    }

    /// <summary>C: the bitfield allocator's order-0 claim and release.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "C: core allocator alloc + free (order 0)")]
    [BenchmarkCategory("core")]
    public void CCore() => _loopCore(_native, Ops);

    /// <summary>C#: the shared allocator alone (caches off).</summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: AllocPages(0) + FreePages, caches off, statistics off")]
    [BenchmarkCategory("core")]
    public void Core()
    {
        PageArena arena = _uncached;
        for (int i = 0; i < Ops; i++)
        {
            arena.FreePages(arena.AllocPages(0), 0);
        }
    }

    /// <summary>C: the fragment cache word's fetch-and-add and the fragment count.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Ops, Description = "C: PTE fragment alloc + free")]
    [BenchmarkCategory("fragment")]
    public void CFrag() => _loopFrag(_native, Ops);

    /// <summary>C#: <see cref="AddressSpace.AllocFragment"/> + <see cref="AddressSpace.FreeFragment"/>.</summary>
    [Benchmark(OperationsPerInvoke = Ops, Description = "C#: AllocFragment + FreeFragment")]
    [BenchmarkCategory("fragment")]
    public void Frag()
    {
        AddressSpace mm = _mm;
        for (int i = 0; i < Ops; i++)
        {
            mm.FreeFragment(mm.AllocFragment());
        }
    }

    private static string FindLibrary()
    {
        string? env = Environment.GetEnvironmentVariable("PAGECORE_NATIVE_LIB");
        if (!string.IsNullOrEmpty(env) && File.Exists(env))
        {
            return env;
        }

        for (string? d = AppContext.BaseDirectory; d is not null; d = Path.GetDirectoryName(d))
        {
            string candidate = Path.Combine(d, "native", "build", "libpagecore_native.so");
            if (File.Exists(candidate))
            {
                return candidate;
            }
        }

        throw new FileNotFoundException("The C reference library is not built: run 'cmake -S native -B native/build && cmake --build native/build' from the repository root (or set PAGECORE_NATIVE_LIB).");
    }
}
