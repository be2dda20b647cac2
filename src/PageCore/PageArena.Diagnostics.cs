using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Allocator;
using PageCore.Descriptors;
using PageCore.Diagnostics;

namespace PageCore;

public sealed unsafe partial class PageArena
{
    private const int MaxReportedViolations = 100;

    /// <summary>
    /// The descriptor of a page as text, for bug reports (the kernel's <c>dump_page</c>).
    /// </summary>
    /// <param name="pfn">A page of the arena.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    public string DumpPage(Pfn pfn)
    {
        Descriptor(pfn.Value);
        return Dump(pfn.Value);
    }

    /// <summary>
    /// A full check of a quiescent arena: every page accounted exactly once (free in the shared allocator, cached, or in
    /// exactly one allocated block), refcounts consistent (0 on free, cached and non-head pages), the allocator's counts
    /// matching its bitfield, and in checked mode the poison of every poisoned free page intact. Free blocks are
    /// reported as maximal naturally aligned blocks per order: with this allocator they are maximally coalesced by
    /// construction, and the report shows whether the free space forms the blocks it should.
    /// </summary>
    /// <remarks>Call it only while no other thread uses the arena: a block moving between threads during the walk would be
    /// reported as a violation.</remarks>
    /// <returns>The report; <see cref="ArenaReport.IsClean"/> is true when nothing was wrong.</returns>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public ArenaReport Verify()
    {
        ThrowIfDisposed();
        const byte Unseen = 0, Free = 1, Cached = 2, Allocated = 3;
        long n = _pageCount;
        var owner = new PageMarks(n); // Unseen, Free, Cached or Allocated per page
        var violations = new List<string>();
        long violationCount = 0;
        void Violation(string text)
        {
            violationCount++;
            if (violations.Count < MaxReportedViolations)
            {
                violations.Add(text);
            }
        }

        // 1. Allocated blocks, from their heads; every other page must look free.
        long allocatedPages = 0, allocatedBlocks = 0, frozen = 0, cachedHeads = 0;
        for (long i = 0; i < n; i++)
        {
            ref PageDescriptor d = ref _desc[i];
            uint flags = d.Flags & ~(uint)PageFlags.Poisoned;
            if (flags == (uint)PageFlags.Cached)
            {
                cachedHeads++; // checked against the caches in step 2
                continue;
            }

            // A cached block its cache released while a speculative getter still held it is that getter's until its put:
            // checked as an allocated block (Released).
            if ((flags & (uint)PageFlags.AllocatedHead) == 0 && flags != (uint)(PageFlags.Cached | PageFlags.Released))
            {
                if (flags != 0)
                {
                    Violation($"pfn 0x{i:x}: flags 0x{flags:x} on a page that is not a block head. {Dump((uint)i)}");
                }

                if (d.RefCount != 0)
                {
                    Violation($"pfn 0x{i:x}: refcount {d.RefCount} on a page that is not a block head (a tail's count must be 0). {Dump((uint)i)}");
                }

                continue;
            }

            int order = d.Order;
            allocatedBlocks++;
            if (order > _maxOrder || (i & ((1L << order) - 1)) != 0 || i + (1L << order) > n)
            {
                Violation($"pfn 0x{i:x}: allocated head with impossible order {order}. {Dump((uint)i)}");
                continue;
            }

            if (d.RefCount < 0)
            {
                Violation($"pfn 0x{i:x}: negative refcount. {Dump((uint)i)}");
            }
            else if (d.RefCount == 0)
            {
                frozen++;
            }

            bool compound = (flags & (uint)PageFlags.CompoundHead) != 0;
            ulong link = ((ulong)i << 1) | 1;
            for (long p = i; p < i + (1L << order); p++)
            {
                if (owner[p] != Unseen)
                {
                    Violation($"pfn 0x{p:x}: in two allocated blocks (the second headed by pfn 0x{i:x}).");
                }

                owner[p] = Allocated;
                if (p != i && compound && _desc[p].CompoundInfo != link)
                {
                    Violation($"pfn 0x{p:x}: a tail of the folio at pfn 0x{i:x} does not point at its head. {Dump((uint)p)}");
                }
            }

            allocatedPages += 1L << order;
        }

        // 2. Blocks held by the per-CPU caches: cache-owned heads with exactly the cache's reference.
        long cachedPages = 0, cachedBlocks = 0;
        _caches?.ForEachCached((pfn, order) =>
        {
            if (pfn >= n || (pfn & ((1u << order) - 1)) != 0)
            {
                Violation($"cached block pfn 0x{pfn:x} order {order} is outside the arena or misaligned.");
                return;
            }

            ref PageDescriptor d = ref _desc[pfn];
            if ((d.Flags & ~(uint)PageFlags.Poisoned) != (uint)PageFlags.Cached || d.Order != order || d.RefCount != 1)
            {
                Violation($"pfn 0x{pfn:x}: held by a cache as order {order}, but its descriptor is not a cached head of that order with refcount 1. {Dump(pfn)}");
            }

            for (long p = pfn; p < pfn + (1L << order); p++)
            {
                if (owner[p] != Unseen)
                {
                    Violation($"pfn 0x{p:x}: cached but also {(owner[p] == Cached ? "cached twice" : "allocated")}.");
                }

                owner[p] = Cached;
            }

            cachedBlocks++;
            cachedPages += 1L << order;
        });

        if (cachedBlocks != cachedHeads)
        {
            Violation($"{cachedHeads} descriptors say cached but the caches hold {cachedBlocks} blocks (a cached block was lost).");
        }

        // 3. The shared allocator's bitfield and chunk states.
        long freePages = 0;
        for (int c = 0; c < _core.ChunkCount; c++)
        {
            int status = _core.ReadStatus(c);
            long first = (long)c << FrameAllocator.ChunkShift;
            bool huge = status == FrameAllocator.Huge;
            if (huge || status == FrameAllocator.HeadOnly)
            {
                for (int w = 0; w < FrameAllocator.WordsPerChunk; w++)
                {
                    ulong bits = _core.ReadWord((c * (long)FrameAllocator.WordsPerChunk) + w);
                    if (huge ? bits != 0 : (w == 0 && (bits & 1) != 0))
                    {
                        Violation($"chunk {c}: status {(huge ? "huge" : "head-only")} but bits that it does not use are set.");
                        break;
                    }
                }
            }

            for (int k = 0; k < FrameAllocator.ChunkPages; k++)
            {
                long p = first + k;
                if (p >= n)
                {
                    if ((_core.ReadWord(p >> 6) & (1UL << (int)(p & 63))) == 0)
                    {
                        Violation($"chunk {c}: padding page {k} past the arena's end is clear.");
                    }

                    continue;
                }

                if (_core.IsInUse((uint)p))
                {
                    if (owner[p] == Unseen)
                    {
                        Violation($"pfn 0x{p:x}: in use in the allocator but in no allocated block and no cache (a leak). {Dump((uint)p)}");
                    }
                    else if (huge && owner[p] != Allocated)
                    {
                        Violation($"pfn 0x{p:x}: held by a huge chunk but not in an allocated block.");
                    }
                }
                else if (owner[p] != Unseen)
                {
                    Violation($"pfn 0x{p:x}: free in the allocator but also {(owner[p] == Cached ? "cached" : "allocated")} (double free).");
                }
                else
                {
                    owner[p] = Free;
                    freePages++;
                    if (_checked && (_desc[p].Flags & (uint)PageFlags.Poisoned) != 0 && !IsPoisoned((uint)p))
                    {
                        Violation($"pfn 0x{p:x}: a free page was written after it was freed (poison damaged).");
                    }
                }
            }
        }

        // 4. Compound links: a page links to a head only as a tail of that allocated folio.
        for (long i = 0; i < n; i++)
        {
            ulong info = _desc[i].CompoundInfo;
            if (info == 0)
            {
                continue;
            }

            long h = (long)(info >> 1);
            bool linked = (info & 1) != 0 && h < i && h < n
                && (_desc[h].Flags & (uint)(PageFlags.AllocatedHead | PageFlags.CompoundHead)) == (uint)(PageFlags.AllocatedHead | PageFlags.CompoundHead)
                && i < h + (1L << _desc[h].Order);
            if (!linked)
            {
                Violation($"pfn 0x{i:x}: a compound link to pfn 0x{h:x}, which is not the head of an allocated folio containing it. {Dump((uint)i)}");
            }
        }

        // 5. Accounting: each page exactly once.
        if (freePages + cachedPages + allocatedPages != n)
        {
            Violation($"accounting: free {freePages} + cached {cachedPages} + allocated {allocatedPages} != {n} pages.");
        }

        // 6. The free space as maximal naturally aligned blocks (buddyinfo).
        long[] byOrder = new long[_maxOrder + 1];
        for (long p = 0; p < n;)
        {
            if (owner[p] != Free)
            {
                p++;
                continue;
            }

            int k = _maxOrder;
            while (k > 0 && ((p & ((1L << k) - 1)) != 0 || p + (1L << k) > n || !AllFree(owner, p, 1L << k)))
            {
                k--;
            }

            byOrder[k]++;
            p += 1L << k;
        }

        return new ArenaReport(n, _maxOrder, freePages, cachedPages, allocatedPages, allocatedBlocks, frozen, byOrder,
            violations, violationCount > violations.Count);

        static bool AllFree(PageMarks owner, long start, long length)
        {
            return owner.All(start, length, Free);
        }
    }

