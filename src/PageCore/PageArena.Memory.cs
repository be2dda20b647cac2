namespace PageCore;

public sealed unsafe partial class PageArena
{
    /// <summary>
    /// The memory of a block as a span (<c>page_address</c> + length). The span does not keep the arena alive and does
    /// not hold a reference on the page: use it only while you hold one.
    /// </summary>
    /// <param name="pfn">The block's first page.</param>
    /// <param name="order">The block's order; the span covers <c>PageSize &lt;&lt; order</c> bytes.</param>
    /// <exception cref="ArgumentOutOfRangeException">The block is outside the arena, the order is out of range, or the
    /// block is larger than a span can cover (2 GiB).</exception>
    public Span<byte> GetSpan(Pfn pfn, int order = 0)
    {
        CheckBlock(pfn, order);
        if (_pageShift + order > 30)
        {
            throw new ArgumentOutOfRangeException(nameof(order), order, "A span covers at most 1 GiB here; use AddressOf for larger blocks.");
        }

        return new Span<byte>(_base + ((nuint)pfn.Value << _pageShift), 1 << (_pageShift + order));
    }

    /// <summary>The address of a page's memory (<c>page_address</c> / <c>pfn_to_virt</c>): arithmetic on the arena's base.</summary>
    /// <param name="pfn">A page of the arena.</param>
    /// <exception cref="ArgumentOutOfRangeException">The PFN is outside the arena.</exception>
    public nint AddressOf(Pfn pfn)
    {
        if (pfn.Value >= _pageLimit)
        {
            ThrowBadPfn(pfn.Value);
        }

        return (nint)(_base + ((nuint)pfn.Value << _pageShift));
    }

    /// <summary>The page that contains an address of the arena (<c>virt_to_pfn</c>).</summary>
    /// <param name="address">Any address inside the arena's data pages.</param>
    /// <exception cref="ArgumentOutOfRangeException">The address is not inside the arena.</exception>
    public Pfn PfnOf(nint address)
    {
        nuint offset = (nuint)address - (nuint)_base;
        if ((nint)address < (nint)_base || (offset >> _pageShift) >= _pageLimit)
        {
            ThrowIfDisposed();
            throw new ArgumentOutOfRangeException(nameof(address), $"0x{address:x} is not inside the arena [0x{(nint)_base:x}, 0x{(nint)_base + (nint)(_pageCount << _pageShift):x}).");
        }

        return new Pfn((uint)(offset >> _pageShift));
    }

    /// <summary>
    /// The memory of a block as a segment of the arena's pinned array, for APIs that want arrays
    /// (<see cref="System.Runtime.InteropServices.MemoryMarshal.TryGetArray{T}"/> on a pool's buffers). Like
    /// <see cref="GetSpan"/>, it holds no reference on the page: use it only while you hold one.
    /// </summary>
    /// <param name="pfn">The block's first page.</param>
    /// <param name="order">The block's order; the segment covers <c>PageSize &lt;&lt; order</c> bytes.</param>
    /// <param name="segment">The block's bytes, or default when the arena is <see cref="ArenaBacking.Native"/>.</param>
    /// <returns>False when the arena's pages are not in an array (<see cref="Backing"/> is <see cref="ArenaBacking.Native"/>).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The block is outside the arena or the order is out of range.</exception>
    public bool TryGetArraySegment(Pfn pfn, int order, out ArraySegment<byte> segment)
    {
        CheckBlock(pfn, order);
        byte[]? array = _dataRegion.Array;
        if (array is null)
        {
            segment = default;
            return false;
        }

        // Both fit an int: the whole array does (ReservePinnedArray checked it).
        segment = new ArraySegment<byte>(array, _dataRegion.ArrayOffset + (int)((long)pfn.Value << _pageShift), (int)(1L << (_pageShift + order)));
        return true;
    }

    /// <summary>Throws unless the order is in range and the block lies inside the arena (0 limits once disposed).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private void CheckBlock(Pfn pfn, int order)
    {
        if ((uint)order >= _orderLimit)
        {
            ThrowBadOrder(order);
        }

        if ((ulong)pfn.Value + (1UL << order) > _pageLimit)
        {
            ThrowBadPfn(pfn.Value);
        }
    }
}
