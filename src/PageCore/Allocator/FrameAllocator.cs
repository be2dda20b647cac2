using System.Numerics;
using System.Runtime.CompilerServices;
using PageCore.Arena;
using PageCore.Diagnostics;

namespace PageCore.Allocator;

/// <summary>
/// The shared, lock-free page-frame allocator: blocks of order 0..MaxOrder, naturally aligned, coalesced on free.
/// A flat bitfield (one bit per page, set = in use) plus one status word per chunk of 512 pages.
/// </summary>
/// <remarks>
/// <para><b>Structures.</b> The arena is cut into chunks of 512 pages (an order-9 block, 2 MiB of 4 KiB pages). A chunk
/// owns eight 64-bit bitfield words (one 64-byte line) and one status word: <see cref="Normal"/> (the bits say which
/// pages are in use), <see cref="Huge"/> (the whole chunk is part of one allocated block of order 9 or more; its bits
/// are not used), <see cref="HeadOnly"/> (a huge block was freed while a speculative reference still held its head:
/// page 0 of the chunk is that head, still in use, and every other page follows the bits), or <see cref="Returning"/>
/// (wholly free, its memory being handed back to the operating system: claimed like a huge block, so that no page of it
/// is handed out meanwhile). Pages past the arena's end are set in the bitfield for good.</para>
/// <para><b>Paths.</b> Orders 0..6 claim a naturally aligned run of clear bits inside one word with one CAS; orders 7
/// and 8 claim 2 or 4 whole words (CAS from 0 each, rolled back if one fails); orders 9 and up claim whole chunks by CAS
/// of their status from <see cref="Normal"/> to <see cref="Huge"/>. Free clears the bits (one
/// <see cref="Interlocked.And(ref ulong, ulong)"/> for order 0) or stores <see cref="Normal"/> back. No path takes a lock
/// or waits for another thread: every retry follows a CAS that failed because another operation succeeded.</para>
/// <para><b>Small against huge (a Dekker handshake, no counter).</b> A small claim sets its bits, then reads the chunk's
/// status; a huge claim sets the status, then reads the chunk's bits. Both first steps are <see cref="Interlocked"/>
/// operations (full fences), so at least one side sees the other: either the small claimer sees <see cref="Huge"/> and
/// takes its bits back, or the huge claimer sees a set bit and gives the status back. A small claim that took page 0 of
/// a <see cref="HeadOnly"/> chunk is taken back the same way. Such transient bits are the only bits ever set in a huge
/// chunk, and their claimers clear them at once.</para>
/// <para><b>Invariants</b> (B1..B5 of kernel-algorithms.md section 6, mapped to this representation):</para>
/// <list type="number">
/// <item>A1 (B1, B5) Every page is in at most one block: a page is in use iff its bit is set by a claim that stands, or
/// its chunk is <see cref="Huge"/>, or it is page 0 of a <see cref="HeadOnly"/> chunk. Every claim is a CAS that saw the
/// page free, and blocks are naturally aligned by construction.</item>
/// <item>A2 (B2) Coalescing is immediate and maximal: a free block is a run of clear bits, so a freed page joins its
/// free buddies at once; a <see cref="Normal"/> chunk whose bits are all clear can be claimed as an order-9 block.</item>
/// <item>A3 (B3) Free pages = clear bits of <see cref="Normal"/> and <see cref="HeadOnly"/> chunks, minus the held head of
/// each <see cref="HeadOnly"/> chunk (exact when quiescent: no transient claim in flight).</item>
/// <item>A4 Only the owner of a huge block writes its chunks' status; only the owner of a run of bits clears them.</item>
/// </list>
/// <para>Fragmentation: a request of order k can fail while smaller orders still succeed, because the free pages may be
/// scattered (no aligned free run of 2^k exists).</para>
/// </remarks>
internal sealed unsafe partial class FrameAllocator : IDisposable
{
    /// <summary>log2 of the pages in a chunk.</summary>
    public const int ChunkShift = 9;

    /// <summary>Pages per chunk.</summary>
    public const int ChunkPages = 1 << ChunkShift;

