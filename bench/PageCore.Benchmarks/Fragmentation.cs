using System.Buffers.Binary;

namespace PageCore.Benchmarks;

/// <summary>
/// Fragmentation after a standard churn (<c>--fragmentation [--trace FILE] [--seed S]</c>): a seeded trace of mixed
/// orders 0..9 with random lifetimes, held near a fill level for a number of operations, then its short-lived blocks
/// freed; the figure is the share of the free memory that is still allocatable as order-9 blocks. The same trace file
/// replays on LLFree-C (<c>native/bench/llfree-fragmentation.sh</c>), so that both allocators answer the same question.
/// </summary>
/// <remarks>
/// <para><b>The trace.</b> Operation i is an allocation of an order drawn from <see cref="OrderWeights"/>, or the free of
/// an earlier allocation. Half the allocations are short-lived (1..2,000 operations) and half long-lived
/// (20,000..2,000,000); a block is freed when its time is up, and when the next allocation would take the arena above
/// the fill level, the blocks due soonest are freed first until it fits. After the churn every short-lived block still
/// held is freed. The generator assumes every allocation succeeds; a replay that fails one counts it and skips its free,
/// so both replays follow the same script.</para>
/// <para><b>File.</b> "PCFRAG01", then the arena's pages and the record count (little-endian 64-bit), then one 32-bit
/// record per operation: <c>0x80000000 | order</c> for an allocation (allocations are numbered in order from 0),
/// or the number of the allocation to free.</para>
/// </remarks>
public static class Fragmentation
{
    /// <summary>Relative frequency of each order 0..9 among allocations.</summary>
    public static readonly int[] OrderWeights = [500, 150, 100, 100, 50, 30, 20, 20, 15, 15];

    /// <summary>Lifetime of a short-lived block, in operations: 1..this.</summary>
    public const int ShortMax = 5_000;

    /// <summary>Lifetime of a long-lived block, in operations: <see cref="LongMin"/>..<see cref="LongMax"/>. With one
    /// allocation in ten long-lived, the two kinds hold about the same number of blocks at any time, so the final free
    /// of the short-lived ones frees about half of what is held.</summary>
    public const int LongMin = 10_000, LongMax = 40_000;

    private const uint AllocFlag = 0x8000_0000;
    private static ReadOnlySpan<byte> Magic => "PCFRAG01"u8;

    /// <summary>Runs the command; returns the exit code.</summary>
    public static int Run(string[] args)
    {
        string? tracePath = null;
        int seed = 1;
        long pages = 1 << 17, operations = 2_000_000;
        double fill = 0.7, longLived = 0.1;
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            try
            {
                switch (args[i])
                {
                    case "--fragmentation": break;
                    case "--trace": tracePath = Next(); break;
                    case "--seed": seed = int.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--pages": pages = long.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--operations": operations = long.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--fill": fill = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    case "--long-lived": longLived = double.Parse(Next(), System.Globalization.CultureInfo.InvariantCulture); break;
                    default: throw new ArgumentException($"unknown argument {args[i]}");
                }
            }
            catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
            {
                Console.Error.WriteLine($"pagecore-bench --fragmentation: {e.Message} (takes --trace FILE, --seed N, --pages N (a multiple of 4096), --operations N, --fill 0.1..0.95)");
                return 64;
            }
        }

        if (pages < 4096 || pages % 4096 != 0 || pages > (1L << 24) || operations < 1000 || operations > 100_000_000 || fill is < 0.1 or > 0.95)
        {
            Console.Error.WriteLine("pagecore-bench --fragmentation: --pages must be a multiple of 4096 up to 2^24, --operations between 1,000 and 100,000,000, --fill between 0.1 and 0.95.");
            return 64;
        }

        uint[] trace = Generate(seed, pages, operations, fill, longLived);
        if (tracePath is not null)
        {
            Write(tracePath, pages, trace);
        }

