using System.Collections.Concurrent;
using System.Runtime.CompilerServices;

namespace PageCore;

/// <summary>
/// A page-cache index: <c>ulong</c> key (a file offset in pages) to the folio that holds it, with lock-free speculative
/// lookups (the kernel's xarray + <c>filemap_get_entry</c>). A folio of order k stored at key K (a multiple of 2^k)
/// occupies keys K..K+2^k-1. The index holds one reference on every folio it stores; lookups return with one more.
/// </summary>
/// <remarks>
/// <para><b>Lookup</b> (<c>filemap_get_entry</c>): inside an epoch section, load the slot, take a speculative reference
/// on the folio (add-unless-zero), then reload the slot; if it changed (the folio was removed, replaced, split, or freed
/// and reused), put the reference and retry. The epoch keeps the index nodes alive while a lookup reads them; the
/// reference keeps the folio alive afterwards.</para>
/// <para><b>Updates</b> (insert, delete, replace, split) are serialized by one lock, as the kernel serializes them with
/// <c>xa_lock</c>: an insert of a multi-page folio or a split must change several slots as one step against other
/// updates. Lookups never take it. Each bucket is a chain of immutable nodes whose head is replaced by CAS
/// (copy-on-write of the chain up to the changed node), so a lookup sees either the old chain or the new one. Retired
/// nodes go back to a pool through the epoch domain, after a grace period, so a lookup never reads a reused node.</para>
/// <para><b>Without an epoch domain</b> (<see cref="PageCacheIndex(PageArena, int)"/>) retired nodes are never reused:
/// the garbage collector frees a node once no lookup can reach it, which is the grace period, kept by the runtime. A
/// lookup then enters no section and announces nothing: its cost is the two slot loads, the get and the put. Every
/// update allocates its fresh nodes instead of renting them, which is the price.</para>
/// <para><b>Split</b> (<see cref="SplitFolio"/>): the folio is frozen at the index's and the caller's references; each
/// new piece is unfrozen and stored in its slots, and the old head is unfrozen last, so lookups of keys that still
/// name the old folio keep failing and retrying until their slot names the right piece.</para>
/// </remarks>
public sealed class PageCacheIndex
{
    private static long s_nextMapping;

    private readonly PageArena _arena;
    private readonly EpochDomain? _epochs; // null: nodes are reclaimed by the garbage collector, never reused
    private readonly Node?[] _buckets;
    private readonly int _mask;
    private readonly ConcurrentBag<Node> _pool = [];
    private readonly Action<object?> _recycle;
    private readonly object _updates = new(); // a Monitor, so that contention shows in Monitor.LockContentionCount
    private long _count;

    /// <summary>
    /// Creates an empty index over <paramref name="arena"/>'s folios whose retired nodes the garbage collector reclaims:
    /// lookups enter no epoch section (see the remarks).
    /// </summary>
    /// <param name="arena">The arena the folios come from.</param>
    /// <param name="buckets">Hash buckets, a power of two (default 65536).</param>
    public PageCacheIndex(PageArena arena, int buckets = 1 << 16)
        : this(arena, buckets, epochs: null)
    {
    }

    /// <summary>Creates an empty index over <paramref name="arena"/>'s folios, reclaiming through <paramref name="epochs"/>.</summary>
    /// <param name="arena">The arena the folios come from.</param>
    /// <param name="epochs">The epoch domain lookups enter and retired nodes wait in.</param>
    /// <param name="buckets">Hash buckets, a power of two (default 65536).</param>
    public PageCacheIndex(PageArena arena, EpochDomain epochs, int buckets = 1 << 16)
        : this(arena, buckets, epochs ?? throw new ArgumentNullException(nameof(epochs)))
    {
    }

    /// <summary>Both public constructors: <paramref name="epochs"/> null means the collector reclaims the nodes.</summary>
    private PageCacheIndex(PageArena arena, int buckets, EpochDomain? epochs)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (buckets < 1 || (buckets & (buckets - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(buckets), buckets, "The bucket count must be a power of two.");
        }

        _arena = arena;
        _epochs = epochs;
        _buckets = new Node?[buckets];
        _mask = buckets - 1;
        _recycle = o => Recycle((Node)o!);
        MappingId = (ulong)Interlocked.Increment(ref s_nextMapping);
    }

