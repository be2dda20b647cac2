using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>
/// Checked mode's exact refusal of a put on a freed, cached block: the cached free freezes the count while it changes
/// the flags, and the put decides and decrements in one 8-byte CAS over flags and count.
/// </summary>
/// <remarks>
/// <para>Why only checked mode can refuse that put exactly. Without checked mode, a free into a per-CPU cache writes no
/// count (the cache keeps the caller's reference, so the hit and the free need no atomic instruction), and a speculative
/// getter whose add landed just before that free legitimately holds a reference on a block that is now cached; its
/// put must be accepted. Another thread's put without a reference on the same block, while a getter's transient
/// reference is on it, looks the same to the count (2), so it is accepted too and takes the getter's.</para>
/// <para>In checked mode a block enters a cache only with its count frozen at 0 (<see cref="FreezeIntoCache"/>, or
/// from the shared allocator, where the count is 0 until the cache's reference is published with a release store after
/// the flags). So no reference taken before the block was cached survives into it, and a getter whose add lands later
/// reads the <see cref="PageFlags.Cached"/> flag after its add and gives its reference back. Every reference on a
/// block whose flags say cached, other than the cache's own, is therefore a speculative get on its way back, and
/// any other put on such a block is misuse. <see cref="PutChecked"/> refuses it; the 8-byte CAS makes the decision and
/// the decrement one step, so a free into a cache between them makes the put fail and look again.</para>
/// </remarks>
public sealed unsafe partial class PageArena
{
    /// <summary>
    /// <see cref="PutPage"/> when the fast compare fails: a compound page may be in the arena, the PFN may be out of
    /// range, or the arena is checked.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool PutPageSlow(uint p)
    {
        uint head = HeadPfnChecked(p);
        return _checked ? PutChecked(head) : PutHead(head);
    }

    /// <summary>
    /// <c>put_page</c> with <c>CONFIG_DEBUG_VM</c>'s checks: refuses, without writing, a put at zero and any put on a
    /// block a per-CPU cache holds; otherwise drops one reference, and the last put frees the block.
    /// </summary>
    /// <remarks>
    /// Invariant: the decision is made on one moment's flags and count (<see cref="PageRef.Pair"/>) and the decrement
    /// happens only if both are unchanged (<see cref="PageRef.TryPutPair"/>), so a put is refused exactly when, at the
    /// moment it would have written, the block was free, frozen or cached. Speculative getters give their transient
    /// references back through <see cref="PutFrom"/> (giveBack), never through here.
    /// </remarks>
    private bool PutChecked(uint head)
    {
        ref PageDescriptor d = ref _desc[head];
        ulong pair = PageRef.Pair(ref d);
        while (true)
        {
            uint flags = PageRef.FlagsOf(pair);
            int count = PageRef.CountOf(pair);
            if (count <= 0)
            {
                ThrowBug(head, "put_page", "refcount is already 0: a put at zero (the page is free or frozen)");
            }

            if ((flags & (uint)PageFlags.Cached) != 0)
            {
                ThrowBug(head, "put_page", "a put on a freed block a per-CPU cache holds: no reference on it is the caller's " +
                    "(checked mode: the block entered the cache frozen, so any other reference is a speculative get on its way back); nothing changed");
            }

            if (count == 1 && (flags & (uint)PageFlags.AllocatedHead) == 0)
            {
                ThrowBug(head, "put_page", "the last reference on a page that is not an allocated block head");
            }

            if (PageRef.TryPutPair(ref d, ref pair))
            {
                if (count != 1)
                {
                    return false;
                }

                FreeBlock(head, d.Order); // the CAS took 1 -> 0 on an allocated head: the block is this put's to free
                return true;
            }

            _counters?.Add(ArenaCounter.SpeculativeGetRetries); // lost a race with a get, a put or the owner's flags: look again
        }
    }

    /// <summary>
    /// The put of unchecked mode in any arena: decides on the count alone (a 4-byte CAS), so in checked mode it is the
    /// historical put that <see cref="PutChecked"/> replaced. For the legacy forms only
    /// (<c>PageCore.Legacy.LegacyCachedPut</c>, and the legacy gets' holders giving back what they took).
    /// </summary>
    internal bool PutByCount(Pfn pfn) => PutHead(HeadPfnChecked(pfn.Value));

    /// <summary>
    /// The checked cached free: freeze the caller's reference (1 -> 0), poison the block, mark it cached, publish the
    /// cache's reference (0 -> 1, a release store). False when another holder's reference is on the block (the freeze
    /// failed): then the free is a put (<see cref="FreeUncached"/>), done here, and the last put frees the block.
    /// </summary>
    /// <remarks>
    /// Invariant: a block never becomes cached while a reference other than the caller's is on it, and nobody can take
    /// one while the flags change (a get refuses 0). The freeze is a full fence; the release store of the count orders
    /// the poison and the flag store before it, so a getter whose add reads the published count reads the flag too.
    /// </remarks>
    private bool FreezeIntoCache(uint p, int order)
    {
        ref PageDescriptor d = ref _desc[p];
        if (!PageRef.Freeze(ref d, 1))
        {
            FreeUncached(ref d, p, order);
            return false;
        }

        PoisonBlock(p, order);
        d.Flags = (uint)(PageFlags.Cached | PageFlags.Poisoned);
        PageRef.Unfreeze(ref d, 1);
        return true;
    }
}
