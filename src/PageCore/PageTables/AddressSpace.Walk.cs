using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>Walking the page tables: <c>pte_offset_map</c>, <c>pte_offset_map_lock</c> and the lockless walker.</summary>
public sealed unsafe partial class AddressSpace
{
    /// <summary>
    /// A test seam: runs in <see cref="PteOffsetMapLock"/> between the PMD snapshot and the lock, so a test can change
    /// the PMD at exactly the moment the races of seeds 001 and 004 need. Null outside tests.
    /// </summary>
    internal Action<ulong>? AfterPmdSnapshot;

    /// <summary>
    /// <c>pte_offset_map</c>: enters an epoch section, snapshots the PMD of <paramref name="va"/>, and maps the PTE table it
    /// names; null (<see cref="PteMap.IsNull"/>) when the PMD is none or huge. The table stays readable until the map is
    /// disposed, even if it is detached meanwhile (P2).
    /// </summary>
    /// <param name="va">A virtual address of the address space.</param>
    /// <returns>The mapped table, or a null map. Dispose it exactly once.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="PageBugException">The PMD is not an entry (corrupted or poisoned).</exception>
    public PteMap PteOffsetMap(ulong va)
    {
        CheckAddress(va, nameof(va));
        EpochGuard guard = _epochs.Enter();
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        Pte pmd = pmdSlot == null ? Pte.None : new Pte(Volatile.Read(ref *pmdSlot));
        if (!pmd.IsTable)
        {
            guard.Dispose();
            return pmd.IsBad ? throw BadPmd(pmdSlot, pmd) : default;
        }

        return new PteMap(guard, TableBase(pmd.Fragment), PteIndex(va), PtesPerTable, pmd);
    }

    /// <summary>
    /// <c>pte_offset_map_lock</c>: maps the PTE table of <paramref name="va"/> through a snapshot of the PMD, takes that
    /// table's split lock, then compares the PMD with the snapshot under the lock; if it changed (the table was retracted,
    /// replaced by a huge PMD, or replaced), it unlocks and starts again. Null (<see cref="PteMapLocked.IsNull"/>) is a
    /// normal outcome: there is no table at the address now, and every caller must handle it.
    /// </summary>
    /// <param name="va">A virtual address of the address space.</param>
    /// <returns>The locked table the PMD references (P4), or a null map. Dispose it exactly once.</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="PageBugException">The PMD is not an entry, or the table's lock word is poisoned: the table was
    /// freed while this walker could still reach it (seed 004; only the legacy form lets that happen).</exception>
    public PteMapLocked PteOffsetMapLock(ulong va)
    {
        CheckAddress(va, nameof(va));
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        if (pmdSlot == null)
        {
            return default;
        }

        while (true)
        {
            EpochGuard guard = _epochs.Enter();
            var pmd = new Pte(Volatile.Read(ref *pmdSlot)); // pmdp_get_lockless
            if (!pmd.IsTable)
            {
                guard.Dispose();
                return pmd.IsBad ? throw BadPmd(pmdSlot, pmd) : default;
            }

            AfterPmdSnapshot?.Invoke(va);

            // pte_lockptr(mm, &pmdval): the lock is found through the snapshot, never through a re-read of the PMD.
            ref PageDescriptor ptl = ref _arena.DescriptorOf(pmd.Pfn);
            if (!PtLock.TryLock(ref ptl))
            {
                guard.Dispose();
                throw Bug(pmd.Pfn, "pte_offset_map_lock", $"the lock of page table {pmd.Fragment.Page}#{pmd.Fragment.Index} is poisoned: the table was freed while a walker could still reach it (seed 004)");
            }

            if (PmdSame(pmd.Value, Volatile.Read(ref *pmdSlot)))
            {
                return new PteMapLocked(guard, TableBase(pmd.Fragment), ref ptl, PteIndex(va), PtesPerTable, pmd, _hash is null ? null : this, va & ~(HugePageSize - 1), _pageShift);
            }

            PtLock.Unlock(ref ptl);
            guard.Dispose();
        }
    }

