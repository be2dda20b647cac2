using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using PageCore.Diagnostics;

namespace PageCore.Allocator;

/// <summary>
/// Chunk reservations: where each thread's small allocations live, and where its huge ones start.
/// </summary>
/// <remarks>
/// <para>LLFree keeps cores apart with per-core reservations of trees; this is the same idea per thread and per chunk.
/// A thread's small allocations stay in the chunk it reserved, and other threads' scans pass over that chunk while any
/// other chunk has room. Two threads therefore never share a bitfield line (a chunk's eight words are one line), so a
/// claim or a free by one never invalidates the line the other is working on. Without reservations both threads start in
/// the lowest chunk with room (the dense order) and every claim and free bounces one line between them.</para>
/// <para>A reservation is advisory. No invariant of the allocator rests on it: A1 holds whatever this array says, since
/// every claim is still a CAS on the bits followed by the handshake. A stale, lost or overwritten reservation only
/// changes which chunk a scan tries first, and a scan that finds no room outside other threads' reservations tries
/// those chunks too (<see cref="ArenaCounter.ReservationSteals"/>), so memory is never out of reach. Plain volatile
/// loads and stores are enough for the same reason: a reservation seen late costs one shared line, not correctness.</para>
/// <para>Slots identify threads. A thread takes a slot on its first scan and gives it back when it dies (a finalizer of
/// a thread-static object). The next thread to start takes the same slot and with it the dead thread's reservations, so
/// reservations never pile up: there are at most as many as threads alive at once.</para>
/// </remarks>
internal sealed unsafe partial class FrameAllocator
{
    /// <summary>Huge allocations of different threads start this many chunks apart: 128 bytes of status words.</summary>
    private const int HugeHomeStride = 32;

    private static readonly ConcurrentStack<int> s_freeSlots = new();
    private static int s_nextSlot;

    [ThreadStatic] private static SlotHolder? t_slot;

    /// <summary>Per chunk: the slot of the thread whose small allocations live there, or 0.</summary>
    private readonly int[] _reservedBy;

    /// <summary>The calling thread's slot, 1 or more; taken on the thread's first call.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Slot() => t_slot?.Slot ?? TakeSlot();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static int TakeSlot()
    {
        if (!s_freeSlots.TryPop(out int slot))
        {
            slot = Interlocked.Increment(ref s_nextSlot);
        }

        t_slot = new SlotHolder(slot);
        return slot;
    }

    /// <summary>Whether <paramref name="chunk"/> is reserved by a thread other than the one holding <paramref name="slot"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool ReservedByOther(int chunk, int slot)
    {
        int owner = Volatile.Read(ref _reservedBy[chunk]);
        return owner != 0 && owner != slot;
    }

    /// <summary>
    /// The caller's small allocations moved from chunk <paramref name="from"/> to <paramref name="to"/>: gives up its
    /// reservation of <paramref name="from"/> and reserves <paramref name="to"/> unless another thread holds it.
    /// </summary>
    /// <remarks>Advisory (see the type's remarks): a release store to give up, a CAS from 0 to take, so that a thread
    /// never overwrites another's reservation; losing that CAS only means the chunk stays the other thread's.</remarks>
    private void MoveReservation(int from, int to, int slot)
    {
        if (from != to && (uint)from < (uint)_chunkCount && Volatile.Read(ref _reservedBy[from]) == slot)
        {
            Volatile.Write(ref _reservedBy[from], 0);
        }

        if (Volatile.Read(ref _reservedBy[to]) == 0)
        {
            Interlocked.CompareExchange(ref _reservedBy[to], slot, 0);
        }
    }

    /// <summary>
    /// Where a thread with no huge hint starts looking for a huge block: threads start <see cref="HugeHomeStride"/>
    /// chunks apart (128 bytes of status words), so that two threads that allocate and free huge blocks in a loop work
    /// on status words in different lines.
    /// </summary>
    private int HugeHome(int span) => HugeHomeOf(Slot(), span);

    /// <summary>The reservation owner of a chunk, for tests (0: none).</summary>
    internal int ReservedBy(int chunk) => Volatile.Read(ref _reservedBy[chunk]);

    /// <summary>The calling thread's slot, for tests.</summary>
    internal static int CurrentSlot => Slot();

    /// <summary>Whether a slot was given back and not taken again, for tests.</summary>
    internal static bool SlotIsFree(int slot) => s_freeSlots.Contains(slot);

    /// <summary>Where a thread of slot <paramref name="slot"/> with no hint starts looking for a block of <paramref name="span"/> chunks, for tests.</summary>
    internal int HugeHomeOf(int slot, int span) => (int)(((uint)(slot - 1) * HugeHomeStride) % (uint)_chunkCount) & ~(span - 1);

    /// <summary>A thread's slot; its finalizer, which runs after the thread died, gives the slot back.</summary>
    private sealed class SlotHolder(int slot)
    {
        public readonly int Slot = slot;

        ~SlotHolder() => s_freeSlots.Push(Slot);
    }
}
