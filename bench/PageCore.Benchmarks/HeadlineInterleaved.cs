using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using PageCore.Buffers;

namespace PageCore.Benchmarks;

/// <summary>
/// The headline figures (<c>--headline [rounds]</c>), each against what a .NET developer would use instead, in one
/// process: every pair runs once per round, the two sides one after the other (the order swapped every round), and the
/// table gives each side's median and lowest time per operation and the median of the per-round ratios. Every loop is
/// what a user writes: a <c>for</c> over a bound passed in at run time, in a method of its own, in a process that also
/// allocates an uncached order elsewhere (so that no path is specialised away).
/// </summary>
public static class HeadlineInterleaved
{
    /// <summary>Keys in each page-cache index and dictionary by default: their descriptors and values outgrow the
    /// first-level cache, as a real cache's do.</summary>
    public const int DefaultKeys = 1024;

    /// <summary>Runs <paramref name="rounds"/> rounds and prints the table; returns the exit code.</summary>
    /// <param name="rounds">Interleaved rounds.</param>
    /// <param name="keys">Keys in each index and dictionary, a power of two up to 16,384 (smaller: everything the
    /// lookups touch stays in the first-level cache).</param>
    /// <param name="opsPerRun">Operations per side per round.</param>
    public static int Run(int rounds, int keys = DefaultKeys, int opsPerRun = 1_000_000)
    {
        if (rounds < 1)
        {
            Console.Error.WriteLine("pagecore-bench: --headline needs a positive round count.");
            return 64;
        }

        if (keys < 1 || keys > 16384 || (keys & (keys - 1)) != 0)
        {
            Console.Error.WriteLine($"pagecore-bench: --keys takes a power of two from 1 to 16384, not {keys}.");
            return 64;
        }

        ulong mask = (ulong)keys - 1;

        using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 16 });
        using PageArena uncached = PageArena.Create(new PageArenaOptions { Pages = 1 << 16, PerCpuCaches = false });
        using PagePool pagePool = arena.CreatePagePool();
        using var memoryPool = new PageMemoryPool(arena);
        var fields = new long[64];
        using var epochs = new EpochDomain();
        using var asymmetric = new EpochDomain(asymmetricAnnounce: true);
        var index = new PageCacheIndex(arena, epochs, buckets: 4096);
        var indexAsymmetric = new PageCacheIndex(arena, asymmetric, buckets: 4096);
        var indexCollected = new PageCacheIndex(arena, buckets: 4096);
        var dictionary = new ConcurrentDictionary<ulong, Counted>();
        for (ulong k = 0; k < (ulong)keys; k++)
        {
            Pfn p = arena.AllocPages(0);
            index.TryAdd(k, p);
            arena.PutPage(p); // the index's own reference is what a lookup finds (count 1), as in practice
            Pfn q = arena.AllocPages(0);
            indexAsymmetric.TryAdd(k, q);
            arena.PutPage(q);
            Pfn r = arena.AllocPages(0);
            indexCollected.TryAdd(k, r);
            arena.PutPage(r);
            dictionary[k] = new Counted();
        }

        Pfn held = arena.AllocPages(0);
        UncachedElsewhere(arena);

        var pairs = new (string Case, Func<int, long> Run, string Baseline, Func<int, long> BaselineRun)[]
        {
            ("order-0 alloc+free, thread caches (AllocPages/FreePages)", n => ThreadCache(arena, n), "ArrayPool<byte>.Shared Rent+Return 4 KiB", ArrayPoolLoop),
            ("order-0 alloc+free, PagePool", n => Pool(pagePool, n), "ArrayPool<byte>.Shared Rent+Return 4 KiB", ArrayPoolLoop),
            ("order-0 alloc+free, caches off", n => Uncached(uncached, n), "ArrayPool<byte>.Shared Rent+Return 4 KiB", ArrayPoolLoop),
            ("PageMemoryPool Rent(4096)+Dispose", n => MemoryPoolLoop(memoryPool, n), "MemoryPool<byte>.Shared Rent(4096)+Dispose", n => MemoryPoolLoop(MemoryPool<byte>.Shared, n)),
            ("TryGetPageUnlessZero+PutPage", n => SpeculativeGet(arena, held, n), "CAS add-unless-zero + Interlocked.Decrement", n => CasPair(fields, n)),
            ("CAS add-unless-zero + Interlocked.Decrement (a get that never revives a count of 0)", n => CasPair(fields, n), "Interlocked.Increment + Interlocked.Decrement (the dictionary rows' pair)", n => AddPair(fields, n)),
            ("PageCacheIndex.TryGet hit + PutPage", n => Lookup(arena, index, mask, n), "ConcurrentDictionary.TryGetValue + Interlocked inc/dec of the value's count", n => DictionaryLookup(dictionary, mask, n)),
            ("PageCacheIndex.TryGet hit + PutPage, asymmetric epochs", n => Lookup(arena, indexAsymmetric, mask, n), "ConcurrentDictionary.TryGetValue + Interlocked inc/dec of the value's count", n => DictionaryLookup(dictionary, mask, n)),
            ("PageCacheIndex.TryGet hit + PutPage, nodes reclaimed by the GC (no epoch)", n => Lookup(arena, indexCollected, mask, n), "ConcurrentDictionary.TryGetValue + Interlocked inc/dec of the value's count", n => DictionaryLookup(dictionary, mask, n)),
        };

        // Past tiering for each method: OSR, instrumented code, then Tier1 after 30 calls. Call counting starts only once
        // the process has stopped compiling new methods for a while (100 ms), so the calls come in four passes with a
        // pause before each, and the background compiler gets time to install the Tier1 code.
        for (int pass = 0; pass < 4; pass++)
        {
            Thread.Sleep(300);
            foreach (var pair in pairs)
            {
                for (int i = 0; i < 40; i++)
                {
                    pair.Run(opsPerRun / 40);
                    pair.BaselineRun(opsPerRun / 40);
                }
            }
        }

        Thread.Sleep(300);

        var own = pairs.Select(_ => new List<double>()).ToArray();
        var baseline = pairs.Select(_ => new List<double>()).ToArray();
        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < pairs.Length; i++)
            {
                if (round % 2 == 0)
                {
                    own[i].Add(Time(pairs[i].Run, opsPerRun));
                    baseline[i].Add(Time(pairs[i].BaselineRun, opsPerRun));
                }
                else
                {
                    baseline[i].Add(Time(pairs[i].BaselineRun, opsPerRun));
                    own[i].Add(Time(pairs[i].Run, opsPerRun));
                }
            }

            UncachedElsewhere(arena);
        }

        Console.WriteLine($"Machine: {Interleaving.Machine()}");
        Console.WriteLine($"Headline figures: {keys:N0} keys per index, {rounds} interleaved rounds of {opsPerRun:N0} operations per side, one thread, ns per operation; ratio: median of the per-round ratios (below 1: PageCore is faster)");
        Console.WriteLine();
        Console.WriteLine("| PageCore | ns median (min) | baseline, same run | ns median (min) | ratio |");
        Console.WriteLine("|---|--:|---|--:|--:|");
        for (int i = 0; i < pairs.Length; i++)
        {
            double[] ratios = own[i].Zip(baseline[i], (a, b) => a / b).ToArray();
            Console.WriteLine($"| {pairs[i].Case} | {Interleaving.Median(own[i]):F2} ({own[i].Min():F2}) | {pairs[i].Baseline} | {Interleaving.Median(baseline[i]):F2} ({baseline[i].Min():F2}) | {Interleaving.Median(ratios):F2} |");
        }

        for (ulong k = 0; k < (ulong)keys; k++)
        {
            index.TryRemove(k, out _);
            indexAsymmetric.TryRemove(k, out _);
            indexCollected.TryRemove(k, out _);
        }

        epochs.Barrier();
        asymmetric.Barrier();
        arena.FreePages(held, 0);
        return 0;
    }

    private static double Time(Func<int, long> run, int n)
    {
        long start = Stopwatch.GetTimestamp();
        run(n);
        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / n;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void UncachedElsewhere(PageArena arena)
    {
        Pfn p = arena.AllocPages(5);
        arena.FreePages(p, 5);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ThreadCache(PageArena arena, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            Pfn p = arena.AllocPages(0);
            sum += p.Value;
            arena.FreePages(p, 0);
        }

        return sum;
    }

    /// <summary>The same loop as <see cref="ThreadCache"/> on the arena without caches: a method of its own, so that each
    /// loop's profile is its own.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Uncached(PageArena arena, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            Pfn p = arena.AllocPages(0);
            sum += p.Value;
            arena.FreePages(p, 0);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Pool(PagePool pool, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            Pfn p = pool.AllocPages(0);
            sum += p.Value;
            pool.FreePages(p, 0);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long ArrayPoolLoop(int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            byte[] a = ArrayPool<byte>.Shared.Rent(4096);
            sum += a.Length;
            ArrayPool<byte>.Shared.Return(a);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long MemoryPoolLoop(MemoryPool<byte> pool, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            IMemoryOwner<byte> o = pool.Rent(4096);
            sum += o.Memory.Length;
            o.Dispose();
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long SpeculativeGet(PageArena arena, Pfn page, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            sum += arena.TryGetPageUnlessZero(page) ? 1 : 0;
            arena.PutPage(page);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long CasPair(long[] fields, int n)
    {
        ref long counter = ref fields[16];
        counter = 1;
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            long v = Volatile.Read(ref counter);
            while (v != 0)
            {
                long seen = Interlocked.CompareExchange(ref counter, v + 1, v);
                if (seen == v)
                {
                    break;
                }

                v = seen;
            }

            sum += Interlocked.Decrement(ref counter);
        }

        return sum;
    }

    /// <summary>The dictionary rows' reference pair: two locked adds, with no test of the count first.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long AddPair(long[] fields, int n)
    {
        ref long counter = ref fields[32];
        counter = 1;
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            sum += Interlocked.Increment(ref counter);
            Interlocked.Decrement(ref counter);
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long Lookup(PageArena arena, PageCacheIndex index, ulong mask, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            if (index.TryGet((ulong)i & mask, out Pfn p))
            {
                sum += p.Value;
                arena.PutPage(p);
            }
        }

        return sum;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static long DictionaryLookup(ConcurrentDictionary<ulong, Counted> dictionary, ulong mask, int n)
    {
        long sum = 0;
        for (int i = 0; i < n; i++)
        {
            if (dictionary.TryGetValue((ulong)i & mask, out Counted? c))
            {
                sum += Interlocked.Increment(ref c.References);
                Interlocked.Decrement(ref c.References);
            }
        }

        return sum;
    }

    /// <summary>A dictionary value with a reference count: the equal work of a page-cache hit's get and put.</summary>
    private sealed class Counted
    {
        public long References = 1;
    }
}
