using System.Diagnostics.CodeAnalysis;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Arena;

namespace PageCore.PerCpu;

/// <summary>
/// The owner-written words of a <see cref="Magazine"/>, padded so that no other thread's data shares their cache line.
/// </summary>
[StructLayout(LayoutKind.Explicit, Size = 3 * CacheLine.PaddedSize)]
internal struct MagazineHot
{
    /// <summary>
    /// 1 while the owner is inside a magazine operation. Written by the owner only, with release stores; read by a
    /// stealer after its fence (<see cref="Interlocked.MemoryBarrierProcessWide"/>, or a full fence in the symmetric form).
    /// </summary>
    [FieldOffset(CacheLine.PaddedSize)] public int Busy;

    /// <summary>
    /// 1 while a stealer owns the magazine's contents. Written by the stealer; read by the owner with acquire loads at
    /// the start of every operation.
    /// </summary>
    [FieldOffset(CacheLine.PaddedSize + 4)] public int StealPending;

    /// <summary>Blocks held for order 0; orders 1..3 follow at +4, +8, +12 bytes. Owner-written.</summary>
    [FieldOffset(CacheLine.PaddedSize + 8)] public int Count0;

    [FieldOffset(CacheLine.PaddedSize + 12)] private int _count1;
    [FieldOffset(CacheLine.PaddedSize + 16)] private int _count2;
    [FieldOffset(CacheLine.PaddedSize + 20)] private int _count3;

    /// <summary>Blocks a magazine holds at most for order 0; orders 1..3 follow. Written once, read on the hot path.</summary>
    [FieldOffset(CacheLine.PaddedSize + 24)] public int Capacity0;

    [FieldOffset(CacheLine.PaddedSize + 28)] private int _capacity1;
    [FieldOffset(CacheLine.PaddedSize + 32)] private int _capacity2;
    [FieldOffset(CacheLine.PaddedSize + 36)] private int _capacity3;

    /// <summary>
    /// The most recently freed block of order 0 (orders 1..3 follow), or <see cref="PageCaches.NoPage"/>: a one-entry top
    /// of stack kept outside the slot array, so that the next allocation finds it with one load instead of a count load
    /// followed by a dependent slot load.
    /// </summary>
    [FieldOffset(CacheLine.PaddedSize + 40)] public uint Top0;

    [FieldOffset(CacheLine.PaddedSize + 44)] private uint _top1;
    [FieldOffset(CacheLine.PaddedSize + 48)] private uint _top2;
    [FieldOffset(CacheLine.PaddedSize + 52)] private uint _top3;

    /// <summary>
    /// Metrics of order 0 (1..3 follow): allocations served by a hit. With <see cref="Misses0"/> (served by a refill) and
    /// <see cref="Frees0"/> (blocks freed into the magazine), written by the owner with plain increments on the line it
    /// writes anyway, and read racily by the meter (aligned 64-bit loads never tear on a 64-bit process).
    /// </summary>
    [FieldOffset(CacheLine.PaddedSize + 56)] public long Hits0;

    [FieldOffset(CacheLine.PaddedSize + 64)] private long _hits1;
    [FieldOffset(CacheLine.PaddedSize + 72)] private long _hits2;
    [FieldOffset(CacheLine.PaddedSize + 80)] private long _hits3;

    /// <summary>Blocks of order 0 freed into the magazine (orders 1..3 follow).</summary>
    [FieldOffset(CacheLine.PaddedSize + 88)] public long Frees0;

    [FieldOffset(CacheLine.PaddedSize + 96)] private long _frees1;
    [FieldOffset(CacheLine.PaddedSize + 104)] private long _frees2;
    [FieldOffset(CacheLine.PaddedSize + 112)] private long _frees3;

    /// <summary>Allocations of order 0 served by a refill (orders 1..3 follow).</summary>
    [FieldOffset(CacheLine.PaddedSize + 120)] public long Misses0;

    [FieldOffset(CacheLine.PaddedSize + 128)] private long _misses1;
    [FieldOffset(CacheLine.PaddedSize + 136)] private long _misses2;
    [FieldOffset(CacheLine.PaddedSize + 144)] private long _misses3;

    /// <summary>The hit counter of <paramref name="order"/>.</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref long Hits(int order) => ref Unsafe.Add(ref Hits0, order);

    /// <summary>The free counter of <paramref name="order"/>.</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref long Frees(int order) => ref Unsafe.Add(ref Frees0, order);

    /// <summary>The miss counter of <paramref name="order"/>.</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref long Misses(int order) => ref Unsafe.Add(ref Misses0, order);

    /// <summary>The count of blocks held for <paramref name="order"/> (0..3).</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref int Count(int order) => ref Unsafe.Add(ref Count0, order);

