using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Arena;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>
/// An address space (the kernel's <c>mm_struct</c>), here owning a page-table fragment cache: PTE tables are smaller
/// than a page, so a page-table page is cut into <see cref="FragmentsPerPage"/> fragments handed out one by one
/// (powerpc's <c>pte_fragment_alloc</c>, <c>arch/powerpc/mm/pgtable-frag.c</c>). Later layers give it page tables.
/// </summary>
/// <remarks>
/// <para><b>The count</b> of live fragments is the page descriptor's own <see cref="PageDescriptor.PtFragCount"/>, never
/// the refcount (rule 1, seed 000): speculative getters touch the refcount, and nothing they do can change a fragment
/// count. A page-table page keeps refcount 1 (its allocation's) for its whole life.</para>
/// <para><b>The cache</b> is one word, <c>(page PFN + 1) &lt;&lt; 32 | next index</c>, where the kernel takes
/// <c>page_table_lock</c>. An index is claimed with one fetch-and-add, which never fails (measured: a CAS loop on this
/// word lost to a spin lock under two threads); each add returns a different index and the index only grows, so a
/// fragment is handed out at most once per page lifetime (F2). A new page is published with its count already at
/// <see cref="FragmentsPerPage"/> (fragment 0 for the caller, the rest cached); if another thread published a page
/// first, the new page keeps count 1 and its other fragments are never used, as in the kernel.</para>
/// <para><b>Invariants</b> (kernel-algorithms.md §2.3): F1 the count = fragments handed out and not freed + fragments
/// still cached; F2 each fragment handed out at most once; F3 the destructor runs exactly once, after the last
/// fragment is freed and the cache has let go of the page; F4 a page any of whose fragments went through
/// <see cref="FreeFragmentDeferred"/> is freed only after a grace period; F5 the refcount is never used for fragments.</para>
/// <para><b>Page tables</b> (<c>AddressSpace.Tables.cs</c> and the files beside it): a top table, PMD tables and PTE
/// tables carved from the fragment allocator, with split locks, <see cref="PteOffsetMapLock"/>, huge PMDs with a
/// deposited table, collapse and split, and a lockless walker; their invariants P1-P5, H4 and H5 are listed there.</para>
/// </remarks>
public sealed unsafe partial class AddressSpace : IPteFragments
{
    private readonly PageArena _arena;
    private readonly EpochDomain _epochs;
    private readonly bool _ownsEpochs;
    private PaddedWord _cache;
    private int _destroyed;
    private long _destructorRuns;

    /// <summary>Creates an address space whose page-table fragments and tables come from <paramref name="arena"/>.</summary>
    /// <param name="arena">The arena page-table pages come from.</param>
    /// <param name="fragmentsPerPage">Fragments per page-table page, a power of two from 4 to the page size / 64 (default 4: 1 KiB tables in 4 KiB pages).</param>
    /// <param name="epochs">The epoch domain lockless walkers enter and deferred frees wait in; null creates a private one.</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="fragmentsPerPage"/> is not a power of two from 4 to the page size / 64.</exception>
    public AddressSpace(PageArena arena, int fragmentsPerPage = 4, EpochDomain? epochs = null)
        : this(arena, new AddressSpaceOptions { FragmentsPerPage = fragmentsPerPage, Epochs = epochs })
    {
    }

