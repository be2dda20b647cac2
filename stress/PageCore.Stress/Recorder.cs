using System.Diagnostics;
using System.Runtime.CompilerServices;

namespace PageCore.Stress;

/// <summary>
/// One worker's operation counts and sampled latencies: written by its worker only (plain stores, padded arrays), read
/// racily by the live view and exactly after the run.
/// </summary>
public sealed class Recorder
{
    /// <summary>One operation in every this many is timed.</summary>
    public const int SampleEvery = 16;

    private const int Pad = 16;
    private readonly long[] _counts;
    private uint _sampler;

    /// <summary>Creates a recorder for <paramref name="operations"/> operation types.</summary>
    public Recorder(string name, int operations)
    {
        Name = name;
        _sampler = (uint)name.GetHashCode() | 1;
        _counts = new long[Pad + operations + Pad];
        Latency = new LatencyHistogram[operations];
        for (int i = 0; i < operations; i++) Latency[i] = new LatencyHistogram();
    }

    /// <summary>The worker's name.</summary>
    public string Name { get; }

    /// <summary>Whether the worker is a background thread (a walker or reader), left out of the fairness figure.</summary>
    public bool Background { get; init; }

    /// <summary>Sampled latencies per operation type.</summary>
    public LatencyHistogram[] Latency { get; }

    /// <summary>Operations of type <paramref name="op"/> so far.</summary>
    public long CountOf(int op) => Volatile.Read(ref _counts[Pad + op]);

    /// <summary>Operations of every type so far.</summary>
    public long Total
    {
        get
        {
            long t = 0;
            for (int i = 0; i < Latency.Length; i++) t += CountOf(i);
            return t;
        }
    }

    /// <summary>
    /// Starts an operation: a timestamp when this one is sampled (one in <see cref="SampleEvery"/>, chosen by a
    /// xorshift generator so that a loop with several operation types samples each of them), else 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public long Begin()
    {
        uint x = _sampler;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        _sampler = x;
        return (x & (SampleEvery - 1)) == 0 ? Stopwatch.GetTimestamp() : 0;
    }

    /// <summary>Ends an operation of type <paramref name="op"/> started with <see cref="Begin"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void End(int op, long start)
    {
        _counts[Pad + op]++;
        if (start != 0)
        {
            Latency[op].Record((long)((Stopwatch.GetTimestamp() - start) * (1e9 / Stopwatch.Frequency)));
        }
    }

    /// <summary>Counts an operation that is not timed.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Count(int op) => _counts[Pad + op]++;
}
