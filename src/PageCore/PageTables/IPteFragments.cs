namespace PageCore;

/// <summary>What the race lab needs of a page-table fragment allocator, fixed (<see cref="AddressSpace"/>) or legacy.</summary>
internal interface IPteFragments : IDisposable
{
    /// <summary>Bytes per fragment.</summary>
    int FragmentSize { get; }

    /// <summary><c>pte_fragment_alloc</c>.</summary>
    PtFragment AllocFragment();

    /// <summary><c>pte_fragment_free</c>.</summary>
    void FreeFragment(PtFragment fragment);

    /// <summary>The fragment's memory.</summary>
    Span<byte> GetSpan(PtFragment fragment);
}
