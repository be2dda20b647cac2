using System.Runtime.CompilerServices;

namespace PageCore;

/// <summary>What <see cref="AddressSpace.Access"/> did.</summary>
public enum AccessResult
{
    /// <summary>The hash MMU translated the address with the permission needed (no fault), or a huge PMD maps it (huge mappings are not hashed here).</summary>
    Hit,

    /// <summary>A hash fault inserted (or refreshed) the hash entry from a present PTE.</summary>
    Hashed,

    /// <summary>The PTE was not present: the page fault path mapped a page, then the hash fault hashed it.</summary>
    Faulted,

    /// <summary>A write to a read-only mapping: refused, nothing changed.</summary>
    Denied,
}

/// <summary>
/// The Linux side of the hash MMU (book3s64 hash): PTE updates that respect the busy bit and queue invalidations of
/// hashed entries, lazy-MMU batching, and the hash fault.
/// </summary>
/// <remarks>
/// <para>Invariants (kernel-algorithms.md §4.4): T1 a page is never freed while a hash entry may translate to it (the gather
/// drains the thread's batch before it frees, and checks); T2 at most one valid hash entry per address (the hash MMU
/// checks every insert); it holds because <see cref="PteBits.Hashed"/> is set whenever an entry may exist, hashing
/// happens only under <see cref="PteBits.Busy"/>, and every change of a hashed PTE queues its invalidation, drained before
/// the PTE lock is released; T3 a thread's batch is empty whenever it holds no PTE lock (checked at every unlock) and holds
/// one address space's entries; T5 tables are freed after a grace period (<see cref="FreeTable"/>). T4 (the rmap of a dirty
/// shared page removed after the flush) has no counterpart: there is no rmap or writeback here.</para>
/// </remarks>
public sealed unsafe partial class AddressSpace
{
    private HashMmu? _hash;
    private int _asid;
    private bool _hashBatching;
    private bool _legacyHashBatch;
    private int _tlbFlushPending;

    /// <summary>The hash MMU this address space's PTEs are hashed into, or null.</summary>
    public HashMmu? HashMmu => _hash;

    /// <summary>The address-space id in <see cref="HashMmu"/> (0 without one).</summary>
    public int Asid => _asid;

    /// <summary>
    /// A CPU's load or store at <paramref name="va"/>: the hash MMU translates it; on a miss, or a write through a
    /// read-only entry, the hash fault (<c>hash_page</c>) hashes the PTE under its busy bit; if the PTE is not present, the
    /// page fault path (<see cref="Fault"/>) maps a page and the hash fault runs again.
    /// </summary>
    /// <param name="va">A virtual address of the address space.</param>
    /// <param name="write">A store.</param>
    /// <returns>What happened.</returns>
    /// <exception cref="InvalidOperationException">The address space has no hash MMU.</exception>
    /// <exception cref="ArgumentOutOfRangeException">The address is outside the address space.</exception>
    /// <exception cref="OutOfPagesException">The fault found no free page.</exception>
    public AccessResult Access(ulong va, bool write)
    {
        HashMmu hash = _hash ?? throw new InvalidOperationException("PageCore: this address space has no hash MMU (AddressSpaceOptions.HashMmu).");
        CheckAddress(va, nameof(va));
        va &= ~((1UL << _pageShift) - 1);
        bool faulted = false;
        var spin = new SpinWait();
        while (true)
        {
            if (hash.TryTranslate(_asid, va, out _, out bool writable) && (!write || writable))
            {
                return faulted ? AccessResult.Faulted : AccessResult.Hit;
            }

            switch (HashPage(va, write))
            {
                case HashOutcome.Hashed:
                    return faulted ? AccessResult.Faulted : AccessResult.Hashed;
                case HashOutcome.Huge:
                    return AccessResult.Hit;
                case HashOutcome.Denied:
                    return AccessResult.Denied;
                case HashOutcome.Busy:
                    spin.SpinOnce(sleep1Threshold: -1); // another CPU is hashing this PTE: retry the access
                    break;
                case HashOutcome.NotPresent:
                    try
                    {
                        Fault(va, write);
                        faulted = true;
                    }
                    catch (InvalidOperationException) when (write)
                    {
                        return AccessResult.Denied; // a read-only page was mapped meanwhile
                    }

                    break;
            }
        }
    }

