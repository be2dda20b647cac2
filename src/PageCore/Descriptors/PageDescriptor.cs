using System.Runtime.InteropServices;

namespace PageCore.Descriptors;

/// <summary>
/// The 64-byte descriptor kept for every page of an arena: the user-space <c>struct page</c>.
/// </summary>
/// <remarks>
/// <para>Descriptors live in one native array, cache-line aligned and pinned for the arena's life; PFN = index.
/// One descriptor is exactly 64 bytes, as <c>struct page</c> is on 64-bit kernels (a test asserts it).</para>
/// <para>Who writes what, and with which primitive:</para>
/// <list type="bullet">
/// <item><see cref="RefCount"/>: only through <see cref="PageRef"/> (atomic add/sub, CAS freeze, release-store unfreeze);
/// never a plain store once the page can be reached by a speculative getter (rule 1 of ARCHITECTURE.md).</item>
/// <item><see cref="Flags"/>, <see cref="Order"/>, <see cref="Generation"/>: plain stores by the page's current owner,
/// published by the refcount transition that hands the page over.</item>
/// <item><see cref="MapCount"/>, <see cref="PtFragCount"/>: domain counters with their own atomics (later layers);
/// they are never folded into <see cref="RefCount"/> (the lesson of seed 000).</item>
/// <item><see cref="CompoundInfo"/>: written with <see cref="System.Threading.Volatile"/> by the compound layer;
/// bit 0 set marks a tail whose head PFN is <c>CompoundInfo &gt;&gt; 1</c> (the kernel's <c>head | 1</c>).</item>
/// <item><see cref="Next"/>, <see cref="Prev"/>: free-list links, owned by whoever holds the chain the page is on.</item>
/// </list>
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = Size)]
internal struct PageDescriptor
{
    /// <summary>The size of a descriptor in bytes.</summary>
    public const int Size = 64;

    /// <summary>log2 of <see cref="Size"/>.</summary>
    public const int SizeShift = 6;

    /// <summary><see cref="PageFlags"/> bits (<c>page->flags</c>).</summary>
    [FieldOffset(0)] public uint Flags;

    /// <summary>The reference count (<c>page->_refcount</c>): 0 when free, 1 on a fresh allocation.</summary>
    [FieldOffset(4)] public int RefCount;

    /// <summary>The number of page-table mappings of the page (<c>page->_mapcount</c> + 1).</summary>
    [FieldOffset(8)] public int MapCount;

    /// <summary>Live page-table fragments carved from this page (<c>ptdesc->pt_frag_refcount</c>).</summary>
    [FieldOffset(12)] public int PtFragCount;

    /// <summary>Compound-page link (<c>page->compound_head</c>): 0 for a head or single page, <c>(head &lt;&lt; 1) | 1</c> for a tail.</summary>
    [FieldOffset(16)] public ulong CompoundInfo;

    /// <summary>The order of the allocated block this page heads (<c>folio_order</c>, or the buddy order on the free lists).</summary>
    [FieldOffset(24)] public byte Order;

    /// <summary>Reserved for the compound layer (the kernel keeps the folio order in the first tail).</summary>
    [FieldOffset(25)] public byte CompoundOrder;

    /// <summary>Reserved.</summary>
    [FieldOffset(26)] public ushort Reserved0;

    /// <summary>The split page-table lock word (<c>ptdesc->ptl</c>), used by the page-table layer.</summary>
    [FieldOffset(28)] public int Lock;

    /// <summary>Free-list / batch link: the next page's PFN + 1, or 0 at the end (<c>page->lru.next</c>).</summary>
    [FieldOffset(32)] public uint Next;

    /// <summary>Free-list back link: PFN + 1, or 0 (<c>page->lru.prev</c>); used by later layers.</summary>
    [FieldOffset(36)] public uint Prev;

    /// <summary>In checked mode, incremented on every allocation of the page as a block head; lets checked handles catch use after free.</summary>
    [FieldOffset(40)] public uint Generation;

    /// <summary>Owner-defined word (<c>page->private</c>).</summary>
    [FieldOffset(44)] public uint Private;

    /// <summary>The page's index in its owner's address space or file (<c>page->index</c>).</summary>
    [FieldOffset(48)] public ulong Index;

    /// <summary>The owner's mapping key (<c>page->mapping</c>).</summary>
    [FieldOffset(56)] public ulong Mapping;
}