    /// <summary>
    /// The race lab only: called by a lookup between a node it reached and that node's next link, on the lookup's
    /// thread, inside its section (a lookup preempted in the middle of a chain), with the key of the node it stands on.
    /// Null by default.
    /// </summary>
    internal Action<ulong>? TraversalHook { get; set; }

    /// <summary>
    /// Legacy form, for tests only: with no epoch domain, retired nodes go back to the pool at once, as an index that pools
    /// its nodes with no grace period at all would do. A lookup still walking a retired node then reads it reused.
    /// </summary>
    internal bool LegacyRecycleAtOnce { get; init; }

    /// <summary>The value stored in every cached folio's descriptor as its mapping (<c>folio->mapping</c>).</summary>
    public ulong MappingId { get; }

    /// <summary>Keys stored (a folio of order k counts 2^k).</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>
    /// <c>filemap_get_folio</c>: the folio holding <paramref name="key"/>, with a reference the caller must put.
    /// </summary>
    /// <param name="key">The key to look up.</param>
    /// <param name="folio">The folio's head.</param>
    /// <returns>False when no folio holds the key right now.</returns>
    public bool TryGet(ulong key, out Pfn folio)
    {
        if (_epochs is null)
        {
            return TryGetReferenced(key, out folio); // the collector keeps every node a lookup can reach alive
        }

        using (_epochs.Enter())
        {
            return TryGetReferenced(key, out folio);
        }
    }

    /// <summary>
    /// The lookup proper: load the slot, get the folio unless its count is zero, reload the slot. The caller keeps the
    /// nodes alive meanwhile (an epoch section, or the garbage collector).
    /// </summary>
    private bool TryGetReferenced(ulong key, out Pfn folio)
    {
        for (int attempt = 0; ; attempt++)
        {
            Node? node = Find(key);
            if (node is null)
            {
                folio = default;
                return false;
            }

            var pfn = new Pfn(node.Pfn);
            if (_arena.TryGetPageUnlessZero(pfn))
            {
                // xas_reload: still the folio for this key? (It may have been removed, replaced, split, or freed
                // and reused between the load and the get.)
                if (ReferenceEquals(Find(key), node))
                {
                    folio = pfn;
                    return true;
                }

                _arena.PutPage(pfn);
            }
            else if (ReferenceEquals(Find(key), node))
            {
                // Frozen for a split (or about to be replaced): wait for the slot to change, as folio_try_get does.
                // The index holds a reference on every folio it stores, so a count of 0 lasts only while a split
                // runs; one that lasts seconds means that reference was dropped by a put too many.
                Thread.SpinWait(attempt < 16 ? 8 << attempt % 8 : 64);
                if (attempt > 100_000)
                {
                    Thread.Yield();
                }

                if (attempt > 20_000_000)
                {
                    throw new PageBugException(pfn, "filemap_get_entry", $"the folio stored for key {key} stays at refcount 0: the index's own reference was dropped (a put too many)", _arena.DumpPage(pfn));
                }
            }
        }
    }

    /// <summary>
    /// <c>filemap_add_folio</c>: stores a folio of order k at keys <paramref name="key"/>..+2^k-1, taking the index's own
    /// reference and recording key and mapping in its descriptor (<c>folio->index</c>, <c>folio->mapping</c>).
    /// </summary>
    /// <param name="key">The first key, a multiple of the folio's size.</param>
    /// <param name="folio">A folio head (or page) the caller holds a reference on.</param>
    /// <returns>False, with nothing changed, when one of those keys is already taken.</returns>
    /// <exception cref="ArgumentException">The key is not aligned to the folio's size.</exception>
    public bool TryAdd(ulong key, Pfn folio)
    {
        int order = _arena.OrderOf(folio);
        ulong nr = 1UL << order;
        if ((key & (nr - 1)) != 0)
        {
            throw new ArgumentException($"A folio of order {order} is stored at a key that is a multiple of {nr}.", nameof(key));
        }

        lock (_updates)
        {
            for (ulong k = 0; k < nr; k++)
            {
                if (Find(key + k) is not null)
                {
                    return false;
                }
            }

            ref Descriptors.PageDescriptor d = ref _arena.DescriptorOf(folio);
            d.Index = key;
            d.Mapping = MappingId;
            _arena.GetPage(folio); // the index's reference, taken before the folio is reachable through it
            for (ulong k = 0; k < nr; k++)
            {
                TryLink(key + k, folio.Value);
            }

            Interlocked.Add(ref _count, (long)nr);
            return true;
        }
    }

