namespace PageCore;

/// <summary>How an <see cref="AddressSpace"/> is built.</summary>
public sealed class AddressSpaceOptions
{
    /// <summary>
    /// Fragments per page-table page (<c>PTE_FRAG_NR</c>): a power of two from 4 to the page size / 64. Default 4, i.e.
    /// 1 KiB PTE tables of 128 entries in 4 KiB pages, so a PMD entry covers 128 pages and a huge PMD maps an order-7 folio.
    /// </summary>
    public int FragmentsPerPage { get; init; } = 4;

    /// <summary>
    /// The epoch domain that lockless walkers enter and that deferred table frees wait in (RCU). Null: the address space
    /// creates its own, and <see cref="AddressSpace.Dispose"/> waits for its grace periods.
    /// </summary>
    public EpochDomain? Epochs { get; init; }

    /// <summary>
    /// Legacy form of seed 001, for the race lab only: <see cref="AddressSpace.PteOffsetMapLock"/> does not compare the
    /// PMD under the lock (powerpc's <c>hash__pmd_same</c> after the "return 1" quick fix), so it can return a locked table
    /// that the PMD no longer references. Never use it otherwise.
    /// </summary>
    public bool LegacySkipPmdRecheck { get; init; }

    /// <summary>
    /// Legacy form of seed 004, for the race lab only: retracted and withdrawn page tables are freed at once, without
    /// waiting for a grace period, while lockless walkers may still read them or take their lock. Never use it otherwise.
    /// </summary>
    public bool LegacyFreeTablesAtOnce { get; init; }

    /// <summary>
    /// The software hash MMU this address space's PTEs are hashed into (powerpc's hash page table), or null for none.
    /// With one, <see cref="AddressSpace.Access"/> plays the CPU, and every PTE change invalidates the hash entry.
    /// </summary>
    public HashMmu? HashMmu { get; init; }

    /// <summary>
    /// Batch hash invalidations in lazy-MMU mode (entered and left inside the PTE lock; leaving drains the batch). False
    /// flushes every invalidation at once (one <c>tlbsync</c> per PTE). Default true.
    /// </summary>
    public bool HashBatching { get; init; } = true;

    /// <summary>
    /// Legacy form of seed 003, for the race lab only: the hash batch is drained only when the mmu_gather flushes, after
    /// the PTE lock is dropped, so a fault can hash a second entry for an address. Never use it otherwise.
    /// </summary>
    public bool LegacyHashBatchInGather { get; init; }
}
