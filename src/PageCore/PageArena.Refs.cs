using System.Runtime.CompilerServices;
using PageCore.Descriptors;
using PageCore.Systematic;

namespace PageCore;

public sealed unsafe partial class PageArena
{
    /// <summary>
    /// <c>get_page</c>: takes one more reference on a page the caller already holds a reference on. On a tail page of a
    /// compound page the reference lands on the head.
    /// </summary>
    /// <param name="pfn">A page with refcount &gt; 0 (or a tail of such a compound page).</param>
    /// <remarks>
    /// <para>The caller must already hold a reference. A get on a free page is refused, before anything is written, in
    /// every mode: the page's flags say free, and so do those of a freed block that a per-CPU cache holds. As in the kernel, the count itself is checked only in checked mode
    /// (<see cref="PageArenaOptions.Checked"/>, the counterpart of <c>CONFIG_DEBUG_VM</c>): there a get on a frozen page
    /// or past the overflow guard is refused too, leaving the counter as it was. Without checked mode the count is not
    /// read, which keeps a get within a few percent of a bare <see cref="Interlocked.Increment(ref int)"/>;
    /// <see cref="TryGetPageUnlessZero"/>, the get for callers that do not hold a reference, checks overflow always.</para>
    /// <para>Misuse on a block that is being reused by other threads at the same moment (a get by a caller without a
    /// reference, racing another thread's allocation and free of that block) can only be refused exactly in checked mode,
    /// where the get is a CAS that refuses 0 and rechecks the flags after it; without checked mode the unconditional add
    /// is what keeps <c>get_page</c> at the price of one locked instruction.</para>
    /// </remarks>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    /// <exception cref="PageBugException">The page is free (in the shared allocator or in a per-CPU cache); in checked
    /// mode also: its refcount is 0 (frozen) or at the overflow guard. The counter was left as it was.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void GetPage(Pfn pfn)
    {
        ref PageDescriptor d = ref HeadOf(pfn.Value, out uint head);
        if ((d.Flags & (uint)PageFlags.AllocatedHead) == 0 || _checked)
        {
            // A free or cached page (refused before any write: the flags share the count's line and reading them before
            // the locked add costs nothing, unlike reading the count), or checked mode.
            GetPageChecked(ref d, head);
            return;
        }

        PageRef.Inc(ref d);
    }

    /// <summary>
    /// <c>get_page</c> with the checks of checked mode, and the refusal of a free page in every mode: the get is a CAS
    /// that refuses 0 (<see cref="PageRef.IncChecked"/>), and like a speculative get it rechecks the flags after its add
    /// and gives the reference back if the block was freed meanwhile. A caller that holds a reference never sees either;
    /// one that does not (the misuse checked mode exists for) is refused without leaving a write behind.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void GetPageChecked(ref PageDescriptor d, uint head)
    {
        RefGet r = (d.Flags & (uint)PageFlags.AllocatedHead) == 0 ? RefGet.Dead : PageRef.IncChecked(ref d);
        if (r == RefGet.Taken && !IsAllocatedAfterGet(ref d))
        {
            UndoSpeculativeGet(head);
            r = RefGet.Dead;
        }

        if (r != RefGet.Taken)
        {
            ThrowGetFailed(head, r, "get_page");
        }
    }

    /// <summary>
    /// <c>page_ref_add</c> / <c>folio_ref_add</c>: takes <paramref name="count"/> more references at once on a page the
    /// caller holds (the way a page-fragment cache takes a bias of references). One atomic add, never a store of a
    /// computed count: a concurrent speculative get cannot be lost (rule 1).
    /// </summary>
    /// <param name="pfn">A page with refcount &gt; 0 (or a tail of such a compound page).</param>
    /// <param name="count">References to add, at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena or <paramref name="count"/> is below 1.</exception>
    /// <exception cref="PageBugException">The page is free (in the shared allocator or in a per-CPU cache), frozen, or the
    /// count would pass the overflow guard; nothing changed.</exception>
    public void GetPages(Pfn pfn, int count)
    {
        if (count < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "page_ref_add needs a count of at least 1.");
        }

