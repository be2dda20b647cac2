using System.Runtime.InteropServices;

namespace PageCore.Stress.Scenarios;

/// <summary>A block a worker owns, with the stamp written into each of its pages.</summary>
/// <param name="Pfn">The block's head.</param>
/// <param name="Order">The block's order.</param>
/// <param name="Stamp">The owner's stamp.</param>
public readonly record struct Block(Pfn Pfn, int Order, long Stamp);

/// <summary>Stamping blocks with their owner, checking the stamp when they are freed, and the usual operation types.</summary>
public static class Blocks
{
    /// <summary>Allocation: CAS races lost in the allocator, slow-path entries (shared allocator, refills, reclaims).</summary>
    public static readonly OpKind Alloc = new("alloc",
        [ArenaCounter.AllocCasRetries, ArenaCounter.HandshakeRollbacks],
        [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills, ArenaCounter.Reclaims]);

    /// <summary>Free: CAS races lost in the allocator, slow-path entries (shared allocator, spills).</summary>
    public static readonly OpKind Free = new("free", [ArenaCounter.FreeCasRetries], [ArenaCounter.CoreFrees, ArenaCounter.CacheSpills]);

    /// <summary>A speculative get + put by a PFN walker.</summary>
    public static readonly OpKind WalkerGet = new("walker get+put", [ArenaCounter.SpeculativeGetRetries], []);

    /// <summary>A walker's get that found the page free (nothing taken).</summary>
    public static readonly OpKind WalkerMiss = new("walker miss", [], []);

    /// <summary>Writes the stamp into the first and last word of every page of the block.</summary>
    public static void Stamp(PageArena arena, Block b)
    {
        Span<byte> span = arena.GetSpan(b.Pfn, b.Order);
        for (int page = 0; page < 1 << b.Order; page++)
        {
            Span<long> words = MemoryMarshal.Cast<byte, long>(span.Slice(page * arena.PageSize, arena.PageSize));
            words[0] = b.Stamp;
            words[^1] = ~b.Stamp;
        }
    }

    /// <summary>The first page of the block whose stamp was overwritten (two owners of one page), or null.</summary>
    public static Pfn? FindDamage(PageArena arena, Block b)
    {
        Span<byte> span = arena.GetSpan(b.Pfn, b.Order);
        for (int page = 0; page < 1 << b.Order; page++)
        {
            Span<long> words = MemoryMarshal.Cast<byte, long>(span.Slice(page * arena.PageSize, arena.PageSize));
            if (words[0] != b.Stamp || words[^1] != ~b.Stamp)
            {
                return b.Pfn + (uint)page;
            }
        }

        return null;
    }

    /// <summary>Checks the stamp; reports a violation if another owner overwrote it.</summary>
    public static void Check(StressContext ctx, PageArena arena, Block b)
    {
        if (FindDamage(arena, b) is { } page)
        {
            ctx.Violation($"stamp overwritten in page {page} of block {b.Pfn} order {b.Order}, expected {b.Stamp:x}: two owners of one page", page);
        }
    }

    /// <summary>Checks the stamp and frees the block, reporting a refused free as a violation.</summary>
    public static void CheckAndFree(StressContext ctx, PageArena arena, Block b)
    {
        Check(ctx, arena, b);
        try
        {
            arena.FreePages(b.Pfn, b.Order);
        }
        catch (PageBugException bug)
        {
            ctx.Violation(bug);
        }
    }

    /// <summary>A hostile PFN walker: get_page_unless_zero + put_page on random PFNs until stopped.</summary>
    public static void Walk(StressContext ctx, PageArena arena, Recorder rec, int opGet, int opMiss, int seed, CancellationToken stop)
    {
        var rng = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            for (int step = 0; step < 256; step++)
            {
                var pfn = new Pfn((uint)rng.NextInt64(arena.PageCount));
                long t = rec.Begin();
                if (arena.TryGetPageUnlessZero(pfn))
                {
                    if (arena.RefCount(pfn) < 1)
                    {
                        ctx.Violation($"walker holds a reference on {pfn} but its count reads {arena.RefCount(pfn)}", pfn);
                    }

                    arena.PutPage(pfn);
                    rec.End(opGet, t);
                }
                else
                {
                    rec.Count(opMiss);
                }
            }
        }
    }
}