    /// <summary>
    /// <c>get_user_pages_fast</c> for one page: a lockless walk inside an epoch section. Reads the PMD and the PTE with
    /// acquire, takes a speculative reference on the folio, then rechecks the PTE and the PMD; if either changed, the
    /// reference is dropped and the walk fails. No lock is taken.
    /// </summary>
    /// <param name="va">A virtual address of the address space.</param>
    /// <param name="page">The page mapped at <paramref name="va"/>; the caller holds a reference on its folio and drops it
    /// with <see cref="PageArena.PutPage"/>.</param>
    /// <param name="write">Require a writable mapping.</param>
    /// <returns>True with a reference taken; false when nothing (or nothing writable) is mapped, or the mapping changed
    /// during the walk (the caller may retry or fall back to <see cref="Fault"/>).</returns>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="PageBugException">An entry read is not an entry: the table was freed and poisoned while this
    /// walker could still reach it (seed 004; only the legacy form lets that happen).</exception>
    public bool TryGetUserPageFast(ulong va, out Pfn page, bool write = false)
    {
        CheckAddress(va, nameof(va));
        page = default;
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        if (pmdSlot == null)
        {
            return false;
        }

        using EpochGuard guard = _epochs.Enter();
        var pmd = new Pte(Volatile.Read(ref *pmdSlot));
        if (pmd.IsBad)
        {
            throw BadPmd(pmdSlot, pmd);
        }

        if (pmd.IsHuge)
        {
            return GetHugeFast(pmdSlot, pmd, va, write, out page);
        }

        if (!pmd.IsTable)
        {
            return false;
        }

        ulong* ptep = TableBase(pmd.Fragment) + PteIndex(va);
        var pte = new Pte(Volatile.Read(ref *ptep));
        if (pte.IsBad)
        {
            throw Bug(pmd.Fragment.Page, "gup_fast", $"entry {PteIndex(va)} of page table {pmd.Fragment.Page}#{pmd.Fragment.Index} reads {pte}: the table was freed while a lockless walker could still reach it (seed 004)");
        }

        if (!pte.IsPresent || (write && (pte.Bits & PteBits.Write) == 0))
        {
            return false;
        }

        if (!_arena.TryGetFolioSpeculative(pte.Pfn, out Pfn head))
        {
            return false;
        }

        // The get was a full fence: the rechecks below read values at least as new as the reference. If the PTE or PMD
        // changed, the page may already be on its way out (zap, collapse): drop the reference we took, on that head.
        if (Volatile.Read(ref *ptep) != pte.Value || Volatile.Read(ref *pmdSlot) != pmd.Value)
        {
            _arena.PutPage(head);
            return false;
        }

        page = pte.Pfn;
        return true;
    }

    private bool GetHugeFast(ulong* pmdSlot, Pte pmd, ulong va, bool write, out Pfn page)
    {
        page = default;
        if (write && (pmd.Bits & PteBits.Write) == 0)
        {
            return false;
        }

        Pfn sub = pmd.Pfn + (uint)PteIndex(va);
        if (!_arena.TryGetFolioSpeculative(sub, out Pfn head))
        {
            return false;
        }

        if (Volatile.Read(ref *pmdSlot) != pmd.Value)
        {
            _arena.PutPage(head);
            return false;
        }

        page = sub;
        return true;
    }

    /// <summary><c>pmd_bad</c>: the PMD is not an entry (garbage or poison).</summary>
    private PageBugException BadPmd(ulong* pmdSlot, Pte pmd) => Bug(_arena.PfnOf((nint)pmdSlot), "pmd_bad", $"the PMD reads {pmd}");

    /// <summary>
    /// <c>pmd_same</c> under the table's lock: a real comparison of the whole value (seed 001's fix). Whoever detaches or
    /// replaces the table does it holding this lock, so a walker that locked it later sees the change here.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool PmdSame(ulong snapshot, ulong now) =>
        _legacySkipPmdRecheck ? Legacy.LegacyPageTables.PmdSameQuickFix(snapshot, now) : snapshot == now;
}
