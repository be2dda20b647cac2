using System.Buffers;
using System.Numerics;
using System.Runtime.CompilerServices;

namespace PageCore.Buffers;

/// <summary>
/// A <see cref="MemoryPool{T}"/> of arena pages: <see cref="Rent"/> allocates a page, or a compound page of the smallest
/// order that holds the request (through the arena's per-thread caches), and returns its reused
/// <see cref="PageMemoryManager"/>; disposing the owner drops the pool's reference, which frees the block. Buffers are page-aligned, pinned for the arena's life, and the whole block long.
/// </summary>
/// <remarks>
/// <para>Checked mode (<c>checkedMode: true</c>, the counterpart of ASP.NET Core's diagnostic pool): each rent gets its
/// own owner, which throws <see cref="ObjectDisposedException"/> on use after dispose, <see cref="InvalidOperationException"/>
/// on a double dispose, on a dispose while pins are outstanding, and on an unpin without a pin. Use it in tests.</para>
/// <para>The pool does not own the arena. Disposing the pool refuses further rents; owners already rented stay valid
/// and are disposed as usual. Dispose the arena after every owner: <see cref="PageArena.Dispose()"/> refuses while pages
/// are allocated.</para>
/// </remarks>
public sealed class PageMemoryPool : MemoryPool<byte>
{
    private readonly PageArena _arena;
    private readonly PageMemoryManager?[] _managers;
    private readonly bool _checked;
    private readonly int _maxOrder;
    private int _disposed;

    /// <summary>Creates a pool over <paramref name="arena"/>.</summary>
    /// <param name="arena">The arena the buffers come from.</param>
    /// <param name="checkedMode">Catch misuse with a per-rent owner (slower; for tests).</param>
    /// <exception cref="ArgumentException">The arena is larger than 2^31 pages.</exception>
    public PageMemoryPool(PageArena arena, bool checkedMode = false)
    {
        ArgumentNullException.ThrowIfNull(arena);
        if (arena.PageCount > int.MaxValue)
        {
            throw new ArgumentException("The arena has more pages than a pool can index.", nameof(arena));
        }

        _arena = arena;
        _checked = checkedMode;
        _managers = new PageMemoryManager?[arena.PageCount];
        int maxOrder = arena.MaxOrder;
        while (((long)arena.PageSize << maxOrder) > int.MaxValue)
        {
            maxOrder--; // a Memory<byte> is at most int.MaxValue bytes long
        }

        _maxOrder = maxOrder;
    }

    /// <summary>The arena the buffers come from.</summary>
    public PageArena Arena => _arena;

    /// <summary>Whether this pool hands out checked owners.</summary>
    public bool IsChecked => _checked;

    /// <summary>The largest buffer: one block of the arena's largest order that fits a <see cref="Memory{T}"/>.</summary>
    public override int MaxBufferSize => _arena.PageSize << _maxOrder;

    /// <summary>
    /// Rents a buffer of at least <paramref name="minBufferSize"/> bytes (one page when -1): the block of the smallest order
    /// that holds it.
    /// </summary>
    /// <param name="minBufferSize">Bytes needed, or -1 for one page.</param>
    /// <returns>The owner; dispose it to give the block back.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The size is below -1 or above <see cref="MaxBufferSize"/>.</exception>
    /// <exception cref="OutOfPagesException">No free block of that order.</exception>
    /// <exception cref="ObjectDisposedException">The pool was disposed.</exception>
    public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
    {
        ObjectDisposedException.ThrowIf(_disposed != 0, this);
        int order = OrderFor(minBufferSize);
        // One page, or a compound page (a folio: gets and puts through any of its pages go to its head).
        Pfn head = order == 0 ? _arena.AllocPages(0) : _arena.AllocFolio(order);
        PageMemoryManager manager = _managers[head.Value] ?? CreateManager(head);
        manager.Lease(order, _arena.PageSize << order);
        return _checked ? new CheckedPageOwner(manager) : manager;
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

    private PageMemoryManager CreateManager(Pfn head)
    {
        var manager = new PageMemoryManager(this, head);
        return Interlocked.CompareExchange(ref _managers[head.Value], manager, null) ?? manager;
    }

    /// <summary>The owner was disposed: free its block.</summary>
    internal void Return(PageMemoryManager manager) => _arena.FreePages(manager.Head, manager.Order);

    private void ThrowBadSize(int size) =>
        throw new ArgumentOutOfRangeException("minBufferSize", size, $"A buffer size from -1 to {MaxBufferSize}.");
}