    /// <summary>The descriptor of <paramref name="p"/> as text.</summary>
    internal string Dump(uint p)
    {
        ref PageDescriptor d = ref _desc[p];
        return $"page pfn:0x{p:x} refcount:{Volatile.Read(ref d.RefCount)} mapcount:{d.MapCount} ptfrag:{d.PtFragCount} " +
               $"flags:0x{d.Flags:x}({(PageFlags)d.Flags}) order:{d.Order} compound_info:0x{d.CompoundInfo:x} lock:{d.Lock} " +
               $"next:{d.Next} prev:{d.Prev} gen:{d.Generation} private:{d.Private} index:0x{d.Index:x} mapping:0x{d.Mapping:x}";
    }

    // -------------------------------------------------------------------------------------------------------------------
    // Checked mode.

    /// <summary>
    /// <c>check_new_page</c> in checked mode: the block's other pages are clean, and every poisoned page still holds its
    /// poison (nobody wrote to it while it was free); the poison marks are cleared. The head's own state is checked by
    /// the caller (free head from the shared allocator, or cached head).
    /// </summary>
    private void CheckNewBlock(uint p, int order)
    {
        for (uint q = p; q < p + (1u << order); q++)
        {
            ref PageDescriptor d = ref _desc[q];
            if (q != p && ((d.Flags & ~(uint)PageFlags.Poisoned) != 0 || d.RefCount != 0))
            {
                ThrowBadNewPage(q);
            }

            if (d.MapCount != 0 || d.PtFragCount != 0)
            {
                ThrowBadNewPage(q);
            }

            if ((d.Flags & (uint)PageFlags.Poisoned) != 0)
            {
                if (!IsPoisoned(q))
                {
                    ThrowBug(q, "check_new_page", "the page was written after it was freed (its poison is damaged)");
                }

                d.Flags &= ~(uint)PageFlags.Poisoned;
            }
        }
    }

