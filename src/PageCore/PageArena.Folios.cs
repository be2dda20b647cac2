using System.Runtime.CompilerServices;
using PageCore.Allocator;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>The outcome of <see cref="PageArena.SplitFolio(Pfn, int, int)"/>.</summary>
public enum SplitResult
{
    /// <summary>The folio was split; every piece holds the references the folio held.</summary>
    Done,

    /// <summary>Somebody else holds a reference (the freeze failed): nothing was changed (<c>-EAGAIN</c>).</summary>
    Busy,
}

public sealed unsafe partial class PageArena
{
    /// <summary>
    /// <c>folio_alloc(order)</c> / <c>alloc_pages(__GFP_COMP)</c>: allocates a compound page (a folio) of
    /// <c>2^order</c> pages. The head comes back with refcount 1 and the order recorded once; every tail points at the
    /// head (<c>head | 1</c>) and keeps refcount 0 at all times, so gets and puts on a tail act on the head and a
    /// speculative <see cref="TryGetPageUnlessZero"/> on a tail always fails (rule 2).
    /// </summary>
    /// <param name="order">1..<see cref="MaxOrder"/> (an order-0 folio is an ordinary page).</param>
    /// <param name="head">The folio's head.</param>
    /// <returns>False when no free block of that order exists.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The order is out of range.</exception>
    public bool TryAllocFolio(int order, out Pfn head)
    {
        if (order < 1 || order > _maxOrder)
        {
            ThrowIfDisposed();
            throw new ArgumentOutOfRangeException(nameof(order), order, $"A folio has an order between 1 and MaxOrder = {_maxOrder}.");
        }

        MarkCompoundPagesInUse();
        uint p = AllocVia(default(PerCpu.ThreadRoute), order);
        if (p == PerCpu.PageCaches.NoPage)
        {
            head = default;
            return false;
        }

        PrepCompoundPage(p, order);
        head = new Pfn(p);
        return true;
    }

    /// <summary><see cref="TryAllocFolio"/> for the pool: the head, or <see cref="PerCpu.PageCaches.NoPage"/> when none is free.</summary>
    internal uint AllocFolioOrNone(int order) => TryAllocFolio(order, out Pfn head) ? head.Value : PerCpu.PageCaches.NoPage;

    /// <summary><see cref="TryAllocFolio"/> that throws <see cref="OutOfPagesException"/> on failure.</summary>
    /// <param name="order">1..<see cref="MaxOrder"/>.</param>
    /// <returns>The folio's head, with refcount 1.</returns>
    public Pfn AllocFolio(int order)
    {
        if (!TryAllocFolio(order, out Pfn head))
        {
            ThrowOutOfPages(order);
        }

        return head;
    }

    /// <summary>Whether <paramref name="pfn"/> is the head of a folio (<c>PageHead</c>).</summary>
    /// <param name="pfn">Any page of the arena.</param>
    public bool IsFolioHead(Pfn pfn) => (Volatile.Read(ref Descriptor(pfn.Value).Flags) & (uint)PageFlags.CompoundHead) != 0;

    /// <summary>The head of the folio a page belongs to right now (<c>compound_head</c>; the page itself if it is no tail).</summary>
    /// <remarks>Without a reference this may race with a split: recheck after taking one (see <see cref="TryGetFolioSpeculative"/>).</remarks>
    /// <param name="pfn">Any page of the arena.</param>
    public Pfn HeadOf(Pfn pfn) => new(HeadPfnOf(ref Descriptor(pfn.Value), pfn.Value));

    /// <summary>The order of the block headed by <paramref name="head"/> (<c>folio_order</c>).</summary>
    /// <param name="head">An allocated block head.</param>
    public int OrderOf(Pfn head) => Descriptor(head.Value).Order;

    /// <summary>
    /// <c>split_folio_to_order</c>: splits a folio into pieces of <c>2^newOrder</c> pages. The caller holds
    /// <paramref name="expectedRefs"/> references and nobody else may hold any: the head is frozen at exactly that count
    /// (<c>folio_ref_freeze</c>), and if that fails the result is <see cref="SplitResult.Busy"/> with nothing changed.
    /// While frozen every new piece is prepared (order, flags, and its tails re-linked) and its tail bit cleared before
    /// any piece becomes gettable; then every piece is unfrozen with a release store, the old head last. Afterwards the
    /// caller holds <paramref name="expectedRefs"/> references on every piece, each an independent folio (or page, for
    /// order 0) to be freed on its own.
    /// </summary>
    /// <param name="head">The folio's head.</param>
    /// <param name="newOrder">The pieces' order, 0..order-1.</param>
    /// <param name="expectedRefs">The references the caller holds, at least 1.</param>
    /// <returns><see cref="SplitResult.Done"/>, or <see cref="SplitResult.Busy"/> when someone else holds a reference.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PFN, order or count is out of range.</exception>
    /// <exception cref="PageBugException">The page is not the head of an allocated folio; nothing changed.</exception>
    public SplitResult SplitFolio(Pfn head, int newOrder, int expectedRefs = 1) => SplitFolio(head, newOrder, expectedRefs, null);