    /// <summary>
    /// A quiescent check of the hash MMU against the page tables: every valid hash entry of this address space must
    /// translate to the page its present PTE maps (no stale entry, T1/T2). Each mismatch is recorded as a violation of
    /// the hash MMU.
    /// </summary>
    /// <returns>How many stale entries were found.</returns>
    /// <exception cref="InvalidOperationException">The address space has no hash MMU.</exception>
    public int VerifyHash()
    {
        HashMmu hash = _hash ?? throw new InvalidOperationException("PageCore: this address space has no hash MMU.");
        var mapped = new Dictionary<ulong, Pte>();
        foreach (PageMapping m in Mappings())
        {
            mapped[m.Address] = m.Entry;
        }

        int stale = 0;
        foreach ((ulong va, Pfn page) in hash.EntriesOf(_asid))
        {
            if (!mapped.TryGetValue(va, out Pte pte) || pte.IsHuge || pte.Pfn != page || (pte.Bits & PteBits.Hashed) == 0)
            {
                stale++;
                hash.Violation($"T1/T2: a hash entry of asid {_asid} translates 0x{va:x} to {page}, but the PTE there is {(mapped.TryGetValue(va, out Pte p) ? p.ToString() : "none")}: a stale entry");
            }
        }

        return stale;
    }

    private enum HashOutcome
    {
        Hashed,
        Huge,
        Denied,
        Busy,
        NotPresent,
    }

    private void InitHash(AddressSpaceOptions options)
    {
        _hash = options.HashMmu;
        _hashBatching = options.HashBatching;
        _legacyHashBatch = options.LegacyHashBatchInGather;
        if (_hash is not null)
        {
            _asid = _hash.AllocateAsid();
        }
    }

    /// <summary>
    /// <c>__hash_page_4K</c>: without the PTE lock, inside an epoch section. Takes the PTE's busy bit by CAS (with
    /// accessed, and dirty for a write) after checking the access; refreshes the recorded hash entry if it is still there,
    /// else inserts one; then a release store of the PTE with the hashed bit and slot clears busy.
    /// </summary>
    private HashOutcome HashPage(ulong va, bool write)
    {
        ulong* pmdSlot = PmdSlot(va, allocate: false);
        if (pmdSlot == null)
        {
            return HashOutcome.NotPresent;
        }

        using EpochGuard guard = _epochs.Enter();
        var pmd = new Pte(Volatile.Read(ref *pmdSlot));
        if (pmd.IsHuge)
        {
            return HashOutcome.Huge;
        }

        if (!pmd.IsTable)
        {
            return pmd.IsBad ? throw BadPmd(pmdSlot, pmd) : HashOutcome.NotPresent;
        }

        ulong* ptep = TableBase(pmd.Fragment) + PteIndex(va);
        ulong old, busy;
        while (true)
        {
            old = Volatile.Read(ref *ptep);
            var pte = new Pte(old);
            if (pte.IsBad)
            {
                throw Bug(pmd.Fragment.Page, "hash_page", $"the PTE of 0x{va:x} reads {pte}: the table was freed while the hash fault could reach it");
            }

            if (!pte.IsPresent)
            {
                return HashOutcome.NotPresent;
            }

            if ((old & (ulong)PteBits.Busy) != 0)
            {
                return HashOutcome.Busy;
            }

            if (write && (old & (ulong)PteBits.Write) == 0)
            {
                return HashOutcome.Denied;
            }

            busy = old | (ulong)(PteBits.Busy | PteBits.Accessed | (write ? PteBits.Dirty : PteBits.None));
            if (Interlocked.CompareExchange(ref *ptep, busy, old) == old)
            {
                break; // busy is ours: no PTE update and no other hash fault of this PTE can run until we store
            }
        }

        var held = new Pte(old);
        bool writable = (old & (ulong)PteBits.Write) != 0;
        ulong final = busy & ~(ulong)PteBits.Busy;
        if (held.Bits.HasFlag(PteBits.Hashed) && _hash!.UpdatePermission(_asid, va, held.HashSlot, held.Pfn, writable))
        {
            Volatile.Write(ref *ptep, final);
            return HashOutcome.Hashed;
        }

        final &= ~(ulong)PteBits.Hashed; // the recorded entry is gone (evicted or invalidated)
        int slot = _hash!.Insert(_asid, va, held.Pfn, writable);
        if (slot >= 0)
        {
            final = new Pte(final).WithHashSlot(slot).With(PteBits.Hashed).Value;
        }

        Volatile.Write(ref *ptep, final); // release: clears busy; the hashed bit is visible with the entry in place
        return HashOutcome.Hashed;
    }

    /// <summary>
    /// A PTE write under the PTE lock (<c>set_pte_at</c> / <c>pte_update</c>): a plain release store without a hash MMU;
    /// with one, <see cref="PteUpdate"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong PteSet(ulong* ptep, ulong va, ulong value)
    {
        if (_hash is null)
        {
            ulong old = *ptep;
            Volatile.Write(ref *ptep, value);
            return old;
        }

        return PteUpdate(ptep, va, ~0UL, value);
    }