    /// <summary>Creates an address space from <paramref name="options"/>.</summary>
    /// <param name="arena">The arena page-table pages come from.</param>
    /// <param name="options">Fragments per page, the epoch domain, and the race lab's legacy switches.</param>
    /// <exception cref="ArgumentOutOfRangeException">The fragment count is not a power of two from 4 to the page size / 64.</exception>
    public AddressSpace(PageArena arena, AddressSpaceOptions options)
    {
        ArgumentNullException.ThrowIfNull(arena);
        ArgumentNullException.ThrowIfNull(options);
        int fragmentsPerPage = options.FragmentsPerPage;
        if (fragmentsPerPage < 4 || (fragmentsPerPage & (fragmentsPerPage - 1)) != 0 || fragmentsPerPage > arena.PageSize / 64)
        {
            throw new ArgumentOutOfRangeException(nameof(options), fragmentsPerPage, $"FragmentsPerPage must be a power of two from 4 to {arena.PageSize / 64}.");
        }

        _arena = arena;
        _ownsEpochs = options.Epochs is null;
        _epochs = options.Epochs ?? new EpochDomain();
        _epochs.RegisterArena(arena); // deferred table frees land in this arena: its failing allocations reclaim them
        FragmentsPerPage = fragmentsPerPage;
        FragmentSize = arena.PageSize / fragmentsPerPage;
        _legacySkipPmdRecheck = options.LegacySkipPmdRecheck;
        _legacyFreeTablesAtOnce = options.LegacyFreeTablesAtOnce;
        InitGeometry();
        InitHash(options);
    }

    /// <summary>The arena the address space's tables and pages come from.</summary>
    public PageArena Arena => _arena;

    /// <summary>The epoch domain lockless walkers enter and deferred frees wait in.</summary>
    public EpochDomain Epochs => _epochs;

    /// <summary>Fragments per page-table page (<c>PTE_FRAG_NR</c>).</summary>
    public int FragmentsPerPage { get; }

    /// <summary>Bytes per fragment (<c>PTE_FRAG_SIZE</c>).</summary>
    public int FragmentSize { get; }

    /// <summary>How many times the page-table destructor ran (one per page-table page freed).</summary>
    public long DestructorRuns => Interlocked.Read(ref _destructorRuns);

