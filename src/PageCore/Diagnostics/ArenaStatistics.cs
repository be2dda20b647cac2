using System.Runtime.CompilerServices;
using System.Text;

namespace PageCore;

/// <summary>What an arena's contention counters count.</summary>
public enum ArenaCounter
{
    /// <summary>A CAS on the allocator's bitfield or chunk status lost to another thread during an allocation, and was retried.</summary>
    AllocCasRetries,

    /// <summary>A CAS on the allocator's bitfield lost to another thread during a free, and was retried.</summary>
    FreeCasRetries,

    /// <summary>A claim taken back after the small/huge handshake saw the other side (the Dekker check in the frame allocator).</summary>
    HandshakeRollbacks,

    /// <summary>A <c>get_page_unless_zero</c> CAS that lost to a concurrent get or put and was retried.</summary>
    SpeculativeGetRetries,

    /// <summary>
    /// Allocations that went to the shared allocator (slow-path entries: orders above 3, or a cache refill). Not counted
    /// when the arena has no caches: there every allocation goes there, and counting would cost on the only path.
    /// </summary>
    CoreAllocs,

    /// <summary>Blocks given back to the shared allocator (frees of orders above 3, spills, drains); not counted without caches.</summary>
    CoreFrees,

    /// <summary>Magazine refills (slow-path entries of a cached allocation).</summary>
    CacheRefills,

    /// <summary>Refills served by a per-CPU depot batch.</summary>
    DepotTakes,

    /// <summary>Magazine spills (slow-path entries of a cached free).</summary>
    CacheSpills,

    /// <summary>Spilled batches parked in a per-CPU depot.</summary>
    DepotPuts,

    /// <summary>Reclaims: caches drained because an allocation was about to fail.</summary>
    Reclaims,

    /// <summary>Allocations that failed (no block of the order, even after a reclaim).</summary>
    FailedAllocs,

    /// <summary>
    /// A speculative reference given back (a get that landed on a freed, cached block) found that it was no longer
    /// counted: a put by a thread that held no reference had taken it meanwhile. Without checked mode that put cannot be
    /// told from a holder's (see <see cref="PageArena.PutPage"/>), so it is seen only here, afterwards: the give-back
    /// writes nothing and throws nothing (its caller did nothing wrong), and this counter records it. Always 0 in a
    /// correct program, and always 0 in a checked arena, which refuses that put.
    /// </summary>
    StolenReferences,

    /// <summary>
    /// A small allocation's scan that found room only in a chunk another thread had reserved for its own allocations
    /// (every unreserved chunk was full): the threads share that chunk's bitfield line from then on. The allocations
    /// that follow in the same word take the thread's hint without a scan and are not counted again. Memory pressure,
    /// or more threads than chunks.
    /// </summary>
    ReservationSteals,
}

/// <summary>
/// A snapshot of an arena's contention counters, summed over every thread that used the arena (the counterpart of the
/// kernel's vmstat counters such as <c>pgalloc</c> and <c>pgfree</c>, plus CAS-retry counts the kernel has no need for).
/// </summary>
/// <remarks>
/// The counters are per thread and written only by their thread, and only on slow paths (a CAS that lost, a refill, a
/// spill, a trip to the shared allocator), never on a magazine hit: counting costs nothing on the hot path. A snapshot
/// taken while threads run is a close estimate; one taken when they have stopped is exact.
/// </remarks>
public sealed class ArenaStatistics
{
    private readonly long[] _values;

    internal ArenaStatistics(long[] values, int threads)
    {
        _values = values;
        Threads = threads;
    }

    /// <summary>Threads that recorded at least one event.</summary>
    public int Threads { get; }

    /// <summary>
    /// How the arena's per-thread magazines are handed over to a stealer (<see cref="PageArena.Drain"/>, the reclaim
    /// before an allocation fails): <see cref="HandOverForm.Asymmetric"/> where the process-wide barrier is trusted
    /// (<see cref="ProcessBarrier.Kind"/>), else <see cref="HandOverForm.Symmetric"/>. Fixed when the arena is created.
    /// </summary>
    public HandOverForm HandOver { get; internal set; }

    /// <summary>The value of one counter.</summary>
    /// <param name="counter">Which counter.</param>
    public long this[ArenaCounter counter] => _values[(int)counter];

    /// <summary>Every counter by name.</summary>
    public IReadOnlyDictionary<string, long> ToDictionary() =>
        Enum.GetValues<ArenaCounter>().ToDictionary(c => c.ToString(), c => _values[(int)c]);

    /// <summary>The counters as one line of text.</summary>
    public override string ToString()
    {
        var sb = new StringBuilder();
        foreach (ArenaCounter c in Enum.GetValues<ArenaCounter>())
        {
            if (sb.Length > 0) sb.Append(", ");
            sb.Append(c).Append(' ').Append(_values[(int)c]);
        }

        return sb.Append(", HandOver ").Append(HandOver).ToString();
    }
}