    /// <summary>
    /// <c>free_pages_prepare</c> in checked mode: the block's pages are not mapped or counted, and each is filled with
    /// <see cref="PoisonByte"/> and marked <see cref="PageFlags.Poisoned"/>. The head's flags are set by the caller after.
    /// </summary>
    private void PoisonBlock(uint p, int order)
    {
        for (uint q = p; q < p + (1u << order); q++)
        {
            ref PageDescriptor d = ref _desc[q];
            bool badTail = q != p && (d.Flags != 0 || d.RefCount != 0 || d.CompoundInfo != 0);
            if (badTail || d.MapCount != 0 || d.PtFragCount != 0)
            {
                ThrowBug(q, "free_pages_prepare", "bad page state on free: a page of the block is still flagged, counted or mapped");
            }

            new Span<byte>(_base + ((nuint)q << _pageShift), PageSize).Fill(PoisonByte);
            d.Flags |= (uint)PageFlags.Poisoned;
        }
    }

    private bool IsPoisoned(uint p) =>
        new ReadOnlySpan<byte>(_base + ((nuint)p << _pageShift), PageSize).IndexOfAnyExcept(PoisonByte) < 0;

    // -------------------------------------------------------------------------------------------------------------------
    // Throw helpers: cold, out of line.

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBug(uint p, string operation, string reason) =>
        throw new PageBugException(new Pfn(p), operation, reason, Dump(p));

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadPfn(uint p)
    {
        ThrowIfDisposed();
        throw new ArgumentOutOfRangeException("pfn", $"pfn 0x{p:x} is outside the arena (0..0x{_pageCount - 1:x}).");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadOrder(int order)
    {
        ThrowIfDisposed();
        throw new ArgumentOutOfRangeException(nameof(order), order, $"The order must be between 0 and MaxOrder = {_maxOrder}.");
    }

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadNewPage(uint p) =>
        ThrowBug(p, "check_new_page", "the allocator handed out a page that is still flagged or counted (bad page state)");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowGetFailed(uint head, RefGet r, string operation) =>
        ThrowBug(head, operation, r == RefGet.Overflow
            ? "refcount overflow: the count is at the overflow guard"
            : "refcount is 0: a get on a free or frozen page (get_page needs a reference already held)");

    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowBadFree(uint p, int order)
    {
        if ((uint)order >= _orderLimit)
        {
            ThrowBadOrder(order);
        }

        if ((p & ((1u << order) - 1)) != 0)
        {
            throw new ArgumentException($"pfn 0x{p:x} is not aligned to order {order}: a block of 2^{order} pages starts at a multiple of {1u << order}.", "pfn");
        }

        ref PageDescriptor d = ref _desc[p];
        if ((d.Flags & (uint)PageFlags.Cached) != 0)
        {
            ThrowBug(p, "__free_pages", "the block is already free: it sits in a per-CPU cache (double free)");
        }

        if ((d.Flags & (uint)PageFlags.AllocatedHead) == 0)
        {
            ThrowBug(p, "__free_pages", _core.IsInUse(p)
                ? "the page is not the head of an allocated block (a free of a tail or middle page)"
                : "the page is free (double free)");
        }

        if (d.Order != order)
        {
            ThrowBug(p, "__free_pages", $"wrong order: the block was allocated with order {d.Order}, freed with order {order}");
        }

        ThrowBug(p, "__free_pages", "the block head has unexpected flags");
    }

    /// <summary>Reports a free that the shared allocator refused (its bits were not set): a double free or corruption.</summary>
    [DoesNotReturn]
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal void ThrowCoreFreeFailed(uint p, int order) =>
        ThrowBug(p, "__free_one_page", $"the allocator does not have the order-{order} block as in use (double free or corrupted state)");

    /// <summary>Size of a descriptor, for tests.</summary>
    internal static int DescriptorSize => Marshal.SizeOf<PageDescriptor>();
}
