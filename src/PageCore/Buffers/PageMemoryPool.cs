using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;
using PageCore.PerCpu;

namespace PageCore.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of arena pages: <see cref="Rent"/> allocates a page, or a compound page of the smallest
/// order that holds the request (through the arena's per-thread caches), and returns a reused
/// <see cref="PageMemoryManager"/>; disposing the owner frees the block. Buffers are page-aligned, pinned for the
/// arena's life, the whole block long, and (on an arena backed by a pinned array, the default) arrays as well.
/// </summary>
/// <remarks>
/// <para>What a server can count on: renting never throws for a valid size (an exhausted arena hands out a buffer from
/// the shared array pool instead, counted in <see cref="FallbackRents"/>, unless
/// <see cref="PageMemoryPoolOptions.ThrowWhenExhausted"/>); a second <c>Dispose</c> by the same renter does not free
/// the next renter's block (see <see cref="PageMemoryManager"/> for the exact limit); pins are reset on every rent.</para>
/// <para>Checked mode (<see cref="PageMemoryPoolOptions.Checked"/>, the counterpart of ASP.NET Core's diagnostic pool):
/// each rent gets its own owner, which throws <see cref="ObjectDisposedException"/> on use after dispose,
/// <see cref="InvalidOperationException"/> on a double dispose, on a dispose while pins are outstanding, and on an unpin
/// without a pin. Use it in tests.</para>
/// <para>The pool does not own the arena. Disposing the pool refuses further rents; owners already rented stay valid
/// and are disposed as usual. Dispose the arena after every owner: <see cref="PageArena.Dispose()"/> refuses while pages
/// are allocated. Several pools may share an arena (Kestrel creates one per IO queue).</para>
/// </remarks>
public sealed class PageMemoryPool : MemoryPool<byte>
{
    private readonly PageArena _arena;
    private readonly PageMemoryPoolGroup _group;
    private readonly bool _checked;
    private readonly bool _throwWhenExhausted;
    private readonly int _maxOrder;
    private int _disposed;

    /// <summary>Creates a pool over <paramref name="arena"/>.</summary>
    /// <param name="arena">The arena the buffers come from.</param>
    /// <param name="checkedMode">Catch misuse with a per-rent owner (slower; for tests).</param>
    /// <exception cref="ArgumentException">The arena is larger than 2^31 pages.</exception>
    public PageMemoryPool(PageArena arena, bool checkedMode = false)
        : this(new PageMemoryPoolGroup(arena), new PageMemoryPoolOptions { Checked = checkedMode })
    {
    }

    /// <summary>Creates a pool over <paramref name="arena"/>.</summary>
    /// <param name="arena">The arena the buffers come from.</param>
    /// <param name="options">The pool's behaviour; copied.</param>
    /// <exception cref="ArgumentException">The arena is larger than 2^31 pages.</exception>
    public PageMemoryPool(PageArena arena, PageMemoryPoolOptions options)
        : this(new PageMemoryPoolGroup(arena), options)
    {
    }

    internal PageMemoryPool(PageMemoryPoolGroup group, PageMemoryPoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentOutOfRangeException.ThrowIfNegative(options.MaxBufferSize, "options.MaxBufferSize");
        _group = group;
        _arena = group.Arena;
        _checked = options.Checked;
        _throwWhenExhausted = options.ThrowWhenExhausted;
        _maxOrder = group.MaxOrder;
        while (options.MaxBufferSize != 0 && _maxOrder > 0 && (_arena.PageSize << _maxOrder) > options.MaxBufferSize)
        {
            _maxOrder--;
        }
    }

    /// <summary>The arena the buffers come from.</summary>
    public PageArena Arena => _arena;

    /// <summary>Whether this pool hands out checked owners.</summary>
    public bool IsChecked => _checked;

    /// <summary>
    /// Rents served from the shared array pool because the arena had no free block of the order (counted over every
    /// pool that shares this pool's owners: one per arena through <c>PageCore.AspNetCore</c>).
    /// </summary>
    public long FallbackRents => _group.FallbackRents;

    /// <summary>Second disposes of an owner that were ignored (its rent was disposed already).</summary>
    public long StaleDisposes => _group.StaleDisposes;

    /// <summary>
    /// Owner objects created so far: two for each block head on its first rent, and none after (the only allocation
    /// renting makes, once per head: a pool that grows into new pages allocates, one that reuses them does not).
    /// </summary>
    public long OwnersCreated => _group.OwnersCreated;

    /// <summary>
    /// The largest buffer: one block of the arena's largest order that fits a <see cref="Memory{T}"/>, or of the largest
    /// order within <see cref="PageMemoryPoolOptions.MaxBufferSize"/> when that is set.
    /// </summary>
    public override int MaxBufferSize => _arena.PageSize << _maxOrder;

    /// <summary>
    /// Rents a buffer of at least <paramref name="minBufferSize"/> bytes (one page when -1): the block of the smallest order
    /// that holds it.
    /// </summary>
    /// <param name="minBufferSize">Bytes needed, or -1 for one page.</param>
    /// <returns>The owner; dispose it to give the block back.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The size is below -1 or above <see cref="MaxBufferSize"/>.</exception>
    /// <exception cref="OutOfPagesException">No free block of that order, and <see cref="PageMemoryPoolOptions.ThrowWhenExhausted"/>.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        int order = OrderFor(minBufferSize);

        // One page, or a compound page (a folio: gets and puts through any of its pages go to its head). The head comes
        // back as a value, not through an out parameter, so that it stays in a register.
        uint head = order == 0 ? _arena.AllocVia(default(ThreadRoute), 0) : _arena.AllocFolioOrNone(order);
        if (head == PageCaches.NoPage)
        {
            return RentWhenExhausted(order);
        }

        PageMemoryManager owner = _group.NextOwner(new Pfn(head));
        owner.Lease(order, _arena.PageSize << order);
        return _checked ? new CheckedPageOwner(owner) : owner;
    }

    /// <summary>Refuses further rents. Idempotent.</summary>
    /// <param name="disposing">True from <c>Dispose</c>.</param>
    protected override void Dispose(bool disposing) => Interlocked.Exchange(ref _disposed, 1);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int OrderFor(int size)
    {
        if (size <= _arena.PageSize)
        {
            if (size < -1)
            {
                ThrowBadSize(size);
            }

            return 0;
        }

        int order = BitOperations.Log2((uint)((size - 1) >> BitOperations.Log2((uint)_arena.PageSize))) + 1;
        if (order > _maxOrder)
        {
            ThrowBadSize(size);
        }

        return order;
    }

    /// <summary>The arena has no free block of the order (after draining its caches): throw, or fall back and count.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private IMemoryOwner<byte> RentWhenExhausted(int order)
    {
        if (_throwWhenExhausted)
        {
            throw new OutOfPagesException(order, _arena.FreePageCount, _arena.PageCount);
        }

        _group.CountFallback();
        return Shared.Rent(_arena.PageSize << order);
    }

    private void ThrowBadSize(int size) =>
        throw new ArgumentOutOfRangeException("minBufferSize", size, $"A buffer size from -1 to {MaxBufferSize}.");
}
