namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pcp-pingpong</c>: order-0 pages allocated on one thread and freed on another, the per-CPU caches' worst case:
/// producers' magazines run dry and consumers' overflow, so every batch crosses between threads through the per-CPU
/// depots. Pages travel in single-producer single-consumer rings, stamped by the producer and checked by the consumer.
/// </summary>
public sealed class PcpPingPongScenario : IScenario
{
    private const int RingSize = 1024;

    /// <inheritdoc />
    public string Name => "pcp-pingpong";

    /// <inheritdoc />
    public string KernelCounterpart => "pcp lists under remote frees (free_pcppages_bulk / rmqueue_bulk)";

    /// <inheritdoc />
    public string Rule => "allocator (B3, B5)";

    /// <inheritdoc />
    public bool HasLegacyForm => false;

    /// <inheritdoc />
    public string Description => "order-0 pages allocated on one thread and freed on another, through stamped SPSC rings";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, new OpKind("cross-thread free", [ArenaCounter.FreeCasRetries], [ArenaCounter.CoreFrees, ArenaCounter.CacheSpills]));
        int pairs = Math.Max(1, ctx.Threads / 2);
        var rings = Enumerable.Range(0, pairs).Select(_ => new Ring(RingSize)).ToArray();
        var workers = new List<(string, Action<Recorder>)>();
        for (int i = 0; i < pairs; i++)
        {
            Ring ring = rings[i];
            int id = i;
            workers.Add(($"producer-{i}", rec => Produce(ctx, arena, ring, rec, id)));
            workers.Add(($"consumer-{i}", rec => Consume(ctx, arena, ring, rec)));
        }

        TimeSpan elapsed = Harness.Run(ctx, workers, []);
        foreach (Ring ring in rings)
        {
            while (ring.TryTake(out Block b)) Blocks.CheckAndFree(ctx, arena, b);
        }

        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Produce(StressContext ctx, PageArena arena, Ring ring, Recorder rec, int id)
    {
        long serial = 0;
        try
        {
            while (DateTime.UtcNow < ctx.Deadline)
            {
                for (int step = 0; step < 256; step++)
                {
                    long t = rec.Begin();
                    if (!arena.TryAllocPages(0, out Pfn p))
                    {
                        Thread.Yield(); // the consumer is behind; the arena is full of pages in flight
                        continue;
                    }

                    rec.End(0, t);
                    var b = new Block(p, 0, ((long)(id + 1) << 40) | ++serial);
                    Blocks.Stamp(arena, b);
                    var spin = new SpinWait();
                    while (!ring.TryPut(b))
                    {
                        if (DateTime.UtcNow >= ctx.Deadline)
                        {
                            Blocks.CheckAndFree(ctx, arena, b);
                            return;
                        }

                        spin.SpinOnce();
                    }
                }
            }
        }
        finally
        {
            ring.Close();
        }
    }

    private static void Consume(StressContext ctx, PageArena arena, Ring ring, Recorder rec)
    {
        var spin = new SpinWait();
        while (true)
        {
            if (ring.TryTake(out Block b))
            {
                Blocks.Check(ctx, arena, b);
                long t = rec.Begin();
                arena.FreePages(b.Pfn, 0);
                rec.End(1, t);
                spin.Reset();
            }
            else if (ring.Closed)
            {
                return; // the producer is done; what is left is freed after the run
            }
            else
            {
                spin.SpinOnce();
            }
        }
    }

    /// <summary>The ring's head and tail on lines of their own (the runtime's <c>PaddedHeadAndTail</c>).</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 384)]
    private struct HeadAndTail
    {
        [System.Runtime.InteropServices.FieldOffset(128)] public long Head; // written by the consumer
        [System.Runtime.InteropServices.FieldOffset(256)] public long Tail; // written by the producer
    }

    /// <summary>A bounded single-producer single-consumer ring: the producer publishes a slot with a release store of
    /// the tail, the consumer reads it after an acquire load of the tail, and gives the slot back with a release store of
    /// the head.</summary>
    private sealed class Ring(int size)
    {
        private readonly Block[] _slots = new Block[size];
        private HeadAndTail _ends;
        private volatile bool _closed;

        public bool Closed => _closed && Volatile.Read(ref _ends.Head) == Volatile.Read(ref _ends.Tail);

        public bool TryPut(Block b)
        {
            long tail = _ends.Tail;
            if (tail - Volatile.Read(ref _ends.Head) >= _slots.Length)
            {
                return false;
            }

            _slots[tail % _slots.Length] = b;
            Volatile.Write(ref _ends.Tail, tail + 1);
            return true;
        }

        public bool TryTake(out Block b)
        {
            long head = _ends.Head;
            if (head == Volatile.Read(ref _ends.Tail))
            {
                b = default;
                return false;
            }

            b = _slots[head % _slots.Length];
            Volatile.Write(ref _ends.Head, head + 1);
            return true;
        }

        public void Close() => _closed = true;
    }
}
