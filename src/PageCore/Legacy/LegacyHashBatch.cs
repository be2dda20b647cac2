namespace PageCore.Legacy;

/// <summary>
/// Seed 003's historical scheme (before a741e6796957, "[POWERPC] Make tlb flush batch use lazy MMU mode", 2007): the hash
/// invalidation batch lived in the mmu_gather and was drained only when the gather flushed, after the PTE lock had been
/// dropped. A fault could then install and hash a new PTE for an address whose old hash entry was still valid: two
/// entries for one virtual address. Reachable only through <see cref="AddressSpaceOptions.LegacyHashBatchInGather"/>.
/// </summary>
internal static class LegacyHashBatch
{
    /// <summary>Leaving lazy-MMU mode in the legacy scheme: the batch stays pending (it is the gather's, not the lock's).</summary>
    /// <param name="batch">The thread's batch.</param>
    public static void LeaveWithoutDrain(HashBatch batch) => batch.Active--;

    /// <summary>Whether an invalidation is queued rather than done at once: in the legacy scheme, while anything is pending.</summary>
    /// <param name="batch">The thread's batch.</param>
    public static bool Batching(HashBatch batch) => batch.Active > 0 || batch.Count > 0;
}