    /// <summary>Bitfield words per chunk.</summary>
    public const int WordsPerChunk = ChunkPages / 64;

    /// <summary>Chunk status: the bits say which pages are in use.</summary>
    public const int Normal = 0;

    /// <summary>Chunk status: the whole chunk is part of one allocated block of order 9 or more.</summary>
    public const int Huge = 1;

    /// <summary>Chunk status: page 0 is the still-referenced head of a freed huge block; the other pages follow the bits.</summary>
    public const int HeadOnly = 2;

    /// <summary>
    /// Chunk status: the chunk is wholly free and its memory is being given back to the operating system
    /// (<see cref="TryBeginReturn"/>); no claim stands on it, and its pages count as free.
    /// </summary>
    public const int Returning = 3;

    // Per-thread hints: the last word (+1, so that 0 means "none yet") where this thread allocated a small block, and the
    // chunk after its last huge block. Shared by every allocator in the process and range-checked on use: a stale hint
    // costs one failed attempt, never correctness.
    [ThreadStatic] private static long t_wordHint;
    [ThreadStatic] private static int t_hugeHint;

    private readonly NativeRegion _bitsRegion;
    private readonly NativeRegion _statusRegion;
    private readonly ulong* _bits;
    private readonly int* _status;
    private readonly int _chunkCount;
    private readonly long _wordCount;
    private readonly bool _vectors;
    private readonly ContentionCounters? _counters;

    /// <summary>Creates the allocator with every page free.</summary>
    /// <param name="pageCount">Pages managed.</param>
    /// <param name="useVectors">Whether scans may use SIMD.</param>
    /// <param name="counters">Where lost CAS races are counted (slow path only), or null.</param>
    public FrameAllocator(long pageCount, bool useVectors, ContentionCounters? counters = null)
    {
        _vectors = useVectors;
        _counters = counters;
        _chunkCount = (int)((pageCount + ChunkPages - 1) >> ChunkShift);
        _wordCount = (long)_chunkCount * WordsPerChunk;
        _bitsRegion = NativeRegion.Reserve((nuint)_wordCount * sizeof(ulong), (nuint)CacheLine.PaddedSize, adviseHugePages: false);
        _statusRegion = NativeRegion.Reserve((nuint)_chunkCount * sizeof(int), (nuint)CacheLine.PaddedSize, adviseHugePages: false);
        _bits = (ulong*)_bitsRegion.Pointer;
        _status = (int*)_statusRegion.Pointer;
        _reservedBy = new int[_chunkCount];

        long end = (long)_chunkCount << ChunkShift;
        for (long p = pageCount; p < end; p++)
        {
            _bits[p >> 6] |= 1UL << (int)(p & 63);
        }
    }

    /// <summary>The number of chunks.</summary>
    public int ChunkCount => _chunkCount;

    /// <summary>Free pages (A3): exact when quiescent, a close estimate otherwise. Costs one pass over the bitfield.</summary>
    public long FreePages
    {
        get
        {
            long free = 0;
            for (int c = 0; c < _chunkCount; c++)
            {
                int status = Volatile.Read(ref _status[c]);
                if (status == Huge)
                {
                    continue;
                }

                if (status == Returning)
                {
                    free += ChunkPages; // wholly free (its claimer saw every bit clear), only out of reach for a moment
                    continue;
                }

                ulong* w = _bits + ((long)c * WordsPerChunk);
                int used = 0;
                for (int i = 0; i < WordsPerChunk; i++)
                {
                    used += BitOperations.PopCount(Volatile.Read(ref w[i]));
                }

                free += ChunkPages - used - (status == HeadOnly ? 1 : 0);
            }

            return free;
        }
    }

    /// <summary>Reads a chunk's status (for <c>Verify</c>).</summary>
    public int ReadStatus(int chunk) => Volatile.Read(ref _status[chunk]);

    /// <summary>Reads a bitfield word (for <c>Verify</c>).</summary>
    public ulong ReadWord(long word) => Volatile.Read(ref _bits[word]);

