using System.Collections.Concurrent;

namespace PageCore;

/// <summary>
/// A software hash page table that plays the hardware of powerpc's hash MMU (book3s64 HPT): groups of
/// <see cref="SlotsPerGroup"/> slots, a primary and a secondary group per virtual address, entries of (tag, PFN, valid).
/// Address spaces attached to it (<see cref="AddressSpaceOptions.HashMmu"/>) hash their PTEs into it on access
/// (<see cref="AddressSpace.Access"/>) and invalidate them when their PTEs change.
/// </summary>
/// <remarks>
/// <para>The hardware's rule (T2): at most one valid entry may match a virtual address at any instant (the Power ISA leaves
/// a multi-hit undefined: a machine check). Every insert therefore checks both groups for a valid entry of the same
/// address first; a match is recorded in <see cref="Violations"/> with both entries, and the insert is refused, as a
/// machine check would stop the machine. A translation that finds two matches is recorded too.</para>
/// <para>Each slot is two words, as an HPTE is two doublewords: V (valid bit, lock bit, tag = address-space id and virtual
/// page number) and R (PFN and a write permission bit). A slot is claimed by CAS of V from 0 (or from the victim's
/// value when evicting) to a locked value, R is written, and a release store of V makes it valid; an invalidation is a
/// CAS of V from exactly (valid, tag) to 0, so an entry that was evicted and reused is never invalidated by mistake.</para>
/// <para>The table is the judge of rule 5, so it must never lie: no torn translation (address A with B's page), no
/// duplicate reported that never existed, no duplicate missed. R carries a generation, bumped by every write of R (only
/// the holder of the slot's lock writes it), and a reader takes an entry as (R, V, R): the entry is consistent when V is
/// the entry's and both reads of R agree (<see cref="ReadSlot"/>). A multi-hit is reported only when the first entry is
/// seen unchanged after the second was read (<see cref="TryTranslate"/>), and an insert scans again after claiming its
/// slot, so two inserts of one address at once are caught by one of them (<see cref="Insert"/>).
/// <see cref="LegacyUncheckedReads"/> keeps the earlier reads (<see cref="Legacy.LegacyHashTranslate"/>).</para>
/// </remarks>
public sealed partial class HashMmu
{
    /// <summary>Slots per group (<c>HPTES_PER_GROUP</c>).</summary>
    public const int SlotsPerGroup = 8;

    private const ulong ValidBit = 1UL << 63;
    private const ulong LockBit = 1UL << 62;
    private const ulong TagMask = (1UL << 56) - 1;
    private const int AsidShift = 40;
    private const ulong WriteBit = 1UL << 63;
    private const ulong PfnMask = uint.MaxValue;
    private const ulong GenerationOne = 1UL << 32;
    private const ulong GenerationMask = ((1UL << 31) - 1) << 32;

    private readonly ulong[] _v;
    private readonly ulong[] _r;
    private readonly int _groupMask;
    private readonly ConcurrentQueue<string> _violations = new();
    private int _nextAsid;
    private long _violationCount;
    private long _inserts;
    private long _evictions;
    private long _invalidations;

    /// <summary>Creates a hash table of <paramref name="groups"/> groups.</summary>
    /// <param name="groups">A power of two from 2 to 2^24 (default 4096 groups, 32,768 slots).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="groups"/> is not a power of two in range.</exception>
    public HashMmu(int groups = 4096)
    {
        if (groups < 2 || groups > 1 << 24 || (groups & (groups - 1)) != 0)
        {
            throw new ArgumentOutOfRangeException(nameof(groups), groups, "A power of two from 2 to 2^24.");
        }

        _v = new ulong[groups * SlotsPerGroup];
        _r = new ulong[groups * SlotsPerGroup];
        _groupMask = groups - 1;
    }

    /// <summary>Groups in the table (<c>htab_hash_mask + 1</c>).</summary>
    public int Groups => _groupMask + 1;

    /// <summary>Entries inserted so far.</summary>
    public long Inserts => Interlocked.Read(ref _inserts);

    /// <summary>Valid entries evicted to make room (both groups full).</summary>
    public long Evictions => Interlocked.Read(ref _evictions);

    /// <summary>Entries invalidated (<c>tlbie</c>).</summary>
    public long Invalidations => Interlocked.Read(ref _invalidations);

