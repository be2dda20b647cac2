using System.Runtime.CompilerServices;
using PageCore.Systematic;

namespace PageCore.Descriptors;

/// <summary>The outcome of a get on a page that the caller believes is live.</summary>
internal enum RefGet
{
    /// <summary>The count was raised by one.</summary>
    Taken,

    /// <summary>The count was 0 (a free or frozen page): nothing changed.</summary>
    Dead,

    /// <summary>The count is at the overflow guard: nothing changed.</summary>
    Overflow,
}

/// <summary>The outcome of a put.</summary>
internal enum RefPut
{
    /// <summary>The count went down and is still positive.</summary>
    Live,

    /// <summary>This put took the count to 0: the caller now owns the page and must free it.</summary>
    Zero,

    /// <summary>The count was already 0: nothing changed (a put at zero, refused).</summary>
    Underflow,

    /// <summary>The count is exactly 1, so this put would be the last: nothing changed (<see cref="PageRef.PutUnlessLast"/>
    /// only; the caller checks that it may free the page, then calls <see cref="PageRef.TryPutLast"/>).</summary>
    Last,
}

/// <summary>
/// Every transition of <see cref="PageDescriptor.RefCount"/>, one function each, as in the kernel's
/// <c>include/linux/page_ref.h</c>. Nothing else in PageCore writes the refcount.
/// </summary>
/// <remarks>
/// <para>Memory model (dotnet/runtime <c>docs/design/specs/Memory-model.md</c>): <c>Volatile.Read</c>
/// is an acquire load, <c>Volatile.Write</c> a release store, and every
/// <see cref="Interlocked"/> operation a full fence. The kernel's rules map one to one: a value-returning RMW and a
/// successful conditional RMW are fully ordered (Interlocked), <c>atomic_set_release</c> is <c>Volatile.Write</c>.
/// Each operation is written through <see cref="Systematic.Atomic"/>, which is exactly that operation in a normal process
/// and a schedule point before it under the controlled scheduler (<c>Atomic.Read</c> = <c>Volatile.Read</c>,
/// <c>Atomic.Write</c> = <c>Volatile.Write</c>, <c>Atomic.CompareExchange</c>/<c>Add</c> = <see cref="Interlocked"/>).</para>
/// <para>The states of the counter: 0 = free, frozen, or (for a tail page) never counted; 1..<see cref="MaxCount"/> =
/// live with that many references (a page held by a per-CPU cache counts the cache's own reference, as page_pool's
/// recycled pages do); never negative: a put at zero is refused before it writes.</para>
/// </remarks>
internal static class PageRef
{
    /// <summary>
    /// The overflow guard: a get that would pass this value is a bug report, as <c>folio_get</c>'s
    /// <c>VM_BUG_ON(folio_ref_zero_or_close_to_overflow)</c>.
    /// </summary>
    public const int MaxCount = int.MaxValue - 1024;

    /// <summary><c>page_ref_count</c>: the current count, read with acquire semantics.</summary>
    /// <remarks>Invariant: none written. Acquire so that a caller that sees a count also sees what was published before it.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Count(ref PageDescriptor d) => Atomic.Read(ref d.RefCount);

    /// <summary>
    /// <c>set_page_refcounted</c>: 0 -> 1 on a free page that is being handed out (to a caller or to a per-CPU cache).
    /// </summary>
    /// <remarks>
    /// Invariant: the page is free, so the count is 0, and nobody can change a 0: a speculative get refuses 0
    /// (<see cref="TryGetFromOne"/>), a freeze needs an expected count of at least 1, and a put at zero is refused
    /// before it writes. This store is therefore an <em>unfreeze</em> (rule 1 allows exactly that): a release store, so
    /// every plain store made while the page was being prepared (flags, order, generation) is visible to any thread whose
    /// later get succeeds on the count it publishes.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SetAllocated(ref PageDescriptor d) => Atomic.Write(ref d.RefCount, 1);

    /// <summary>
    /// <c>folio_get</c> / <c>page_ref_inc</c> as production kernels build it: the caller already holds a reference and
    /// takes another; the count is not read.
    /// </summary>
    /// <remarks>
    /// Invariant: the count of a live page only grows by one; nothing is lost against a concurrent get or put, because
    /// the add is an <see cref="Interlocked.Increment(ref int)"/> (<c>lock inc</c>, <c>ldaddal</c>): fully ordered. The
    /// callers refuse pages whose flags say free before they call this. The result is deliberately not consumed:
    /// measured on x64, consuming the result of the locked add (to branch on it, or even to store it) delays the loads
    /// of the next page operation by about 2 ns, which is the whole budget between <c>GetPage</c> and a bare
    /// <see cref="Interlocked.Increment(ref int)"/>. <see cref="IncChecked"/> is the form that reads the count.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Inc(ref PageDescriptor d) => Atomic.Add(ref d.RefCount, 1);

