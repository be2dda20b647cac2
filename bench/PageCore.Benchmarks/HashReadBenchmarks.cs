using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Configs;

namespace PageCore.Benchmarks;

/// <summary>
/// What reading a hash entry whole costs. Each pair runs the same work on two hash MMUs, one
/// with the legacy reads (<see cref="HashMmu.LegacyUncheckedReads"/>: V then R, no recheck; an insert scans once) as
/// the baseline, one with the fixed reads (R, V, R with a generation; an insert scans again after its claim).
/// </summary>
[GroupBenchmarksBy(BenchmarkLogicalGroupRule.ByCategory)]
[CategoriesColumn]
public class HashReadBenchmarks
{
    private const int Pages = 64;
    private PageArena _arena = null!;
    private HashMmu _legacyHash = null!;
    private HashMmu _fixedHash = null!;
    private AddressSpace _legacy = null!;
    private AddressSpace _fixed = null!;

    /// <summary>One arena; per form a hash MMU and an address space with 64 pages stored to (hashed).</summary>
    [GlobalSetup]
    public void Setup()
    {
        _arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 14 });
        _legacyHash = new HashMmu(groups: 4096) { LegacyUncheckedReads = true };
        _fixedHash = new HashMmu(groups: 4096);
        _legacy = new AddressSpace(_arena, new AddressSpaceOptions { HashMmu = _legacyHash });
        _fixed = new AddressSpace(_arena, new AddressSpaceOptions { HashMmu = _fixedHash });
        Store(_legacy);
        Store(_fixed);
    }

    /// <summary>Releases everything.</summary>
    [GlobalCleanup]
    public void Cleanup()
    {
        _legacy.Dispose();
        _fixed.Dispose();
        _arena.Dispose(force: true);
    }

    /// <summary>Baseline: a hit read as V then R.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "translate (hit), legacy reads")]
    [BenchmarkCategory("translate")]
    public long TranslateLegacy() => Translate(_legacyHash, _legacy.Asid);

    /// <summary>A hit read as R, V, R.</summary>
    [Benchmark(OperationsPerInvoke = Pages, Description = "translate (hit), entry read whole")]
    [BenchmarkCategory("translate")]
    public long TranslateFixed() => Translate(_fixedHash, _fixed.Asid);

    /// <summary>Baseline: fault+zap per page, inserts scanning once.</summary>
    [Benchmark(Baseline = true, OperationsPerInvoke = Pages, Description = "fault+zap per page, legacy reads")]
    [BenchmarkCategory("cycle")]
    public long CycleLegacy() => Cycle(_legacy);

    /// <summary>Fault+zap per page, inserts scanning again after the claim.</summary>
    [Benchmark(OperationsPerInvoke = Pages, Description = "fault+zap per page, entry read whole")]
    [BenchmarkCategory("cycle")]
    public long CycleFixed() => Cycle(_fixed);

    /// <summary>
    /// The same pairs without BenchmarkDotNet, for a loaded machine: rounds that alternate the forms in one process, the
    /// best (lowest) time per operation of each kept, and the ratio fixed / legacy of the bests.
    /// </summary>
    /// <param name="rounds">Rounds; each times every row once.</param>
    /// <returns>0.</returns>
    public static int RunInterleaved(int rounds)
    {
        var b = new HashReadBenchmarks();
        b.Setup();
        (string Name, Func<long> Body, int Reps)[] rows =
        [
            ("translate (hit), legacy reads", b.TranslateLegacy, 500),
            ("translate (hit), entry read whole", b.TranslateFixed, 500),
            ("fault+zap per page, legacy reads", b.CycleLegacy, 20),
            ("fault+zap per page, entry read whole", b.CycleFixed, 20),
        ];
        double[] best = [.. rows.Select(_ => double.MaxValue)];
        long sink = 0;
        for (int r = 0; r < rounds; r++)
        {
            for (int k = 0; k < rows.Length; k++)
            {
                int row = (r & 1) == 0 ? k : k ^ 1; // alternate which form of a pair runs first
                var sw = System.Diagnostics.Stopwatch.StartNew();
                for (int n = 0; n < rows[row].Reps; n++)
                {
                    sink += rows[row].Body();
                }

                best[row] = Math.Min(best[row], sw.Elapsed.TotalNanoseconds / ((double)rows[row].Reps * Pages));
            }
        }

        b.Cleanup();
        Console.WriteLine($"hash reads, interleaved, best of {rounds} rounds (ns per operation; checksum {sink & 0xff}):");
        for (int k = 0; k < rows.Length; k++)
        {
            Console.WriteLine($"  {rows[k].Name,-40} {best[k],8:F2} ns   ratio {best[k] / best[k & ~1]:F3}");
        }

        return 0;
    }

    private static long Translate(HashMmu hash, int asid)
    {
        long sum = 0;
        for (ulong i = 0; i < Pages; i++)
        {
            if (hash.TryTranslate(asid, i << 12, out Pfn pfn, out _))
            {
                sum += pfn.Value;
            }
        }

        return sum;
    }

    private static void Store(AddressSpace mm)
    {
        for (ulong i = 0; i < Pages; i++)
        {
            mm.Access(i << 12, write: true);
        }
    }

    private static long Cycle(AddressSpace mm)
    {
        Store(mm);
        long n = mm.Zap(0, (ulong)Pages << 12);
        Store(mm); // the translate rows find the pages hashed whatever ran before
        return n;
    }
}