    /// <summary>How many times the hardware's rules were broken (a duplicate insert, a multi-hit, a stale entry).</summary>
    public long ViolationCount => Interlocked.Read(ref _violationCount);

    /// <summary>The first violations, each naming both entries (up to 64 kept).</summary>
    public IReadOnlyCollection<string> Violations => _violations;

    /// <summary>
    /// The hardware's translation: looks up (<paramref name="asid"/>, <paramref name="va"/>) in both groups.
    /// </summary>
    /// <param name="asid">The address space's id.</param>
    /// <param name="va">The virtual address.</param>
    /// <param name="pfn">The translated page.</param>
    /// <param name="writable">Whether the entry allows writes.</param>
    /// <returns>True on a hit; false on a miss (a hash fault follows).</returns>
    /// <remarks>
    /// A consistent entry only (<see cref="TryReadEntry"/>): the page returned is the one the matching V published. A
    /// second match is a multi-hit only if the first entry is still there, unchanged, after the second was read: then
    /// both were valid at the instant the second was read. Otherwise the first was invalidated or replaced meanwhile (an
    /// entry seen twice, at its old slot and its new one) and the later one is the translation. A scan is not a
    /// snapshot, so it may miss a duplicate that comes and goes while it runs; duplicates are judged at insert
    /// (<see cref="Insert"/>), where none is missed.
    /// </remarks>
    public bool TryTranslate(int asid, ulong va, out Pfn pfn, out bool writable)
    {
        if (LegacyUncheckedReads)
        {
            return Legacy.LegacyHashTranslate.TryTranslate(this, asid, va, out pfn, out writable);
        }

        ulong tag = Tag(asid, va);
        int first = -1;
        ulong firstR = 0;
        for (int k = 0; k < 2; k++)
        {
            int g = Group(tag, k);
            for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
            {
                if (Volatile.Read(ref _v[i]) != (ValidBit | tag))
                {
                    continue; // the common miss: one load per slot, as before
                }

                ProbeHook?.Invoke(HashProbe.TranslateMatched, i);
                if (!TryReadEntry(i, tag, out ulong r))
                {
                    continue; // invalidated or reused since the match
                }

                ProbeHook?.Invoke(HashProbe.TranslateSlotRead, i);
                if (first >= 0 && IsEntry(first, tag, firstR))
                {
                    Violation($"T2: a translation of asid {asid} va 0x{va:x} matched two valid entries (slot {first} pfn 0x{(uint)firstR:x} and slot {i} pfn 0x{(uint)r:x}): a multi-hit");
                    continue;
                }

                first = i;
                firstR = r;
            }
        }

        pfn = first >= 0 ? new Pfn((uint)firstR) : default;
        writable = first >= 0 && (firstR & WriteBit) != 0;
        return first >= 0;
    }

