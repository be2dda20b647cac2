namespace PageCore;

/// <summary>Where a test's probe runs inside the hash MMU's reads (<see cref="HashMmu.ProbeHook"/>).</summary>
internal enum HashProbe
{
    /// <summary>A translation found V matching, and has read nothing else of the slot yet.</summary>
    TranslateMatched,

    /// <summary>A translation read R the first time and has not read V again yet (the fixed form only).</summary>
    TranslateFirstWordRead,

    /// <summary>A translation finished reading the slot and took it as a match, before it scans on.</summary>
    TranslateSlotRead,

    /// <summary>An insert found no entry of its address in its first scan and has not claimed a slot yet.</summary>
    InsertScanned,
}

/// <summary>The hash MMU's reads of a slot: one entry read whole, or not at all.</summary>
public sealed partial class HashMmu
{
    /// <summary>
    /// Tests only: called at the points named by <see cref="HashProbe"/> with the slot, to widen a window on purpose
    /// (for example to evict an entry between a translation's reads). Null, one predictable branch, otherwise.
    /// </summary>
    internal Action<HashProbe, int>? ProbeHook;

    /// <summary>
    /// Legacy form of the hash reads, for tests and the race lab only: a translation reads V and then R without a recheck (a
    /// torn entry: address A with B's page), reports every second match as a multi-hit (an entry seen at its old slot
    /// and its new one), and an insert does not scan again after claiming (two inserts of one address at once both
    /// publish). See <see cref="Legacy.LegacyHashTranslate"/>. Never use it otherwise; a test may switch it on a quiescent
    /// table (to plant a duplicate with the legacy insert, then judge it with the fixed reads).
    /// </summary>
    internal bool LegacyUncheckedReads { get; set; }

    private enum SlotRead
    {
        Entry,
        Other,
        Changed,
    }

    /// <summary>
    /// Reads slot <paramref name="i"/> as one entry of <paramref name="tag"/>: R, then V, then R again, each an acquire
    /// load (Volatile.Read: <c>ldar</c>/<c>ldapr</c> on arm64, a plain load on x64's TSO).
    /// </summary>
    /// <returns><see cref="SlotRead.Entry"/> with <paramref name="r"/> the R that the matching V published;
    /// <see cref="SlotRead.Other"/> when V no longer holds this valid entry; <see cref="SlotRead.Changed"/> when R was
    /// rewritten while V matched (read again).</returns>
    /// <remarks>
    /// <para>Invariant: every write of R happens while its writer holds the slot's lock (V claimed by CAS), after that
    /// CAS, and stores a generation one above the previous R's (31 bits); V becomes (valid, tag) only by a release store
    /// made after its R was stored (<see cref="Publish"/>, <see cref="UpdatePermission"/>).</para>
    /// <para>Why (R1 == R2, V valid) is the entry V published: the acquire loads keep the program order R1 -> V -> R2.
    /// Equal values with distinct generations are one write W of R. Let P be the publication whose release store V read.
    /// W is not older than P's R: R2 comes after V's acquire, so it sees P's R or a newer one, and it saw W. W is not
    /// newer either: a newer R is written by a later lock holder Q after its claim CAS on V, which follows P's store;
    /// R1 reading Q's release store of R would make Q's claim visible to the later load of V, which then could not
    /// return P's value (only a still later publication stores (valid, tag) again, and R2 would see its newer R). So
    /// W is P's R. Without the second read of R, an eviction and a reuse between V and R (address A's V, B's R) or an
    /// A -> B -> A reuse around the reads would go unseen; the generation makes the A -> B -> A case visible too.</para>
    /// <para>The generation wraps after 2^31 writes of one slot; a reader would have to stall across that many rewrites
    /// of the very slot it reads for a wrap to fool it.</para>
    /// </remarks>
    private SlotRead ReadSlot(int i, ulong tag, out ulong r)
    {
        ulong r1 = Volatile.Read(ref _r[i]);
        ProbeHook?.Invoke(HashProbe.TranslateFirstWordRead, i);
        ulong v = Volatile.Read(ref _v[i]);
        r = Volatile.Read(ref _r[i]);
        if (v != (ValidBit | tag))
        {
            return SlotRead.Other;
        }

        return r == r1 ? SlotRead.Entry : SlotRead.Changed;
    }

