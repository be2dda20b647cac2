namespace PageCore.Legacy;

/// <summary>
/// The historical, broken page-table algorithms of seeds 001 and 004, reachable only through
/// <see cref="AddressSpaceOptions.LegacySkipPmdRecheck"/> and <see cref="AddressSpaceOptions.LegacyFreeTablesAtOnce"/>.
/// Kept apart so the fixed path reads clean.
/// </summary>
internal static class LegacyPageTables
{
    /// <summary>
    /// Seed 001: powerpc's 4K-hash <c>hash__pmd_same</c> after the "return 1" quick fix. Whatever the PMD holds now, the
    /// table locked through the old snapshot is taken as current, so a writer can fill a table that was retracted,
    /// deposited or replaced by a huge PMD: the mapping is lost, or lands in a table that will be freed.
    /// </summary>
    /// <param name="snapshot">The PMD value the lock was found through.</param>
    /// <param name="now">The PMD value read under the lock.</param>
    /// <returns>Always true.</returns>
    public static bool PmdSameQuickFix(ulong snapshot, ulong now)
    {
        _ = snapshot;
        _ = now;
        return true;
    }

    /// <summary>
    /// Seed 004: a detached table (retracted, or withdrawn from a deposit) freed at once with <c>pte_free</c>, while a
    /// lockless walker that read the PMD before the detach may still read its entries or take the lock in its page's
    /// descriptor.
    /// </summary>
    /// <param name="mm">The address space.</param>
    /// <param name="table">The detached table.</param>
    public static void FreeTableAtOnce(AddressSpace mm, PtFragment table) => mm.FreeTableNow(table, throwOnBug: false);
}
