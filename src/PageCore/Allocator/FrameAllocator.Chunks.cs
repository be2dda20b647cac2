using System.Runtime.CompilerServices;
using PageCore.Diagnostics;

namespace PageCore.Allocator;

/// <summary>The allocator's chunk status transitions: huge claims, the return claim, and the head-only state.</summary>
internal sealed unsafe partial class FrameAllocator
{
    /// <summary>Claims a chunk for a huge block: <see cref="Normal"/> -> <see cref="Huge"/>, then checks that no bit is set.</summary>
    private bool TryClaimChunk(int chunk) => TryClaimWholeChunk(chunk, Huge);

    /// <summary>
    /// Claims a wholly free chunk for <paramref name="claim"/> (<see cref="Huge"/> or <see cref="Returning"/>):
    /// <see cref="Normal"/> -> <paramref name="claim"/>, then checks that no bit is set.
    /// </summary>
    /// <remarks>
    /// Keeps A1: the CAS is the huge half of the Dekker handshake (full fence before the bit loads), and every small claim
    /// checks the status after its own CAS and rolls back on anything but <see cref="Normal"/> or <see cref="HeadOnly"/>.
    /// If any bit is set a small claim stands or is in flight; the status goes back to <see cref="Normal"/> with a
    /// release store, which is safe because only the claimer writes a status it set (A4).
    /// </remarks>
    private bool TryClaimWholeChunk(int chunk, int claim)
    {
        if (Interlocked.CompareExchange(ref _status[chunk], claim, Normal) != Normal)
        {
            if (claim == Huge)
            {
                _counters?.Add(ArenaCounter.AllocCasRetries); // an allocation lost this chunk to another thread
            }

            return false;
        }

        if (AllWordsClear(chunk))
        {
            return true;
        }

        Volatile.Write(ref _status[chunk], Normal);
        _counters?.Add(ArenaCounter.HandshakeRollbacks);
        return false;
    }

    /// <summary>Whether a chunk is wholly free at this moment (racy: a hint for the return pass).</summary>
    public bool IsChunkFree(int chunk) => Volatile.Read(ref _status[chunk]) == Normal && AllWordsClear(chunk);

    /// <summary>
    /// Claims a wholly free chunk so that its memory can be given back to the operating system: <see cref="Normal"/> ->
    /// <see cref="Returning"/>, then checks that no bit is set. False, with nothing changed, when any page is in use.
    /// </summary>
    /// <remarks>
    /// Keeps A1 as a huge claim does (<see cref="TryClaimWholeChunk"/>): while the status is <see cref="Returning"/> no
    /// page of the chunk is handed out, and discarding its memory loses nobody's data. Only this claimer writes the
    /// status until <see cref="EndReturn"/> (A4).
    /// </remarks>
    public bool TryBeginReturn(int chunk) => TryClaimWholeChunk(chunk, Returning);

    /// <summary>The chunk's memory was given back: <see cref="Returning"/> -> <see cref="Normal"/>.</summary>
    /// <remarks>Keeps A4: the claimer's release store. The discard (a system call) completed before it, so a page claimed
    /// after this store is never zeroed under its new owner.</remarks>
    public void EndReturn(int chunk) => Volatile.Write(ref _status[chunk], Normal);

    /// <summary>Gives a chunk of a huge block back: <see cref="Huge"/> -> <see cref="Normal"/>.</summary>
    /// <remarks>Keeps A4: only the owner writes a huge chunk's status, so a release store cannot lose an update; release
    /// orders every write to the block before the next claimant's CAS or status read sees <see cref="Normal"/>.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReleaseChunk(int chunk) => Volatile.Write(ref _status[chunk], Normal);

    /// <summary>A huge chunk keeps only its first page in use: <see cref="Huge"/> -> <see cref="HeadOnly"/>.</summary>
    /// <remarks>Keeps A1/A4: the owner's release store; from then on small claims stand except on page 0, which the
    /// handshake refuses them.</remarks>
    private void ShrinkHugeChunkToHead(int chunk) => Volatile.Write(ref _status[chunk], HeadOnly);

    /// <summary>The held head of a <see cref="HeadOnly"/> chunk is freed: <see cref="HeadOnly"/> -> <see cref="Normal"/>.</summary>
    /// <remarks>Keeps A1: a CAS, so a double free of the head finds <see cref="Normal"/> and changes nothing. Full fence:
    /// the head's last writes are ordered before page 0 can be claimed again.</remarks>
    private bool TryEndHeadOnly(int chunk) =>
        Interlocked.CompareExchange(ref _status[chunk], Normal, HeadOnly) == HeadOnly;
}
