using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// Throughput under contention with persistent worker threads (1 and 2 threads on the 2-core machine, 4 to show
/// oversubscription). Each invocation runs <see cref="OpsPerInvoke"/> operations split among the threads, so the time
/// per operation is the inverse of the aggregate throughput. Next to each PageCore case, in the same run, the baseline of
/// the same shape on private padded counters: scaling is read as a ratio, not against 2x.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class ScalingBenchmarks
{
    /// <summary>Operations per invocation, all threads together.</summary>
    public const int OpsPerInvoke = 1 << 16;

    private const int Pad = 16;
    private PageArena _arena = null!;
    private WorkerGang _gang = null!;
    private long[] _private = null!;
    private Pfn _shared;
    private Pfn[][] _batches = null!;

    /// <summary>Threads taking part, the caller included.</summary>
    [Params(1, 2, 4)]
    public int Threads { get; set; }

    /// <summary>Builds the arena, the shared page, the batches and the workers.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 18 });
        _shared = _arena.AllocPages(0);
        _private = new long[(Threads + 1) * Pad * 2];
        _batches = new Pfn[Threads][];
        int perThread = OpsPerInvoke / Threads;
        for (int t = 0; t < Threads; t++)
        {
            _batches[t] = new Pfn[perThread];
            for (int i = 0; i < perThread; i++) _batches[t][i] = _arena.AllocPages(0);
        }

        _gang = new WorkerGang(Threads);
    }

    /// <summary>Stops the workers and releases the arena.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _gang.Dispose();
        foreach (Pfn[] batch in _batches)
        {
            foreach (Pfn p in batch) _arena.FreePages(p, 0);
        }

        _arena.FreePages(_shared, 0);
        _arena.Dispose();
    }

    /// <summary>Baseline: each thread an Interlocked increment+decrement pair on its own padded counter.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = OpsPerInvoke, Description = "private counters inc+dec")]
    [BenchmarkCategory("alloc+free")]
    public void PrivatePair() => _gang.Run(t =>
    {
        ref long c = ref _private[(t + 1) * Pad * 2];
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            Interlocked.Increment(ref c);
            Interlocked.Decrement(ref c);
        }
    });

    /// <summary>Order-0 alloc+free through each thread's caches.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke, Description = "order-0 alloc+free")]
    [BenchmarkCategory("alloc+free")]
    public void AllocFree() => _gang.Run(t =>
    {
        PageArena arena = _arena;
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            arena.FreePages(arena.AllocPages(0), 0);
        }
    });

    /// <summary>Baseline for cross-thread free: the same pair on private counters.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = OpsPerInvoke, Description = "private counters inc+dec ")]
    [BenchmarkCategory("cross-thread free")]
    public void PrivatePairCross() => PrivatePair();

    /// <summary>Each thread frees the pages its neighbour allocated in the previous invocation, then allocates anew.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke, Description = "free neighbour's page + alloc")]
    [BenchmarkCategory("cross-thread free")]
    public void CrossThreadFree()
    {
        _gang.Run(t =>
        {
            PageArena arena = _arena;
            Pfn[] mine = _batches[(t + 1) % Threads];
            for (int i = 0; i < mine.Length; i++) arena.FreePages(mine[i], 0);
        });
        _gang.Run(t =>
        {
            PageArena arena = _arena;
            Pfn[] mine = _batches[(t + 1) % Threads];
            for (int i = 0; i < mine.Length; i++) mine[i] = arena.AllocPages(0);
        });
    }

    /// <summary>Baseline: an add-unless-zero CAS loop + decrement on each thread's own padded counter.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = OpsPerInvoke, Description = "private counters CAS get+dec")]
    [BenchmarkCategory("speculative on one page")]
    public void PrivateCas() => _gang.Run(t =>
    {
        ref long c = ref _private[(t + 1) * Pad * 2];
        Volatile.Write(ref c, 1);
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            long v = Volatile.Read(ref c);
            while (v != 0 && Interlocked.CompareExchange(ref c, v + 1, v) != v)
            {
                v = Volatile.Read(ref c);
            }

            Interlocked.Decrement(ref c);
        }
    });

    /// <summary>Every thread: TryGetPageUnlessZero + PutPage on the same page.</summary>
    [Benchmark(OperationsPerInvoke = OpsPerInvoke, Description = "TryGetPageUnlessZero+PutPage, one shared page")]
    [BenchmarkCategory("speculative on one page")]
    public void SharedTryGet() => _gang.Run(t =>
    {
        PageArena arena = _arena;
        Pfn page = _shared;
        for (int i = OpsPerInvoke / Threads; i > 0; i--)
        {
            arena.TryGetPageUnlessZero(page);
            arena.PutPage(page);
        }
    });
}
