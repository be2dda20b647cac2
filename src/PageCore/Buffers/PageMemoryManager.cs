using System.Buffers;
using System.Runtime.CompilerServices;

namespace PageCore.Buffers;

/// <summary>
/// The <see cref="MemoryManager{T}"/> of one page or compound page of a <see cref="PageMemoryPool"/>, and the
/// <see cref="IMemoryOwner{T}"/> that <see cref="PageMemoryPool.Rent"/> returns; disposing it gives the block back.
/// Each block head has two of them, created on its first rent and used in turn, so renting allocates nothing.
/// </summary>
/// <remarks>
/// <para><see cref="Pin"/> never throws and never copies: arena pages never move. <see cref="TryGetArray"/> exposes the
/// block as a segment of the arena's pinned array (arenas with <see cref="ArenaBacking.PinnedArray"/>, the default up
/// to 2 GiB), so APIs that want arrays (Kestrel's socket sender for a response of several buffers) work; on a native
/// arena it returns false.</para>
/// <para><b>A second Dispose</b> of an owner is ignored, and counted in <see cref="PageMemoryPool.StaleDisposes"/>, as
/// long as that owner object was not handed out again: a block's next rent gets the other owner of its pair, so a
/// renter that disposes twice does not free the block of whoever rented it next. Only when the block was rented twice
/// more meanwhile is the stale owner leased again, and its second Dispose then frees the current rent (no pool that
/// reuses owner objects can tell the two apart; a pool that allocates an owner per rent can). The pool's checked mode
/// catches every double dispose. Pins are reset on every rent.</para>
/// </remarks>
public sealed unsafe class PageMemoryManager : MemoryManager<byte>
{
    private readonly PageMemoryPoolGroup _group;
    private readonly Pfn _head;
    private int _order;
    private int _pins;
    private Memory<byte> _memory; // the block's bytes for the current order; its Length is the block's length

    // 1 while leased: set last by Lease (release), cleared by the first Dispose. A plain read and write, not an exchange
    // (a locked instruction on every dispose): a second Dispose that follows the
    // first (on any thread that learned of the first through any synchronisation) reads 0 and is ignored. Two disposes
    // of one rent that truly race can both read 1; the arena then refuses the second free (a PageBugException), or,
    // if the block was rented again in between, frees that rent: the same limit as a stale owner that came round again.
    private int _leased;

    internal PageMemoryManager(PageMemoryPoolGroup group, Pfn head)
    {
        _group = group;
        _head = head;
        Sibling = this;
    }

    internal PageMemoryManager(PageMemoryPoolGroup group, Pfn head, PageMemoryManager first)
    {
        _group = group;
        _head = head;
        Sibling = first;
        first.Sibling = this;
    }

    /// <summary>The block's first page.</summary>
    public Pfn Head => _head;

    /// <summary>The block's order.</summary>
    public int Order => _order;

    /// <summary>
    /// Pins outstanding in this rent through this manager (<see cref="Pin"/> minus <see cref="Unpin"/>); 0 at every
    /// rent. On an arena backed by a pinned array, <c>Memory.Pin()</c> pins the array itself and is not counted here.
    /// </summary>
    public int PinCount => Volatile.Read(ref _pins);

    /// <summary>Whether this owner is rented now (false once disposed).</summary>
    public bool IsLeased => Volatile.Read(ref _leased) != 0;

    /// <summary>On a head's first owner: whether the head's next rent takes the sibling (flipped by every rent).</summary>
    internal bool Turn;

    /// <summary>The other owner of this block head, used by the head's next rent.</summary>
    internal PageMemoryManager Sibling { get; private set; }

    /// <summary>
    /// The block as <see cref="Memory{T}"/>: on an arena backed by a pinned array, memory over that array created as
    /// pre-pinned (<see cref="System.Runtime.InteropServices.MemoryMarshal.CreateFromPinnedArray{T}"/>, as Kestrel's own
    /// pool makes its blocks), so that <c>Span</c> is an array access and <c>Pin</c> takes no handle; on a native arena,
    /// memory over this manager. Either way it is the block's bytes, valid until the owner is disposed.
    /// </summary>
    public override Memory<byte> Memory => _memory;

    /// <summary>The block's bytes.</summary>
    public override Span<byte> GetSpan() => new((void*)_group.Arena.AddressOf(_head), _memory.Length);

    /// <summary>A handle to byte <paramref name="elementIndex"/>; the memory never moves, so this only counts the pin.</summary>
    /// <param name="elementIndex">0 to the block's length.</param>
    /// <exception cref="ArgumentOutOfRangeException">The index is outside the block.</exception>
    public override MemoryHandle Pin(int elementIndex = 0)
    {
        if ((uint)elementIndex > (uint)_memory.Length)
        {
            throw new ArgumentOutOfRangeException(nameof(elementIndex), elementIndex, "The index is outside the block.");
        }

        Interlocked.Increment(ref _pins);
        return new MemoryHandle((byte*)_group.Arena.AddressOf(_head) + elementIndex, default, this);
    }

    /// <summary>Ends a pin from <see cref="Pin"/>.</summary>
    public override void Unpin() => Interlocked.Decrement(ref _pins);

    /// <summary>The block as a segment of the arena's pinned array; false on a native arena.</summary>
    /// <param name="segment">The block's bytes, or default.</param>
    /// <returns>Whether the arena's pages are in an array.</returns>
    protected override bool TryGetArray(out ArraySegment<byte> segment) =>
        _group.Arena.TryGetArraySegment(_head, _order, out segment);

    /// <summary>Gives the block back to the pool (<c>IMemoryOwner.Dispose</c>); a second call is ignored (see remarks).</summary>
    /// <param name="disposing">True from <c>Dispose</c>.</param>
    protected override void Dispose(bool disposing)
    {
        if (Volatile.Read(ref _leased) == 0)
        {
            _group.CountStaleDispose(); // idle owner: this rent was disposed already
            return;
        }

        _leased = 0; // before the free, whose full fence orders it: once the block can be rented again, this owner reads idle
        _group.Return(this);
    }

    /// <summary>Prepares the owner for a rent of its block: order, length, no pins, then leased (release).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void Lease(int order, int length)
    {
        if (_memory.Length != length) // a block's length fixes its order
        {
            _order = order;
            _memory = MemoryFor(order, length);
        }

        _pins = 0;
        Volatile.Write(ref _leased, 1);
    }

    /// <summary>The block's memory for a rent of this order (cached across rents of the same order).</summary>
    private Memory<byte> MemoryFor(int order, int length) =>
        _group.Arena.TryGetArraySegment(_head, order, out ArraySegment<byte> segment)
            ? System.Runtime.InteropServices.MemoryMarshal.CreateFromPinnedArray(segment.Array, segment.Offset, length)
            : CreateMemory(length);
}
