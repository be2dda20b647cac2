using PageCore.Descriptors;
using PageCore.Systematic;

namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: the put of PageCore 0.x, which detected a put at zero only after it had written: it decremented,
/// saw -1, and added the reference back. Kept only so that the race lab (<c>put-at-zero --legacy</c>) and the tests can
/// show the bug being caught; never used by PageCore itself.
/// </summary>
/// <remarks>
/// <para>The interleaving: a page is free (count 0) or frozen (count 0, its owner working on it). A misused
/// <c>put_page</c> (a stale holder's) decrements to -1. Before it adds the reference back, a correct transition builds on
/// the counter: the owner's <c>page_ref_unfreeze</c> stores its count, or an allocation's <c>set_page_refcounted</c>
/// stores 1 (or its <c>check_new_page</c> reads -1 and reports a bad page state). The undo then adds one to the correct
/// value: the page ends one reference too high and never frees, and the misuse report names the wrong party. The kernel
/// can afford decrement-then-check because a put at zero there is already a crash (<c>VM_BUG_ON_PAGE</c>); a library
/// that promises "misuse changes nothing" cannot.</para>
/// <para>The fix (<see cref="PageRef.PutUnlessLast"/>): a CAS on the value seen, which refuses 0 without writing.</para>
/// </remarks>
internal static class LegacyPutAtZero
{
    /// <summary>The broken put: decrement, and when the result is negative, undo after a window as wide as a bug report's
    /// own bookkeeping.</summary>
    /// <param name="arena">The arena.</param>
    /// <param name="pfn">A page (its own count, no head resolution: the legacy race needs none).</param>
    /// <returns>True when the count reached 0 (the caller would free the page); false when it stayed positive.</returns>
    /// <exception cref="PageBugException">A put at zero, reported after the undo.</exception>
    public static bool PutPage(PageArena arena, Pfn pfn)
    {
        ref PageDescriptor d = ref arena.DescriptorOf(pfn);
        int now = Atomic.Add(ref d.RefCount, -1);
        if (now >= 0)
        {
            return now == 0;
        }

        Thread.SpinWait(32); // the window: building the report, as the old code did before its undo
        Atomic.Add(ref d.RefCount, 1);
        throw new PageBugException(pfn, "put_page", "refcount is already 0: a put at zero (the page is free or frozen)", arena.DumpPage(pfn));
    }
}
