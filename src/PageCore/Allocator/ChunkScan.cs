using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace PageCore.Allocator;

/// <summary>
/// Scans the frame allocator's chunk status words for the first one whose value lies in a range, with
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
