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

    /// <summary>Counters for every <see cref="ArenaCounter"/>.</summary>
    public ContentionCounters()
        : this(DefaultCount)
    {
    }

    /// <summary><paramref name="count"/> counters addressed by index (<see cref="AddAt"/>).</summary>
    public ContentionCounters(int count) => Count = count;

    /// <summary>Adds to counter <paramref name="index"/> of the calling thread's block.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public void AddAt(int index, long value = 1)
    {
        Block? b = t_block;
        if (b is null || b.Owner != this)
        {
            b = Find();
        }

        b.Values[Pad + index] += value;
    }

    /// <summary>Every counter summed over the threads (a racy read).</summary>
    public long[] Sum()
    {
        long[] sum = new long[Count];
        foreach (Block b in Volatile.Read(ref _blocks))
        {
            for (int i = 0; i < Count; i++)
            {
                sum[i] += Volatile.Read(ref b.Values[Pad + i]);
            }
        }

        return sum;
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
        long[] sum = new long[Count];
        foreach (Block b in blocks)
        {
            for (int i = 0; i < Count; i++)
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
