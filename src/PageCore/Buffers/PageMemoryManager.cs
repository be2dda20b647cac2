using System.Buffers;
using System.Runtime.CompilerServices;

namespace PageCore.Buffers;

/// <summary>
/// The <see cref="MemoryManager{T}"/> of one page or compound page of a <see cref="PageMemoryPool"/>: created once per
/// block head and reused for every rent of that block, so renting allocates nothing. It is the
/// <see cref="IMemoryOwner{T}"/> that <see cref="PageMemoryPool.Rent"/> returns; disposing it gives the block back.
/// </summary>
/// <remarks>
/// <para><see cref="Pin"/> never throws and never copies: arena pages never move. <see cref="TryGetArray"/> returns false
/// (there is no array), so consumers use spans.</para>
/// <para>Like ASP.NET Core's pool blocks, a reused manager cannot tell a stale owner from the current one: a second
/// <c>Dispose</c> after the block was rented again would return someone else's lease. The pool's checked mode
/// (<see cref="PageMemoryPool"/> created with <c>checkedMode: true</c>) hands out a per-rent wrapper instead, which catches
/// use after dispose, double dispose and unbalanced pins.</para>
/// </remarks>
public sealed unsafe class PageMemoryManager : MemoryManager<byte>
{
    private readonly PageMemoryPool _pool;
    private readonly Pfn _head;
    private int _order;
    private int _length;
    private int _pins;

    internal PageMemoryManager(PageMemoryPool pool, Pfn head)
    {
        _pool = pool;
        _head = head;
    }

    /// <summary>The block's first page.</summary>
    public Pfn Head => _head;

    /// <summary>The block's order.</summary>
    public int Order => _order;

    /// <summary>Pins currently outstanding (<see cref="Pin"/> minus <see cref="Unpin"/>).</summary>
    public int PinCount => Volatile.Read(ref _pins);

    /// <summary>The block's bytes.</summary>
    public override Span<byte> GetSpan() => new((void*)_pool.Arena.AddressOf(_head), _length);

    /// <summary>A handle to byte <paramref name="elementIndex"/>; the memory never moves, so this only counts the pin.</summary>
    /// <param name="elementIndex">0 to the block's length.</param>
    /// <exception cref="ArgumentOutOfRangeException">The index is outside the block.</exception>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if ((uint)elementIndex > (uint)_length)
        {
            throw new ArgumentOutOfRangeException(nameof(elementIndex), elementIndex, "The index is outside the block.");
        }

        Interlocked.Increment(ref _pins);
        return new MemoryHandle((byte*)_pool.Arena.AddressOf(_head) + elementIndex, default, this);
    }

    /// <summary>Ends a pin from <see cref="Pin"/>.</summary>
    public override void Unpin() => Interlocked.Decrement(ref _pins);

    /// <summary>Always false: an arena page is not an array.</summary>
    /// <param name="segment">Default.</param>
    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        segment = default;
        return false;
    }

    /// <summary>Gives the block back to the pool (<c>IMemoryOwner.Dispose</c>).</summary>
    /// <param name="disposing">True from <c>Dispose</c>.</param>
    protected override void Dispose(bool disposing) => _pool.Return(this);

    /// <summary>Prepares the manager for a rent of its block.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Lease(int order, int length)
    {
        _order = order;
        _length = length;
    }
}
