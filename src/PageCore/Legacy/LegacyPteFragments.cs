namespace PageCore.Legacy;

/// <summary>
/// HISTORICAL, BROKEN: the powerpc PTE fragment allocator before 2018 (commit 5c1f6ee9a31c, "powerpc: Reduce PTE table
/// memory wastage", fixed by 4231aba000f5; seed 000). It counted live fragments in the page's main refcount: a new page
/// got <c>set_page_count(page, PTE_FRAG_NR)</c>, a plain store, and each free was a <c>put_page_testzero</c>. A
/// speculative getter's increment that lands between the allocation and that store is wiped out; its later put then
/// takes a fragment's count, and the page is freed while fragments are live, or a put underflows. Kept only so that
/// the race lab can show it being caught; never used by PageCore itself.
/// </summary>
internal sealed class LegacyPteFragments(PageArena arena, int fragmentsPerPage) : IPteFragments
{
    private long _cache;

    /// <inheritdoc />
    public int FragmentSize { get; } = arena.PageSize / fragmentsPerPage;

    /// <inheritdoc />
    public PtFragment AllocFragment()
    {
        while (true)
        {
            long w = Volatile.Read(ref _cache);
            if (w == 0)
            {
                Pfn page = arena.AllocPages(0); // refcount 1: reachable by speculative getters from here on
                Thread.SpinWait(8); // the setup between the allocation and the store, as the real allocator's ctor
                long word = ((long)(page.Value + 1) << 32) | 1;
                if (Interlocked.CompareExchange(ref _cache, word, 0) == 0)
                {
                    // set_page_count(page, PTE_FRAG_NR): a plain store to a published refcount (rule 1 broken on purpose).
                    Volatile.Write(ref arena.DescriptorOf(page).RefCount, fragmentsPerPage);
                }

                return new PtFragment(page, 0);
            }

            int next = (int)(w & 0xFFFF) + 1;
            if (Interlocked.CompareExchange(ref _cache, next == fragmentsPerPage ? 0 : w + 1, w) == w)
            {
                return new PtFragment(new Pfn((uint)((w >> 32) - 1)), (int)(w & 0xFFFF));
            }
        }
    }

    /// <inheritdoc />
    public void FreeFragment(PtFragment fragment) => arena.PutPage(fragment.Page); // put_page_testzero frees the page

    /// <inheritdoc />
    public Span<byte> GetSpan(PtFragment fragment) => arena.GetSpan(fragment.Page).Slice(fragment.Index * FragmentSize, FragmentSize);

    /// <inheritdoc />
    public void Dispose()
    {
        long w = Interlocked.Exchange(ref _cache, 0);
        if (w != 0)
        {
            var page = new Pfn((uint)((w >> 32) - 1));
            for (int i = (int)(w & 0xFFFF); i < fragmentsPerPage; i++)
            {
                arena.PutPage(page);
            }
        }
    }
}
