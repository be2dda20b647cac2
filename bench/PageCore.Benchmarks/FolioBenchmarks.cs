using System.Collections.Concurrent;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// The page-cache and folio figures, each against its baseline in the same class and run: a page-cache lookup hit (reference taken and
/// dropped) against <c>ConcurrentDictionary&lt;ulong, object&gt;.TryGetValue</c> on the same keys; an epoch section's
/// enter+exit; the speculative folio get+put against <see cref="PageArena.TryGetPageUnlessZero"/>+<see cref="PageArena.PutPage"/>.
/// </summary>
[CategoriesColumn]
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
public class FolioBenchmarks
{
    private const int Keys = 1024;
    private PageArena _arena = null!;
    private EpochDomain _epochs = null!;
    private EpochDomain _asymmetric = null!;
    private PageCacheIndex _cache = null!;
    private PageCacheIndex _cacheAsymmetric = null!;
    private ConcurrentDictionary<ulong, object> _dictionary = null!;
    private Pfn _folio;
    private ulong _next;

    /// <summary>Builds the index and the dictionary with the same 1,024 keys.</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 16 });
        _epochs = new EpochDomain();
        _asymmetric = new EpochDomain(asymmetricAnnounce: true);
        _cache = new PageCacheIndex(_arena, _epochs, buckets: 4096);
        _cacheAsymmetric = new PageCacheIndex(_arena, _asymmetric, buckets: 4096);
        _dictionary = new ConcurrentDictionary<ulong, object>();
        for (ulong k = 0; k < Keys; k++)
        {
            // Each index holds its own pages, so every cached page has the count a lookup finds in practice (1).
            Pfn p = _arena.AllocPages(0);
            _cache.TryAdd(k, p);
            _arena.PutPage(p);
            Pfn q = _arena.AllocPages(0);
            _cacheAsymmetric.TryAdd(k, q);
            _arena.PutPage(q);
            _dictionary[k] = new object();
        }

        _folio = _arena.AllocFolio(4);
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        for (ulong k = 0; k < Keys; k++)
        {
            _cache.TryRemove(k, out _);
            _cacheAsymmetric.TryRemove(k, out _);
        }

        _epochs.Barrier();
        _asymmetric.Barrier();
        _arena.FreePages(_folio, 4);
        _arena.Dispose();
    }

    /// <summary>Baseline: <c>ConcurrentDictionary.TryGetValue</c>.</summary>
    [Benchmark(Baseline = true, Description = "ConcurrentDictionary<ulong,object>.TryGetValue")]
    [BenchmarkCategory("lookup")]
    public bool DictionaryLookup() => _dictionary.TryGetValue(_next++ & (Keys - 1), out _);

    /// <summary>A page-cache lookup hit: epoch section, speculative get, reload, and the reference dropped.</summary>
    [Benchmark(Description = "PageCacheIndex.TryGet hit + PutPage")]
    [BenchmarkCategory("lookup")]
    public bool PageCacheLookup()
    {
        PageArena arena = _arena;
        if (_cache.TryGet(_next++ & (Keys - 1), out Pfn p))
        {
            arena.PutPage(p);
            return true;
        }

        return false;
    }

    /// <summary>The same lookup with an asymmetric epoch domain (no fence on the section's entry).</summary>
    [Benchmark(Description = "PageCacheIndex.TryGet hit + PutPage (asymmetric epochs)")]
    [BenchmarkCategory("lookup")]
    public bool PageCacheLookupAsymmetric()
    {
        PageArena arena = _arena;
        if (_cacheAsymmetric.TryGet(_next++ & (Keys - 1), out Pfn p))
        {
            arena.PutPage(p);
            return true;
        }

        return false;
    }

    /// <summary>
    /// The hardware floor of a lookup that takes and drops a reference: the two locked instructions on one word
    /// (get + put), and nothing else.
    /// </summary>
    [Benchmark(Description = "floor: two locked adds (reference get + put)")]
    [BenchmarkCategory("lookup")]
    public long LookupFloor()
    {
        Interlocked.Increment(ref _floor[16]);
        return Interlocked.Decrement(ref _floor[16]);
    }

    /// <summary>The hardware floor of a full-fence announce: one locked exchange and one release store.</summary>
    [Benchmark(Description = "floor: locked exchange + release store")]
    [BenchmarkCategory("epoch")]
    public void EpochFloor()
    {
        Interlocked.Exchange(ref _floor[32], 1);
        Volatile.Write(ref _floor[32], 0);
    }

    private readonly long[] _floor = new long[48];

    /// <summary>An empty epoch section (<c>rcu_read_lock</c> + <c>rcu_read_unlock</c>).</summary>
    [Benchmark(Description = "EpochDomain enter+exit")]
    [BenchmarkCategory("epoch")]
    public void EpochEnterExit()
    {
        using (_epochs.Enter())
        {
        }
    }

    /// <summary>An empty section of a domain with asymmetric announces (release store; membarrier on the reclaim side).</summary>
    [Benchmark(Description = "EpochDomain enter+exit (asymmetric)")]
    [BenchmarkCategory("epoch")]
    public void EpochEnterExitAsymmetric()
    {
        using (_asymmetric.Enter())
        {
        }
    }

    /// <summary>Baseline: get_page_unless_zero + put_page on the folio's head.</summary>
    [Benchmark(Baseline = true, Description = "TryGetPageUnlessZero+PutPage")]
    [BenchmarkCategory("folio get")]
    public bool PageGet()
    {
        PageArena arena = _arena;
        Pfn head = _folio;
        arena.TryGetPageUnlessZero(head);
        return arena.PutPage(head);
    }

    /// <summary>The speculative folio get through a tail (head read, get, recheck) + put.</summary>
    [Benchmark(Description = "TryGetFolioSpeculative(tail)+PutPage")]
    [BenchmarkCategory("folio get")]
    public bool FolioGet()
    {
        PageArena arena = _arena;
        arena.TryGetFolioSpeculative(_folio + 5, out Pfn head);
        return arena.PutPage(head);
    }
}
