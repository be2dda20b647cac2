namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: checked mode's <c>put_page</c> up to PageCore 0.x, which decided on the count alone. Kept only so
/// that the tests can show the bug being caught; never used by PageCore itself.
/// </summary>
/// <remarks>
/// <para>A freed block in a per-CPU cache keeps the cache's reference (count 1). A speculative getter's add on it (1 -> 2)
/// is transient: it reads the <c>Cached</c> flag after the add and gives the reference back. A put by a thread that
/// holds no reference, landing between that add and that give-back, found count 2, took 2 -> 1 and was accepted, even in
/// checked mode: it took the getter's reference, and the misuse it existed to report went unreported. The count alone
/// cannot tell that put from the put of a getter that raced the free legitimately, because the cached free wrote no
/// count.</para>
/// <para>The fix (checked mode, <c>PageArena.PutChecked</c>): a block enters a cache only with its count frozen, so no
/// legitimate reference survives into the cache, and the put decides and decrements in one 8-byte CAS over flags and
/// count, refusing any put on a block whose flags say cached.</para>
/// </remarks>
internal static class LegacyCachedPut
{
    /// <summary>The broken put: a 4-byte CAS on the count, no look at the flags unless it is the last reference.</summary>
    /// <param name="arena">The arena.</param>
    /// <param name="pfn">The page.</param>
    /// <returns>True when this put freed the page.</returns>
    public static bool PutPage(PageArena arena, Pfn pfn) => arena.PutByCount(pfn);
}
