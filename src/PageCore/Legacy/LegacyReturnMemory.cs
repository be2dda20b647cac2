namespace PageCore.Legacy;

/// <summary>
/// BROKEN, for tests: a return pass that discards a chunk it only saw free, without claiming it from the allocator.
/// Reachable only through <see cref="PageArenaOptions.LegacyReturnMemoryWithoutClaim"/>; never the default.
/// </summary>
/// <remarks>
/// The interleaving: the pass reads every bit of chunk C clear; a thread allocates a page of C (its bit CAS stands,
/// since C's status is still Normal) and writes to it; the pass calls <c>madvise(MADV_DONTNEED)</c> over C, and the
/// kernel drops the page the thread just wrote: its next read finds zeros. The same race as free page reporting
/// reporting a page the buddy allocator handed out meanwhile, which the kernel avoids by isolating the page first
/// (<c>page_reporting_drain</c> takes pages off the free lists before it reports them). The fixed form claims the chunk
/// (<c>FrameAllocator.TryBeginReturn</c>: the huge half of the Dekker handshake) before the discard, so every small
/// claim meanwhile rolls back.
/// </remarks>
internal static class LegacyReturnMemory
{
    /// <summary>The legacy form's claim: none. The chunk is discarded on the strength of a read of its bits.</summary>
    /// <returns>Always true.</returns>
    public static bool ClaimWithoutTakingIt() => true;
}
