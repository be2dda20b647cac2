using System.Buffers;

namespace PageCore.Buffers;

/// <summary>
/// The per-rent owner of a checked <see cref="PageMemoryPool"/> (ASP.NET Core's <c>DiagnosticPoolBlock</c>): it forwards
/// to the block's <see cref="PageMemoryManager"/> while the rent lasts, and catches use after dispose, double dispose,
/// dispose with pins outstanding, and unpin without a pin.
/// </summary>
internal sealed unsafe class CheckedPageOwner : MemoryManager<byte>
{
    private readonly PageMemoryManager _block;
    private readonly int _length;
    private int _pins;
    private int _disposed;

    public CheckedPageOwner(PageMemoryManager block)
    {
        _block = block;
        _length = block.GetSpan().Length;
    }

    public override Span<byte> GetSpan()
    {
        ThrowIfDisposed();
        return _block.GetSpan();
    }

    public override MemoryHandle Pin(int elementIndex = 0)
    {
        ThrowIfDisposed();
        if ((uint)elementIndex > (uint)_length)
        {
            throw new ArgumentOutOfRangeException(nameof(elementIndex), elementIndex, "The index is outside the block.");
        }

        Interlocked.Increment(ref _pins);
        return new MemoryHandle((byte*)_block.Pin(elementIndex).Pointer, default, this);
    }

    public override void Unpin()
    {
        if (Interlocked.Decrement(ref _pins) < 0)
        {
            Interlocked.Increment(ref _pins);
            throw new InvalidOperationException("PageCore: Unpin without a matching Pin (unbalanced pins).");
        }

        _block.Unpin();
    }

    protected override bool TryGetArray(out ArraySegment<byte> segment)
    {
        ThrowIfDisposed();
        return System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(_block.Memory, out segment);
    }

    protected override void Dispose(bool disposing)
    {
        if (Volatile.Read(ref _pins) != 0)
        {
            throw new InvalidOperationException($"PageCore: the buffer was disposed with {_pins} pin(s) outstanding; the memory would be freed under them.");
        }

        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            throw new InvalidOperationException("PageCore: the buffer was disposed twice (it may already belong to another renter).");
        }

        ((IDisposable)_block).Dispose();
    }

    private void ThrowIfDisposed()
    {
        if (Volatile.Read(ref _disposed) != 0)
        {
            throw new ObjectDisposedException(nameof(CheckedPageOwner), "PageCore: the buffer was used after it was disposed (its page may already be someone else's).");
        }
    }
}