    /// <summary>
    /// <c>folio_get</c> with <c>VM_BUG_ON(folio_ref_zero_or_close_to_overflow(folio))</c> (<c>CONFIG_DEBUG_VM</c>):
    /// refuses, without writing, a count of 0 (a free or frozen page) or one at the overflow guard.
    /// </summary>
    /// <remarks>
    /// Invariant: the count stays within 1..<see cref="MaxCount"/>, and a refused get leaves the counter exactly as it
    /// was. A CAS on the value read, not a check then an add: a caller that holds a reference could not see the count
    /// fall to 0 between the two, but checked mode is there for callers that are wrong, and a misused get whose page was
    /// freed meanwhile must not revive it (0 -> 1). Full fence on success.
    /// </remarks>
    public static RefGet IncChecked(ref PageDescriptor d)
    {
        int retries = 0;
        return TryGetUnlessZeroFrom(ref d, Atomic.Read(ref d.RefCount), ref retries);
    }

    /// <summary>
    /// <c>page_ref_add</c>: the caller holds a reference and takes <paramref name="count"/> more at once.
    /// </summary>
    /// <remarks>
    /// Invariant: the count of a live page grows by exactly <paramref name="count"/> or not at all, and never passes
    /// <see cref="MaxCount"/>. A CAS loop on the value read, so a get or put that lands between the read and the write
    /// makes the CAS fail and the loop retry on the new value: nothing is overwritten (the bug of
    /// <c>PageCore.Legacy.LegacyPageCount</c>, which stores instead). Full fence on success.
    /// </remarks>
    public static RefGet Add(ref PageDescriptor d, int count)
    {
        int v = Atomic.Read(ref d.RefCount);
        while (true)
        {
            if (v <= 0)
            {
                return RefGet.Dead;
            }

            if (v > MaxCount - count)
            {
                return RefGet.Overflow;
            }

            int seen = Atomic.CompareExchange(ref d.RefCount, v + count, v);
            if (seen == v)
            {
                return RefGet.Taken;
            }

            v = seen;
        }
    }

    /// <summary>
    /// <c>page_ref_add_unless_zero</c> / <c>get_page_unless_zero</c>, first step: the CAS 1 -> 2. Returns the count it
    /// found; 1 means the reference was taken, anything else means nothing was written and the caller goes on with
    /// <see cref="TryGetUnlessZeroFrom"/> from that value.
    /// </summary>
    /// <remarks>
    /// Invariant: never revives a free or frozen page (0) and never touches a negative count: the CAS writes only when it
    /// finds exactly 1. Guessing 1 (a page held once, the common case) saves a load before the locked instruction, and
    /// returning the value seen (rather than an outcome plus an <c>out</c> retry count) keeps the caller's fast path free
    /// of stack traffic between two locked instructions. A successful CAS is a full fence: the caller may now read
    /// anything published before the count it raised (and must still recheck identity, rule 2).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int TryGetFromOne(ref PageDescriptor d) => Atomic.CompareExchange(ref d.RefCount, 2, 1);

    /// <summary>
    /// <c>page_ref_add_unless_zero</c>, the loop after the first guess (<see cref="TryGetFromOne"/>) found
    /// <paramref name="v"/>: CAS v -> v + 1 while v is live, going on from whatever value won a lost race.
    /// </summary>
    /// <remarks>
    /// Invariant: the same as <see cref="TryGetFromOne"/>: a count of 0 or less is never raised (Dead), nor one at the
    /// overflow guard (Overflow); each CAS is a full fence. A failed attempt writes nothing, so the caller must not trust
    /// what it read before it. <paramref name="retries"/> counts the CAS races lost to concurrent gets and puts (a wrong
    /// first guess is not one).
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static RefGet TryGetUnlessZeroFrom(ref PageDescriptor d, int v, ref int retries)
    {
        while (true)
        {
            if (v <= 0)
            {
                return RefGet.Dead;
            }

            if (v >= MaxCount)
            {
                return RefGet.Overflow;
            }

            int seen = Atomic.CompareExchange(ref d.RefCount, v + 1, v);
            if (seen == v)
            {
                return RefGet.Taken;
            }

            // Lost a race with another get or put: retry on the value that won.
            retries++;
            v = seen;
        }
    }

