using PageCore.Descriptors;
using PageCore.Systematic;

namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: the THP refcounting before Andrea Arcangeli's 2011 fix (seed 002), where a reference taken
/// through a tail page raised the tail's own count as well as the head's. Kept only so that the race lab can show the
/// bug being caught; never used by PageCore itself.
/// </summary>
/// <remarks>
/// With tail counts above zero, a speculative <c>get_page_unless_zero</c> on a random PFN (a working-set scanner, a
/// page-cache lookup racing with free and reuse) can succeed on a tail page, and take a "reference" that the folio's
/// head does not know about: the split or the free that follows moves or drops counts that no longer add up. The fix
/// keeps every tail's count at 0 and counts on the head only (rule 2 of ARCHITECTURE.md): <see cref="PageArena.GetPage"/>
/// and <see cref="PageArena.PutPage"/> on a tail act on the head.
/// </remarks>
internal static class LegacyTailRefcount
{
    /// <summary>The pre-2011 <c>get_page</c> on a tail: raise the head's count and the tail's own.</summary>
    public static void GetViaTail(PageArena arena, Pfn tail)
    {
        Pfn head = arena.HeadOf(tail);
        Atomic.Add(ref arena.DescriptorOf(head).RefCount, 1);
        Atomic.Add(ref arena.DescriptorOf(tail).RefCount, 1); // rule 2 broken on purpose: a tail's count moves
    }

    /// <summary>The pre-2011 <c>put_page</c> on a tail: drop the tail's own count, then the head's.</summary>
    public static void PutViaTail(PageArena arena, Pfn tail)
    {
        Pfn head = arena.HeadOf(tail);
        Atomic.Add(ref arena.DescriptorOf(tail).RefCount, -1);
        arena.PutPage(head);
    }
}
