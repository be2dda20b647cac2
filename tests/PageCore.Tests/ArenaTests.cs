using System.Runtime.CompilerServices;
using PageCore.Descriptors;
using Xunit;

namespace PageCore.Tests;

public sealed class ArenaTests
{
    [Fact]
    public void DescriptorIsExactly64Bytes()
    {
        Assert.Equal(64, Unsafe.SizeOf<PageDescriptor>());
        Assert.Equal(64, PageArena.DescriptorSize);
    }

    [Fact]
    public void CreatesArenaWithEveryPageFree()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 2048);
        PageArena arena = lease.Arena;
        Assert.Equal(4096, arena.PageSize);
        Assert.Equal(2048, arena.PageCount);
        Assert.Equal(10, arena.MaxOrder);
        Assert.Equal(2048, arena.FreePageCount);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(0, 12, 10, "Pages")]
    [InlineData(1000, 12, 10, "Pages")]
    [InlineData(1024, 11, 10, "PageShift")]
    [InlineData(1024, 12, 21, "MaxOrder")]
    [InlineData(1024, 12, -1, "MaxOrder")]
    public void RejectsBadOptionsNamingTheSetting(long pages, int shift, int maxOrder, string setting)
    {
        var ex = Assert.Throws<ArgumentOutOfRangeException>(() =>
            PageArena.Create(new PageArenaOptions { Pages = pages, PageShift = shift, MaxOrder = maxOrder }));
        Assert.Equal(setting, ex.ParamName);
    }

    [Fact]
    public void RejectsNullOptions() => Assert.Throws<ArgumentNullException>(() => PageArena.Create(null!));

    [Fact]
    public void AddressesArePageAlignedArithmetic()
    {
        using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024, PageShift = 16, MaxOrder = 4 });
        nint a0 = arena.AddressOf(new Pfn(0));
        Assert.Equal(0, a0 % arena.PageSize);
        Assert.Equal(a0 + (5 * arena.PageSize), arena.AddressOf(new Pfn(5)));
        Assert.Equal(new Pfn(5), arena.PfnOf(arena.AddressOf(new Pfn(5)) + 123));
        Assert.Equal(new Pfn(1023), arena.PfnOf(arena.AddressOf(new Pfn(1023)) + arena.PageSize - 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.PfnOf(a0 - 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.PfnOf(a0 + (1024 * (nint)arena.PageSize)));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.AddressOf(new Pfn(1024)));
    }

    [Fact]
    public void SpansCoverTheBlockAndKeepWhatIsWritten()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        Pfn block = arena.AllocPages(2);
        Span<byte> span = arena.GetSpan(block, 2);
        Assert.Equal(4 * arena.PageSize, span.Length);
        span.Fill(0x5C);
        Assert.Equal(0x5C, arena.GetSpan(block + 3)[arena.PageSize - 1]);
        unsafe
        {
            fixed (byte* p = span)
            {
                Assert.Equal(arena.AddressOf(block), (nint)p);
            }
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => arena.GetSpan(new Pfn(4095), 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => arena.GetSpan(block, 11));
        arena.FreePages(block, 2);
    }

    [Fact]
    public void DisposeRefusesWhilePagesAreAllocatedUnlessForced()
    {
        PageArena arena = TestSupport.NewArena();
        Pfn p = arena.AllocPages(0);
        var ex = Assert.Throws<InvalidOperationException>(() => arena.Dispose());
        Assert.Contains("1 of 4096 pages allocated", ex.Message);

        // Still usable after the refusal.
        Assert.Equal(1, arena.RefCount(p));
        arena.FreePages(p, 0);
        arena.Dispose();
        Assert.Throws<ObjectDisposedException>(() => arena.AllocPages(0));
        Assert.Throws<ObjectDisposedException>(() => arena.RefCount(p));
        Assert.Throws<ObjectDisposedException>(() => arena.Verify());
        arena.Dispose();
    }

    [Fact]
    public void ForcedDisposeReleasesWithPagesAllocated()
    {
        PageArena arena = TestSupport.NewArena();
        arena.AllocPages(3);
        arena.Dispose(force: true);
        Assert.Throws<ObjectDisposedException>(() => arena.TryAllocPages(0, out _));
    }

    [Fact]
    public void FreshPagesReadAsZero()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        Pfn p = arena.AllocPages(4);
        Assert.True(arena.GetSpan(p, 4).IndexOfAnyExcept((byte)0) < 0);
        arena.FreePages(p, 4);
    }
}
