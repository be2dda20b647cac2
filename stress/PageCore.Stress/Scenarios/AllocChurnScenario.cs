using System.Collections.Concurrent;
using System.Runtime.InteropServices;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>alloc-churn</c>: workers allocate blocks of random orders, hold them for a random number of steps, and free them,
/// a quarter of them on another thread; every block carries its owner's stamp in the first and last word of each page,
/// checked when it is freed, so two owners of one page are caught. Hostile PFN walkers call
/// <see cref="PageArena.TryGetPageUnlessZero"/> and <see cref="PageArena.PutPage"/> on random PFNs throughout. At the end
/// every block is freed, the caches drained, and <see cref="PageArena.Verify"/> must show the whole arena free and
/// coalesced.
/// </summary>
public sealed class AllocChurnScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "alloc-churn";

    /// <inheritdoc />
    public string KernelCounterpart => "alloc_pages / __free_pages with pcp lists; PFN walkers (get_page_unless_zero)";

    /// <inheritdoc />
    public string Rule => "allocator (B1-B5), rule 1";

    /// <inheritdoc />
    public bool HasLegacyForm => false;

    /// <inheritdoc />
    public string Description => "random orders, random hold times, cross-thread frees, stamped blocks, hostile PFN walkers";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        var handoff = new ConcurrentQueue<Block>();
        var counters = new Counters[ctx.Threads + Walkers(ctx)];
        for (int i = 0; i < counters.Length; i++) counters[i] = new Counters();
        using var stopWalkers = new CancellationTokenSource();

        var threads = new List<Thread>();
        for (int t = 0; t < ctx.Threads; t++)
        {
            int id = t;
            threads.Add(new Thread(() => Worker(ctx, arena, handoff, counters[id], id)) { Name = $"churn-{id}", IsBackground = true });
        }

        for (int w = 0; w < Walkers(ctx); w++)
        {
            int id = ctx.Threads + w;
            threads.Add(new Thread(() => Walker(ctx, arena, counters[id], id, stopWalkers.Token)) { Name = $"walker-{w}", IsBackground = true });
        }

        foreach (Thread t in threads) t.Start();
        Progress.Report(ctx, () => Sum(counters), threads.Take(ctx.Threads));
        foreach (Thread t in threads.Take(ctx.Threads)) t.Join();
        while (handoff.TryDequeue(out Block left)) CheckAndFree(ctx, arena, left);
        stopWalkers.Cancel();
        foreach (Thread t in threads.Skip(ctx.Threads)) t.Join();
        TimeSpan elapsed = ctx.Clock.Elapsed;

        arena.Drain();
        ArenaReport report = arena.Verify();
        if (!report.IsClean)
        {
            foreach (string v in report.Violations) ctx.Violation("verify: " + v);
        }

        if (report.FreePages != arena.PageCount)
        {
            ctx.Violation($"conservation: after every block was freed and the caches drained, {report.FreePages} of {arena.PageCount} pages are free");
        }

        if (report.FreeBlocksByOrder[arena.MaxOrder] != arena.PageCount >> arena.MaxOrder)
        {
            ctx.Violation($"coalescing: the free arena is not {arena.PageCount >> arena.MaxOrder} blocks of order {arena.MaxOrder}");
        }

        return new StressResult(Name, ctx.Legacy, Sum(counters), elapsed, ctx.ViolationCount, ctx.FirstViolationAt, report.ToString());
    }

    private static int Walkers(StressContext ctx) => Math.Max(1, ctx.Threads / 4);

    private static void Worker(StressContext ctx, PageArena arena, ConcurrentQueue<Block> handoff, Counters c, int id)
    {
        var rng = new Random(ctx.Seed + id);
        var held = new List<Block>();
        long serial = 0;
        try
        {
            while (DateTime.UtcNow < ctx.Deadline)
            {
                for (int step = 0; step < 64; step++)
                {
                    if (held.Count < 64 && rng.Next(3) != 0)
                    {
                        int order = RandomOrder(rng, arena.MaxOrder);
                        if (arena.TryAllocPages(order, out Pfn p))
                        {
                            var b = new Block(p, order, ((long)(id + 1) << 40) | ++serial);
                            Stamp(arena, b);
                            held.Add(b);
                            c.Allocs++;
                        }
                        else
                        {
                            c.FailedAllocs++;
                        }
                    }
                    else if (held.Count > 0)
                    {
                        int i = rng.Next(held.Count);
                        Block b = held[i];
                        held[i] = held[^1];
                        held.RemoveAt(held.Count - 1);
                        if (rng.Next(4) == 0)
                        {
                            handoff.Enqueue(b);
                        }
                        else
                        {
                            CheckAndFree(ctx, arena, b);
                            c.Frees++;
                        }
                    }

                    if (handoff.TryDequeue(out Block other))
                    {
                        CheckAndFree(ctx, arena, other);
                        c.CrossFrees++;
                    }
                }
            }
        }
        catch (Exception ex)
        {
            ctx.Violation($"worker {id}: {ex.GetType().Name}: {ex.Message}");
        }
        finally
        {
            foreach (Block b in held) CheckAndFree(ctx, arena, b);
        }
    }

    private static void Walker(StressContext ctx, PageArena arena, Counters c, int id, CancellationToken stop)
    {
        var rng = new Random(ctx.Seed ^ (0x2545F491 * (id + 1)));
        try
        {
            while (!stop.IsCancellationRequested)
            {
                for (int step = 0; step < 256; step++)
                {
                    var pfn = new Pfn((uint)rng.NextInt64(arena.PageCount));
                    if (arena.TryGetPageUnlessZero(pfn))
                    {
                        c.WalkerGets++;
                        if (arena.RefCount(pfn) < 1)
                        {
                            ctx.Violation($"walker: holds a reference on {pfn} but its count reads {arena.RefCount(pfn)}");
                        }

                        arena.PutPage(pfn);
                    }
                    else
                    {
                        c.WalkerMisses++;
                    }
                }
            }
        }
        catch (Exception ex)
        {
            ctx.Violation($"walker {id}: {ex.GetType().Name}: {ex.Message}");
        }
    }

    private static int RandomOrder(Random rng, int maxOrder)
    {
        int r = rng.Next(100);
        int order = r < 60 ? 0 : r < 75 ? 1 : r < 85 ? rng.Next(2, 4) : r < 97 ? rng.Next(4, 9) : rng.Next(9, 11);
        return Math.Min(order, maxOrder);
    }

    private static void Stamp(PageArena arena, Block b)
    {
        Span<byte> span = arena.GetSpan(b.Pfn, b.Order);
        for (int page = 0; page < 1 << b.Order; page++)
        {
            Span<long> words = MemoryMarshal.Cast<byte, long>(span.Slice(page * arena.PageSize, arena.PageSize));
            words[0] = b.Stamp;
            words[^1] = ~b.Stamp;
        }
    }

    private static void CheckAndFree(StressContext ctx, PageArena arena, Block b)
    {
        Span<byte> span = arena.GetSpan(b.Pfn, b.Order);
        for (int page = 0; page < 1 << b.Order; page++)
        {
            Span<long> words = MemoryMarshal.Cast<byte, long>(span.Slice(page * arena.PageSize, arena.PageSize));
            if (words[0] != b.Stamp || words[^1] != ~b.Stamp)
            {
                ctx.Violation($"{b.Pfn + (uint)page} (block {b.Pfn}, order {b.Order}): stamp {words[0]:x}, expected {b.Stamp:x}: two owners overlapped");
                break;
            }
        }

        try
        {
            arena.FreePages(b.Pfn, b.Order);
        }
        catch (PageBugException ex)
        {
            ctx.Violation(ex.Message);
        }
    }

    private static Dictionary<string, long> Sum(Counters[] counters) => new()
    {
        ["alloc"] = counters.Sum(c => Volatile.Read(ref c.Allocs)),
        ["free"] = counters.Sum(c => Volatile.Read(ref c.Frees)),
        ["cross-thread free"] = counters.Sum(c => Volatile.Read(ref c.CrossFrees)),
        ["failed alloc"] = counters.Sum(c => Volatile.Read(ref c.FailedAllocs)),
        ["walker get"] = counters.Sum(c => Volatile.Read(ref c.WalkerGets)),
        ["walker miss"] = counters.Sum(c => Volatile.Read(ref c.WalkerMisses)),
    };

    private readonly record struct Block(Pfn Pfn, int Order, long Stamp);

    /// <summary>One thread's counters, written by that thread only, padded against false sharing.</summary>
    [StructLayout(LayoutKind.Sequential)]
    private sealed class Counters
    {
#pragma warning disable CS0169 // padding
        private readonly long _p0, _p1, _p2, _p3, _p4, _p5, _p6, _p7, _p8, _p9, _pa, _pb, _pc, _pd, _pe, _pf;
#pragma warning restore CS0169
        public long Allocs;
        public long Frees;
        public long CrossFrees;
        public long FailedAllocs;
        public long WalkerGets;
        public long WalkerMisses;
#pragma warning disable CS0169 // padding
        private readonly long _q0, _q1, _q2, _q3, _q4, _q5, _q6, _q7, _q8, _q9, _qa, _qb, _qc, _qd, _qe, _qf;
#pragma warning restore CS0169
    }
}