        ref PageDescriptor d = ref HeadOf(pfn.Value, out uint head);
        RefGet r = (d.Flags & (uint)PageFlags.AllocatedHead) == 0 ? RefGet.Dead : PageRef.Add(ref d, count);
        if (r == RefGet.Taken && !IsAllocatedAfterGet(ref d))
        {
            // Freed meanwhile (a caller without a reference): give the references back, keep the refusal exact.
            for (int i = 0; i < count; i++)
            {
                PutFrom(head, PageRef.Count(ref d), giveBack: true);
            }

            r = RefGet.Dead;
        }

        if (r != RefGet.Taken)
        {
            ThrowGetFailed(head, r, "page_ref_add");
        }
    }

    /// <summary>
    /// <c>put_page</c>: drops one reference. The put that takes the count to 0 frees the block: its whole recorded order,
    /// or the head alone after <see cref="FreePages"/> freed the rest. On a tail page the put goes to the head.
    /// </summary>
    /// <param name="pfn">A page the caller holds a reference on.</param>
    /// <returns>True when this put freed the page.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    /// <remarks>
    /// A put by a caller that holds no reference is refused when the count shows it: at zero, or on a freed block whose
    /// only reference is its cache's. In checked mode (<see cref="PageArenaOptions.Checked"/>) a put on a freed block
    /// that a per-CPU cache holds is refused always, even while another thread's speculative get has its transient
    /// reference on it (the count then reads 2). Without checked mode that put takes the getter's reference, as any put
    /// without a reference takes somebody's: the getter finds out when it gives its reference back, writes nothing, and
    /// <see cref="ArenaCounter.StolenReferences"/> counts it (see <c>PutChecked</c> for why only checked mode can tell).
    /// </remarks>
    /// <exception cref="PageBugException">A put at zero (a free or frozen page), or a put that would take the reference a
    /// per-CPU cache holds on a freed block; in checked mode any put on a freed block a cache holds. The counter was left
    /// as it was: a refused put writes nothing.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool PutPage(Pfn pfn)
    {
        uint p = pfn.Value;
        if (p < _tailFreeLimit)
        {
            // In range, no compound page in the arena yet, and not checked mode (a checked arena keeps the limit at 0):
            // the page is its own head.
            return PutHead(p);
        }

        return PutPageSlow(p);
    }

    /// <summary>
    /// The put of unchecked mode on a block's head: the 2 -> 1 guess, then <see cref="PutFrom"/> from the count it found.
    /// True when this put freed the block.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool PutHead(uint head)
    {
        int seen = PageRef.TryPutFromTwo(ref _desc[head]);
        return seen != 2 && PutFrom(head, seen);
    }

    /// <summary>
    /// <c>get_page_unless_zero</c>: takes a reference on this page only if its own count is live (&gt; 0) and it is an
    /// allocated block head. Never revives a free or frozen page, never succeeds on a freed block that a per-CPU cache
    /// holds (from <see cref="FreePages"/>' return until the block is handed out again), and never on a tail page of a
    /// compound page, whose count is 0 at all times (rule 2, the fix of seed 002): use
    /// <see cref="TryGetFolioSpeculative"/> to take a reference on the folio containing a PFN. Any thread may call it on
    /// any PFN at any moment; after it succeeds the caller must recheck that the page is still what it wanted and
    /// <see cref="PutPage"/> it if not.
    /// </summary>
    /// <remarks>
    /// A cached block keeps the cache's reference (count 1) so that the cache's hit path needs no atomic instruction; the
    /// get therefore adds first (a full fence), then reads the flags, and when they do not say allocated it gives the
    /// reference back at once (the speculative get of a page that turned out not to be the one wanted, as
    /// <c>folio_try_get</c> callers do) and fails. The flag load after the add costs nothing measurable: the CAS brought
    /// the line in.
    /// </remarks>
    /// <param name="pfn">Any page of the arena.</param>
    /// <returns>True when a reference was taken.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    /// <exception cref="PageBugException">The refcount is at the overflow guard.</exception>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryGetPageUnlessZero(Pfn pfn)
    {
        uint p = pfn.Value;
        ref PageDescriptor d = ref Descriptor(p);
        int seen = PageRef.TryGetFromOne(ref d);
        if (seen != 1 && TryGetUnlessZeroFrom(p, seen, "get_page_unless_zero") != RefGet.Taken)
        {
            return false;
        }

        return IsAllocatedAfterGet(ref d) || UndoSpeculativeGet(p);
    }

    /// <summary>
    /// The recheck that makes a speculative get refuse a freed, cached block: after the add (a full fence), does the
    /// head still say allocated? An acquire load: it cannot be performed before the add, on any architecture.
    /// </summary>
    /// <remarks>
    /// Invariant kept: a get succeeds only on a block that was allocated at a moment when the getter held its reference.
    /// A block is freed into a cache by a plain flag store (<see cref="PageFlags.Cached"/>) made after its owner read the
    /// count as 1, and published to other threads by whatever hands the knowledge of the free on (a release or a fence):
    /// a getter that learns of the free that way reads Cached here and gives its reference back.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool IsAllocatedAfterGet(ref PageDescriptor d) =>
        (Atomic.Read(ref d.Flags) & (uint)PageFlags.AllocatedHead) != 0;

    /// <summary>
    /// Tests only: called by a speculative get between its add and its give-back, once it found the block not allocated
    /// (the window in which another thread's put without a reference can take the getter's). Null by default; read only
    /// on that cold path.
    /// </summary>
    internal Action<Pfn>? GiveBackHook { get; set; }

    /// <summary>Gives back a speculative reference that landed on a block that is not allocated; always false.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool UndoSpeculativeGet(uint head)
    {
        _counters?.Add(ArenaCounter.SpeculativeGetRetries);
        GiveBackHook?.Invoke(new Pfn(head));
        PutFrom(head, PageRef.Count(ref _desc[head]), giveBack: true);
        return false;
    }

    /// <summary>
    /// The rest of an add-unless-zero on <paramref name="p"/> after the first guess found <paramref name="seen"/>: the
    /// CAS loop, its lost races counted, an overflow reported as <paramref name="caller"/>'s bug. Dead or Taken.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private RefGet TryGetUnlessZeroFrom(uint p, int seen, string caller)
    {
        int retries = 0;
        RefGet r = PageRef.TryGetUnlessZeroFrom(ref _desc[p], seen, ref retries);
        if (retries != 0)
        {
            _counters?.Add(ArenaCounter.SpeculativeGetRetries, retries);
        }

        if (r == RefGet.Overflow)
        {
            ThrowGetFailed(p, r, caller);
        }

        return r;
    }

    /// <summary>
    /// The speculative get of the folio containing any PFN (<c>folio_try_get</c> after <c>page_folio</c>, as GUP-fast and
    /// PFN walkers do it): read the page's head, add-unless-zero on the head, then recheck that the page still belongs
    /// to that head; if it does not (the folio was split or freed and reused meanwhile), put the head and retry.
    /// </summary>
    /// <param name="pfn">Any page of the arena.</param>
    /// <param name="head">The head of the folio that was referenced (the page itself when it is not a tail).</param>
    /// <returns>True with a reference on <paramref name="head"/>; false when the page is free or frozen right now.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    public bool TryGetFolioSpeculative(Pfn pfn, out Pfn head)
    {
        uint p = pfn.Value;
        ref PageDescriptor page = ref Descriptor(p);
        for (int attempt = 0; attempt < 64; attempt++)
        {
            // 1. page_folio(): no reference held, so this may race with a split; it is only a guess.
            uint h = HeadPfnOf(ref page, p);

            // 2. folio_try_get(): add-unless-zero on the head. A success is a full fence.
            int seen = PageRef.TryGetFromOne(ref _desc[h]);
            if (seen != 1 && TryGetUnlessZeroFrom(h, seen, "folio_try_get") != RefGet.Taken)
            {
                // The head was free or frozen. If the page no longer points at it (a split finished), try again.
                if (HeadPfnOf(ref page, p) != h)
                {
                    continue;
                }

                head = default;
                return false;
            }

            // 3. The recheck (rule 2): does the page still belong to the folio we hold? A split clears tail links
            // before it unfreezes any piece, and unfreezes the old head last, so after a successful get the links read
            // here are current.
            bool sameFolio = HeadPfnOf(ref page, p) == h;
            if (sameFolio && (_desc[h].Flags & (uint)PageFlags.AllocatedHead) != 0)
            {
                head = new Pfn(h);
                return true;
            }

            PutFrom(h, PageRef.Count(ref _desc[h]), giveBack: true); // not what we wanted: drop it (this put may free the folio)
            if (sameFolio)
            {
                break; // the page is in no allocated folio (it sits free in a per-CPU cache): a miss
            }
        }

        head = default;
        return false;
    }

    /// <summary>The head PFN a page's compound link names right now (<c>compound_head</c>, read with acquire).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint HeadPfnOf(ref PageDescriptor page, uint p)
    {
        ulong info = Volatile.Read(ref page.CompoundInfo);
        return (info & 1) != 0 ? (uint)(info >> 1) : p;
    }

    /// <summary>
    /// <c>page_ref_freeze</c>: if the page's refcount is exactly <paramref name="expected"/>, sets it to 0 so that every
    /// speculative get fails until <see cref="UnfreezeRefs"/>. The caller must hold <paramref name="expected"/> references.
    /// </summary>
    /// <param name="pfn">The page (a tail resolves to its head).</param>
    /// <param name="expected">The references the caller accounts for, at least 1.</param>
    /// <returns>True when frozen; false, with nothing changed, when someone else holds a reference.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena or <paramref name="expected"/> is below 1.</exception>
    /// <exception cref="PageBugException">The page is not allocated (free, or held by a per-CPU cache); nothing changed.</exception>
    public bool FreezeRefs(Pfn pfn, int expected)
    {
        if (expected < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(expected), expected, "page_ref_freeze needs the expected count of the caller's references, at least 1.");
        }

        ref PageDescriptor d = ref HeadOf(pfn.Value, out uint head);
        if ((d.Flags & (uint)PageFlags.AllocatedHead) == 0)
        {
            // Free and cached pages are not the caller's to freeze (a cached page holds the cache's reference).
            ThrowBug(head, "page_ref_freeze", "the page is not an allocated block head");
        }

        return PageRef.Freeze(ref d, expected);
    }

    /// <summary>
    /// <c>page_ref_unfreeze</c>: publishes <paramref name="count"/> on a frozen page with a release store, so everything
    /// written while frozen is visible before anyone can take a reference.
    /// </summary>
    /// <param name="pfn">A page frozen by <see cref="FreezeRefs"/>.</param>
    /// <param name="count">The new refcount, at least 1.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena or <paramref name="count"/> is out of range.</exception>
    /// <exception cref="PageBugException">The page is not frozen (its refcount is not 0, or it is not an allocated page);
    /// nothing was changed.</exception>
    public void UnfreezeRefs(Pfn pfn, int count)
    {
        if (count < 1 || count > PageRef.MaxCount)
        {
            throw new ArgumentOutOfRangeException(nameof(count), count, "page_ref_unfreeze needs a count of at least 1.");
        }

        ref PageDescriptor d = ref HeadOf(pfn.Value, out uint head);
        if (PageRef.Count(ref d) != 0 || (d.Flags & (uint)PageFlags.AllocatedHead) == 0)
        {
            ThrowBug(head, "page_ref_unfreeze", PageRef.Count(ref d) != 0 ? "the page is not frozen (refcount is not 0)" : "the page is free, not frozen");
        }

        PageRef.Unfreeze(ref d, count);
    }

    /// <summary>
    /// <c>page_count</c>: the refcount of the page's head; 0 for a free or frozen page, including a freed block that a
    /// per-CPU cache holds (the cache's own reference is not counted: nobody outside the cache holds the block).
    /// </summary>
    /// <param name="pfn">Any page of the arena.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    public int RefCount(Pfn pfn)
    {
        ref PageDescriptor d = ref HeadOf(pfn.Value, out _);
        int count = PageRef.Count(ref d);
        uint flags = Volatile.Read(ref d.Flags);
        bool cacheHolds = (flags & (uint)(PageFlags.Cached | PageFlags.Released)) == (uint)PageFlags.Cached;
        return cacheHolds ? Math.Max(0, count - 1) : count;
    }

    /// <summary>
    /// The generation of a page: in checked mode, how many times it was handed out as a block head (for use-after-free
    /// checks); always 0 otherwise, so that the hot path does not pay for it.
    /// </summary>
    /// <param name="pfn">Any page of the arena.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    public uint Generation(Pfn pfn) => Volatile.Read(ref Descriptor(pfn.Value).Generation);

    /// <summary>
    /// Called by the compound-page layer before it publishes the arena's first compound page: from then on every
    /// get and put resolves tails to their heads. A release store; never undone.
    /// </summary>
    internal void MarkCompoundPagesInUse() => Volatile.Write(ref _tailFreeLimit, 0);

    /// <summary>A page's descriptor, for tests and the layers above the allocator.</summary>
    internal ref PageDescriptor DescriptorOf(Pfn pfn) => ref Descriptor(pfn.Value);

    /// <summary>The page's head for refcount purposes: itself, or the compound head of a tail (<c>compound_head</c>).</summary>
    /// <remarks>
    /// While the arena has never held a compound page no page is a tail, and one compare against
    /// <see cref="_tailFreeLimit"/> (the page limit until then; 0 in a checked arena) both checks the PFN and says the page is its own head: the
    /// get/put hot path has no separate "may this be a tail" test, no compound-word load, between the previous locked
    /// instruction and the next. Once compound pages exist (or the arena is disposed) the limit is 0 and every call takes
    /// <see cref="HeadPfnChecked"/>, as the kernel's <c>compound_head</c> does.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref PageDescriptor HeadOf(uint p, out uint head)
    {
        // HeadPfnChecked (not inlined) returns the head rather than taking an out parameter: an address-taken local
        // would put a stack store between a caller's two locked instructions. HeadOf's own out is inlined away.
        head = p < _tailFreeLimit ? p : HeadPfnChecked(p);
        return ref _desc[head];
    }

    /// <summary>
    /// <see cref="HeadOf(uint, out uint)"/> once compound pages may exist: the PFN checked against the arena, then its
    /// compound word read with acquire (a tail names its head).
    /// </summary>
    private uint HeadPfnChecked(uint p) => HeadPfnOf(ref Descriptor(p), p);

    /// <summary>
    /// The rest of a put on <paramref name="head"/> after the first guess found <paramref name="seen"/>: drop a reference
    /// that is not the last, or, when it is the last, check that the caller may take it (an allocated head, or a cached
    /// block its cache already let go of), take it with 1 -> 0 and free the block. A refused put writes nothing.
    /// </summary>
    /// <param name="head">The block's head.</param>
    /// <param name="seen">The count the caller's first guess found.</param>
    /// <param name="giveBack">The put gives back a reference this thread's own speculative get took a moment ago (on a
    /// block that turned out not to be the one wanted). If that reference is no longer counted (the count is down to the
    /// cache's own, or to 0), another thread's put without a reference took it meanwhile: nothing is written and
    /// nothing thrown here, since this caller did nothing wrong, and <see cref="ArenaCounter.StolenReferences"/> counts
    /// it.</param>
    /// <returns>True when this put freed the block.</returns>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool PutFrom(uint head, int seen, bool giveBack = false)
    {
        ref PageDescriptor d = ref _desc[head];
        while (true)
        {
            RefPut r = PageRef.PutUnlessLast(ref d, seen);
            if (r == RefPut.Live)
            {
                return false;
            }

            if (r == RefPut.Underflow)
            {
                if (giveBack)
                {
                    return ReferenceWasStolen();
                }

                ThrowBug(head, "put_page", "refcount is already 0: a put at zero (the page is free or frozen)");
            }

            // The count read 1: this put would be the last. Only the holder of that reference can change the flags now
            // (an owner's free, a cache's release), so the flags read here still hold when the CAS below succeeds.
            uint flags = Volatile.Read(ref d.Flags);
            if ((flags & (uint)(PageFlags.AllocatedHead | PageFlags.Released)) == 0)
            {
                if (giveBack)
                {
                    return ReferenceWasStolen();
                }

                ThrowBug(head, "put_page", "the last reference on a block a per-CPU cache holds is the cache's own: a put on a freed, cached page (nothing changed)");
            }

            if (PageRef.TryPutLast(ref d))
            {
                if ((flags & (uint)PageFlags.Released) != 0)
                {
                    FreeReleasedCached(head);
                }
                else
                {
                    FreeBlock(head, d.Order);
                }

                return true;
            }

            seen = PageRef.Count(ref d); // lost a race with another get or put: go on from the value that won
        }
    }

    /// <summary>
    /// A give-back whose reference is no longer counted (see <see cref="PutFrom"/>): a block a cache holds counts the
    /// cache's reference plus this thread's, so finding only the cache's (or none) means a put by a thread without a
    /// reference took this one. Counted; nothing written; false (this put freed nothing).
    /// </summary>
    private bool ReferenceWasStolen()
    {
        _counters?.Add(ArenaCounter.StolenReferences);
        return false;
    }
}
