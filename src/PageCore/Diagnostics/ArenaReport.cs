using System.Text;

namespace PageCore;

/// <summary>
/// The result of <see cref="PageArena.Verify"/>: how every page is accounted for, the free space as maximal aligned
/// blocks per order, and every violation found.
/// </summary>
public sealed class ArenaReport
{
    internal ArenaReport(long pageCount, int maxOrder, long freePages, long cachedPages, long allocatedPages,
        long allocatedBlocks, long frozenBlocks, long[] freeBlocksByOrder, IReadOnlyList<string> violations, bool truncated)
    {
        PageCount = pageCount;
        MaxOrder = maxOrder;
        FreePages = freePages;
        CachedPages = cachedPages;
        AllocatedPages = allocatedPages;
        AllocatedBlocks = allocatedBlocks;
        FrozenBlocks = frozenBlocks;
        FreeBlocksByOrder = freeBlocksByOrder;
        Violations = violations;
        ViolationsTruncated = truncated;
    }

    /// <summary>Pages in the arena.</summary>
    public long PageCount { get; }

    /// <summary>The arena's largest order.</summary>
    public int MaxOrder { get; }

    /// <summary>Pages free in the shared allocator.</summary>
    public long FreePages { get; }

    /// <summary>Pages free but held in per-thread magazines or per-CPU depots.</summary>
    public long CachedPages { get; }

    /// <summary>Pages in allocated blocks.</summary>
    public long AllocatedPages { get; }

    /// <summary>Allocated blocks (one per allocated head).</summary>
    public long AllocatedBlocks { get; }

    /// <summary>Allocated blocks whose refcount is frozen at 0.</summary>
    public long FrozenBlocks { get; }

    /// <summary>
    /// The free pages of the shared allocator as maximal naturally aligned blocks: entry <c>k</c> counts blocks of order
    /// <c>k</c> (the kernel's <c>/proc/buddyinfo</c>). After <see cref="PageArena.Drain"/> on an arena with nothing
    /// allocated, the whole arena shows as blocks of <see cref="MaxOrder"/>.
    /// </summary>
    public IReadOnlyList<long> FreeBlocksByOrder { get; }

    /// <summary>Every violation found, in words (at most 100 are kept).</summary>
    public IReadOnlyList<string> Violations { get; }

    /// <summary>True when more violations were found than <see cref="Violations"/> holds.</summary>
    public bool ViolationsTruncated { get; }

    /// <summary>True when no violation was found: every page is accounted exactly once.</summary>
    public bool IsClean => Violations.Count == 0;

    /// <summary>Throws <see cref="InvalidOperationException"/> listing the violations unless the report is clean.</summary>
    public void ThrowIfViolated()
    {
        if (!IsClean)
        {
            throw new InvalidOperationException(ToString());
        }
    }

    /// <summary>The report as text: the accounting line, the free blocks per order, and the violations.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append($"pages {PageCount}: free {FreePages}, cached {CachedPages}, allocated {AllocatedPages} in {AllocatedBlocks} blocks");
        if (FrozenBlocks > 0) sb.Append($" ({FrozenBlocks} frozen)");
        sb.AppendLine();
        sb.Append("free blocks by order:");
        for (int k = 0; k < FreeBlocksByOrder.Count; k++) sb.Append(' ').Append(FreeBlocksByOrder[k]);
        sb.AppendLine();
        if (IsClean)
        {
            sb.Append("no violations");
        }
        else
        {
            sb.Append(Violations.Count).Append(ViolationsTruncated ? "+" : "").AppendLine(" violations:");
            foreach (string v in Violations) sb.Append("  ").AppendLine(v);
        }

        return sb.ToString();
    }
}
