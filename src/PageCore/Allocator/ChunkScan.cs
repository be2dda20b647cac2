using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PageCore.Allocator;

/// <summary>
/// Scans of the frame allocator's metadata: the chunk status words (first one in a range) and a chunk's eight
/// bitfield words (which equal a value), with
/// <c>System.Runtime.Intrinsics</c> (<see cref="Vector512"/>, <see cref="Vector256"/> or <see cref="Vector128"/>,
/// whichever the hardware accelerates) and a scalar fallback.
/// </summary>
/// <remarks>
/// The scan is a hint: a vector load is not an atomic read of all its lanes, and any word may change right after it was
/// read. Every candidate it returns is claimed with a CAS on the word itself, which is the only decision that counts.
/// </remarks>
internal static unsafe class ChunkScan
{
    /// <summary>
    /// The first index in <c>[from, to)</c> whose word <c>w</c> satisfies <c>min &lt;= w &lt;= max</c>, or -1.
    /// </summary>
    public static int FindInRange(int* words, int from, int to, int min, int max, bool useVectors)
    {
        int i = from;
        if (useVectors)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                var lo = Vector512.Create(min - 1);
                var hi = Vector512.Create(max + 1);
                for (; i + Vector512<int>.Count <= to; i += Vector512<int>.Count)
                {
                    var v = Vector512.Load(words + i);
                    ulong hit = (Vector512.GreaterThan(v, lo) & Vector512.LessThan(v, hi)).ExtractMostSignificantBits();
                    if (hit != 0)
                    {
                        return i + BitOperations.TrailingZeroCount(hit);
                    }
                }
            }
            else if (Vector256.IsHardwareAccelerated)
            {
                var lo = Vector256.Create(min - 1);
                var hi = Vector256.Create(max + 1);
                for (; i + Vector256<int>.Count <= to; i += Vector256<int>.Count)
                {
                    var v = Vector256.Load(words + i);
                    uint hit = (Vector256.GreaterThan(v, lo) & Vector256.LessThan(v, hi)).ExtractMostSignificantBits();
                    if (hit != 0)
                    {
                        return i + BitOperations.TrailingZeroCount(hit);
                    }
                }
            }
            else if (Vector128.IsHardwareAccelerated)
            {
                var lo = Vector128.Create(min - 1);
                var hi = Vector128.Create(max + 1);
                for (; i + Vector128<int>.Count <= to; i += Vector128<int>.Count)
                {
                    var v = Vector128.Load(words + i);
                    uint hit = (Vector128.GreaterThan(v, lo) & Vector128.LessThan(v, hi)).ExtractMostSignificantBits();
                    if (hit != 0)
                    {
                        return i + BitOperations.TrailingZeroCount(hit);
                    }
                }
            }
        }

        return FindInRangeScalar(words, i, to, min, max);
    }

    /// <summary>
    /// Which of the eight bitfield words of a chunk equal <paramref name="value"/>: bit i of the result for word i. One
    /// 64-byte compare with <see cref="Vector512"/>, two with <see cref="Vector256"/>, four with <see cref="Vector128"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int EqualWords(ulong* words, ulong value, bool useVectors)
    {
        if (useVectors)
        {
            if (Vector512.IsHardwareAccelerated)
            {
                return (int)Vector512.Equals(Vector512.Load(words), Vector512.Create(value)).ExtractMostSignificantBits();
            }

            if (Vector256.IsHardwareAccelerated)
            {
                var v = Vector256.Create(value);
                uint lo = Vector256.Equals(Vector256.Load(words), v).ExtractMostSignificantBits();
                uint hi = Vector256.Equals(Vector256.Load(words + 4), v).ExtractMostSignificantBits();
                return (int)(lo | (hi << 4));
            }

            if (Vector128.IsHardwareAccelerated)
            {
                var v = Vector128.Create(value);
                uint m = 0;
                for (int i = 0; i < 4; i++)
                {
                    m |= Vector128.Equals(Vector128.Load(words + (2 * i)), v).ExtractMostSignificantBits() << (2 * i);
                }

                return (int)m;
            }
        }

        return EqualWordsScalar(words, value);
    }

    /// <summary>The scalar form of <see cref="EqualWords"/>.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int EqualWordsScalar(ulong* words, ulong value)
    {
        int m = 0;
        for (int i = 0; i < 8; i++)
        {
            if (words[i] == value)
            {
                m |= 1 << i;
            }
        }

        return m;
    }

    /// <summary>The scalar form of <see cref="FindInRange"/>, also used for the tail the vectors do not cover.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int FindInRangeScalar(int* words, int from, int to, int min, int max)
    {
        uint span = (uint)(max - min);
        for (int i = from; i < to; i++)
        {
            if ((uint)(words[i] - min) <= span)
            {
                return i;
            }
        }

        return -1;
    }
}