    /// <summary>Whether a page is in use as far as the allocator knows (A1).</summary>
    public bool IsInUse(uint pfn)
    {
        int status = ReadStatus((int)(pfn >> ChunkShift));
        if (status == Returning)
        {
            return false;
        }

        return status == Huge
            || (status == HeadOnly && (pfn & (ChunkPages - 1)) == 0)
            || (ReadWord(pfn >> 6) & (1UL << (int)(pfn & 63))) != 0;
    }

    /// <summary>Allocates one naturally aligned block of <c>2^order</c> pages; false when none is free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(int order, out uint pfn)
    {
        if (order >= ChunkShift)
        {
            return TryAllocHuge(order, out pfn);
        }

        long hint = t_wordHint - 1;
        if ((ulong)hint < (ulong)_wordCount && order <= 6 && TryClaimInWord(hint, order, out pfn))
        {
            return true;
        }

        return TryAllocSmallScan(hint, order, out pfn);
    }

    /// <summary>
    /// Allocates up to <c>dest.Length</c> blocks of order <paramref name="order"/> (0..6), several per CAS (the refill
    /// half of <c>rmqueue_bulk</c>).
    /// </summary>
    /// <returns>The number of blocks written to <paramref name="dest"/>.</returns>
    public int AllocBulk(int order, Span<uint> dest)
    {
        int got = 0;
        long hint = t_wordHint - 1;
        long start = (ulong)hint < (ulong)_wordCount ? hint : InitialHintWord();
        int firstChunk = (int)(start / WordsPerChunk);
        int slot = Slot();
        int home = -1;
        for (int visited = 0; visited < 2 * ScanLength && got < dest.Length; visited++)
        {
            int c = ScanStep(firstChunk, visited, slot);
            if (c < 0)
            {
                continue;
            }

            int before = got;
            int candidates = CandidateWords(c, order);
            while (candidates != 0 && got < dest.Length)
            {
                int i = BitOperations.TrailingZeroCount(candidates);
                candidates &= candidates - 1;
                got += ClaimManyInWord(((long)c * WordsPerChunk) + i, order, dest[got..]);
            }

            if (got > before)
            {
                t_wordHint = ((long)c * WordsPerChunk) + 1;
                home = home < 0 ? c : home;
                CountSteal(visited);
            }
        }

        if (home >= 0)
        {
            MoveReservation(firstChunk, home, slot);
        }

        return got;
    }

    /// <summary>Frees one block. False (and nothing changed) when the block was not wholly in use: a double free.</summary>
    public bool TryFree(uint pfn, int order)
    {
        if (order >= ChunkShift)
        {
            return TryFreeHuge(pfn, order, keepHead: false);
        }

        ulong* word = _bits + (pfn >> 6);
        if (order == 0)
        {
            if ((pfn & (ChunkPages - 1)) == 0 && Volatile.Read(ref _status[pfn >> ChunkShift]) == HeadOnly)
            {
                return TryEndHeadOnly((int)(pfn >> ChunkShift));
            }

            return ClearBit(word, 1UL << (int)(pfn & 63));
        }

        if (order <= 6)
        {
            return ClearRun(word, BitRuns.RunMask(order) << (int)(pfn & 63));
        }

        return ClearWords(word, 1 << (order - 6));
    }

    /// <summary>
    /// Frees all of a huge block (order 9 or more) but its first page, which stays in use: the allocator side of
    /// <c>__free_pages</c> when a speculative reference still holds the head. The block's other chunks become wholly free;
    /// its first chunk becomes <see cref="HeadOnly"/>.
    /// </summary>
    /// <returns>False, with nothing changed, when the block is not a huge block in use.</returns>
    public bool TryReleaseHugeExceptHead(uint pfn, int order) => TryFreeHuge(pfn, order, keepHead: true);

