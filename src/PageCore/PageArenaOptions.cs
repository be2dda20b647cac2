namespace PageCore;

/// <summary>How to build a <see cref="PageArena"/>.</summary>
/// <remarks>Kernel counterpart: the zone and <c>mem_map</c> set up at boot (<c>free_area_init</c>).</remarks>
public sealed class PageArenaOptions
{
    /// <summary>The number of pages; a positive multiple of <c>2^MaxOrder</c>, at most 2^32 - 2^MaxOrder. Default 65,536 (256 MiB of 4 KiB pages).</summary>
    public long Pages { get; set; } = 65536;

    /// <summary>log2 of the page size: 12 gives 4 KiB pages (12..24). Default 12.</summary>
    public int PageShift { get; set; } = 12;

    /// <summary>The largest block order the allocator hands out (<c>MAX_PAGE_ORDER</c>), 0..20. Default 10 (4 MiB of 4 KiB pages).</summary>
    public int MaxOrder { get; set; } = 10;

    /// <summary>
    /// Whether orders 0..3 go through per-thread magazines and per-CPU batch depots (the kernel's pcp lists) before the
    /// shared allocator. Default true.
    /// </summary>
    public bool PerCpuCaches { get; set; } = true;

    /// <summary>
    /// Checked mode: free pages are poisoned and the poison is verified when they are handed out again, and every free
    /// checks the block's pages (the kernel's <c>CONFIG_DEBUG_VM</c> and page poisoning). Slower. Default false.
    /// </summary>
    public bool Checked { get; set; }

    /// <summary>Pages moved per batch between an order-0 magazine and the per-CPU depot or the allocator (<c>pcp->batch</c>), 1..256. Default 32.</summary>
    public int PerCpuBatch { get; set; } = 32;

    /// <summary>Ask the kernel for transparent huge pages on the arena's memory (<c>madvise(MADV_HUGEPAGE)</c>). Default true.</summary>
    public bool AdviseHugePages { get; set; } = true;

    /// <summary>
    /// Count contention and slow-path events per thread (<see cref="PageArena.Statistics"/>). The counters are written
    /// only on slow paths, never on a cache hit. Default true.
    /// </summary>
    public bool CollectStatistics { get; set; } = true;

    /// <summary>
    /// Where the data pages live. <see cref="ArenaBacking.Auto"/> (the default) takes a pinned array when the pages fit
    /// one (up to 2 GiB), else native memory.
    /// </summary>
    public ArenaBacking Backing { get; set; } = ArenaBacking.Auto;

    /// <summary>
    /// How long a chunk of <see cref="PageArena.ChunkBytes"/> must stay wholly free before its memory is given back to the
    /// operating system (<c>madvise(MADV_DONTNEED)</c>; the pages stay in the arena and read as zero when next used).
    /// <see cref="Timeout.InfiniteTimeSpan"/> never gives memory back on its own (<see cref="PageArena.ReturnFreeMemory"/>
    /// still does when called). Not in checked mode: a page given back would lose its poison (as the kernel's free page
    /// reporting stands down under page poisoning). Linux only. Default 10 s.
    /// </summary>
    public TimeSpan ReturnFreeMemoryAfter { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>For benchmarks and tests: make the allocator scan with scalar code even where SIMD is available.</summary>
    internal bool ForceScalarScan { get; set; }

    /// <summary>
    /// For tests: use the <see cref="HandOverForm.Symmetric"/> magazine hand-over even where the process-wide barrier is
    /// trusted (<see cref="ProcessBarrier.HandOver"/>), so that both forms run on one machine.
    /// </summary>
    internal bool ForceSymmetricHandOver { get; set; }

    /// <summary>
    /// Legacy form, for tests only (<see cref="Legacy.LegacyHandOver"/>): the magazines' hand-over is asymmetric on the
    /// owner's side while the stealer fences only its own CPU, as under a process-wide barrier that interrupts nobody.
    /// Broken: a block can be handed out twice.
    /// </summary>
    internal bool LegacyStealWithoutRemoteBarrier { get; set; }

    /// <summary>
    /// Legacy form, for tests only (<see cref="Legacy.LegacyReturnMemory"/>): a return pass discards a chunk it saw free
    /// without claiming it first. Broken: a page allocated meanwhile loses what its owner wrote.
    /// </summary>
    internal bool LegacyReturnMemoryWithoutClaim { get; set; }

    /// <summary>Throws <see cref="ArgumentOutOfRangeException"/> naming the first setting that is out of range.</summary>
    internal void Validate()
    {
        if (PageShift is < 12 or > 24)
        {
            throw new ArgumentOutOfRangeException(nameof(PageShift), PageShift, "PageShift must be between 12 (4 KiB pages) and 24 (16 MiB pages).");
        }

        if (MaxOrder is < 0 or > 20)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxOrder), MaxOrder, "MaxOrder must be between 0 and 20.");
        }

        long block = 1L << MaxOrder;
        if (Pages <= 0 || Pages % block != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(Pages), Pages, $"Pages must be a positive multiple of 2^MaxOrder = {block}.");
        }

        if (Pages > uint.MaxValue + 1L - block)
        {
            throw new ArgumentOutOfRangeException(nameof(Pages), Pages, "Pages must fit a 32-bit PFN.");
        }

        if ((Pages << PageShift) <= 0 || (Pages << PageShift) > (1L << 47))
        {
            throw new ArgumentOutOfRangeException(nameof(Pages), Pages, "The arena must be smaller than 128 TiB.");
        }

        if (ReturnFreeMemoryAfter < TimeSpan.Zero && ReturnFreeMemoryAfter != Timeout.InfiniteTimeSpan)
        {
            throw new ArgumentOutOfRangeException(nameof(ReturnFreeMemoryAfter), ReturnFreeMemoryAfter, "ReturnFreeMemoryAfter must be zero or more, or Timeout.InfiniteTimeSpan.");
        }

        if (!Enum.IsDefined(Backing))
        {
            throw new ArgumentOutOfRangeException(nameof(Backing), Backing, "Backing must be Auto, PinnedArray or Native.");
        }

        // The array holds the pages and their alignment (a page, or 2 MiB for huge pages; see PageArena's constructor).
        if (Backing == ArenaBacking.PinnedArray && (Pages << PageShift) + Math.Max(1L << 21, 1L << PageShift) > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(Backing), Backing, $"A pinned array holds at most {Array.MaxLength} bytes: {Pages} pages of {1 << PageShift} bytes need Native (or Auto).");
        }

        if (PerCpuBatch is < 1 or > 256)
        {
            throw new ArgumentOutOfRangeException(nameof(PerCpuBatch), PerCpuBatch, "PerCpuBatch must be between 1 and 256.");
        }
    }

    internal PageArenaOptions Clone() => (PageArenaOptions)MemberwiseClone();
}
