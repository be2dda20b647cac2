namespace PageCore;

/// <summary>
/// A page frame number: the index of a page in its <see cref="PageArena"/> (the kernel's <c>pfn</c>; <c>page_to_pfn</c>
/// and <c>pfn_to_page</c> are arithmetic, as with a flat <c>mem_map</c>).
/// </summary>
/// <param name="Value">The index of the page, from 0 to <see cref="PageArena.PageCount"/> - 1.</param>
public readonly record struct Pfn(uint Value)
{
    /// <summary>The PFN <paramref name="delta"/> pages after <paramref name="pfn"/> (<c>nth_page</c>).</summary>
    public static Pfn operator +(Pfn pfn, uint delta) => new(checked(pfn.Value + delta));

    /// <summary>Whether the PFN is aligned to a block of <c>2^order</c> pages (a buddy block's start).</summary>
    /// <param name="order">The block order, 0 to 31.</param>
    public bool IsAlignedTo(int order) => order <= 0 || (Value & ((1u << order) - 1)) == 0;

    /// <summary>The PFN as text, e.g. <c>pfn 0x1a00</c>.</summary>
    public override string ToString() => $"pfn 0x{Value:x}";
}
