using System.Collections.Concurrent;
using System.Numerics;
using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>
/// Page tables: the geometry, the top and PMD levels, split locks, PTE-table allocation and freeing, and deposits.
/// </summary>
/// <remarks>
/// <para><b>Geometry.</b> Three levels. The top table is one page of <c>PageSize / 8</c> entries, each pointing at a
/// PMD table. A PMD table is one page: its first half holds <c>PageSize / 16</c> PMD entries, its second half the
/// deposit slot of each entry (powerpc keeps deposited tables the same way, in the second half of the PMD table). A PTE
/// table is one fragment (<see cref="FragmentSize"/> bytes, <see cref="PtesPerTable"/> entries), so a PMD entry covers
/// <see cref="HugePageSize"/> bytes and a huge PMD maps a folio of order <see cref="HugeOrder"/>.</para>
/// <para><b>Locks.</b> Each PTE table's lock is the lock word of its page's descriptor (shared by the fragments of one
/// page, as on powerpc); each PMD table's lock is the lock word of the PMD page's descriptor. Order: PMD lock before
/// PTE lock, never the other way round.</para>
/// <para><b>Invariants</b> (kernel-algorithms.md §3.5, §5.6):
/// P1 a PTE is written only by the holder of the lock of the table the PMD references now (lock through a snapshot,
/// then compare the PMD: <see cref="PteOffsetMapLock"/>);
/// P2 a table that was detached (retracted, or withdrawn from a deposit) is freed only after a grace period of
/// <see cref="Epochs"/> that started after the detach, so a walker inside a section never reads reused memory;
/// P3 a table is removed only under the PMD lock and its own lock, empty, with the PMD cleared;
/// P4 <see cref="PteOffsetMapLock"/> never returns a locked table the PMD no longer references;
/// P5 <see cref="PageTableCount"/> = tables allocated - tables freed = tables linked + tables deposited + tables
/// waiting for their grace period;
/// H4 a huge PMD is split by filling every PTE of the withdrawn deposit before the PMD points at it (release store), and
/// the folio's references go from 1 (the PMD's) to one per PTE;
/// H5 every huge PMD has exactly one deposited table; withdraw never finds an empty slot.</para>
/// <para><b>Checks.</b> Every non-zero entry carries <see cref="Pte.Tag"/>; a table is checked empty when it is freed
/// and when a deposit is withdrawn; in a checked arena a freed table is poisoned at once and its page's lock word is
/// poisoned by the destructor. A lock attempt on a freed table, an entry read from a freed table, or a non-empty table at
/// free is reported as a <see cref="PageBugException"/> (thrown on the caller's path, or collected in
/// <see cref="ReportedBugs"/> when found in a deferred callback), and the table is then leaked rather than reused.</para>
/// </remarks>
public sealed unsafe partial class AddressSpace
{
    private readonly bool _legacySkipPmdRecheck;
    private readonly bool _legacyFreeTablesAtOnce;
    private readonly ConcurrentQueue<PageBugException> _bugs = new();
    private int _pageShift;
    private int _pteBits;
    private int _pmdBits;
    private int _topBits;
    private ulong _vaLimit;
    private long _top; // PFN + 1 of the top table, 0 until the first page-table operation
    private long _nrPtes;
    private long _deposits;
    private long _hugeMappings;
    private long _pendingTableFrees;

    /// <summary>Entries per PTE table (<c>PTRS_PER_PTE</c>): <see cref="FragmentSize"/> / 8.</summary>
    public int PtesPerTable => 1 << _pteBits;

    /// <summary>Entries per PMD table (<c>PTRS_PER_PMD</c>): page size / 16 (the other half holds deposits).</summary>
    public int PmdsPerTable => 1 << _pmdBits;

    /// <summary>Bytes one PMD entry covers (<c>HPAGE_PMD_SIZE</c>).</summary>
    public ulong HugePageSize => 1UL << (_pageShift + _pteBits);

    /// <summary>The order of a folio a huge PMD maps (<c>HPAGE_PMD_ORDER</c>).</summary>
    public int HugeOrder => _pteBits;

    /// <summary>The size of the virtual address space in bytes: addresses run from 0 to this value - 1.</summary>
    public ulong AddressSpaceSize => _vaLimit;

    /// <summary><c>mm_pgtables_bytes</c> in tables (<c>nr_ptes</c>): PTE tables allocated and not yet freed (P5).</summary>
    public long PageTableCount => Interlocked.Read(ref _nrPtes);

    /// <summary>Tables deposited under huge PMDs right now (H5: one per huge PMD).</summary>
    public long DepositedTableCount => Interlocked.Read(ref _deposits);

    /// <summary>Huge PMD mappings right now.</summary>
    public long HugeMappingCount => Interlocked.Read(ref _hugeMappings);

