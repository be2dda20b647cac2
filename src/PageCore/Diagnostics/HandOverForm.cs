namespace PageCore;

/// <summary>
/// How the library's asymmetric hand-overs are fenced: the per-thread magazine's hand-over to a stealer
/// (<see cref="PageArena.Drain"/>, the reclaim before an allocation fails) and an <see cref="EpochDomain"/> created with
/// <c>asymmetricAnnounce</c>.
/// </summary>
/// <remarks>
/// Each hand-over is a Dekker handshake: the owner (a magazine's thread, an epoch reader) stores a flag and then loads the
/// other side's flag, and the other side (the stealer, the reclaimer) does the same the other way round. Both loads must
/// follow both stores, which takes a full fence on each side, or a fence on one side that runs on the other side's CPU
/// as well. Which form an arena uses is in <see cref="ArenaStatistics.HandOver"/>; an epoch domain's in
/// <see cref="EpochDomain.AsymmetricAnnounce"/>; the process's in <see cref="ProcessBarrier.HandOver"/>.
/// </remarks>
public enum HandOverForm
{
    /// <summary>
    /// The owner's side runs no fence (release store, then acquire load); the stealer or reclaimer runs
    /// <see cref="Interlocked.MemoryBarrierProcessWide"/>, trusted to run a full barrier on every CPU that runs a thread
    /// of the process. Used only where <see cref="ProcessBarrier.Kind"/> says it does.
    /// </summary>
    Asymmetric,

    /// <summary>
    /// Both sides run a full fence (<see cref="Interlocked.MemoryBarrier"/>): correct on every architecture and OS, with
    /// no trust in the process-wide barrier. The magazine's owner then pays a fence on every cached allocation and free
    /// (those go through a call instead of the inlined fast path), an epoch reader a full-fence announce.
    /// </summary>
    Symmetric,
}
