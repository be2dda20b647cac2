using System.Numerics;
using System.Runtime.CompilerServices;

namespace PageCore.Allocator;

/// <summary>
/// Bit tricks on one 64-bit bitfield word of the frame allocator (1 bit per page, set = in use).
/// </summary>
internal static class BitRuns
{
    /// <summary>
    /// Given the free bits of a word (1 = free), returns a mask with bit <c>p</c> set for every <c>p</c> that starts a
    /// naturally aligned run of <c>2^order</c> free pages inside the word. <paramref name="order"/> is 0..6.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FreeRunStarts(ulong free, int order)
    {
        switch (order)
        {
            case 0:
                return free;
            case 1:
                return free & (free >> 1) & 0x5555_5555_5555_5555UL;
            case 2:
                free &= free >> 1;
                return free & (free >> 2) & 0x1111_1111_1111_1111UL;
            case 3:
                free &= free >> 1;
                free &= free >> 2;
                return free & (free >> 4) & 0x0101_0101_0101_0101UL;
            case 4:
                free &= free >> 1;
                free &= free >> 2;
                free &= free >> 4;
                return free & (free >> 8) & 0x0001_0001_0001_0001UL;
            case 5:
                free &= free >> 1;
                free &= free >> 2;
                free &= free >> 4;
                free &= free >> 8;
                return free & (free >> 16) & 0x0000_0001_0000_0001UL;
            default:
                return free == ulong.MaxValue ? 1UL : 0UL;
        }
    }

    /// <summary>The bits of one run of <c>2^order</c> pages starting at bit 0; <paramref name="order"/> is 0..6.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong RunMask(int order) => order >= 6 ? ulong.MaxValue : (1UL << (1 << order)) - 1;

    /// <summary>Keeps the lowest <paramref name="count"/> set bits of <paramref name="bits"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong LowestSetBits(ulong bits, int count)
    {
        if (count >= BitOperations.PopCount(bits))
        {
            return bits;
        }

        ulong kept = 0;
        while (count-- > 0)
        {
            ulong low = bits & (~bits + 1);
            kept |= low;
            bits ^= low;
        }

        return kept;
    }
}