    /// <summary>
    /// <c>put_page_testzero</c>, first step: the CAS 2 -> 1. Returns the count it found; 2 means the reference was
    /// dropped and the page is still live, anything else means nothing was written and the caller goes on with
    /// <see cref="PutUnlessLast"/> from that value.
    /// </summary>
    /// <remarks>
    /// Invariant: a put never writes a count of 1 or less from here (those go through the flag check of the last put,
    /// then <see cref="TryPutLast"/>), so a put at zero can never make the counter pass through a value that a
    /// concurrent <see cref="SetAllocated"/> or <see cref="Unfreeze"/> would build on. Guessing 2 (a page held once plus
    /// one speculative or transient reference, the get+put pattern) costs exactly what the locked decrement it replaces
    /// cost: one locked instruction, no load before it. A successful CAS is a full fence, as
    /// <c>atomic_dec_and_test</c> is: every store the putter made before it is visible to whoever frees the page.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int TryPutFromTwo(ref PageDescriptor d) => Atomic.CompareExchange(ref d.RefCount, 1, 2);

    /// <summary>
    /// Drops one reference if it is not the last: CAS v -> v - 1 while v &gt;= 2, going on from whatever value won a lost
    /// race. <see cref="RefPut.Live"/> when it dropped one; <see cref="RefPut.Last"/> when it found exactly 1 (nothing
    /// written: the caller decides whether it may take the last reference, then calls <see cref="TryPutLast"/>);
    /// <see cref="RefPut.Underflow"/> when it found 0 or less (nothing written: a put at zero is refused, not undone).
    /// </summary>
    /// <remarks>
    /// Invariant: the count never goes below 0 and a refused put leaves it exactly as it was. The kernel's
    /// <c>put_page_testzero</c> decrements and then checks; doing so here would let a put at zero on a free or frozen page
    /// write -1, and a correct <see cref="SetAllocated"/> or <see cref="Unfreeze"/> landing before the undo would end one
    /// too high (the legacy form, <c>PageCore.Legacy.LegacyPutAtZero</c>). Each CAS is a full fence on success; a failed
    /// CAS wrote nothing.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static RefPut PutUnlessLast(ref PageDescriptor d, int v)
    {
        while (true)
        {
            if (v <= 1)
            {
                return v == 1 ? RefPut.Last : RefPut.Underflow;
            }

            int seen = Atomic.CompareExchange(ref d.RefCount, v - 1, v);
            if (seen == v)
            {
                return RefPut.Live;
            }

            v = seen;
        }
    }

    /// <summary>
    /// <c>put_page_testzero</c> for a holder that may take the last reference without further checks (the allocator's
    /// own puts on blocks whose state it knows): drop one reference and say whether it was the last. Never writes when
    /// the count is already 0 or below.
    /// </summary>
    /// <param name="d">The descriptor.</param>
    /// <param name="guess">The count the caller expects to find, at least 1: 1 when it usually holds the only reference.</param>
    /// <remarks>
    /// Invariant: exactly one put sees the count reach 0, and that put owns the page from then on; a put that finds 0 or
    /// less is refused without a write (<see cref="PutUnlessLast"/>). The first CAS on the guessed value costs what a
    /// locked decrement costs; every successful CAS is a full fence.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static RefPut PutTestZero(ref PageDescriptor d, int guess)
    {
        int v = Atomic.CompareExchange(ref d.RefCount, guess - 1, guess);
        if (v == guess)
        {
            return guess == 1 ? RefPut.Zero : RefPut.Live;
        }

        return PutTestZeroFrom(ref d, v);
    }

    /// <summary>The rest of <see cref="PutTestZero"/> after a wrong guess: the same CAS loop, down to and including 1 -> 0.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static RefPut PutTestZeroFrom(ref PageDescriptor d, int v)
    {
        while (true)
        {
            RefPut r = PutUnlessLast(ref d, v);
            if (r != RefPut.Last)
            {
                return r;
            }

            if (TryPutLast(ref d))
            {
                return RefPut.Zero;
            }

            v = Count(ref d);
        }
    }

