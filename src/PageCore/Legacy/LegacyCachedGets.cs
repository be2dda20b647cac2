using PageCore.Descriptors;

namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: the gets of PageCore 0.x, which took a freed block held by a per-CPU cache for a live page. Kept
/// only so that the race lab (<c>cached-contract --legacy</c>) and the tests can show the bug being caught; never used
/// by PageCore itself.
/// </summary>
/// <remarks>
/// <para>A block freed into a magazine or a depot keeps the cache's own reference (refcount 1), so that the cache's hit
/// path needs no atomic instruction. These gets looked at the count alone (<c>get_page_unless_zero</c>) or refused only a
/// page whose flags were all clear (<c>get_page</c>), and a cached head has the <see cref="PageFlags.Cached"/> flag. The
/// interleaving needs no second thread: <c>FreePages(p)</c> returns, the block sits in the freeing thread's magazine,
/// and <c>TryGetPageUnlessZero(p)</c> raises 1 -> 2 and reports a live page; <c>GetPage(p)</c> and
/// <c>AddressSpace.MapPage(va, p)</c> take references on it, even in checked mode. A caller that trusted the documented
/// contract ("a freed page refuses every get") kept that reference, and the block leaked.</para>
/// <para>The fix (<see cref="PageArena.TryGetPageUnlessZero"/>): a get succeeds only when the head says
/// <see cref="PageFlags.AllocatedHead"/>; the speculative get reads the flags after its add and gives the reference back
/// when they do not.</para>
/// </remarks>
internal static class LegacyCachedGets
{
    /// <summary>The broken <c>get_page_unless_zero</c>: add-unless-zero on the count, no look at the flags.</summary>
    /// <param name="arena">The arena.</param>
    /// <param name="pfn">Any page of the arena.</param>
    /// <returns>True when a reference was taken.</returns>
    public static bool TryGetPageUnlessZero(PageArena arena, Pfn pfn)
    {
        ref PageDescriptor d = ref arena.DescriptorOf(pfn);
        int seen = PageRef.TryGetFromOne(ref d);
        if (seen == 1)
        {
            return true;
        }

        int retries = 0;
        return PageRef.TryGetUnlessZeroFrom(ref d, seen, ref retries) == RefGet.Taken;
    }

    /// <summary>The broken <c>get_page</c>: refuses a page whose flags are all clear, and nothing else.</summary>
    /// <param name="arena">The arena.</param>
    /// <param name="pfn">A page the caller believes it holds.</param>
    /// <exception cref="PageBugException">The page's flags are clear (a page in the shared allocator).</exception>
    public static void GetPage(PageArena arena, Pfn pfn)
    {
        ref PageDescriptor d = ref arena.DescriptorOf(pfn);
        if (d.Flags == 0)
        {
            throw new PageBugException(pfn, "get_page", "the page is free", arena.DumpPage(pfn));
        }

        PageRef.Inc(ref d);
    }
}
