using System.Runtime.CompilerServices;

namespace PageCore.Diagnostics;

/// <summary>
/// Per-thread contention counters of one arena: each thread writes its own block with plain stores (no shared write,
/// no atomic instruction), found through one thread-local read, and only on slow paths. <see cref="Snapshot"/> sums the
/// blocks of every thread.
/// </summary>
internal sealed class ContentionCounters
{
    private const int Pad = 16; // 128 bytes of longs before and after the counters: no false sharing between blocks

    private static readonly int DefaultCount = Enum.GetValues<ArenaCounter>().Length;

    private readonly int Count;

    [ThreadStatic] private static Block? t_block;

    private Block[] _blocks = [];

    private readonly int _orders;

    /// <summary>Counters for every <see cref="ArenaCounter"/>, then blocks allocated and freed per order 0..<paramref name="maxOrder"/>.</summary>
    public ContentionCounters(int maxOrder = 0)
    {
        _orders = maxOrder + 1;
        Count = DefaultCount + (2 * _orders);
    }

    /// <summary>
    /// One block of <paramref name="order"/> allocated by the shared allocator; with <paramref name="slowPath"/> also
    /// counted as <see cref="ArenaCounter.CoreAllocs"/> (one call, one thread-local lookup for both).
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void AddAlloc(int order, bool slowPath)
    {
        long[] v = Mine().Values;
        v[Pad + DefaultCount + order]++;
        if (slowPath)
        {
            v[Pad + (int)ArenaCounter.CoreAllocs]++;
        }
    }

    /// <summary>
    /// <paramref name="blocks"/> blocks of <paramref name="order"/> freed off the caches' own counting; with
    /// <paramref name="slowPath"/> also counted as <see cref="ArenaCounter.CoreFrees"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void AddFree(int order, bool slowPath, long blocks = 1)
    {
        long[] v = Mine().Values;
        v[Pad + DefaultCount + _orders + order] += blocks;
        if (slowPath)
        {
            v[Pad + (int)ArenaCounter.CoreFrees]++;
        }
    }

    /// <summary>Blocks allocated (<c>[order]</c>) and freed (<c>[orders + order]</c>) per order, summed over threads.</summary>
    public long[] SumOrders()
    {
        long[] sum = new long[2 * _orders];
        foreach (Block b in Volatile.Read(ref _blocks))
        {
            for (int i = 0; i < sum.Length; i++)
            {
                sum[i] += Volatile.Read(ref b.Values[Pad + DefaultCount + i]);
            }
        }

        return sum;
    }

    private Block Mine()
    {
        Block? b = t_block;
        return b is not null && b.Owner == this ? b : Find();
    }

    /// <summary>Adds one to a counter of the calling thread.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void Add(ArenaCounter counter, long value = 1)
    {
        Block? b = t_block;
        if (b is null || b.Owner != this)
        {
            b = Find();
        }

        b.Values[Pad + (int)counter] += value;
    }

    /// <summary>The sum over every thread.</summary>
    public ArenaStatistics Snapshot()
    {
        Block[] blocks = Volatile.Read(ref _blocks);
        long[] sum = new long[DefaultCount];
        foreach (Block b in blocks)
        {
            for (int i = 0; i < DefaultCount; i++)
            {
                sum[i] += Volatile.Read(ref b.Values[Pad + i]);
            }
        }

        return new ArenaStatistics(sum, blocks.Length);
    }

    private Block Find()
    {
        // A thread keeps one block per arena it counted for; the list is short (one entry per arena the thread used).
        for (Block? b = t_block; b is not null; b = b.NextOfThread)
        {
            if (b.Owner == this)
            {
                return b;
            }
        }

        // (A thread that alternates between arenas walks this short list; it is one entry per arena it used.)

        var created = new Block(this, new long[Pad + Count + Pad]) { NextOfThread = t_block };
        t_block = created;
        while (true)
        {
            Block[] current = Volatile.Read(ref _blocks);
            if (Interlocked.CompareExchange(ref _blocks, [.. current, created], current) == current)
            {
                return created;
            }
        }
    }

    private sealed class Block(ContentionCounters owner, long[] values)
    {
        public readonly ContentionCounters Owner = owner;
        public readonly long[] Values = values;
        public Block? NextOfThread;
    }
}
