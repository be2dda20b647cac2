using System.Numerics;

namespace PageCore.Stress;

/// <summary>
/// A fixed-size log-linear histogram of latencies in nanoseconds: exact below 64 ns, then 32 sub-buckets per power of
/// two (about 3 % resolution) up to 2^40 ns. Recording is one array increment: no allocation while a run is going on.
/// Written by one thread; merged after the run.
/// </summary>
public sealed class LatencyHistogram
{
    private const int Linear = 64;
    private const int SubBits = 5;
    private const int Sub = 1 << SubBits;
    private const int MaxExponent = 40;
    private const int BucketCount = Linear + ((MaxExponent - 6 + 1) * Sub);

    private readonly long[] _buckets = new long[BucketCount];

    /// <summary>Samples recorded.</summary>
    public long Count { get; private set; }

    /// <summary>The largest sample, exact.</summary>
    public long Max { get; private set; }

    /// <summary>Records one latency.</summary>
    public void Record(long nanoseconds)
    {
        if (nanoseconds < 0) nanoseconds = 0;
        _buckets[Index(nanoseconds)]++;
        Count++;
        if (nanoseconds > Max) Max = nanoseconds;
    }

    /// <summary>Adds another histogram's samples to this one.</summary>
    public void Add(LatencyHistogram other)
    {
        for (int i = 0; i < BucketCount; i++) _buckets[i] += other._buckets[i];
        Count += other.Count;
        Max = Math.Max(Max, other.Max);
    }

    /// <summary>The value at a quantile (0..1): the upper edge of the bucket it falls in, capped at the exact maximum.</summary>
    public long Quantile(double q)
    {
        if (Count == 0) return 0;
        long rank = (long)Math.Ceiling(q * Count);
        long seen = 0;
        for (int i = 0; i < BucketCount; i++)
        {
            seen += _buckets[i];
            if (seen >= rank && seen > 0)
            {
                return Math.Min(UpperEdge(i), Max);
            }
        }

        return Max;
    }

    private static int Index(long v)
    {
        if (v < Linear) return (int)v;
        int e = 63 - BitOperations.LeadingZeroCount((ulong)v);
        if (e > MaxExponent) return BucketCount - 1;
        int sub = (int)(v >> (e - SubBits)) & (Sub - 1);
        return Linear + ((e - 6) * Sub) + sub;
    }

    private static long UpperEdge(int index)
    {
        if (index < Linear) return index;
        int e = ((index - Linear) / Sub) + 6;
        int sub = (index - Linear) % Sub;
        return ((1L << e) | ((long)(sub + 1) << (e - SubBits))) - 1;
    }
}
