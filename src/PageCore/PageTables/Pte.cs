namespace PageCore;

/// <summary>The flag bits of a page-table entry (<see cref="Pte"/>), at PTE and PMD level.</summary>
[Flags]
public enum PteBits : ulong
{
    /// <summary>No bit.</summary>
    None = 0,

    /// <summary><c>_PAGE_PRESENT</c>: the entry maps a page (PTE, huge PMD) or points at a table (PMD without <see cref="Huge"/>).</summary>
    Present = 1UL << 0,

    /// <summary><c>_PAGE_PSE</c> / <c>pmd_trans_huge</c>: a PMD entry that maps a whole compound page.</summary>
    Huge = 1UL << 1,

    /// <summary><c>_PAGE_ACCESSED</c> (young).</summary>
    Accessed = 1UL << 2,

    /// <summary><c>_PAGE_DIRTY</c>.</summary>
    Dirty = 1UL << 3,

    /// <summary><c>_PAGE_RW</c>: writable.</summary>
    Write = 1UL << 4,

    /// <summary><c>H_PAGE_HASHPTE</c>: the software hash MMU holds an entry for this address (slot in <see cref="Pte.HashSlot"/>).</summary>
    Hashed = 1UL << 5,

    /// <summary><c>H_PAGE_BUSY</c>: taken by CAS while the entry is being hashed.</summary>
    Busy = 1UL << 6,
}

/// <summary>
/// A 64-bit page-table entry (<c>pte_t</c> / <c>pmd_t</c>; the same encoding at both levels).
/// </summary>
/// <remarks>
/// <para>Layout: bits 0..6 <see cref="PteBits"/>; bits 7..10 the hash slot (<see cref="HashSlot"/>); bits 12..19 the
/// fragment index of a PMD entry that points at a PTE table; bits 20..51 the PFN; bits 56..63 the tag
/// <see cref="Tag"/>. Every non-zero entry carries the tag, so memory that is not an entry (poison, garbage) reads as
/// <see cref="IsBad"/> instead of as a mapping.</para>
/// <para>0 is <c>pte_none</c>. Entries are written under the table's lock with release stores and read by lockless
/// walkers with acquire loads; see <see cref="AddressSpace"/>.</para>
/// </remarks>
/// <param name="Value">The raw 64-bit entry.</param>
public readonly record struct Pte(ulong Value)
{
    /// <summary>The tag in bits 56..63 of every valid non-zero entry.</summary>
    public const byte Tag = 0xC3;

    private const int SlotShift = 7;
    private const ulong SlotMask = 0xFUL << SlotShift;
    private const int FragShift = 12;
    private const ulong FragMask = 0xFFUL << FragShift;
    private const int PfnShift = 20;
    private const ulong PfnMask = 0xFFFF_FFFFUL << PfnShift;
    private const ulong TagBits = (ulong)Tag << 56;
    private const ulong FlagMask = 0x7F;

    /// <summary>The empty entry (<c>pte_none</c>).</summary>
    public static Pte None => default;

    /// <summary>An entry that maps <paramref name="page"/> with <paramref name="bits"/> (<see cref="PteBits.Present"/> is added).</summary>
    /// <param name="page">The page (for a huge PMD, the folio's head).</param>
    /// <param name="bits">Flag bits.</param>
    public static Pte Map(Pfn page, PteBits bits) =>
        new(TagBits | ((ulong)page.Value << PfnShift) | (ulong)(bits | PteBits.Present));

    /// <summary>A PMD entry pointing at the PTE table <paramref name="table"/> (<c>pmd_populate</c>).</summary>
    /// <param name="table">The table's fragment.</param>
    public static Pte Table(PtFragment table) =>
        new(TagBits | ((ulong)table.Page.Value << PfnShift) | ((ulong)table.Index << FragShift) | (ulong)PteBits.Present);

    /// <summary><c>pte_none</c> / <c>pmd_none</c>.</summary>
    public bool IsNone => Value == 0;

    /// <summary>A non-zero value without the tag: not an entry (<c>pmd_bad</c>); e.g. the poison of a freed table.</summary>
    public bool IsBad => Value != 0 && (Value >> 56) != Tag;

    /// <summary><c>pte_present</c>.</summary>
    public bool IsPresent => !IsBad && (Value & (ulong)PteBits.Present) != 0;

    /// <summary><c>pmd_trans_huge</c>: a PMD entry mapping a compound page.</summary>
    public bool IsHuge => IsPresent && (Value & (ulong)PteBits.Huge) != 0;

    /// <summary>A PMD entry pointing at a PTE table.</summary>
    public bool IsTable => IsPresent && (Value & (ulong)PteBits.Huge) == 0;

    /// <summary>The flag bits.</summary>
    public PteBits Bits => (PteBits)(Value & FlagMask);

    /// <summary>The mapped page, the huge PMD's folio head, or the table's page.</summary>
    public Pfn Pfn => new((uint)((Value & PfnMask) >> PfnShift));

    /// <summary>For a PMD entry pointing at a table: the table's fragment.</summary>
    public PtFragment Fragment => new(Pfn, (int)((Value & FragMask) >> FragShift));

    /// <summary>The hash-MMU slot recorded with <see cref="PteBits.Hashed"/> (group slot and secondary bit).</summary>
    public int HashSlot => (int)((Value & SlotMask) >> SlotShift);

    /// <summary>This entry with <paramref name="bits"/> set.</summary>
    /// <param name="bits">Bits to set.</param>
    public Pte With(PteBits bits) => new(Value | (ulong)bits);

    /// <summary>This entry with <paramref name="bits"/> cleared.</summary>
    /// <param name="bits">Bits to clear.</param>
    public Pte Without(PteBits bits) => new(Value & ~(ulong)bits);

    /// <summary>This entry with the hash slot set to <paramref name="slot"/> (0..15).</summary>
    /// <param name="slot">The slot.</param>
    public Pte WithHashSlot(int slot) => new((Value & ~SlotMask) | (((ulong)slot << SlotShift) & SlotMask));

    /// <summary>"none", "bad" with the raw value, or the PFN (with the fragment index of a table pointer) and the bits.</summary>
    public override string ToString() =>
        IsNone ? "none" : IsBad ? $"bad 0x{Value:X16}" : Fragment.Index != 0 ? $"{Pfn}#{Fragment.Index} {Bits}" : $"{Pfn} {Bits}";
}