    /// <summary>
    /// <see cref="SplitFolio(Pfn, int, int)"/> with a step run for each new piece after it was unfrozen and before the
    /// old head is (the page cache stores each piece in its slots there, as <c>__split_unmapped_folio</c> does).
    /// </summary>
    internal SplitResult SplitFolio(Pfn head, int newOrder, int expectedRefs, Action<Pfn>? afterPieceUnfrozen)
    {
        uint h = head.Value;
        ref PageDescriptor d = ref Descriptor(h);
        if ((d.Flags & (uint)(PageFlags.AllocatedHead | PageFlags.CompoundHead)) != (uint)(PageFlags.AllocatedHead | PageFlags.CompoundHead))
        {
            ThrowBug(h, "split_folio_to_order", "the page is not the head of an allocated folio");
        }

        int order = d.Order;
        if (newOrder < 0 || newOrder >= order)
        {
            throw new ArgumentOutOfRangeException(nameof(newOrder), newOrder, $"A folio of order {order} splits into pieces of order 0..{order - 1}.");
        }

        if (expectedRefs < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(expectedRefs), expectedRefs, "The caller holds at least one reference.");
        }

        // H1: proceed only when the count is exactly the caller's; otherwise nothing changes.
        if (!PageRef.Freeze(ref d, expectedRefs))
        {
            return SplitResult.Busy;
        }

        if (order >= FrameAllocator.ChunkShift && newOrder < FrameAllocator.ChunkShift)
        {
            // The shared allocator holds an order-9+ block as whole chunks; pieces smaller than a chunk are freed as bits.
            _core.ConvertHugeToBits(h, order);
        }

        uint pieceSize = 1u << newOrder;
        uint end = h + (1u << order);

        // H2: prepare every new piece while everything is frozen (counts 0): order, flags, then clear the piece head's
        // tail link (the kernel's smp_wmb + clear_compound_head; Volatile.Write is a release store), then re-link its tails.
        for (uint p = h + pieceSize; p < end; p += pieceSize)
        {
            ref PageDescriptor piece = ref _desc[p];
            piece.Order = (byte)newOrder;
            piece.Flags = (uint)PageFlags.AllocatedHead | (newOrder > 0 ? (uint)PageFlags.CompoundHead : 0);
            piece.Index = d.Index + (p - h);
            piece.Mapping = d.Mapping;
            Volatile.Write(ref piece.CompoundInfo, 0UL);
            for (uint t = p + 1; t < p + pieceSize; t++)
            {
                Volatile.Write(ref _desc[t].CompoundInfo, ((ulong)p << 1) | 1);
            }
        }

        d.Order = (byte)newOrder;
        if (newOrder == 0)
        {
            d.Flags = (uint)PageFlags.AllocatedHead;
        }

        // H3: unfreeze every new piece (release: everything above is visible before it can be got), the old head last,
        // so that a lookup that still finds the old head keeps failing until every piece is in place.
        for (uint p = h + pieceSize; p < end; p += pieceSize)
        {
            PageRef.Unfreeze(ref _desc[p], expectedRefs);
            afterPieceUnfrozen?.Invoke(new Pfn(p));
        }

        PageRef.Unfreeze(ref d, expectedRefs);
        return SplitResult.Done;
    }

    /// <summary>
    /// <c>prep_compound_page</c>: flag the head and link every tail to it (release stores). A tail's count stays 0.
    /// </summary>
    private void PrepCompoundPage(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        d.Flags |= (uint)PageFlags.CompoundHead;
        ulong link = ((ulong)p << 1) | 1;
        for (uint t = p + 1; t < p + (1u << order); t++)
        {
            Volatile.Write(ref _desc[t].CompoundInfo, link);
        }
    }

    /// <summary>
    /// <c>free_tail_page_prepare</c> on every tail of a folio being freed: the tail must still point at the head and hold
    /// no count (checked in checked mode), then its link is cleared.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ClearCompoundTails(uint p, int order)
    {
        ulong link = ((ulong)p << 1) | 1;
        for (uint t = p + 1; t < p + (1u << order); t++)
        {
            ref PageDescriptor tail = ref _desc[t];
            if (_checked && (tail.CompoundInfo != link || tail.RefCount != 0 || tail.Flags != 0))
            {
                ThrowBug(t, "free_tail_page_prepare", $"a tail of the folio at pfn 0x{p:x} does not point at its head or holds a count");
            }

            Volatile.Write(ref tail.CompoundInfo, 0UL);
        }
    }
}