    /// <summary>
    /// <see cref="ReadSlot"/> until it settles: true with the entry's R, or false when the slot no longer holds a valid
    /// entry of <paramref name="tag"/>. Retries only while R is rewritten under a matching V (an updatepp or a reuse that
    /// came back to this address), each retry a fresh read.
    /// </summary>
    private bool TryReadEntry(int i, ulong tag, out ulong r)
    {
        while (true)
        {
            switch (ReadSlot(i, tag, out r))
            {
                case SlotRead.Entry:
                    return true;
                case SlotRead.Other:
                    return false;
            }
        }
    }

    /// <summary>
    /// True when slot <paramref name="i"/> still holds the entry read earlier as <paramref name="r"/>. Keeps: a V that
    /// matches again with the same R (same generation) was valid without a break since that read, because every way back
    /// to valid (a publication, an updatepp) writes R first.
    /// </summary>
    private bool IsEntry(int i, ulong tag, ulong r) => TryReadEntry(i, tag, out ulong now) && now == r;

    /// <summary>
    /// A slot of either group, other than <paramref name="except"/>, whose V holds <paramref name="tag"/> valid or
    /// locked; -1 when none. Each slot is judged by one load of one word, so a slot found held the entry at that instant
    /// (no half-written entry is ever taken for one); entries never move between slots.
    /// </summary>
    private int FindEntry(ulong tag, int except)
    {
        for (int k = 0; k < 2; k++)
        {
            int g = Group(tag, k);
            for (int i = g * SlotsPerGroup; i < (g + 1) * SlotsPerGroup; i++)
            {
                ulong v = Volatile.Read(ref _v[i]);
                if (i != except && (v & TagMask) == tag && (v & (ValidBit | LockBit)) != 0)
                {
                    return i;
                }
            }
        }

        return -1;
    }

    /// <summary>
    /// After an insert claimed slot <paramref name="i"/>: true when no other slot holds an entry of the address, valid or
    /// being written; otherwise the claim is given back, the duplicate reported, and false.
    /// </summary>
    /// <remarks>
    /// Keeps T2 judged without a miss. Two inserts X and Y of one address (the busy bit broken) each claim by CAS, a full
    /// fence, then load the other groups' V words: in the single order of the two fenced CASes, the later one's scan
    /// sees the earlier claim (locked or already valid) unless that entry is already gone, and an entry gone before the
    /// later one is valid was never valid with it. So any two entries valid at one instant are reported by one of them.
    /// </remarks>
    private bool ClaimedAlone(int i, int asid, ulong va, Pfn pfn)
    {
        if (LegacyUncheckedReads)
        {
            return true;
        }

        ulong tag = Tag(asid, va);
        int other = FindEntry(tag, except: i);
        if (other < 0)
        {
            return true;
        }

        Volatile.Write(ref _v[i], 0); // nothing was published in the claimed slot: give it back empty
        Violation($"T2: inserting asid {asid} va 0x{va:x} -> {pfn} while slot {other} holds an entry for it being inserted at the same time -> {DescribeSlot(other, tag)}: a duplicate hash entry");
        return false;
    }

    /// <summary>
    /// Stores R of slot <paramref name="i"/>, whose lock the caller holds, with the next generation. Keeps the generation
    /// rising by one per write: only the lock holder writes R, and the previous holder's R is visible to it through the
    /// claim CAS on V (a full fence) that followed that holder's release.
    /// </summary>
    private void WriteR(int i, ulong r)
    {
        ulong generation = (Volatile.Read(ref _r[i]) + GenerationOne) & GenerationMask;
        Volatile.Write(ref _r[i], generation | (r & (PfnMask | WriteBit)));
    }

    /// <summary>What slot <paramref name="i"/> translates to, for a report.</summary>
    private string DescribeSlot(int i, ulong tag) =>
        TryReadEntry(i, tag, out ulong r) ? $"pfn 0x{(uint)r:x}" : "an entry not yet published";

    // The legacy form's access to the words (Legacy/LegacyHashTranslate.cs).

    /// <summary>V of slot <paramref name="i"/>, an acquire load.</summary>
    internal ulong LoadV(int i) => Volatile.Read(ref _v[i]);

    /// <summary>R of slot <paramref name="i"/>, an acquire load.</summary>
    internal ulong LoadR(int i) => Volatile.Read(ref _r[i]);

    /// <summary>V's value for a valid entry of (<paramref name="asid"/>, <paramref name="va"/>).</summary>
    internal static ulong ValidTag(int asid, ulong va) => ValidBit | Tag(asid, va);

    /// <summary>The first slot of the primary (<paramref name="k"/> = 0) or secondary (1) group of the address.</summary>
    internal int FirstSlot(int asid, ulong va, int k) => Group(Tag(asid, va), k) * SlotsPerGroup;
}