    /// <summary>Bugs found on a deferred path (a reclaim callback), where there is no caller to throw to.</summary>
    public IReadOnlyCollection<PageBugException> ReportedBugs => _bugs;

    private void InitGeometry()
    {
        _pageShift = BitOperations.Log2((uint)_arena.PageSize);
        _pteBits = BitOperations.Log2((uint)FragmentSize / 8);
        _pmdBits = _pageShift - 4;
        _topBits = _pageShift - 3;
        _vaLimit = 1UL << (_pageShift + _pteBits + _pmdBits + _topBits);
    }

    private int TopIndex(ulong va) => (int)(va >> (_pageShift + _pteBits + _pmdBits));

    private int PmdIndex(ulong va) => (int)(va >> (_pageShift + _pteBits)) & (PmdsPerTable - 1);

    private int PteIndex(ulong va) => (int)(va >> _pageShift) & (PtesPerTable - 1);

    private void CheckAddress(ulong va, string name)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _destroyed) != 0, this);
        if (va >= _vaLimit)
        {
            throw new ArgumentOutOfRangeException(name, va, $"The address is outside the address space (0 to 0x{AddressSpaceSize - 1:x}).");
        }
    }

    private ulong* PageBase(Pfn page) => (ulong*)_arena.AddressOf(page);

    private ulong* TableBase(PtFragment table) => (ulong*)(_arena.AddressOf(table.Page) + (nint)table.Index * FragmentSize);

    /// <summary>
    /// <c>pmd_offset</c> (with <c>pgd_alloc</c>/<c>pmd_alloc</c> when <paramref name="allocate"/>): the PMD slot of
    /// <paramref name="va"/>, or null when its PMD table does not exist and may not be created.
    /// </summary>
    /// <remarks>The top and PMD levels are only ever added (CAS from 0, loser frees its page) and removed at teardown,
    /// so a slot pointer stays valid for the address space's life.</remarks>
    private ulong* PmdSlot(ulong va, bool allocate)
    {
        long top = Volatile.Read(ref _top);
        if (top == 0)
        {
            if (!allocate)
            {
                return null;
            }

            top = InstallTop();
        }

        ulong* topSlot = PageBase(new Pfn((uint)(top - 1))) + TopIndex(va);
        var e = new Pte(Volatile.Read(ref *topSlot));
        if (e.IsNone)
        {
            if (!allocate)
            {
                return null;
            }

            e = InstallPmdTable(topSlot);
        }

        if (!e.IsTable)
        {
            throw Bug(e.Pfn, "pmd_offset", $"the top-level entry for 0x{va:x} is not a table ({e})");
        }

        return PageBase(e.Pfn) + PmdIndex(va);
    }

    /// <summary>A zeroed page for the top or PMD level, constructed as a page table with its lock.</summary>
    private Pfn AllocDirectoryPage()
    {
        Pfn page = _arena.AllocPages(0);
        _arena.GetSpan(page).Clear();
        ref PageDescriptor d = ref _arena.DescriptorOf(page);
        d.Flags |= (uint)PageFlags.PageTable;
        PtLock.Init(ref d); // plain stores, published by the CAS that installs the page (full fence)
        return page;
    }

    /// <summary><c>pgd_alloc</c>: the top table, installed once by CAS.</summary>
    private long InstallTop()
    {
        Pfn page = AllocDirectoryPage();
        long mine = page.Value + 1L;
        long seen = Interlocked.CompareExchange(ref _top, mine, 0);
        if (seen != 0)
        {
            FreeDirectoryPageNow(page); // never published
            return seen;
        }

        return mine;
    }

    /// <summary><c>__pmd_alloc</c>: a PMD table installed in a top slot by CAS (the kernel uses page_table_lock).</summary>
    private Pte InstallPmdTable(ulong* topSlot)
    {
        Pfn page = AllocDirectoryPage();
        var entry = Pte.Table(new PtFragment(page, 0));
        ulong seen = Interlocked.CompareExchange(ref *topSlot, entry.Value, 0);
        if (seen != 0)
        {
            FreeDirectoryPageNow(page);
            return new Pte(seen);
        }

        return entry;
    }

    private void FreeDirectoryPageNow(Pfn page)
    {
        ref PageDescriptor d = ref _arena.DescriptorOf(page);
        d.Flags &= ~(uint)PageFlags.PageTable;
        PtLock.Free(ref d);
        _arena.FreePages(page, 0);
    }

    /// <summary><c>pmd_lock</c>: the lock of the PMD table holding <paramref name="pmdSlot"/>.</summary>
    private ref PageDescriptor PmdLock(ulong* pmdSlot)
    {
        Pfn page = _arena.PfnOf((nint)pmdSlot);
        ref PageDescriptor d = ref _arena.DescriptorOf(page);
        if (!PtLock.TryLock(ref d))
        {
            throw Bug(page, "pmd_lock", "the PMD table's lock word is not a lock (the PMD table was freed)");
        }

        return ref d;
    }

    /// <summary><c>pte_alloc</c>: a new, zeroed PTE table from the fragment allocator, counted in <see cref="PageTableCount"/>.</summary>
    private PtFragment AllocTable()
    {
        PtFragment table = AllocFragment();
        GetSpan(table).Clear(); // plain stores, published by the release store of the PMD that links the table
        Interlocked.Increment(ref _nrPtes);
        return table;
    }

    /// <summary>
    /// <c>pte_free_defer</c>: frees a detached table once no walker can still reach it (P2). Legacy form of seed 004: at
    /// once.
    /// </summary>
    internal void FreeTable(PtFragment table)
    {
        if (_legacyFreeTablesAtOnce)
        {
            Legacy.LegacyPageTables.FreeTableAtOnce(this, table);
            return;
        }

        Interlocked.Increment(ref _pendingTableFrees);
        _epochs.Defer(static s => ((DeferredTable)s!).Run(), new DeferredTable(this, table));
    }

    /// <summary>
    /// <c>pte_free</c>: the table must be empty (a write that went into a table no PMD references shows up here); in a
    /// checked arena it is poisoned; then the fragment is given back.
    /// </summary>
    /// <returns>False when the table was not empty: the bug is reported and the table leaked, not reused.</returns>
    internal bool FreeTableNow(PtFragment table, bool throwOnBug)
    {
        Span<ulong> entries = new(TableBase(table), PtesPerTable);
        int live = entries.IndexOfAnyExcept(0UL);
        if (live >= 0)
        {
            PageBugException bug = Bug(table.Page, "pte_free", $"page table {table.Page}#{table.Index} freed with entry {live} = {new Pte(entries[live])}: a write went into a table that no PMD references (seed 001)");
            if (throwOnBug)
            {
                throw bug;
            }

            _bugs.Enqueue(bug);
            return false;
        }

        if (_arena.IsChecked)
        {
            entries.Fill(PageArena.PoisonByte * 0x0101_0101_0101_0101UL);
        }

        Interlocked.Decrement(ref _nrPtes);
        FreeFragment(table);
        return true;
    }

    /// <summary><c>pgtable_trans_huge_deposit</c>, under the PMD lock: parks <paramref name="table"/> for a later split (H5).</summary>
    private void Deposit(ulong* pmdSlot, PtFragment table)
    {
        ulong* slot = pmdSlot + PmdsPerTable;
        if (*slot != 0)
        {
            throw Bug(table.Page, "pgtable_trans_huge_deposit", "the PMD already has a deposited table (H5)");
        }

        Volatile.Write(ref *slot, Pte.Table(table).Value);
        Interlocked.Increment(ref _deposits);
    }

    /// <summary>
    /// <c>pgtable_trans_huge_withdraw</c>, under the PMD lock: takes the deposited table back (H5), checked empty.
    /// </summary>
    /// <returns>The table; null when it was written through a stale lock (seed 001's missing recheck): that table is
    /// reported in <see cref="ReportedBugs"/> and leaked, and the caller does without it.</returns>
    private PtFragment? Withdraw(ulong* pmdSlot)
    {
        ulong* slot = pmdSlot + PmdsPerTable;
        var e = new Pte(*slot);
        if (!e.IsTable)
        {
            throw Bug(_arena.PfnOf((nint)pmdSlot), "pgtable_trans_huge_withdraw", $"a huge PMD has no deposited table ({e}) (H5)");
        }

        Volatile.Write(ref *slot, 0UL);
        Interlocked.Decrement(ref _deposits);
        PtFragment table = e.Fragment;
        Span<ulong> entries = new(TableBase(table), PtesPerTable);
        int live = entries.IndexOfAnyExcept(0UL);
        if (live >= 0)
        {
            _bugs.Enqueue(Bug(table.Page, "pgtable_trans_huge_withdraw", $"deposited table {table.Page}#{table.Index} has entry {live} = {new Pte(entries[live])}: a write went into a table that no PMD references (seed 001)"));
            return null;
        }

        return table;
    }

    private PageBugException Bug(Pfn page, string operation, string message) =>
        new(page, operation, message, _arena.DumpPage(page));

    private sealed class DeferredTable(AddressSpace owner, PtFragment table)
    {
        public void Run()
        {
            Interlocked.Decrement(ref owner._pendingTableFrees);
            owner.FreeTableNow(table, throwOnBug: false);
        }
    }
}