    /// <summary>
    /// <c>filemap_remove_folio</c>: removes the folio stored at <paramref name="key"/> and drops the index's reference.
    /// Lookups that still hold it finish normally; new lookups miss.
    /// </summary>
    /// <param name="key">Any key the folio holds.</param>
    /// <param name="folio">The removed folio's head.</param>
    /// <returns>False when no folio holds the key.</returns>
    public bool TryRemove(ulong key, out Pfn folio)
    {
        lock (_updates)
        {
            return TryRemoveLocked(key, out folio);
        }
    }

    private bool TryRemoveLocked(ulong key, out Pfn folio)
    {
        Node? node = Find(key);
        if (node is null)
        {
            folio = default;
            return false;
        }

        folio = new Pfn(node.Pfn);
        ulong first = _arena.DescriptorOf(folio).Index;
        ulong nr = 1UL << _arena.OrderOf(folio);
        int removed = 0;
        for (ulong k = 0; k < nr; k++)
        {
            removed += Unlink(first + k, folio.Value) ? 1 : 0;
        }

        Interlocked.Add(ref _count, -removed);
        _arena.PutPage(folio); // the index's reference; the page is freed once the last lookup puts its own
        return true;
    }

    /// <summary>
    /// Splits a cached folio (<c>split_folio_to_order</c> on a page-cache folio): the caller holds one reference; with
    /// the index's, the folio is frozen at 2 and split; each new piece is stored in its slots before the old head is
    /// unfrozen. Afterwards the caller and the index each hold one reference on every piece.
    /// </summary>
    /// <param name="folio">The cached folio's head.</param>
    /// <param name="newOrder">The pieces' order.</param>
    /// <returns><see cref="SplitResult.Busy"/> (nothing changed) when anyone else holds a reference.</returns>
    public SplitResult SplitFolio(Pfn folio, int newOrder)
    {
        lock (_updates)
        {
            ulong first = _arena.DescriptorOf(folio).Index;
            return _arena.SplitFolio(folio, newOrder, expectedRefs: 2, piece =>
            {
                ulong pieceKey = first + (piece.Value - folio.Value);
                for (ulong k = 0; k < 1UL << newOrder; k++)
                {
                    Replace(pieceKey + k, folio.Value, piece.Value);
                }
            });
        }
    }

    // -------------------------------------------------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ref Node? Bucket(ulong key) => ref _buckets[(int)(Mix(key) & (ulong)_mask)];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Mix(ulong key) => (key * 0x9E3779B97F4A7C15UL) >> 16;

    /// <summary>The node for a key, read with acquire loads (the chain is immutable once published).</summary>
    private Node? Find(ulong key)
    {
        Action<ulong>? window = TraversalHook; // one field read per lookup; null outside the race lab
        for (Node? n = Volatile.Read(ref Bucket(key)); n is not null; n = n.Next)
        {
            if (n.Key == key)
            {
                return n;
            }

            if (window is not null)
            {
                // The node must be the same incarnation after the pause: recycled meanwhile means reclaimed under us.
                int incarnation = Volatile.Read(ref n.Incarnation);
                window(n.Key);
                if (Volatile.Read(ref n.Incarnation) != incarnation)
                {
                    ThrowRetired();
                }
            }

            if (n.Retired)
            {
                ThrowRetired();
            }
        }

        return null;
    }

    /// <summary>
    /// A lookup inside its section reached a node that had been retired, waited out its grace period and gone back to
    /// the pool: the epochs reclaimed it while this lookup could still reach it.
    /// </summary>
    private static void ThrowRetired() =>
        throw new InvalidOperationException("PageCore: a page-cache lookup reached an index node that was already recycled: the node was reclaimed while a lookup could still reach it (before its grace period ended).");

