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
/// </remarks>
public sealed class HashMmu
{
    /// <summary>Slots per group (<c>HPTES_PER_GROUP</c>).</summary>
    public const int SlotsPerGroup = 8;

    private const ulong ValidBit = 1UL << 63;
    private const ulong LockBit = 1UL << 62;
    private const ulong TagMask = (1UL << 56) - 1;
    private const int AsidShift = 40;
    private const ulong WriteBit = 1UL << 63;

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
    public bool TryTranslate(int asid, ulong va, out Pfn pfn, out bool writable)
    {
        ulong tag = Tag(asid, va);
        pfn = default;
        writable = false;
        int hits = 0;
        for (int k = 0; k < 2; k++)
        {
            int g = Group(tag, k);
            for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
            {
                if (Volatile.Read(ref _v[i]) == (ValidBit | tag))
                {
                    ulong r = Volatile.Read(ref _r[i]);
                    if (hits++ == 0)
                    {
                        pfn = new Pfn((uint)r);
                        writable = (r & WriteBit) != 0;
                    }
                    else
                    {
                        Violation($"T2: a translation of asid {asid} va 0x{va:x} matched two valid entries ({pfn} and pfn 0x{(uint)r:x}): a multi-hit");
                    }
                }
            }
        }

        return hits > 0;
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
    internal int Insert(int asid, ulong va, Pfn pfn, bool writable)
    {
        ulong tag = Tag(asid, va);
        for (int k = 0; k < 2; k++)
        {
            int g = Group(tag, k);
            for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
            {
                ulong v = Volatile.Read(ref _v[i]);
                if ((v & TagMask) == tag && (v & (ValidBit | LockBit)) != 0)
                {
                    Violation($"T2: inserting asid {asid} va 0x{va:x} -> {pfn} while slot {i} still holds a valid entry for it -> pfn 0x{(uint)Volatile.Read(ref _r[i]):x}: a duplicate hash entry (seed 003)");
                    return -1;
                }
            }
        }

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
                        return Publish(i, r, tag, (k << 3) | s);
                    }
                }
            }

            // Both groups full: evict an entry of the primary group (hpte_remove picks one at random).
            int victimSlot = (int)(Interlocked.Increment(ref _evictions) & (SlotsPerGroup - 1));
            int victim = Group(tag, 0) * SlotsPerGroup + victimSlot;
            ulong old = Volatile.Read(ref _v[victim]);
            if ((old & ValidBit) != 0 && (old & LockBit) == 0 && Interlocked.CompareExchange(ref _v[victim], LockBit | tag, old) == old)
            {
                return Publish(victim, r, tag, victimSlot);
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

        if ((uint)Volatile.Read(ref _r[i]) != pfn.Value)
        {
            // The PTE's page changed without the entry being invalidated: a stale translation (T1/T2).
            Violation($"T2: asid {asid} va 0x{va:x}: slot {i} translates to pfn 0x{(uint)_r[i]:x} but the PTE maps {pfn}: a stale hash entry");
        }

        Volatile.Write(ref _r[i], pfn.Value | (writable ? WriteBit : 0));
        Volatile.Write(ref _v[i], ValidBit | tag);
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
            if ((v & ValidBit) != 0 && (int)((v & TagMask) >> AsidShift) == asid)
            {
                list.Add(((v & ((1UL << AsidShift) - 1)) << 12, new Pfn((uint)Volatile.Read(ref _r[i]))));
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
                if (Volatile.Read(ref _v[i]) == (ValidBit | tag) && (uint)Volatile.Read(ref _r[i]) == pfn.Value)
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

    private int Publish(int i, ulong r, ulong tag, int slot)
    {
        Volatile.Write(ref _r[i], r);
        Volatile.Write(ref _v[i], ValidBit | tag); // release: R is visible before the entry is valid
        Interlocked.Increment(ref _inserts);
        return slot;
    }

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
