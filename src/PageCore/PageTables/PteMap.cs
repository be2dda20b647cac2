using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>
/// A PTE table mapped by <see cref="AddressSpace.PteOffsetMap"/> (<c>pte_offset_map</c>): the table a snapshot of the
/// PMD named, readable inside an epoch section. Dispose it exactly once (<c>pte_unmap</c>) on the thread that mapped it.
/// </summary>
/// <remarks>The table may be detached at any moment (retracted, or replaced by a huge PMD): its memory stays a valid,
/// possibly empty table until the section ends (P2), but writes need <see cref="AddressSpace.PteOffsetMapLock"/>.</remarks>
public unsafe ref struct PteMap
{
    private readonly ulong* _entries;
    private EpochGuard _guard;

    internal PteMap(EpochGuard guard, ulong* entries, int index, int count, Pte pmd)
    {
        _guard = guard;
        _entries = entries;
        Index = index;
        Count = count;
        Pmd = pmd;
    }

    /// <summary>True when there is no PTE table at the address (PMD none or huge): a normal outcome every caller handles.</summary>
    public readonly bool IsNull => _entries == null;

    /// <summary>The PMD value the table was found through (<c>pmdval</c>).</summary>
    public Pte Pmd { get; }

    /// <summary>The index of the requested address in the table.</summary>
    public int Index { get; }

    /// <summary>Entries in the table (<c>PTRS_PER_PTE</c>).</summary>
    public int Count { get; }

    /// <summary>The entry of the requested address, read with acquire (<c>ptep_get_lockless</c>).</summary>
    public readonly Pte Entry => this[Index];

    /// <summary>Entry <paramref name="index"/> of the table, read with acquire.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public readonly Pte this[int index]
    {
        get
        {
            if (_entries == null || (uint)index >= (uint)Count)
            {
                throw new InvalidOperationException("PageCore: no table is mapped (the map is null) or the index is outside the table.");
            }

            return new Pte(Volatile.Read(ref _entries[index]));
        }
    }

    /// <summary><c>pte_unmap</c>: leaves the epoch section.</summary>
    public void Dispose() => _guard.Dispose();
}

/// <summary>
/// A PTE table locked by <see cref="AddressSpace.PteOffsetMapLock"/> (<c>pte_offset_map_lock</c>): the table the PMD
/// references, its split lock held, inside an epoch section. Dispose it exactly once (<c>pte_unmap_unlock</c>) on the
/// thread that locked it.
/// </summary>
public unsafe ref struct PteMapLocked
{
    private readonly ulong* _entries;
    private readonly ref PageDescriptor _lock;
    private readonly AddressSpace? _hashed;
    private readonly ulong _vaBase;
    private readonly int _pageShift;
    private EpochGuard _guard;

    internal PteMapLocked(EpochGuard guard, ulong* entries, ref PageDescriptor lockOwner, int index, int count, Pte pmd, AddressSpace? hashed, ulong vaBase, int pageShift)
    {
        _guard = guard;
        _entries = entries;
        _lock = ref lockOwner;
        _hashed = hashed;
        _vaBase = vaBase;
        _pageShift = pageShift;
        Index = index;
        Count = count;
        Pmd = pmd;
    }

    /// <summary>True when there is no PTE table at the address (PMD none or huge, or the table was retracted): a normal outcome.</summary>
    public readonly bool IsNull => _entries == null;

    /// <summary>The PMD value, the same under the lock as when the table was found (P4).</summary>
    public Pte Pmd { get; }

    /// <summary>The index of the requested address in the table.</summary>
    public int Index { get; }

    /// <summary>Entries in the table (<c>PTRS_PER_PTE</c>).</summary>
    public int Count { get; }

    /// <summary>The entry of the requested address.</summary>
    public readonly Pte Entry => this[Index];

    /// <summary>Entry <paramref name="index"/> of the locked table.</summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    public readonly Pte this[int index] => new(Volatile.Read(ref Slot(index)));

    /// <summary>
    /// <c>set_pte_at</c> / <c>pte_update</c>: writes entry <paramref name="index"/> with a release store, so a lockless
    /// walker that reads the entry sees everything written before it (the page's contents, its setup). With a hash MMU the
    /// write waits out a hash fault holding the entry's busy bit, and queues the invalidation of a hashed entry.
    /// </summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <param name="value">The new entry.</param>
    public readonly void Set(int index, Pte value)
    {
        ref ulong slot = ref Slot(index);
        if (_hashed is null)
        {
            Volatile.Write(ref slot, value.Value);
        }
        else
        {
            _hashed.PteSet((ulong*)Unsafe.AsPointer(ref slot), _vaBase + ((ulong)index << _pageShift), value.Value);
        }
    }

    /// <summary>
    /// <c>pte_update</c>: clears <paramref name="clear"/> and sets <paramref name="set"/> in entry <paramref name="index"/>
    /// as one atomic change of the value it finds (with a hash MMU a hash fault may change the entry without the lock:
    /// a read-modify-write through <see cref="Set"/> could lose its hashed bit).
    /// </summary>
    /// <param name="index">0 to <see cref="Count"/> - 1.</param>
    /// <param name="clear">Bits to clear.</param>
    /// <param name="set">Bits to set.</param>
    /// <returns>The entry before the change.</returns>
    public readonly Pte Update(int index, PteBits clear, PteBits set)
    {
        ref ulong slot = ref Slot(index);
        if (_hashed is null)
        {
            ulong old = slot;
            Volatile.Write(ref slot, (old & ~(ulong)clear) | (ulong)set);
            return new Pte(old);
        }

        return new Pte(_hashed.PteUpdate((ulong*)Unsafe.AsPointer(ref slot), _vaBase + ((ulong)index << _pageShift), (ulong)clear, (ulong)set));
    }

    /// <summary><c>pte_unmap_unlock</c>: releases the split lock (release store), then leaves the epoch section.</summary>
    public void Dispose()
    {
        if (_entries != null)
        {
            _hashed?.CheckBatchAtUnlock();
            PtLock.Unlock(ref _lock);
        }

        _guard.Dispose();
    }

    private readonly ref ulong Slot(int index)
    {
        if (_entries == null || (uint)index >= (uint)Count)
        {
            throw new InvalidOperationException("PageCore: no table is locked (the map is null) or the index is outside the table.");
        }

        return ref _entries[index];
    }
}
