using PageCore.Descriptors;
using PageCore.Systematic;

namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: <c>set_page_count</c> on a page that speculative getters can reach. Kept only so that the race
/// lab can show the bug being caught; never used by PageCore itself.
/// </summary>
/// <remarks>
/// <para>The networking drivers' page-fragment caches took many references at once by <em>storing</em> a new count
/// (<c>atomic_set(&amp;page->_count, bias)</c>) on a page they owned; Eric Dumazet's "net: fix races accessing
/// page->_count" series replaced that with <c>page_ref_add</c>, because a concurrent <c>get_page_unless_zero</c> can
/// land between the read the owner based its value on and the store, and the store wipes that increment out. The
/// powerpc page-table fragment allocator had the same bug with <c>set_page_count</c> (seed 000, kernel-algorithms.md
/// §1.6 and §2.4). The speculative holder's later put then takes a reference that belongs to someone else, and the
/// count underflows. Rule 1 of ARCHITECTURE.md forbids it; <see cref="PageArena.GetPages"/> is the fixed form.</para>
/// </remarks>
internal static class LegacyPageCount
{
    /// <summary>
    /// The broken way to take <paramref name="extra"/> more references: read the count, store count + extra. A plain
    /// store to a published refcount (rule 1 violated on purpose).
    /// </summary>
    public static void AddBySetPageCount(PageArena arena, Pfn pfn, int extra)
    {
        ref PageDescriptor d = ref arena.DescriptorOf(pfn);
        int seen = Atomic.Read(ref d.RefCount);
        Thread.SpinWait(8); // the window between the read and the store, as wide as a real driver's bookkeeping
        Atomic.Write(ref d.RefCount, seen + extra);
    }
}
