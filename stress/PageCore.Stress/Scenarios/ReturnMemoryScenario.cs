using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>return-memory</c> (free page reporting): workers allocate blocks of orders 0..3 and whole chunks (order 9), stamp
/// every page, hold them a moment and check the stamps, while a returner gives wholly free chunks back to the system
/// without pause (<see cref="PageArena.ReturnFreeMemory"/>: <c>madvise(MADV_DONTNEED)</c>, after which a page reads
/// zero). A stamp that reads zero or anything but its owner's is a page discarded under its owner.
/// </summary>
/// <remarks>
/// Legacy form (<c>--legacy</c>): <see cref="LegacyReturnMemory"/>, which discards a chunk it only saw free. A worker
/// that takes a page of that chunk between the returner's look at the bits and its <c>madvise</c> (whole chunks are
/// the likeliest: an order-9 block is exactly such a chunk) loses its stamp. The fixed form claims the chunk first, so
/// every allocation in the window rolls back and goes elsewhere. Linux only: elsewhere nothing is returned, and the run
/// says so instead of passing.
/// </remarks>
public sealed class ReturnMemoryScenario : IScenario
{
    /// <inheritdoc />
    public string Name => "return-memory";

    /// <inheritdoc />
    public string KernelCounterpart => "page_reporting_process vs __rmqueue (free page reporting isolates a page before it reports it)";

    /// <inheritdoc />
    public string Rule => "allocator";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "blocks stamped and checked while a returner discards wholly free chunks: none may be discarded in use";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        if (!OperatingSystem.IsLinux())
        {
            throw new PlatformNotSupportedException("return-memory needs Linux: memory is returned with madvise(MADV_DONTNEED).");
        }

        PageArena arena = PageArena.Create(new PageArenaOptions
        {
            Pages = Math.Clamp(ctx.ArenaPages, 4096, 1L << 14),
            MaxOrder = 9,
            ReturnFreeMemoryAfter = Timeout.InfiniteTimeSpan,
            LegacyReturnMemoryWithoutClaim = ctx.Legacy,
        });
        ctx.Arena = arena;
        ctx.DeclareOperations(Blocks.Alloc, Blocks.Free, new OpKind("return pass", [], []));
        int workers = Math.Max(1, ctx.Threads - 1);
        var threads = Enumerable.Range(0, workers)
            .Select(i => ($"worker-{i}", (Action<Recorder>)(rec => Work(ctx, arena, i, rec)))).ToList();
        var returner = new List<(string, Action<Recorder, CancellationToken>)>
        {
            ("returner", (rec, stop) => Return(arena, rec, stop)),
        };
        TimeSpan elapsed = Harness.Run(ctx, threads, returner);
        ctx.Log.WriteLine($"return-memory: {arena.BytesReturned / (1 << 20)} MiB returned to the system{(ctx.Legacy ? " (legacy: without claiming the chunks)" : "")}");
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Work(StressContext ctx, PageArena arena, int id, Recorder rec)
    {
        var rng = new Random(ctx.Seed + id);
        long stamp = ((long)(id + 1) << 40) | 1;
        var held = new Queue<Block>();
        while (DateTime.UtcNow < ctx.Deadline)
        {
            long t = rec.Begin();
            int order = rng.Next(4) == 0 ? 9 : rng.Next(4);
            if (arena.TryAllocPages(order, out Pfn p))
            {
                var b = new Block(p, order, stamp++);
                Blocks.Stamp(arena, b);
                held.Enqueue(b);
                rec.End(0, t);
            }

            if (held.Count > 3 || (held.Count > 0 && rng.Next(2) == 0))
            {
                t = rec.Begin();
                CheckAndFree(ctx, arena, held.Dequeue());
                rec.End(1, t);
            }
        }

        while (held.TryDequeue(out Block b))
        {
            CheckAndFree(ctx, arena, b);
        }
    }

    private static void CheckAndFree(StressContext ctx, PageArena arena, Block b)
    {
        if (Blocks.FindDamage(arena, b) is { } page)
        {
            bool zero = arena.GetSpan(page).IndexOfAnyExcept((byte)0) < 0;
            ctx.Violation($"page {page} of block {b.Pfn} order {b.Order} lost its stamp {b.Stamp:x}{(zero ? ": it reads zero, discarded under its owner" : "")}", page);
        }

        try
        {
            arena.FreePages(b.Pfn, b.Order);
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
        }
    }

    private static void Return(PageArena arena, Recorder rec, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            long t = rec.Begin();
            arena.ReturnFreeMemory();
            rec.End(2, t);
        }
    }
}
