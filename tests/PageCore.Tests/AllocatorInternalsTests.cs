using System.Numerics;
using PageCore.Allocator;
using Xunit;

namespace PageCore.Tests;

public sealed unsafe class AllocatorInternalsTests(ITestOutputHelper output)
{
    [Fact]
    public void FreeRunStartsMatchesBruteForce()
    {
        var rng = new Random(TestSupport.Seed(output, nameof(FreeRunStartsMatchesBruteForce)));
        for (int trial = 0; trial < 2000; trial++)
        {
            ulong free = (ulong)rng.NextInt64() ^ ((ulong)rng.NextInt64() << 1);
            if (trial % 7 == 0) free = ulong.MaxValue;
            if (trial % 11 == 0) free |= 0xFFFF_0000_0000_FFFFUL;
            for (int order = 0; order <= 6; order++)
            {
                int n = 1 << order;
                ulong expected = 0;
                for (int p = 0; p + n <= 64; p += n)
                {
                    ulong run = BitRuns.RunMask(order) << p;
                    if ((free & run) == run) expected |= 1UL << p;
                }

                Assert.Equal(expected, BitRuns.FreeRunStarts(free, order));
            }
        }
    }

    [Fact]
    public void LowestSetBitsKeepsTheLowestOnes()
    {
        Assert.Equal(0b1010UL, BitRuns.LowestSetBits(0b1011_1010UL, 2));
        Assert.Equal(0b1011_1010UL, BitRuns.LowestSetBits(0b1011_1010UL, 9));
        Assert.Equal(0UL, BitRuns.LowestSetBits(0b1011_1010UL, 0));
        Assert.Equal(3, BitOperations.PopCount(BitRuns.LowestSetBits(ulong.MaxValue, 3)));
    }

    [Fact]
    public void VectorAndScalarChunkScansAgree()
    {
        var rng = new Random(TestSupport.Seed(output, nameof(VectorAndScalarChunkScansAgree)));
        int[] words = new int[1000];
        fixed (int* w = words)
        {
            for (int trial = 0; trial < 500; trial++)
            {
                for (int i = 0; i < words.Length; i++)
                {
                    int r = rng.Next(10);
                    words[i] = r < 3 ? FrameAllocator.Huge : r < 5 ? FrameAllocator.HeadOnly : r < 8 ? FrameAllocator.Normal : rng.Next(0, 600);
                }

                int from = rng.Next(words.Length);
                int to = rng.Next(from, words.Length + 1);
                int min = rng.Next(0, 3);
                int max = rng.Next(2) == 0 ? min : rng.Next(min, 600);
                Assert.Equal(
                    ChunkScan.FindInRangeScalar(w, from, to, min, max),
                    ChunkScan.FindInRange(w, from, to, min, max, useVectors: true));
            }
        }
    }

    [Fact]
    public void VectorAndScalarWordCompareAgree()
    {
        var rng = new Random(TestSupport.Seed(output, nameof(VectorAndScalarWordCompareAgree)));
        ulong[] words = new ulong[8];
        fixed (ulong* w = words)
        {
            for (int trial = 0; trial < 2000; trial++)
            {
                for (int i = 0; i < 8; i++)
                {
                    int r = rng.Next(3);
                    words[i] = r == 0 ? 0UL : r == 1 ? ulong.MaxValue : (ulong)rng.NextInt64();
                }

                foreach (ulong value in new[] { 0UL, ulong.MaxValue })
                {
                    Assert.Equal(ChunkScan.EqualWordsScalar(w, value), ChunkScan.EqualWords(w, value, useVectors: true));
                }
            }
        }
    }

    [Fact]
    public void BulkAllocationClaimsDistinctAlignedBlocksAndFreesThem()
    {
        using var core = new FrameAllocator(4096, useVectors: true);
        for (int order = 0; order <= 3; order++)
        {
            uint[] got = new uint[100];
            int n = core.AllocBulk(order, got);
            Assert.Equal(100, n);
            Assert.Equal(100, got.Distinct().Count());
            Assert.All(got, p => Assert.Equal(0u, p & ((1u << order) - 1)));
            Assert.Equal(4096 - (100L << order), core.FreePages);
            foreach (uint p in got)
            {
                Assert.True(core.TryFree(p, order));
            }

            Assert.False(core.TryFree(got[0], order));
            Assert.Equal(4096, core.FreePages);
        }
    }

    [Fact]
    public void HugeBlocksUseWholeChunks()
    {
        // 4096 pages = 8 chunks of 512. One order-0 page spoils its chunk for order 9; the other 7 chunks remain.
        using var core = new FrameAllocator(4096, useVectors: false);
        Assert.True(core.TryAlloc(0, out uint small));
        Assert.True(core.TryAlloc(10, out uint big1));
        Assert.True(core.TryAlloc(10, out uint big2));
        Assert.Equal(0u, big1 % 1024);
        Assert.Equal(0u, big2 % 1024);
        Assert.NotEqual(small >> 10, big1 >> 10);
        var mids = new List<uint>();
        while (core.TryAlloc(9, out uint mid))
        {
            Assert.Equal(0u, mid % 512);
            mids.Add(mid);
        }

        Assert.Equal(3, mids.Count);
        Assert.False(core.TryAlloc(10, out _));
        Assert.True(core.TryFree(small, 0));
        Assert.True(core.TryAlloc(9, out uint reclaimed));
        Assert.Equal(small & ~511u, reclaimed);
        mids.Add(reclaimed);
        foreach (uint m in mids)
        {
            Assert.True(core.TryFree(m, 9));
        }

        Assert.True(core.TryFree(big1, 10));
        Assert.False(core.TryFree(big1, 10));
        Assert.True(core.TryFree(big2, 10));
        Assert.Equal(4096, core.FreePages);
    }
}