    /// <summary>
    /// A put that happens only if it is the last one: 1 -> 0, else nothing (<c>folio_ref_freeze(folio, 1)</c> used as a
    /// put, as <c>__free_pages</c> could if it wanted to know before freeing the buddies).
    /// </summary>
    /// <remarks>
    /// Invariant: same as <see cref="PutTestZero"/> when it succeeds (exactly one thread takes the count to 0 and owns
    /// the page); when it fails nothing changed. One CAS: fully ordered on success, like the decrement it replaces.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryPutLast(ref PageDescriptor d) => Atomic.CompareExchange(ref d.RefCount, 0, 1) == 1;

    /// <summary>
    /// The flags and the refcount read together, as one 8-byte word (<see cref="PageDescriptor.Flags"/> at offset 0 is
    /// the low half, <see cref="PageDescriptor.RefCount"/> at offset 4 the high half), with acquire semantics.
    /// </summary>
    /// <remarks>
    /// Invariant: none written. The word is 8-byte aligned (descriptors are 64-byte aligned), so the load is single-copy
    /// atomic on x64 and arm64: the two halves are one moment's values. Only checked mode's put reads it
    /// (<see cref="TryPutPair"/>); the hot paths keep their 4-byte accesses (a wide load over a recent narrow store
    /// cannot be forwarded from the store buffer).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Pair(ref PageDescriptor d) => Atomic.Read(ref Unsafe.As<uint, ulong>(ref d.Flags));

    /// <summary>The flags half of a word read by <see cref="Pair"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint FlagsOf(ulong pair) => (uint)pair;

    /// <summary>The refcount half of a word read by <see cref="Pair"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CountOf(ulong pair) => (int)(pair >> 32);

    /// <summary>
    /// <c>put_page</c> in checked mode: drops one reference only if neither the flags nor the count changed since
    /// <paramref name="pair"/> was read (an 8-byte CAS over both). True when it did; false, with nothing written and
    /// <paramref name="pair"/> updated to the word that won, when anything changed.
    /// </summary>
    /// <remarks>
    /// <para>Invariant: the caller decided from <paramref name="pair"/> that the put is allowed (the count is live and the
    /// flags do not say a per-CPU cache holds the block), and the decrement happens only while that is still exactly
    /// true: a block that entered a cache after the read, or a count another get or put moved, makes the CAS fail. That is
    /// what a 4-byte CAS on the count cannot give: it would take a speculative getter's transient reference on a block
    /// freed into a cache between the caller's look at the flags and its decrement. The caller must not pass a count
    /// below 1 (the result is written as it is).</para>
    /// <para>Ordering: a successful CAS is a full fence, as the 4-byte put it replaces. Mixed sizes: the other
    /// transitions change the count half with 4-byte atomics and the owner stores the flags half with 4-byte stores.
    /// Every one of them is a single-copy atomic access to bytes this CAS covers, so it is ordered entirely before or
    /// entirely after the CAS, and a CAS that finds either half changed fails. The kernel's lockref relies on the same
    /// property on x86-64 and arm64 (an 8-byte cmpxchg over a spinlock that other code takes with 4-byte atomics). The
    /// C11 model behind native/weak has no mixed-size accesses, so this transition is not among the GenMC clients.</para>
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryPutPair(ref PageDescriptor d, ref ulong pair)
    {
        ulong seen = Atomic.CompareExchange(ref Unsafe.As<uint, ulong>(ref d.Flags), pair - (1UL << 32), pair);
        if (seen == pair)
        {
            return true;
        }

        pair = seen;
        return false;
    }

    /// <summary>
    /// <c>page_ref_freeze</c>: if the count is exactly <paramref name="expected"/>, make it 0.
    /// </summary>
    /// <remarks>
    /// Invariant: after success, every speculative get fails until <see cref="Unfreeze"/>, because they refuse 0 (I3).
    /// One CAS: fully ordered on success, so the freezer sees everything the other holders wrote before their puts; on
    /// failure nothing changed and nothing is ordered. <paramref name="expected"/> must be at least 1 (checked by callers).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool Freeze(ref PageDescriptor d, int expected) =>
        Atomic.CompareExchange(ref d.RefCount, 0, expected) == expected;

    /// <summary>
    /// <c>page_ref_unfreeze</c>: publish <paramref name="count"/> on a frozen (0) counter.
    /// </summary>
    /// <remarks>
    /// Invariant: only moves 0 to a positive value; the caller has checked that the page is frozen. A release store
    /// (<c>atomic_set_release</c>): every store made while frozen is visible before any thread can take a reference.
    /// No other thread can write a 0 counter, so the store cannot overwrite anybody's update (rule 1).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unfreeze(ref PageDescriptor d, int count) => Atomic.Write(ref d.RefCount, count);
}
