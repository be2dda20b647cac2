using System.Buffers;
using System.Runtime.InteropServices;
using PageCore.Buffers;
using Xunit;

namespace PageCore.Tests;

/// <summary>Arenas backed by one pinned array: blocks as array segments aliasing the same memory as spans and PFNs.</summary>
public sealed class PinnedArrayArenaTests
{
    [Fact]
    public void TheDefaultArenaIsAPinnedArrayWhoseSegmentsAreTheBlocks()
    {
        using var lease = new ArenaLease(PageArena.Create(new PageArenaOptions()));
        PageArena arena = lease.Arena;
        Assert.Equal(ArenaBacking.PinnedArray, arena.Backing);
        Pfn p = arena.AllocPages(2);
        Assert.True(arena.TryGetArraySegment(p, 2, out ArraySegment<byte> segment));
        Assert.Equal(4 * arena.PageSize, segment.Count);
        Span<byte> span = arena.GetSpan(p, 2);
        Assert.True(Unsafe_SameAddress(span, segment), "the segment is not the block's memory");
        span[5] = 42;
        Assert.Equal(42, segment[5]);
        segment[segment.Count - 1] = 43;
        Assert.Equal(43, span[^1]);
        Assert.Equal(p, arena.PfnOf(arena.AddressOf(p)));
        arena.FreePages(p, 2);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void ANativeArenaHasNoArrayAndItsPoolSaysSo()
    {
        using var lease = new ArenaLease(PageArena.Create(new PageArenaOptions { Pages = 1024, Backing = ArenaBacking.Native }));
        PageArena arena = lease.Arena;
        Assert.Equal(ArenaBacking.Native, arena.Backing);
        Pfn p = arena.AllocPages(0);
        Assert.False(arena.TryGetArraySegment(p, 0, out ArraySegment<byte> segment));
        Assert.Null(segment.Array);
        arena.FreePages(p, 0);
        using var pool = new PageMemoryPool(arena);
        using (IMemoryOwner<byte> owner = pool.Rent(100))
        {
            Assert.False(MemoryMarshal.TryGetArray<byte>(owner.Memory, out _));
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void PoolBuffersAreArraysOfTheArena()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        using var pool = new PageMemoryPool(arena);
        foreach (int size in new[] { 1, 4096, 4097, 65536 })
        {
            using IMemoryOwner<byte> owner = pool.Rent(size);
            Assert.True(MemoryMarshal.TryGetArray<byte>(owner.Memory, out ArraySegment<byte> segment));
            Assert.Equal(owner.Memory.Length, segment.Count);
            Assert.True(Unsafe_SameAddress(owner.Memory.Span, segment));
            Assert.True(MemoryMarshal.TryGetArray<byte>(owner.Memory[10..20], out ArraySegment<byte> slice));
            Assert.Equal(segment.Offset + 10, slice.Offset);
            Assert.Equal(10, slice.Count);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void BackingOutOfRangeIsRefusedWithItsName()
    {
        var tooBig = new PageArenaOptions { Pages = 1L << 20, Backing = ArenaBacking.PinnedArray }; // 4 GiB
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => PageArena.Create(tooBig));
        Assert.Equal("Backing", e.ParamName);
        var bad = new PageArenaOptions { Backing = (ArenaBacking)7 };
        Assert.Equal("Backing", Assert.Throws<ArgumentOutOfRangeException>(() => PageArena.Create(bad)).ParamName);
        var negative = new PageArenaOptions { ReturnFreeMemoryAfter = TimeSpan.FromSeconds(-2) };
        Assert.Equal("ReturnFreeMemoryAfter", Assert.Throws<ArgumentOutOfRangeException>(() => PageArena.Create(negative)).ParamName);
    }

    [Fact]
    public void AutoTakesNativeMemoryPastWhatAnArrayHolds()
    {
        using var lease = new ArenaLease(PageArena.Create(new PageArenaOptions { Pages = 1L << 20, ReturnFreeMemoryAfter = Timeout.InfiniteTimeSpan })); // 4 GiB of address space, untouched
        Assert.Equal(ArenaBacking.Native, lease.Arena.Backing);
    }

    private static unsafe bool Unsafe_SameAddress(Span<byte> span, ArraySegment<byte> segment)
    {
        fixed (byte* a = span)
        fixed (byte* b = &segment.Array![segment.Offset])
        {
            return a == b;
        }
    }
}
