namespace PageCore;

/// <summary>
/// No free block of the requested order could be found (the kernel's allocation failure report, "page allocation
/// failure: order:N"). A high-order request can fail while lower orders still succeed: the free pages may be scattered.
/// </summary>
public sealed class OutOfPagesException : OutOfMemoryException
{
    /// <summary>Creates the exception.</summary>
    /// <param name="order">The order asked for.</param>
    /// <param name="freePages">Free pages at the time of the failure, cached pages included.</param>
    /// <param name="pageCount">The arena's size in pages.</param>
    public OutOfPagesException(int order, long freePages, long pageCount)
        : base($"PageCore: page allocation failure: order:{order} ({1L << order} pages); {freePages} of {pageCount} pages free" +
               (freePages >= 1L << order ? " but no free naturally aligned block of that order (fragmentation)." : "."))
    {
        Order = order;
        FreePages = freePages;
        PageCount = pageCount;
    }

    /// <summary>The order that was asked for.</summary>
    public int Order { get; }

    /// <summary>Free pages when the allocation failed, cached pages included.</summary>
    public long FreePages { get; }

    /// <summary>The arena's size in pages.</summary>
    public long PageCount { get; }
}