    /// <summary>
    /// Turns a huge block's chunks into ordinary chunks whose bits are all set (every page still in use), so that pieces
    /// smaller than a chunk can be freed one by one: the allocator side of splitting an order-9+ folio.
    /// </summary>
    /// <remarks>
    /// Keeps A1/A4. A huge chunk's bits are clear, except for an instant when a small claimer that read the chunk as
    /// <see cref="Normal"/> set a bit before its handshake saw <see cref="Huge"/>; that claimer clears its bit again at
    /// once. Each word is filled with a CAS from 0, waiting those few instructions out, so no claimer's clear can land on
    /// a word this call filled. Then the status goes back to <see cref="Normal"/> with a release store (the owner's).
    /// </remarks>
    public void ConvertHugeToBits(uint pfn, int order)
    {
        int first = (int)(pfn >> ChunkShift);
        int span = 1 << (order - ChunkShift);
        for (int c = first; c < first + span; c++)
        {
            ulong* w = _bits + ((long)c * WordsPerChunk);
            for (int i = 0; i < WordsPerChunk; i++)
            {
                var spin = new SpinWait();
                while (Interlocked.CompareExchange(ref w[i], ulong.MaxValue, 0UL) != 0UL)
                {
                    spin.SpinOnce(sleep1Threshold: -1);
                }
            }

            Volatile.Write(ref _status[c], Normal);
        }
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _bitsRegion.Dispose();
        _statusRegion.Dispose();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Bitfield word transitions.

    /// <summary>
    /// The small half of the Dekker handshake, after a successful bit CAS (a full fence): does the claim stand?
    /// </summary>
    /// <remarks>Keeps A1: false when the chunk became <see cref="Huge"/>, or when the claim covers page 0 of a
    /// <see cref="HeadOnly"/> chunk; the caller then clears its own bits again.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool ClaimStands(long word, ulong mask)
    {
        int status = Volatile.Read(ref _status[word / WordsPerChunk]);
        return status == Normal || (status == HeadOnly && ((word & (WordsPerChunk - 1)) != 0 || (mask & 1) == 0));
    }

    /// <summary>Bits of a word that a small claim must not take besides the set ones: page 0 of a <see cref="HeadOnly"/> chunk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong Reserved(long word, int status) =>
        status == HeadOnly && (word & (WordsPerChunk - 1)) == 0 ? 1UL : 0UL;

    /// <summary>Claims one aligned run of 2^order clear bits (order 0..6) in one word.</summary>
    /// <remarks>Keeps A1: the CAS is on the value that showed the run clear (full fence), then the handshake; a claim
    /// that does not stand is cleared again by its owner with <see cref="Interlocked.And(ref ulong, ulong)"/>.</remarks>
    private bool TryClaimInWord(long word, int order, out uint pfn)
    {
        int status = Volatile.Read(ref _status[word / WordsPerChunk]);
        if (status is Normal or HeadOnly)
        {
            ulong* w = _bits + word;
            ulong reserved = Reserved(word, status);
            ulong run = BitRuns.RunMask(order);
            ulong v = Volatile.Read(ref *w);
            while (true)
            {
                ulong starts = BitRuns.FreeRunStarts(~(v | reserved), order);
                if (starts == 0)
                {
                    break;
                }

                int bit = BitOperations.TrailingZeroCount(starts);
                ulong mask = run << bit;
                ulong seen = Interlocked.CompareExchange(ref *w, v | mask, v);
                if (seen != v)
                {
                    v = seen; // lost a race for this word: retry on the value that won
                    _counters?.Add(ArenaCounter.AllocCasRetries);
                    continue;
                }

                if (ClaimStands(word, mask))
                {
                    t_wordHint = word + 1;
                    pfn = (uint)((word << 6) + bit);
                    return true;
                }

                Interlocked.And(ref *w, ~mask);
                _counters?.Add(ArenaCounter.HandshakeRollbacks);
                break;
            }
        }

        pfn = 0;
        return false;
    }

    /// <summary>Claims up to <c>dest.Length</c> runs of 2^order bits in one word with one CAS; returns how many.</summary>
    private int ClaimManyInWord(long word, int order, Span<uint> dest)
    {
        int status = Volatile.Read(ref _status[word / WordsPerChunk]);
        if (status is not (Normal or HeadOnly))
        {
            return 0;
        }

        ulong* w = _bits + word;
        ulong reserved = Reserved(word, status);
        ulong run = BitRuns.RunMask(order);
        ulong v = Volatile.Read(ref *w);
        while (true)
        {
            ulong starts = BitRuns.FreeRunStarts(~(v | reserved), order);
            if (starts == 0)
            {
                return 0;
            }

            ulong take = BitRuns.LowestSetBits(starts, dest.Length);
            ulong mask = order == 6 ? ulong.MaxValue : take * run; // disjoint aligned runs: the product has no carries
            ulong seen = Interlocked.CompareExchange(ref *w, v | mask, v);
            if (seen != v)
            {
                v = seen;
                _counters?.Add(ArenaCounter.AllocCasRetries);
                continue;
            }

            if (!ClaimStands(word, mask))
            {
                Interlocked.And(ref *w, ~mask);
                _counters?.Add(ArenaCounter.HandshakeRollbacks);
                return 0;
            }

            int n = 0;
            while (take != 0)
            {
                dest[n++] = (uint)((word << 6) + BitOperations.TrailingZeroCount(take));
                take &= take - 1;
            }

            return n;
        }
    }

    /// <summary>Claims <paramref name="count"/> whole words (0 -> all ones) in order, rolling back if one fails or the claim does not stand.</summary>
    /// <remarks>Keeps A1: each word is claimed by a CAS from 0 (full fence), then the handshake. A word this call set to
    /// all ones is touched by nobody else (no bit is free, and no page in it has another owner), so the rollback is a
    /// release store.</remarks>
    private bool TryClaimWords(long first, int count, out uint pfn)
    {
        ulong* w = _bits + first;
        int claimed = 0;
        while (claimed < count && Interlocked.CompareExchange(ref w[claimed], ulong.MaxValue, 0UL) == 0UL)
        {
            claimed++;
        }

        if (claimed == count && ClaimStands(first, ulong.MaxValue))
        {
            t_wordHint = first + 1;
            pfn = (uint)(first << 6);
            return true;
        }

        pfn = 0;

        for (int j = 0; j < claimed; j++)
        {
            Volatile.Write(ref w[j], 0UL);
        }

        _counters?.Add(claimed == count ? ArenaCounter.HandshakeRollbacks : ArenaCounter.AllocCasRetries);
        return false;
    }

    /// <summary>Clears one bit; false, with nothing changed, if it was already clear.</summary>
    /// <remarks>Keeps A1 (a double free is refused: clearing a clear bit changes nothing). One
    /// <see cref="Interlocked.And(ref ulong, ulong)"/>, a full fence that orders the freed page's last writes before any
    /// later claim of its bit.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool ClearBit(ulong* word, ulong bit) => (Interlocked.And(ref *word, ~bit) & bit) != 0;

    /// <summary>Clears a run of bits; false, with nothing changed, if any of them was already clear.</summary>
    /// <remarks>Keeps A1 (a double free is refused). CAS loop: full fence.</remarks>
    private bool ClearRun(ulong* word, ulong mask)
    {
        ulong v = Volatile.Read(ref *word);
        while ((v & mask) == mask)
        {
            ulong seen = Interlocked.CompareExchange(ref *word, v & ~mask, v);
            if (seen == v)
            {
                return true;
            }

            v = seen;
            _counters?.Add(ArenaCounter.FreeCasRetries);
        }

        return false;
    }

    /// <summary>Frees whole words (all ones -> 0); false, with nothing changed, unless all were full.</summary>
    /// <remarks>Keeps A1/A4: the block's owner is the only writer of words it holds whole, so after the check a release
    /// store suffices.</remarks>
    private static bool ClearWords(ulong* word, int count)
    {
        for (int i = 0; i < count; i++)
        {
            if (Volatile.Read(ref word[i]) != ulong.MaxValue)
            {
                return false;
            }
        }

        for (int i = 0; i < count; i++)
        {
            Volatile.Write(ref word[i], 0UL);
        }

        return true;
    }
}