    /// <summary>The one-entry top for <paramref name="order"/> (0..3).</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref uint Top(int order) => ref Unsafe.Add(ref Top0, order);

    /// <summary>The capacity for <paramref name="order"/> (0..3).</summary>
    [UnscopedRef]
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ref int Capacity(int order) => ref Unsafe.Add(ref Capacity0, order);
}

/// <summary>
/// A per-thread magazine: a few blocks of each cached order (0..3), popped and pushed by its owner thread with no
/// atomic instruction. It sits in front of the per-CPU depot (<see cref="PageCaches"/>), as a per-thread magazine sits in
/// front of a depot in Bonwick's slab allocator, and as the kernel's per-CPU lists sit in front of the zone.
/// </summary>
/// <remarks>
/// <para><b>Ownership.</b> Only the owner thread touches <see cref="Slots"/> and the counts, except while a stealer
/// (<see cref="PageCaches.Drain"/>) holds the magazine. The hand-over is an asymmetric Dekker protocol: the owner writes
/// <see cref="MagazineHot.Busy"/> = 1, then reads <see cref="MagazineHot.StealPending"/>, operates only if it reads 0,
/// and writes <c>Busy</c> = 0 (release). The stealer writes <c>StealPending</c> = 1, then runs
/// <see cref="Interlocked.MemoryBarrierProcessWide"/> (a membarrier: a full fence on every CPU that runs a thread of the
/// process), then reads <c>Busy</c>. After that barrier, either the owner's <c>Busy</c> = 1 is visible to the stealer (it
/// waits or skips), or the owner's next read of <c>StealPending</c> sees 1 (it stays off the slots). The owner pays two
/// plain stores and one plain load per operation instead of a fence. The owner's release store and its later acquire
/// load may be reordered by the hardware (x64's store buffer; arm64 when the acquire is an RCpc <c>ldapr</c>): that is
/// exactly what the process-wide barrier covers, where it interrupts every CPU at an instruction boundary with a full
/// fence (Linux's expedited <c>membarrier</c>, Windows, Apple: see <see cref="ProcessBarrier"/>). The JIT does not move
/// volatile accesses across each other. Where the barrier is not known to do that (the runtime's <c>mprotect</c>
/// fallback is a TLB shootdown, which need not interrupt anyone), the caches take the symmetric form
/// (<see cref="HandOverForm.Symmetric"/>): the owner fences between its store and its load, the stealer fences locally,
/// and the arena keeps such caches off its inlined fast path. The transitions are <c>EnterAsymmetric</c>,
/// <c>EnterSymmetric</c>, <c>LeaveOwner</c> and <c>AnnounceSteal</c> in <see cref="PageCaches"/>.</para>
/// <para><b>Pools.</b> A <see cref="PagePool"/> owns a magazine of its own, found without a thread-local lookup; the
/// same protocol applies, with the pool's user as the owner.</para>
/// <para><b>Threads that exit.</b> The magazine stays registered with its <see cref="PageCaches"/>; its blocks are
/// returned by the next <see cref="PageCaches.Drain"/>, by the reclaim that runs when an allocation would fail, and by the
/// pruning that runs when new magazines are registered. None is lost.</para>
/// </remarks>
internal sealed class Magazine
{
    /// <summary>Owner-written state, padded.</summary>
    public MagazineHot Hot;

    /// <summary>The PFNs held: order <c>o</c> uses <c>[o * Stride, o * Stride + capacity(o))</c>.</summary>
    public readonly uint[] Slots;

    /// <summary>The caches this magazine belongs to.</summary>
    public readonly PageCaches Owner;

    /// <summary>The thread that owns the magazine, or null for the magazine of a caller-owned <see cref="PagePool"/>.</summary>
    public readonly Thread? Thread;

    /// <summary>Slots per order (a copy of the owner's stride, read on the hot path).</summary>
    public readonly int Stride;

    /// <summary>The thread's next magazine (for another arena), a per-thread list.</summary>
    public Magazine? NextOfThread;

    /// <summary>Creates an empty magazine for the current thread, or for a <see cref="PagePool"/>.</summary>
    public Magazine(PageCaches owner, int stride, bool forPool)
    {
        Owner = owner;
        Stride = stride;
        Slots = new uint[PageCaches.Orders * stride];
        for (int o = 0; o < PageCaches.Orders; o++)
        {
            Hot.Capacity(o) = owner.Capacity(o);
            Hot.Top(o) = PageCaches.NoPage;
        }

        Thread = forPool ? null : Thread.CurrentThread;
    }

    /// <summary>Whether the owner is gone: a thread that exited (a pool's magazine is retired by its Dispose instead).</summary>
    public bool OwnerExited => Thread is { IsAlive: false };
}