    /// <summary>Valid entries of <paramref name="asid"/> right now (a quiescent count).</summary>
    /// <param name="asid">The address space's id.</param>
    public int CountEntries(int asid)
    {
        int n = 0;
        for (int i = 0; i < _v.Length; i++)
        {
            ulong v = Volatile.Read(ref _v[i]);
            if ((v & ValidBit) != 0 && (int)((v & TagMask) >> AsidShift) == asid)
            {
                n++;
            }
        }

        return n;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The kernel side's operations on the hardware (hpte_insert, hpte_updatepp, hpte_invalidate), internal.

    /// <summary>A fresh address-space id (the VSID's part that tells address spaces apart).</summary>
    internal int AllocateAsid()
    {
        int id = Interlocked.Increment(ref _nextAsid);
        if (id >= 1 << 16)
        {
            throw new InvalidOperationException("PageCore: the hash MMU ran out of address-space ids (65,535).");
        }

        return id;
    }

    /// <summary>
    /// <c>hpte_insert</c>: an entry for (<paramref name="asid"/>, <paramref name="va"/>) -> <paramref name="pfn"/> in the
    /// primary group, else the secondary, else over a valid entry of the primary group (evicted). The caller holds the
    /// PTE's busy bit, so no other insert for this address runs at the same time.
    /// </summary>
    /// <returns>The slot (bit 3 = secondary group, bits 0..2 = slot in the group), or -1 when a valid entry for the address
    /// already exists (a violation of T2, recorded with both entries; nothing inserted).</returns>
    /// <remarks>
    /// Two scans: before claiming a slot (an entry of the address still valid, seed 003's duplicate) and again after
    /// claiming it (<see cref="ClaimedAlone"/>), which catches two inserts of one address at once: neither sees the other
    /// in its first scan, both claim, and the later claim's scan sees the earlier one.
    /// </remarks>
    internal int Insert(int asid, ulong va, Pfn pfn, bool writable)
    {
        ulong tag = Tag(asid, va);
        int live = FindEntry(tag, except: -1);
        if (live >= 0)
        {
            Violation($"T2: inserting asid {asid} va 0x{va:x} -> {pfn} while slot {live} still holds a valid entry for it -> {DescribeSlot(live, tag)}: a duplicate hash entry (seed 003)");
            return -1;
        }

        ProbeHook?.Invoke(HashProbe.InsertScanned, -1);
        ulong r = pfn.Value | (writable ? WriteBit : 0);
        for (int attempt = 0; ; attempt++)
        {
            for (int k = 0; k < 2; k++)
            {
                int g = Group(tag, k);
                for (int s = 0; s < SlotsPerGroup; s++)
                {
                    int i = g * SlotsPerGroup + s;
                    if (Volatile.Read(ref _v[i]) == 0 && Interlocked.CompareExchange(ref _v[i], LockBit | tag, 0) == 0)
                    {
                        return ClaimedAlone(i, asid, va, pfn) ? Publish(i, r, tag, (k << 3) | s) : -1;
                    }
                }
            }

            // Both groups full: evict an entry of the primary group (hpte_remove picks one at random).
            int victimSlot = (int)(Interlocked.Increment(ref _evictions) & (SlotsPerGroup - 1));
            int victim = Group(tag, 0) * SlotsPerGroup + victimSlot;
            ulong old = Volatile.Read(ref _v[victim]);
            if ((old & ValidBit) != 0 && (old & LockBit) == 0 && Interlocked.CompareExchange(ref _v[victim], LockBit | tag, old) == old)
            {
                return ClaimedAlone(victim, asid, va, pfn) ? Publish(victim, r, tag, victimSlot) : -1;
            }

            Interlocked.Decrement(ref _evictions); // lost the victim to someone else: look again
            if (attempt > 1000)
            {
                Thread.Yield();
            }
        }
    }

    /// <summary><c>hpte_updatepp</c>: changes the permission of the entry at <paramref name="slot"/> if it is still this address's.</summary>
    /// <returns>False when the slot no longer holds this address's entry (evicted or invalidated): the caller inserts anew.</returns>
    internal bool UpdatePermission(int asid, ulong va, int slot, Pfn pfn, bool writable)
    {
        ulong tag = Tag(asid, va);
        int i = SlotIndex(tag, slot);
        if (Interlocked.CompareExchange(ref _v[i], LockBit | tag, ValidBit | tag) != (ValidBit | tag))
        {
            return false;
        }

        ulong held = Volatile.Read(ref _r[i]);
        if ((uint)held != pfn.Value)
        {
            // The PTE's page changed without the entry being invalidated: a stale translation (T1/T2).
            Violation($"T2: asid {asid} va 0x{va:x}: slot {i} translates to pfn 0x{(uint)held:x} but the PTE maps {pfn}: a stale hash entry");
        }

        WriteR(i, pfn.Value | (writable ? WriteBit : 0));
        Volatile.Write(ref _v[i], ValidBit | tag); // release: the new R (and its generation) before the entry is valid again
        return true;
    }

    /// <summary>
    /// <c>hpte_invalidate</c> (<c>tlbie</c>): clears the entry at <paramref name="slot"/> if it still holds this address's
    /// entry; an entry that was evicted, and perhaps reused for another address, is left alone.
    /// </summary>
    /// <returns>True when an entry was invalidated.</returns>
    internal bool Invalidate(int asid, ulong va, int slot) => InvalidateAt(SlotIndex(Tag(asid, va), slot), Tag(asid, va));

    /// <summary><c>flush_hash_range</c> over [<paramref name="start"/>, <paramref name="end"/>): every entry of those addresses.</summary>
    internal int InvalidateRange(int asid, ulong start, ulong end, int pageShift)
    {
        int n = 0;
        for (ulong va = start; va < end; va += 1UL << pageShift)
        {
            ulong tag = Tag(asid, va);
            for (int k = 0; k < 2; k++)
            {
                int g = Group(tag, k);
                for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
                {
                    if ((Volatile.Read(ref _v[i]) & TagMask) == tag && InvalidateAt(i, tag))
                    {
                        n++;
                    }
                }
            }
        }

        return n;
    }

    /// <summary>Every entry of <paramref name="asid"/> (address-space teardown).</summary>
    internal int InvalidateAll(int asid)
    {
        int n = 0;
        for (int i = 0; i < _v.Length; i++)
        {
            ulong v = Volatile.Read(ref _v[i]);
            if ((v & ValidBit) != 0 && (int)((v & TagMask) >> AsidShift) == asid && InvalidateAt(i, v & TagMask))
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>Every valid entry of <paramref name="asid"/>: its page-aligned address and page (a quiescent read).</summary>
    internal List<(ulong Va, Pfn Page)> EntriesOf(int asid)
    {
        var list = new List<(ulong, Pfn)>();
        for (int i = 0; i < _v.Length; i++)
        {
            ulong v = Volatile.Read(ref _v[i]);
            if ((v & ValidBit) != 0 && (int)((v & TagMask) >> AsidShift) == asid && TryReadEntry(i, v & TagMask, out ulong r))
            {
                list.Add(((v & ((1UL << AsidShift) - 1)) << 12, new Pfn((uint)r)));
            }
        }

        return list;
    }

    /// <summary>True when a valid entry translates (<paramref name="asid"/>, <paramref name="va"/>) to <paramref name="pfn"/>.</summary>
    internal bool Holds(int asid, ulong va, Pfn pfn)
    {
        ulong tag = Tag(asid, va);
        for (int k = 0; k < 2; k++)
        {
            int g = Group(tag, k);
            for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
            {
                if (Volatile.Read(ref _v[i]) == (ValidBit | tag) && TryReadEntry(i, tag, out ulong r) && (uint)r == pfn.Value)
                {
                    return true;
                }
            }
        }

        return false;
    }

    /// <summary>Records a broken rule found by the kernel side (a page freed under a live entry, a batch outliving its lock).</summary>
    internal void Violation(string what)
    {
        Interlocked.Increment(ref _violationCount);
        if (_violations.Count < 64)
        {
            _violations.Enqueue(what);
        }
    }

    /// <summary>
    /// Makes the claimed slot <paramref name="i"/> valid. Keeps: R is written before V says valid (the release store of V
    /// orders the store of R before it, on arm64 too), so a reader whose acquire load of V sees the entry sees its R.
    /// </summary>
    private int Publish(int i, ulong r, ulong tag, int slot)
    {
        WriteR(i, r);
        Volatile.Write(ref _v[i], ValidBit | tag); // release: R is visible before the entry is valid
        Interlocked.Increment(ref _inserts);
        return slot;
    }

    /// <summary>
    /// Clears slot <paramref name="i"/> if it holds the valid entry of <paramref name="tag"/>. Keeps: only that exact V is
    /// cleared (a CAS on the value seen, a full fence), so an entry evicted and reused is left alone; R is not written, so
    /// a reader between its reads sees V changed on its recheck and drops the slot (<see cref="ReadSlot"/>).
    /// </summary>
    private bool InvalidateAt(int i, ulong tag)
    {
        var spin = new SpinWait();
        while (true)
        {
            ulong v = Volatile.Read(ref _v[i]);
            if (v == (LockBit | tag))
            {
                spin.SpinOnce(sleep1Threshold: -1); // an updatepp of this very entry is in flight
                continue;
            }

            if (v != (ValidBit | tag))
            {
                return false;
            }

            if (Interlocked.CompareExchange(ref _v[i], 0, v) == v)
            {
                Interlocked.Increment(ref _invalidations);
                return true;
            }
        }
    }

    private static ulong Tag(int asid, ulong va) => ((ulong)asid << AsidShift) | ((va >> 12) & ((1UL << AsidShift) - 1));

    private int SlotIndex(ulong tag, int slot)
    {
        int primary = Primary(tag);
        int g = (slot & 8) != 0 ? ~primary & _groupMask : primary;
        return g * SlotsPerGroup + (slot & 7);
    }

    private int Primary(ulong tag) => (int)((tag * 0x9E37_79B9_7F4A_7C15UL) >> 40) & _groupMask;

    /// <summary>The primary group (<paramref name="k"/> = 0) or the secondary one (1, the primary's complement).</summary>
    private int Group(ulong tag, int k)
    {
        int p = Primary(tag);
        return k == 0 ? p : ~p & _groupMask;
    }
}