    /// <summary>
    /// <c>pte_fragment_alloc</c>: a fragment from the cached page, or a new page-table page whose first fragment is
    /// returned and whose others are cached.
    /// </summary>
    /// <returns>The fragment; its memory is <see cref="FragmentSize"/> bytes at <see cref="GetSpan"/>.</returns>
    /// <exception cref="OutOfPagesException">No page is free.</exception>
    /// <exception cref="ObjectDisposedException">The address space was torn down.</exception>
    public PtFragment AllocFragment()
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _destroyed) != 0, this);
        while (true)
        {
            // No read before the add: on a contended line a read first would fetch it shared and the add fetch it again.
            long claimed = ClaimIndex();
            int index = (int)(claimed & IndexMask);
            if ((claimed >> 32) == 0)
            {
                return AllocFragmentPage(claimed + 1); // nothing cached: the word is 0 plus the adds that found it so
            }

            if (index < FragmentsPerPage)
            {
                if (index == FragmentsPerPage - 1)
                {
                    RetireExhausted(claimed + 1); // the page's last fragment: the cache lets go of it
                }

                return new PtFragment(new Pfn((uint)((claimed >> 32) - 1)), index);
            }

            RetireExhausted(claimed + 1); // an add past the last fragment claims nothing
        }
    }

    /// <summary>
    /// <c>pte_fragment_free</c>: gives a fragment back; the free that takes the page's count to 0 runs the page-table
    /// destructor and frees the page (after a grace period if a fragment of it was freed through
    /// <see cref="FreeFragmentDeferred"/>).
    /// </summary>
    /// <param name="fragment">A fragment from <see cref="AllocFragment"/>.</param>
    /// <exception cref="PageBugException">The page's fragment count is already 0 (a double free); nothing changed.</exception>
    public void FreeFragment(PtFragment fragment)
    {
        ref PageDescriptor d = ref _arena.DescriptorOf(fragment.Page);
        int left = DropFragment(ref d);
        if (left == 0)
        {
            Destroy(fragment.Page);
        }
        else if (left < 0)
        {
            throw new PageBugException(fragment.Page, "pte_fragment_free", "the page's fragment count is already 0 (a double free); nothing changed", _arena.DumpPage(fragment.Page));
        }
    }

    /// <summary>
    /// Fragment-count transition: one live fragment fewer. Returns the count left, or -1 when the count was already 0
    /// (a double free), in which case nothing was written.
    /// </summary>
    /// <remarks>
    /// Invariant (F3): the count never goes below 0, so a double free can never be "undone" over another thread's write.
    /// A decrement then an undo would let the count read -1 for an instant, and the plain store of
    /// <see cref="FragmentsPerPage"/> that publishes a reused page-table page could land in between: the undo would then
    /// leave the new page one fragment too many, and it would never be freed. A CAS on the value read refuses instead;
    /// its first guess is the value just read, so an uncontended free costs one locked instruction as the decrement did.
    /// Each successful CAS is a full fence: the freeing thread that takes the count to 0 sees every fragment holder's
    /// stores.
    /// </remarks>
    private static int DropFragment(ref PageDescriptor d)
    {
        int v = Volatile.Read(ref d.PtFragCount);
        while (true)
        {
            if (v <= 0)
            {
                return -1;
            }

            int seen = Interlocked.CompareExchange(ref d.PtFragCount, v - 1, v);
            if (seen == v)
            {
                return v - 1;
            }

            v = seen;
        }
    }

    /// <summary>
    /// <c>pte_free_defer</c>: frees a fragment that lockless walkers may still read. The page is marked, and only the
    /// final free of the page waits for a grace period (a page has one deferral slot but several fragments).
    /// </summary>
    /// <param name="fragment">A fragment from <see cref="AllocFragment"/>.</param>
    public void FreeFragmentDeferred(PtFragment fragment)
    {
        MarkDeferred(ref _arena.DescriptorOf(fragment.Page));
        FreeFragment(fragment);
    }

    /// <summary>The memory of a fragment (<see cref="FragmentSize"/> bytes).</summary>
    /// <param name="fragment">A live fragment.</param>
    public Span<byte> GetSpan(PtFragment fragment) =>
        _arena.GetSpan(fragment.Page).Slice(fragment.Index * FragmentSize, FragmentSize);

    /// <summary>
    /// <c>pte_frag_destroy</c> at address-space teardown: cancels the fragments never handed out of the cached page, exactly
    /// once; the page is freed now if none of its fragments is live. Fragments still live stay valid and are freed with
    /// <see cref="FreeFragment"/> as usual.
    /// </summary>
    private void DestroyFragmentCache()
    {
        long w = Interlocked.Exchange(ref _cache.Value, 0);
        if ((w >> 32) != 0)
        {
            var page = new Pfn((uint)((w >> 32) - 1));
            int next = (int)Math.Min(w & IndexMask, FragmentsPerPage);
            if (Interlocked.Add(ref _arena.DescriptorOf(page).PtFragCount, -(FragmentsPerPage - next)) == 0)
            {
                Destroy(page);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------------

    private const long IndexMask = 0xFFFF_FFFF;

    /// <summary>
    /// Cache transition: claim the next fragment index with one fetch-and-add (it never fails, so contending threads do
    /// not retry against each other the way a CAS loop does).
    /// </summary>
    /// <remarks>Keeps F2: every add returns a different index; an index below <see cref="FragmentsPerPage"/> of the page
    /// the word names is a fragment handed out to exactly that caller. Adds that land on an empty or exhausted word claim
    /// nothing and are ignored. Full fence: the caller sees the page's setup published before the word.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long ClaimIndex() => Interlocked.Add(ref _cache.Value, 1) - 1;

    /// <summary>
    /// Cache transition: an exhausted word (index at or past <see cref="FragmentsPerPage"/>, or a page part of 0 with
    /// stray adds in it) is replaced by 0, so that a new page can be cached.
    /// </summary>
    /// <remarks>Keeps F3: the page is no longer cached once its last fragment is handed out, and its count then covers
    /// only the fragments handed out. CAS on the exact word read, retried while late adds keep changing it; any thread
    /// may help.</remarks>
    private void RetireExhausted(long seen)
    {
        long w = Volatile.Read(ref _cache.Value);
        while ((w >> 32) == (seen >> 32) && ((w >> 32) == 0 || (int)(w & IndexMask) >= FragmentsPerPage))
        {
            long now = Interlocked.CompareExchange(ref _cache.Value, 0, w);
            if (now == w)
            {
                return;
            }

            w = now;
        }
    }

    /// <summary>A new page-table page: fragment 0 for the caller, the others cached (or wasted if another page won).</summary>
    private PtFragment AllocFragmentPage(long emptyWord)
    {
        Pfn page = _arena.AllocPages(0);
        ref PageDescriptor d = ref _arena.DescriptorOf(page);

        // pagetable_pte_ctor. The fragment count is not reachable by speculative getters, and nobody else can see
        // this page yet: plain stores, published by the CAS below (full fence) or owned by this caller alone.
        d.Flags |= (uint)PageFlags.PageTable;
        d.PtFragCount = FragmentsPerPage;
        PtLock.Init(ref d);
        long word = ((long)(page.Value + 1) << 32) | 1;

        // Publish over the empty word seen (0, or 0 with stray adds from claims that found it empty).
        if (Interlocked.CompareExchange(ref _cache.Value, word, emptyWord) != emptyWord)
        {
            // Another thread cached a page first: this one serves one fragment only (the kernel wastes the rest too).
            Volatile.Write(ref d.PtFragCount, 1);
        }

        return new PtFragment(page, 0);
    }

    /// <summary>Marks a page whose final free must wait for a grace period (<c>folio_set_active</c>).</summary>
    /// <remarks>An atomic OR: several fragment holders may mark the same page at once; the final free reads it after the
    /// fully ordered decrement that took the count to 0.</remarks>
    private static void MarkDeferred(ref PageDescriptor d) =>
        Interlocked.Or(ref Unsafe.As<uint, int>(ref d.Flags), (int)PageFlags.DeferredFree);

    /// <summary>
    /// The last fragment of a page is gone: <c>pagetable_dtor</c> + free, exactly once per page (F3), now or, when a
    /// fragment of it went through <see cref="FreeFragmentDeferred"/>, after a grace period (F4): the destructor too, so
    /// the page stays a page table with a usable lock while a walker may still reach it.
    /// </summary>
    private void Destroy(Pfn page)
    {
        if ((Volatile.Read(ref _arena.DescriptorOf(page).Flags) & (uint)PageFlags.DeferredFree) != 0)
        {
            _epochs.Defer(static s => ((DeferredPage)s!).Run(), new DeferredPage(this, page));
        }
        else
        {
            DestroyNow(page);
        }
    }

    /// <summary><c>pagetable_dtor</c> (the flags cleared, the lock poisoned) and the page freed.</summary>
    private void DestroyNow(Pfn page)
    {
        ref PageDescriptor d = ref _arena.DescriptorOf(page);
        uint flags = (uint)Interlocked.And(ref Unsafe.As<uint, int>(ref d.Flags), unchecked((int)~(uint)(PageFlags.PageTable | PageFlags.DeferredFree)));
        if ((flags & (uint)PageFlags.PageTable) == 0)
        {
            throw new PageBugException(page, "pagetable_dtor", "the page-table destructor ran twice (the page is no longer a page table)", _arena.DumpPage(page));
        }

        PtLock.Free(ref d);
        Interlocked.Increment(ref _destructorRuns);
        _arena.FreePages(page, 0);
    }

    private sealed class DeferredPage(AddressSpace owner, Pfn page)
    {
        public void Run() => owner.DestroyNow(page);
    }

    [StructLayout(LayoutKind.Explicit, Size = 3 * CacheLine.PaddedSize)]
    private struct PaddedWord
    {
        [FieldOffset(CacheLine.PaddedSize)] public long Value;
    }
}
