namespace PageCore.Legacy;

/// <summary>
/// The magazine hand-over as it runs where <see cref="Interlocked.MemoryBarrierProcessWide"/> is the runtime's
/// <c>mprotect</c> fallback on a machine whose TLB shootdown interrupts no other CPU (arm64's broadcast <c>TLBI</c>; x64
/// kernels with AMD's <c>INVLPGB</c>): the owner's side unfenced (<see cref="HandOverForm.Asymmetric"/>), and the
/// stealer's "process-wide" barrier a fence on the stealer's own CPU only. Broken. Reachable only through
/// <see cref="PageArenaOptions.LegacyStealWithoutRemoteBarrier"/> (tests); never the default.
/// </summary>
/// <remarks>
/// The interleaving (store buffering): the owner stores <c>Busy</c> = 1, which waits in its CPU's store buffer, and loads
/// <c>StealPending</c> = 0, since the stealer's store is not visible to it yet; the stealer stores <c>StealPending</c> = 1,
/// fences its own CPU, and loads <c>Busy</c> = 0, since the owner's store is still buffered. Both take the magazine: the
/// owner pops block B and hands it to its caller, the stealer empties the magazine and gives B back to the shared
/// allocator, which hands it out again (or the stealer finds B's descriptor already rewritten by the owner's caller).
/// One block, two owners. x64 reorders exactly this (a store followed by a load of another location), so the test that
/// drives it fails on x64 too; arm64 adds the RCpc <c>ldapr</c> case. The fixed forms: the process-wide barrier where it
/// is one (expedited <c>membarrier</c>), else a fence on both sides (<see cref="HandOverForm.Symmetric"/>).
/// </remarks>
internal static class LegacyHandOver
{
    /// <summary>The stealer's fence in the legacy form: a full fence on its own CPU, nothing on the owners'.</summary>
    public static void StealerFenceWithoutRemoteBarrier() => Interlocked.MemoryBarrier();
}