        long allocations = trace.Count(r => (r & AllocFlag) != 0);
        Console.WriteLine($"Fragmentation after a standard churn: seed {seed}, {pages:N0} pages, {operations:N0} churn operations at {fill:P0} fill, {trace.Length:N0} records ({allocations:N0} allocations), orders 0..9 weighted {string.Join('/', OrderWeights)}{(tracePath is null ? "" : $"; trace written to {tracePath}")}");
        Console.WriteLine("| allocator | failed allocations during the trace (by order 0..9) | free pages after | order-9 blocks allocatable | share of free memory as order 9 |");
        Console.WriteLine("|---|---|--:|--:|--:|");
        foreach ((string name, bool caches) in new[] { ("PageCore, caches off", false), ("PageCore, per-CPU caches on (drained before measuring)", true) })
        {
            using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = pages, PerCpuCaches = caches, MaxOrder = 10 });
            (long[] failed, long free, long huge) = Replay(arena, trace);
            Console.WriteLine($"| {name} | {string.Join(' ', failed)} | {free:N0} | {huge:N0} | {(free == 0 ? 0 : huge * 512.0 / free):P1} |");
        }

        return 0;
    }

    /// <summary>Generates the trace (see the type's remarks).</summary>
    public static uint[] Generate(int seed, long pages, long operations, double fill, double longLived)
    {
        var rng = new Random(seed);
        int totalWeight = OrderWeights.Sum();
        long target = (long)(pages * fill);
        var records = new List<uint>((int)Math.Min(operations * 2, int.MaxValue / 2));
        var due = new PriorityQueue<int, long>(); // allocation number by the operation at which it is freed
        var orderOf = new List<byte>();
        var shortLived = new List<bool>();
        var live = new HashSet<int>();
        long used = 0;
        for (long now = 0; now < operations; now++)
        {
            while (due.TryPeek(out int id, out long when) && when <= now)
            {
                due.Dequeue();
                Free(id);
            }

            int pick = rng.Next(totalWeight), order = 0;
            while (pick >= OrderWeights[order])
            {
                pick -= OrderWeights[order++];
            }

            long size = 1L << order;
            while (used + size > target && due.TryDequeue(out int victim, out _))
            {
                Free(victim);
            }

            bool isShort = rng.NextDouble() >= longLived;
            long lifetime = isShort ? rng.Next(1, ShortMax + 1) : rng.Next(LongMin, LongMax + 1);
            int number = orderOf.Count;
            orderOf.Add((byte)order);
            shortLived.Add(isShort);
            live.Add(number);
            used += size;
            records.Add(AllocFlag | (uint)order);
            due.Enqueue(number, now + lifetime);
        }

        foreach (int id in live.Where(id => shortLived[id]).Order().ToList())
        {
            Free(id);
        }

        return [.. records];

        void Free(int id)
        {
            if (live.Remove(id))
            {
                used -= 1L << orderOf[id];
                records.Add((uint)id);
            }
        }
    }

    /// <summary>Replays a trace on an arena; returns the failed allocations by order, then the free pages and the number of order-9 blocks allocatable.</summary>
    public static (long[] Failed, long FreePages, long Huge) Replay(PageArena arena, uint[] trace)
    {
        var failed = new long[10];
        var held = new List<(Pfn Pfn, int Order)>();
        foreach (uint r in trace)
        {
            if ((r & AllocFlag) != 0)
            {
                int order = (int)(r & 0xF);
                if (arena.TryAllocPages(order, out Pfn p))
                {
                    held.Add((p, order));
                }
                else
                {
                    failed[order]++;
                    held.Add((default, -1));
                }
            }
            else
            {
                (Pfn p, int order) = held[(int)r];
                if (order >= 0)
                {
                    arena.FreePages(p, order);
                    held[(int)r] = (default, -1);
                }
            }
        }

        arena.Drain();
        long free = arena.FreePageCount;
        var huge = new List<Pfn>();
        while (arena.TryAllocPages(9, out Pfn h))
        {
            huge.Add(h);
        }

        foreach (Pfn h in huge)
        {
            arena.FreePages(h, 9);
        }

        foreach ((Pfn p, int order) in held.Where(h => h.Order >= 0))
        {
            arena.FreePages(p, order); // the long-lived blocks still held: the arena ends whole
        }

        arena.Drain();
        ArenaReport report = arena.Verify();
        if (!report.IsClean || report.FreePages != arena.PageCount)
        {
            throw new InvalidOperationException($"the arena is not whole after the replay: {report}");
        }

        return (failed, free, huge.Count);
    }

    /// <summary>Writes a trace file (see the type's remarks).</summary>
    public static void Write(string path, long pages, uint[] trace)
    {
        using FileStream f = File.Create(path);
        f.Write(Magic);
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, pages);
        f.Write(b);
        BinaryPrimitives.WriteInt64LittleEndian(b, trace.Length);
        f.Write(b);
        byte[] buffer = new byte[4 * trace.Length];
        for (int i = 0; i < trace.Length; i++)
        {
            BinaryPrimitives.WriteUInt32LittleEndian(buffer.AsSpan(4 * i), trace[i]);
        }

        f.Write(buffer);
    }
}
