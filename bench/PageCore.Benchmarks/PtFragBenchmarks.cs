using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// Page-table fragments: alloc+free on one thread, and on 1, 2 and 4 threads sharing one address space, next to a
/// lock-based cache of the same shape (a <see cref="SpinLock"/> around the cache word, as the kernel's
/// <c>page_table_lock</c>) as the baseline, in the same run.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class PtFragBenchmarks
{
    private const int OpsPerInvoke = 1 << 14;
    private PageArena _arena = null!;
    private AddressSpace _mm = null!;
    private LockedFragmentCache _locked = null!;
    private WorkerGang _gang = null!;

    /// <summary>Threads sharing the address space.</summary>
    [Params(1, 2, 4)]
    public int Threads { get; set; }

    /// <summary>Builds the arena, the address space, the locked baseline and the workers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 16 });
        _mm = new AddressSpace(_arena, fragmentsPerPage: 16);
        _locked = new LockedFragmentCache(_arena, 16);
        _gang = new WorkerGang(Threads);
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _gang.Dispose();
        _mm.Dispose();
        _locked.Dispose();
        _arena.Dispose(force: true);
    }

    /// <summary>Baseline: the same cache under a SpinLock (page_table_lock).</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = OpsPerInvoke, Description = "SpinLock fragment cache alloc+free")]
    [BenchmarkCategory("fragment alloc+free")]
    public void Locked() => _gang.Run(_ =>
    {
        LockedFragmentCache c = _locked;
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            c.Free(c.Alloc());
        }
    });

    /// <summary>PageCore's lock-free fragment cache.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke, Description = "AddressSpace fragment alloc+free (lock-free)")]
    [BenchmarkCategory("fragment alloc+free")]
    public void LockFree() => _gang.Run(_ =>
    {
        AddressSpace mm = _mm;
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            mm.FreeFragment(mm.AllocFragment());
        }
    });

    /// <summary>
    /// The hardware floor of the lock-free design: the two locked instructions every fragment alloc+free needs (the
    /// claim's fetch-and-add and the free's decrement), on a private padded word per thread, nothing else.
    /// </summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke, Description = "floor: two locked adds (claim + count), private word")]
    [BenchmarkCategory("fragment alloc+free")]
    public void Floor() => _gang.Run(worker =>
    {
        ref long word = ref _floorWords[(worker + 1) * FloorStride];
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            Interlocked.Add(ref word, 1);
            Interlocked.Decrement(ref word);
        }
    });

    private const int FloorStride = 16; // 128 bytes between the words
    private readonly long[] _floorWords = new long[6 * FloorStride];

    /// <summary>The lock-based shape the kernel uses: the cache word under a lock, the count an atomic.</summary>
    private sealed class LockedFragmentCache(PageArena arena, int perPage) : IDisposable
    {
        private SpinLock _lock = new(enableThreadOwnerTracking: false);
        private long _cache;

        public PtFragment Alloc()
        {
            bool taken = false;
            _lock.Enter(ref taken);
            long w = _cache;
            if (w != 0)
            {
                int next = (int)(w & 0xFFFF) + 1;
                _cache = next == perPage ? 0 : w + 1;
                _lock.Exit(useMemoryBarrier: false);
                return new PtFragment(new Pfn((uint)((w >> 32) - 1)), (int)(w & 0xFFFF));
            }

            _lock.Exit(useMemoryBarrier: false);
            Pfn page = arena.AllocPages(0);
            arena.DescriptorOf(page).PtFragCount = perPage;
            taken = false;
            _lock.Enter(ref taken);
            if (_cache == 0)
            {
                _cache = ((long)(page.Value + 1) << 32) | 1;
            }
            else
            {
                arena.DescriptorOf(page).PtFragCount = 1;
            }

            _lock.Exit(useMemoryBarrier: false);
            return new PtFragment(page, 0);
        }

        public void Free(PtFragment f)
        {
            if (Interlocked.Decrement(ref arena.DescriptorOf(f.Page).PtFragCount) == 0)
            {
                arena.FreePages(f.Page, 0);
            }
        }

        public void Dispose()
        {
            long w = Interlocked.Exchange(ref _cache, 0);
            if (w != 0)
            {
                var page = new Pfn((uint)((w >> 32) - 1));
                if (Interlocked.Add(ref arena.DescriptorOf(page).PtFragCount, -(perPage - (int)(w & 0xFFFF))) == 0)
                {
                    arena.FreePages(page, 0);
                }
            }
        }
    }
}
