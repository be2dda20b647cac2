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

    /// <summary>
    /// A hostile PFN walker until stopped: <c>get_page_unless_zero</c> on a PFN, checks, a short hold, <c>put_page</c>.
    /// With <paramref name="published"/> (PFN + 1 per slot, written by the scenario's owners) it mostly aims at pages the
    /// owners are working on, as a lookup that found a stale entry does; one try in <paramref name="randomOneIn"/>, and
    /// every try without <paramref name="published"/>, takes any PFN.
    /// </summary>
    /// <remarks>
    /// Checks while it holds the reference: the page's count reads at least 1, and the page is no tail (holding a
    /// reference, a page cannot turn into a tail, so a tail here means the get landed on one: rule 2). A reference
    /// found on a tail is handed back to the tail's own count, where the broken get put it.
    /// </remarks>
    public static void Walk(StressContext ctx, PageArena arena, Recorder rec, int opGet, int opMiss, int seed, CancellationToken stop,
        long[]? published = null, int randomOneIn = 1, int maxSpin = 0)
    {
        var rng = new Random(seed);
        while (!stop.IsCancellationRequested)
        {
            for (int step = 0; step < 64; step++)
            {
                long slot = published is null ? 0 : Volatile.Read(ref published[rng.Next(published.Length)]);
                var pfn = slot != 0 && rng.Next(randomOneIn) != 0 ? new Pfn((uint)(slot - 1)) : new Pfn((uint)rng.NextInt64(arena.PageCount));
                long t = rec.Begin();
                if (!arena.TryGetPageUnlessZero(pfn))
                {
                    rec.Count(opMiss);
                    continue;
                }

                ulong link = Volatile.Read(ref arena.DescriptorOf(pfn).CompoundInfo);
                if ((link & 1) != 0)
                {
                    ctx.Violation($"get_page_unless_zero succeeded on tail page {pfn} of the folio at {new Pfn((uint)(link >> 1))} (rule 2)", pfn);
                    Interlocked.Decrement(ref arena.DescriptorOf(pfn).RefCount);
                    rec.End(opGet, t);
                    continue;
                }

                if (arena.RefCount(pfn) < 1)
                {
                    ctx.Violation($"walker holds a reference on {pfn} but its count reads {arena.RefCount(pfn)}", pfn);
                }

                if (maxSpin > 0)
                {
                    Thread.SpinWait(rng.Next(maxSpin));
                }

                arena.PutPage(pfn);
                rec.End(opGet, t);
            }
        }
    }
}
