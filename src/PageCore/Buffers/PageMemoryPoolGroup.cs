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

    // Per block head: the owner handed out by the head's latest rent (null before the first). The next rent of the head
    // takes that owner's sibling, so that a stale second Dispose of the latest owner finds it idle (see PageMemoryManager).
    private readonly PageMemoryManager?[] _latest;
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
        _latest = new PageMemoryManager?[arena.PageCount];
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
    /// The owner for a new rent of the block at <paramref name="head"/>: the sibling of the head's latest owner. Only
    /// the thread that just allocated the block runs this for its head (the block is its own until it is leased), so
    /// the slot has one writer at a time; the allocator's hand-over of the block orders the previous writer's store
    /// before this read.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageMemoryManager NextOwner(Pfn head)
    {
        ref PageMemoryManager? slot = ref _latest[head.Value];
        PageMemoryManager next = slot is null ? CreatePair(head) : slot.Sibling;
        slot = next;
        return next;
    }

    public void CountFallback() => Interlocked.Increment(ref _fallbackRents);

    public void CountStaleDispose() => Interlocked.Increment(ref _staleDisposes);

    /// <summary>The owner was disposed: free its block.</summary>
    public void Return(PageMemoryManager manager) => _arena.FreePages(manager.Head, manager.Order);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private PageMemoryManager CreatePair(Pfn head)
    {
        Interlocked.Add(ref _ownersCreated, 2);
        var first = new PageMemoryManager(this, head);
        _ = new PageMemoryManager(this, head, first); // links itself as first's sibling
        return first;
    }
}
