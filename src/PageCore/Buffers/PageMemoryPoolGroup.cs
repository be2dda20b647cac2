using System.Runtime.CompilerServices;

namespace PageCore.Buffers;

/// <summary>
/// What the <see cref="PageMemoryPool"/>s over one arena share: the owners of the arena's blocks (two per block head,
/// created on first use and reused), and the counters. Kestrel creates one pool per IO queue; they share one table
/// instead of one each.
/// </summary>
internal sealed class PageMemoryPoolGroup
{
    private readonly PageArena _arena;

    // Per block head: the first owner of its pair (null before the head's first rent), written once. Which owner of the
    // pair a rent takes is the first owner's Turn, so a rent writes that owner, never this table, which all
    // threads read.
    private readonly PageMemoryManager?[] _first;
    private readonly int _maxOrder;
    private long _fallbackRents;
    private long _staleDisposes;
    private long _ownersCreated;

    public PageMemoryPoolGroup(PageArena arena)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (arena.PageCount > int.MaxValue)
        {
            throw new ArgumentException("The arena has more pages than a pool can index.", nameof(arena));
        }

        _arena = arena;
        _first = new PageMemoryManager?[arena.PageCount];
        int maxOrder = arena.MaxOrder;
        while (((long)arena.PageSize << maxOrder) > int.MaxValue)
        {
            maxOrder--; // a Memory<byte> is at most int.MaxValue bytes long
        }

        _maxOrder = maxOrder;
    }

    public PageArena Arena => _arena;

    public int MaxOrder => _maxOrder;

    public long FallbackRents => Interlocked.Read(ref _fallbackRents);

    public long StaleDisposes => Interlocked.Read(ref _staleDisposes);

    public long OwnersCreated => Interlocked.Read(ref _ownersCreated);

    /// <summary>
    /// The owner for a new rent of the block at <paramref name="head"/>: the head's two owners in turn, so that a stale
    /// second Dispose of the latest rent's owner finds it idle (see <see cref="PageMemoryManager"/>). Only the thread
    /// that just allocated the block runs this for its head (the block is its own until it is leased), so the slot and
    /// the turn have one writer at a time; the allocator's hand-over of the block (the free's full fence, the next
    /// allocation's acquire) orders the previous renter's writes before this read. Measured (rent + dispose of a page in
    /// a loop, 5 alternations against the pool with one owner per head): 20.4 -> 22.6 ns median, the price of the turn.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageMemoryManager NextOwner(Pfn head)
    {
        PageMemoryManager first = _first[head.Value] ?? CreatePairSlot(head);
        PageMemoryManager next = first.Turn ? first.Sibling : first;
        first.Turn = !first.Turn;
        return next;
    }

    public void CountFallback() => Interlocked.Increment(ref _fallbackRents);

    public void CountStaleDispose() => Interlocked.Increment(ref _staleDisposes);

    /// <summary>The owner was disposed: free its block.</summary>
    public void Return(PageMemoryManager manager) => _arena.FreePages(manager.Head, manager.Order);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageMemoryManager CreatePairSlot(Pfn head) => _first[head.Value] = CreatePair(head);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageMemoryManager CreatePair(Pfn head)
    {
        Interlocked.Add(ref _ownersCreated, 2);
        var first = new PageMemoryManager(this, head);
        _ = new PageMemoryManager(this, head, first); // links itself as first's sibling
        return first;
    }
}
