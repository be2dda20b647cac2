using System.Runtime.CompilerServices;
using PageCore.Descriptors;

namespace PageCore;

/// <summary>
/// The split page-table lock kept in a page-table page's descriptor (<c>ptdesc->ptl</c>, <see cref="PageDescriptor.Lock"/>):
/// one transition per function, as <c>page_ref.h</c> does for the refcount.
/// </summary>
/// <remarks>
/// <para>States: <see cref="Unlocked"/>, <see cref="Locked"/>, and <see cref="Freed"/>, the poison <c>ptlock_free</c>
/// leaves when the page stops being a page table. A lock attempt that finds <see cref="Freed"/> is the bug of seed 004
/// (a lock taken inside the descriptor of a table that was freed): it is reported and nothing is written.</para>
/// <para>Like the kernel's spinlock this is a test-and-set lock: short critical sections, never held across an
/// allocation that may block. Waiters spin with <see cref="SpinWait"/>, which yields on a machine with few cores.</para>
/// </remarks>
internal static class PtLock
{
    /// <summary>The lock is free.</summary>
    public const int Unlocked = 0;

    /// <summary>The lock is held.</summary>
    public const int Locked = 1;

    /// <summary>The page is no longer a page table (<c>ptlock_free</c> ran).</summary>
    public const int Freed = 0x7AB1_DEAD;

    /// <summary>
    /// <c>ptlock_init</c> (in <c>pagetable_pte_ctor</c>): the lock of a page that is not yet reachable.
    /// </summary>
    /// <remarks>A plain store: the page is published later by a release store or full fence (the PMD or cache word).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Init(ref PageDescriptor d) => d.Lock = Unlocked;

    /// <summary>
    /// <c>spin_lock</c>: CAS <see cref="Unlocked"/> to <see cref="Locked"/>, spinning while held.
    /// </summary>
    /// <remarks>The successful CAS is a full fence, so no load or store of the critical section moves above it
    /// (acquire). Returns false, with nothing written, when the word reads <see cref="Freed"/> or any value that is not
    /// a lock state (the descriptor belongs to a page that is no longer a page table).</remarks>
    /// <returns>True when taken; false when the page is not a live page table.</returns>
    public static bool TryLock(ref PageDescriptor d)
    {
        var spin = new SpinWait();
        while (true)
        {
            int seen = Interlocked.CompareExchange(ref d.Lock, Locked, Unlocked);
            if (seen == Unlocked)
            {
                return true;
            }

            if (seen != Locked)
            {
                return false;
            }

            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    /// <summary><c>spin_unlock</c>: a release store, so every write of the critical section is visible before the lock reads free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unlock(ref PageDescriptor d) => Volatile.Write(ref d.Lock, Unlocked);

    /// <summary>
    /// <c>ptlock_free</c> (in <c>pagetable_dtor</c>): poisons the word, so a late lock attempt is caught instead of
    /// corrupting whatever the page becomes next.
    /// </summary>
    /// <remarks>A release store; runs only when no walker can reach the table any more (after a grace period), or, in
    /// the legacy form of seed 004, at once.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Free(ref PageDescriptor d) => Volatile.Write(ref d.Lock, Freed);
}