    /// <summary>A retired node, after its grace period: marked (no lookup may reach it any more), then pooled for reuse.</summary>
    private void Recycle(Node node)
    {
        node.Retired = true;
        Interlocked.Increment(ref node.Incarnation);
        _pool.Add(node);
    }

    /// <summary>Adds a node at the head of its chain (under the update lock); false if the key is taken. CAS on the
    /// bucket head: a full fence, so the node's fields are visible before it is.</summary>
    private bool TryLink(ulong key, uint pfn)
    {
        ref Node? bucket = ref Bucket(key);
        while (true)
        {
            Node? head = Volatile.Read(ref bucket);
            for (Node? n = head; n is not null; n = n.Next)
            {
                if (n.Key == key)
                {
                    return false;
                }
            }

            Node node = Rent(key, pfn, head);
            if (Interlocked.CompareExchange(ref bucket, node, head) == head)
            {
                return true;
            }

            _pool.Add(node); // never published: reusable at once
        }
    }

    /// <summary>Removes the node for a key if it names <paramref name="pfn"/>; retires the copied-over nodes through the epochs.</summary>
    private bool Unlink(ulong key, uint pfn) => Rewrite(key, pfn, null);

    /// <summary>Points the node for a key at another folio (copy-on-write), if it names <paramref name="from"/>.</summary>
    private bool Replace(ulong key, uint from, uint to) => Rewrite(key, from, to);

    /// <summary>
    /// Replaces or removes the node for <paramref name="key"/> by copying the chain up to it: readers see either the old
    /// chain or the new one. The replaced nodes are retired through the epoch domain and reused after a grace period.
    /// </summary>
    private bool Rewrite(ulong key, uint expectedPfn, uint? newPfn)
    {
        ref Node? bucket = ref Bucket(key);
        while (true)
        {
            Node? head = Volatile.Read(ref bucket);
            Node? target = head;
            while (target is not null && target.Key != key)
            {
                target = target.Next;
            }

            if (target is null || target.Pfn != expectedPfn)
            {
                return false;
            }

            // New chain: copies of the nodes before the target, then (the replacement and) the target's tail.
            Node? rest = newPfn is { } to ? Rent(key, to, target.Next) : target.Next;
            Node? copyHead = rest;
            var copies = new List<Node>();
            for (Node? n = head; n != target; n = n!.Next)
            {
                copies.Add(n!);
            }

            for (int i = copies.Count - 1; i >= 0; i--)
            {
                copyHead = Rent(copies[i].Key, copies[i].Pfn, copyHead);
            }

            if (Interlocked.CompareExchange(ref bucket, copyHead, head) == head)
            {
                if (_epochs is not null) // else the collector frees them once no lookup can reach them
                {
                    _epochs.Defer(_recycle, target);
                    foreach (Node old in copies)
                    {
                        _epochs.Defer(_recycle, old);
                    }
                }
                else if (LegacyRecycleAtOnce)
                {
                    Recycle(target); // the legacy form: no grace period at all
                    copies.ForEach(Recycle);
                }

                return true;
            }

            // Lost the race for this bucket: the fresh nodes were never published.
            for (Node? n = copyHead; n != target.Next; n = n!.Next)
            {
                _pool.Add(n!);
            }
        }
    }

    private Node Rent(ulong key, uint pfn, Node? next)
    {
        // The pool holds only nodes no lookup can reach: recycled after a grace period, or never published.
        if (!_pool.TryTake(out Node? node))
        {
            node = new Node();
        }

        node.Key = key;
        node.Pfn = pfn;
        node.Next = next;
        node.Retired = false; // published (if at all) by the bucket CAS, a full fence
        return node;
    }

    /// <summary>An index node: immutable from publication until it is retired and, after a grace period, reused.</summary>
    private sealed class Node
    {
        public ulong Key;
        public uint Pfn;
        public Node? Next;

        /// <summary>Set when the node went back to the pool after its grace period, cleared when it is rented again.</summary>
        public bool Retired;

        /// <summary>How many times the node was recycled (read only around <see cref="TraversalHook"/>).</summary>
        public int Incarnation;
    }
}