    /// <summary>
    /// <c>hash__pte_update</c>, under the PTE lock: spins while a hash fault holds the busy bit, applies
    /// <paramref name="clr"/>/<paramref name="set"/> by CAS, and if the old PTE was hashed, queues the invalidation of its
    /// entry (<c>hpte_need_flush</c>). The hashed bit survives an update that does not clear it, so a hash fault meanwhile
    /// refreshes the old entry instead of inserting a second one.
    /// </summary>
    /// <returns>The old PTE.</returns>
    internal ulong PteUpdate(ulong* ptep, ulong va, ulong clr, ulong set)
    {
        var spin = new SpinWait();
        ulong old;
        while (true)
        {
            old = Volatile.Read(ref *ptep);
            if ((old & (ulong)PteBits.Busy) != 0)
            {
                spin.SpinOnce(sleep1Threshold: -1);
                continue;
            }

            if (Interlocked.CompareExchange(ref *ptep, (old & ~clr) | set, old) == old)
            {
                break;
            }
        }

        if ((old & (ulong)PteBits.Hashed) != 0 && !new Pte(old).IsBad)
        {
            HpteNeedFlush(va, old);
        }

        return old;
    }

    /// <summary><c>hpte_need_flush</c>: into the thread's batch while in lazy-MMU mode, else invalidated now.</summary>
    private void HpteNeedFlush(ulong va, ulong old)
    {
        HashBatch batch = HashBatch.Current;
        bool batching = _legacyHashBatch ? Legacy.LegacyHashBatch.Batching(batch) : batch.Active > 0;
        if (batching)
        {
            batch.Add(this, va, old);
            return;
        }

        InvalidateHashEntry(va, old);
        Interlocked.MemoryBarrier(); // tlbsync for this one invalidation
    }

    /// <summary><c>flush_hash_page</c>: invalidates the entry the old PTE recorded, if it is still this address's.</summary>
    internal void InvalidateHashEntry(ulong va, ulong oldPte) => _hash!.Invalidate(_asid, va, new Pte(oldPte).HashSlot);

    /// <summary><c>arch_enter_lazy_mmu_mode</c>, inside the PTE lock: invalidations are batched until the matching leave.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void EnterLazyMmu()
    {
        if (_hash is not null && _hashBatching)
        {
            HashBatch.Current.Active++;
        }
    }

    /// <summary>
    /// <c>arch_leave_lazy_mmu_mode</c>, still inside the PTE lock: drains the batch (<c>__flush_tlb_pending</c>), so no
    /// fault can install and hash a new PTE for these addresses while an old entry still exists (seed 003's fix).
    /// </summary>
    internal void LeaveLazyMmu()
    {
        if (_hash is null || !_hashBatching)
        {
            return;
        }

        HashBatch batch = HashBatch.Current;
        if (_legacyHashBatch)
        {
            Legacy.LegacyHashBatch.LeaveWithoutDrain(batch);
            return;
        }

        if (--batch.Active == 0)
        {
            batch.Flush();
        }
    }

    /// <summary>T3, checked at every PTE unlock: the thread's batch holds nothing (the fixed form drained it).</summary>
    internal void CheckBatchAtUnlock()
    {
        HashBatch batch = HashBatch.Current;
        if (!_legacyHashBatch && batch.Count > 0 && batch.Active == 0)
        {
            _hash!.Violation($"T3: a thread released a PTE lock of asid {_asid} with {batch.Count} hash invalidations still batched");
        }
    }

    /// <summary><c>hash__tlb_flush</c>'s drain: the thread's pending batch for this address space, before the gather frees.</summary>
    internal void DrainHashBatch()
    {
        if (_hash is null)
        {
            return;
        }

        HashBatch batch = HashBatch.Current;
        if (batch.Mm == this && batch.Count > 0)
        {
            batch.Flush();
        }
    }

    /// <summary>T1 check before a gather frees a page it unhooked at <paramref name="va"/>: no hash entry may still translate to it.</summary>
    internal void CheckNoTranslation(ulong va, Pfn page)
    {
        if (_hash is not null && _hash.Holds(_asid, va, page))
        {
            _hash.Violation($"T1: {page}, unhooked from asid {_asid} va 0x{va:x}, is about to be freed while a hash entry still translates to it");
        }
    }

    /// <summary>The gather's full flush of a range when another gather on this address space ran at the same time.</summary>
    internal void FlushHashRange(ulong start, ulong end)
    {
        if (_hash is not null && start < end)
        {
            _hash.InvalidateRange(_asid, start, end, _pageShift);
            Interlocked.MemoryBarrier();
        }
    }

    /// <summary><c>inc_tlb_flush_pending</c>.</summary>
    internal void IncTlbFlushPending() => Interlocked.Increment(ref _tlbFlushPending);

    /// <summary><c>dec_tlb_flush_pending</c>.</summary>
    internal void DecTlbFlushPending() => Interlocked.Decrement(ref _tlbFlushPending);

    /// <summary><c>mm_tlb_flush_nested</c>: another gather on this address space is in flight.</summary>
    internal bool TlbFlushNested => Volatile.Read(ref _tlbFlushPending) > 1;
}
