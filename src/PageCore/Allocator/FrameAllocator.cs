using System.Numerics;
using System.Runtime.CompilerServices;
using PageCore.Arena;

namespace PageCore.Allocator;

/// <summary>
/// The shared, lock-free page-frame allocator: blocks of order 0..MaxOrder, naturally aligned, coalesced on free.
/// LLFree-style: a bitfield with one bit per page, and one status word per chunk of 512 pages.
/// </summary>
/// <remarks>
/// <para><b>Structures.</b> The arena is cut into chunks of 512 pages (an order-9 block, 2 MiB of 4 KiB pages). Each chunk
/// has eight 64-bit bitfield words (one cache line, bit set = page in use) and one 32-bit status word: the number of
/// free pages the chunk still promises (low 16 bits, 0..512), or <see cref="HugeFlag"/> when the whole chunk is one
/// allocated block of order 9 or more. Pages past the arena's end in its last chunk are set in the bitfield for good and
/// never counted.</para>
/// <para><b>Paths.</b> Orders 0..8 first reserve <c>2^order</c> pages from a chunk's count (CAS on the status word), then
/// claim a naturally aligned run of clear bits (CAS on one bitfield word; orders 7 and 8 claim 2 or 4 whole words, and
/// roll back if any was taken). Orders 9 and up claim whole chunks by CAS of their status words from 512 (all free) to
/// <see cref="HugeFlag"/>, rolling back on failure; the bitfield is not touched. Free is the mirror: clear the bits (or
/// restore 512), then give the count back. No path takes a lock or waits for another thread: every retry follows a CAS
/// that failed because another operation succeeded.</para>
/// <para><b>Invariants</b> (B1..B5 of kernel-algorithms.md section 6, mapped to this representation):</para>
/// <list type="number">
/// <item>A1 (B1, B5) Every page is in at most one block: a page is in use iff its bit is set or its chunk is huge, and a
/// bit or chunk is claimed only by a CAS that saw it free. Blocks are naturally aligned by construction.</item>
/// <item>A2 (B2) Coalescing is immediate and maximal: a free block is just a run of clear bits, so a freed page joins its
/// free buddies at once; a chunk whose count is back at 512 can be claimed as an order-9 block at once.</item>
/// <item>A3 (B3) For a chunk that is not huge: count + (reservations not yet turned into claimed bits) &lt;= clear bits,
/// with equality when quiescent. Allocation reserves before it claims and free clears before it gives back, so the count
/// never promises a page that is not there; when the count reads 512 no bit is set and no small allocation is in flight.</item>
/// <item>A4 A huge chunk has count 0 and all its bits clear; only the owner of the huge block changes it back.</item>
/// </list>
/// <para><b>Ordering.</b> Every claim and every count change is an <see cref="Interlocked"/> operation (a full fence).
/// Stores that give memory back (the bitfield words of orders 7..8, a huge chunk's status word) are release stores by
/// the owner of those bits, so the next owner's CAS, which reads them, also sees every write made to the pages and their
/// descriptors before the free.</para>
/// <para>Fragmentation: a request of order k can fail while smaller orders still succeed, because the free pages may be
/// scattered (no chunk holds an aligned free run of 2^k).</para>
/// </remarks>
internal sealed unsafe class FrameAllocator : IDisposable
{
    /// <summary>log2 of the pages in a chunk.</summary>
    public const int ChunkShift = 9;

    /// <summary>Pages per chunk.</summary>
    public const int ChunkPages = 1 << ChunkShift;

    /// <summary>Bitfield words per chunk.</summary>
    public const int WordsPerChunk = ChunkPages / 64;

    /// <summary>The status word of a chunk that is (part of) one allocated block of order 9 or more.</summary>
    public const int HugeFlag = 1 << 16;

    private const int CountMask = HugeFlag - 1;

    // Per-thread hints: the last chunk (+1, so that 0 means "none yet") where this thread allocated. Shared by every
    // allocator in the process and range-checked on use: a stale hint costs one failed attempt, never correctness.
    [ThreadStatic] private static int t_smallHint;
    [ThreadStatic] private static int t_hugeHint;

    private readonly NativeRegion _bitsRegion;
    private readonly NativeRegion _chunkRegion;
    private readonly ulong* _bits;
    private readonly int* _chunks;
    private readonly int _chunkCount;
    private readonly long _pageCount;
    private readonly int _maxOrder;
    private readonly bool _vectors;

    /// <summary>Creates the allocator with every page free.</summary>
    /// <param name="pageCount">Pages managed.</param>
    /// <param name="maxOrder">Largest order handed out.</param>
    /// <param name="useVectors">Whether chunk scans may use SIMD.</param>
    public FrameAllocator(long pageCount, int maxOrder, bool useVectors)
    {
        _pageCount = pageCount;
        _maxOrder = maxOrder;
        _vectors = useVectors;
        _chunkCount = (int)((pageCount + ChunkPages - 1) >> ChunkShift);
        _bitsRegion = NativeRegion.Reserve((nuint)_chunkCount * WordsPerChunk * sizeof(ulong), (nuint)CacheLine.PaddedSize, adviseHugePages: false);
        _chunkRegion = NativeRegion.Reserve((nuint)_chunkCount * sizeof(int), (nuint)CacheLine.PaddedSize, adviseHugePages: false);
        _bits = (ulong*)_bitsRegion.Pointer;
        _chunks = (int*)_chunkRegion.Pointer;

        for (int c = 0; c < _chunkCount; c++)
        {
            long first = (long)c << ChunkShift;
            int real = (int)Math.Min(ChunkPages, pageCount - first);
            _chunks[c] = real;
            for (int p = real; p < ChunkPages; p++)
            {
                _bits[(c * WordsPerChunk) + (p >> 6)] |= 1UL << (p & 63);
            }
        }
    }

    /// <summary>The number of chunks.</summary>
    public int ChunkCount => _chunkCount;

    /// <summary>Whether chunk scans use SIMD.</summary>
    public bool UsesVectors => _vectors;

    /// <summary>Free pages as the chunk counts say (exact when quiescent).</summary>
    public long FreePages
    {
        get
        {
            long sum = 0;
            for (int c = 0; c < _chunkCount; c++)
            {
                sum += Volatile.Read(ref _chunks[c]) & CountMask;
            }

            return sum;
        }
    }

    /// <summary>Reads a chunk's status word (for <c>Verify</c>).</summary>
    public int ReadChunk(int chunk) => Volatile.Read(ref _chunks[chunk]);

    /// <summary>Reads a bitfield word (for <c>Verify</c>).</summary>
    public ulong ReadWord(int word) => Volatile.Read(ref _bits[word]);

    /// <summary>Allocates one naturally aligned block of <c>2^order</c> pages; false when none is free.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TryAlloc(int order, out uint pfn)
    {
        if (order >= ChunkShift)
        {
            return TryAllocHuge(order, out pfn);
        }

        int c = t_smallHint - 1;
        if ((uint)c < (uint)_chunkCount && TryAllocInChunk(c, order, out pfn))
        {
            return true;
        }

        return TryAllocSmallScan(c, order, out pfn);
    }

    /// <summary>
    /// Allocates up to <c>dest.Length</c> blocks of order <paramref name="order"/> (0..8), batching the CAS operations:
    /// one count reservation per chunk and one bitfield CAS per word (the refill half of <c>rmqueue_bulk</c>).
    /// </summary>
    /// <returns>The number of blocks written to <paramref name="dest"/>.</returns>
    public int AllocBulk(int order, Span<uint> dest)
    {
        int got = 0;
        int start = t_smallHint - 1;
        if ((uint)start >= (uint)_chunkCount)
        {
            start = InitialHint();
        }

        int n = 1 << order;
        int c = start;
        for (int visited = 0; visited < _chunkCount && got < dest.Length; visited++)
        {
            int v = Volatile.Read(ref _chunks[c]);
            if (v >= n && v < HugeFlag)
            {
                int claimed = AllocBulkInChunk(c, order, dest[got..]);
                if (claimed > 0)
                {
                    got += claimed;
                    t_smallHint = c + 1;
                }
            }

            c = c + 1 == _chunkCount ? 0 : c + 1;
        }

        return got;
    }

    /// <summary>Frees one block. False (and nothing changed) when the block was not wholly in use: a double free.</summary>
    public bool TryFree(uint pfn, int order)
    {
        if (order >= ChunkShift)
        {
            return TryFreeHuge(pfn, order);
        }

        int c = (int)(pfn >> ChunkShift);
        ulong* word = _bits + (pfn >> 6);
        if (order <= 6)
        {
            if (!ClearRun(word, BitRuns.RunMask(order) << (int)(pfn & 63)))
            {
                return false;
            }
        }
        else if (!ClearWords(word, 1 << (order - 6)))
        {
            return false;
        }

        GiveBack(c, 1 << order);
        return true;
    }

    /// <summary>
    /// Frees all of a huge block (order 9 or more) but its first page, which stays in use as an order-0 page: the
    /// allocator side of <c>__free_pages</c> when a speculative reference still holds the head. The block's other
    /// chunks become wholly free; its first chunk leaves the huge state with only the head's bit set.
    /// </summary>
    /// <returns>False, with nothing changed, when the block is not a huge block in use.</returns>
    public bool TryReleaseHugeExceptHead(uint pfn, int order)
    {
        int first = (int)(pfn >> ChunkShift);
        int span = 1 << (order - ChunkShift);
        for (int i = 0; i < span; i++)
        {
            if (Volatile.Read(ref _chunks[first + i]) != HugeFlag)
            {
                return false;
            }
        }

        for (int i = 1; i < span; i++)
        {
            ReleaseChunk(first + i);
        }

        ShrinkHugeChunkToHead(first);
        return true;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        _bitsRegion.Dispose();
        _chunkRegion.Dispose();
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Chunk status word transitions.

    /// <summary>
    /// Reserves <paramref name="pages"/> pages of a chunk's count: the promise that that many clear bits are there for us.
    /// </summary>
    /// <remarks>
    /// Keeps A3: the count only goes down by what the caller will claim. A CAS on the value read, so the count cannot go
    /// below 0 and a huge chunk (value &gt;= <see cref="HugeFlag"/>) is never reserved from. Full fence on success: the
    /// bitfield reads that follow see every bit cleared before the count was given back.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryReserve(int chunk, int pages)
    {
        ref int status = ref _chunks[chunk];
        int v = Volatile.Read(ref status);
        while (v >= pages && v < HugeFlag)
        {
            int seen = Interlocked.CompareExchange(ref status, v - pages, v);
            if (seen == v)
            {
                return true;
            }

            v = seen;
        }

        return false;
    }

    /// <summary>Gives <paramref name="pages"/> back to a chunk's count after their bits were cleared (or never claimed).</summary>
    /// <remarks>Keeps A3: called only after the bits are clear. <see cref="Interlocked.Add(ref int, int)"/>: full fence, so
    /// whoever reserves these pages next also sees the cleared bits.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void GiveBack(int chunk, int pages) => Interlocked.Add(ref _chunks[chunk], pages);

    /// <summary>Claims a whole free chunk (count 512) for a huge block.</summary>
    /// <remarks>Keeps A1/A4: succeeds only from exactly 512, i.e. no page in use and no small reservation in flight; after
    /// it no small reservation can succeed (value &gt;= <see cref="HugeFlag"/>). CAS: full fence.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool TryClaimChunk(int chunk) =>
        Interlocked.CompareExchange(ref _chunks[chunk], HugeFlag, ChunkPages) == ChunkPages;

    /// <summary>Gives a chunk of a huge block back (or undoes a partial claim): <see cref="HugeFlag"/> -> 512.</summary>
    /// <remarks>Keeps A4: only the owner of the huge block writes a huge chunk's word, so a release store cannot lose an
    /// update; release orders every write to the block before the next claimant's CAS sees 512.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReleaseChunk(int chunk) => Volatile.Write(ref _chunks[chunk], ChunkPages);

    /// <summary>A huge chunk becomes an ordinary chunk whose first page alone is in use: <see cref="HugeFlag"/> -> 511.</summary>
    /// <remarks>Keeps A3/A4: a huge chunk's bits are all clear and only its owner writes them, so the head's bit is set with
    /// a plain release store; the count is published after it (release), so a reserver that sees 511 also sees the bit,
    /// and count 511 = clear bits 511.</remarks>
    private void ShrinkHugeChunkToHead(int chunk)
    {
        Volatile.Write(ref _bits[chunk * WordsPerChunk], 1UL);
        Volatile.Write(ref _chunks[chunk], ChunkPages - 1);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Bitfield word transitions.

    /// <summary>Sets <paramref name="mask"/> in a word if all its bits are clear; retries only when another CAS won.</summary>
    /// <remarks>Keeps A1: the CAS is on the value that showed the bits clear. Full fence on success.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TrySetRun(ulong* word, ref ulong observed, ulong mask)
    {
        ulong seen = Interlocked.CompareExchange(ref *word, observed | mask, observed);
        if (seen == observed)
        {
            return true;
        }

        observed = seen;
        return false;
    }

    /// <summary>Clears <paramref name="mask"/> in a word; false, with nothing changed, if any of its bits was already clear.</summary>
    /// <remarks>Keeps A1 (a double free is refused). CAS loop: full fence, ordering the freed pages' last writes before
    /// any later claim of their bits.</remarks>
    private static bool ClearRun(ulong* word, ulong mask)
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
        }

        return false;
    }

    /// <summary>Claims <paramref name="count"/> whole words (0 -> all ones) in order, rolling back on the first that fails.</summary>
    /// <remarks>Keeps A1: each word is claimed by a CAS from 0. A word this call set to all ones is touched by nobody else
    /// (no bit is free, and no page in it has an owner to free it), so the rollback is a release store.</remarks>
    private static bool TryClaimWords(ulong* word, int count)
    {
        for (int i = 0; i < count; i++)
        {
            if (Interlocked.CompareExchange(ref word[i], ulong.MaxValue, 0UL) != 0UL)
            {
                for (int j = 0; j < i; j++)
                {
                    Volatile.Write(ref word[j], 0UL);
                }

                return false;
            }
        }

        return true;
    }

    /// <summary>Frees <paramref name="count"/> whole words (all ones -> 0); false, with nothing changed, unless all were full.</summary>
    /// <remarks>Keeps A1: the block's owner is the only writer of words it holds whole, so after the check a release store
    /// suffices; the count is given back afterwards with a full fence.</remarks>
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

    // ---------------------------------------------------------------------------------------------------------------
    // Small orders (0..8).

    private bool TryAllocInChunk(int chunk, int order, out uint pfn)
    {
        int pages = 1 << order;
        if (TryReserve(chunk, pages))
        {
            if (TryClaimBits(chunk, order, out pfn))
            {
                t_smallHint = chunk + 1;
                return true;
            }

            // The count promised the pages but no aligned run is free (fragmentation), or the single free bit moved
            // behind our scan. Give the reservation back and look elsewhere.
            GiveBack(chunk, pages);
        }

        pfn = 0;
        return false;
    }

    private bool TryClaimBits(int chunk, int order, out uint pfn)
    {
        ulong* words = _bits + (chunk * WordsPerChunk);
        uint chunkBase = (uint)chunk << ChunkShift;
        if (order <= 6)
        {
            ulong run = BitRuns.RunMask(order);

            // Two passes: a bit freed behind the first pass is found by the second (order 0 is guaranteed one by its
            // reservation, unless other reservers keep taking the bits ahead of us, and then they made progress).
            for (int pass = 0; pass < 2; pass++)
            {
                for (int i = 0; i < WordsPerChunk; i++)
                {
                    ulong v = Volatile.Read(ref words[i]);
                    while (true)
                    {
                        ulong starts = BitRuns.FreeRunStarts(~v, order);
                        if (starts == 0)
                        {
                            break;
                        }

                        int bit = BitOperations.TrailingZeroCount(starts);
                        if (TrySetRun(words + i, ref v, run << bit))
                        {
                            pfn = chunkBase + (uint)(i << 6) + (uint)bit;
                            return true;
                        }
                    }
                }

                if (order != 0)
                {
                    break;
                }
            }
        }
        else
        {
            int span = 1 << (order - 6);
            for (int g = 0; g < WordsPerChunk; g += span)
            {
                bool allClear = true;
                for (int j = 0; j < span && allClear; j++)
                {
                    allClear = Volatile.Read(ref words[g + j]) == 0;
                }

                if (allClear && TryClaimWords(words + g, span))
                {
                    pfn = chunkBase + (uint)(g << 6);
                    return true;
                }
            }
        }

        pfn = 0;
        return false;
    }

    private bool TryAllocSmallScan(int hint, int order, out uint pfn)
    {
        int pages = 1 << order;
        int start = (uint)hint < (uint)_chunkCount ? hint + 1 : InitialHint();
        if (start >= _chunkCount)
        {
            start = 0;
        }

        // [start, count) then [0, start): every chunk is visited once.
        for (int segment = 0; segment < 2; segment++)
        {
            int from = segment == 0 ? start : 0;
            int to = segment == 0 ? _chunkCount : start;
            while (from < to)
            {
                int c = ChunkScan.FindInRange(_chunks, from, to, pages, ChunkPages, _vectors);
                if (c < 0)
                {
                    break;
                }

                if (TryAllocInChunk(c, order, out pfn))
                {
                    return true;
                }

                from = c + 1;
            }
        }

        pfn = 0;
        return false;
    }

    private int AllocBulkInChunk(int chunk, int order, Span<uint> dest)
    {
        int pages = 1 << order;
        ref int status = ref _chunks[chunk];

        // Reserve as many blocks as the count allows, up to what is wanted.
        int v = Volatile.Read(ref status);
        int blocks;
        while (true)
        {
            if (v < pages || v >= HugeFlag)
            {
                return 0;
            }

            blocks = Math.Min(dest.Length, v >> order);
            int seen = Interlocked.CompareExchange(ref status, v - (blocks << order), v);
            if (seen == v)
            {
                break;
            }

            v = seen;
        }

        int got = 0;
        ulong* words = _bits + (chunk * WordsPerChunk);
        uint chunkBase = (uint)chunk << ChunkShift;
        if (order <= 6)
        {
            ulong run = BitRuns.RunMask(order);
            for (int i = 0; i < WordsPerChunk && got < blocks; i++)
            {
                ulong w = Volatile.Read(ref words[i]);
                while (got < blocks)
                {
                    ulong starts = BitRuns.FreeRunStarts(~w, order);
                    if (starts == 0)
                    {
                        break;
                    }

                    ulong take = BitRuns.LowestSetBits(starts, blocks - got);
                    ulong mask = order == 6 ? ulong.MaxValue : take * run; // runs are disjoint: the product has no carries
                    if (TrySetRun(words + i, ref w, mask))
                    {
                        while (take != 0)
                        {
                            int bit = BitOperations.TrailingZeroCount(take);
                            dest[got++] = chunkBase + (uint)(i << 6) + (uint)bit;
                            take &= take - 1;
                        }

                        break;
                    }
                }
            }
        }
        else
        {
            while (got < blocks && TryClaimBits(chunk, order, out uint pfn))
            {
                dest[got++] = pfn;
            }
        }

        if (got < blocks)
        {
            GiveBack(chunk, (blocks - got) << order);
        }

        return got;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Huge orders (9 and up): whole chunks.

    private bool TryAllocHuge(int order, out uint pfn)
    {
        int span = 1 << (order - ChunkShift);
        int hint = t_hugeHint - 1;
        int start = (uint)hint < (uint)_chunkCount ? hint & ~(span - 1) : 0;
        for (int segment = 0; segment < 2; segment++)
        {
            int from = segment == 0 ? start : 0;
            int to = segment == 0 ? _chunkCount : start;
            while (from < to)
            {
                int c = ChunkScan.FindInRange(_chunks, from, to, ChunkPages, ChunkPages, _vectors);
                if (c < 0)
                {
                    break;
                }

                int group = c & ~(span - 1);
                if (group + span <= _chunkCount && TryClaimChunks(group, span))
                {
                    t_hugeHint = group + span + 1;
                    pfn = (uint)group << ChunkShift;
                    return true;
                }

                from = group + span;
            }
        }

        pfn = 0;
        return false;
    }

    private bool TryClaimChunks(int first, int span)
    {
        for (int i = 0; i < span; i++)
        {
            if (!TryClaimChunk(first + i))
            {
                for (int j = 0; j < i; j++)
                {
                    ReleaseChunk(first + j);
                }

                return false;
            }
        }

        return true;
    }

    private bool TryFreeHuge(uint pfn, int order)
    {
        int first = (int)(pfn >> ChunkShift);
        int span = 1 << (order - ChunkShift);
        for (int i = 0; i < span; i++)
        {
            if (Volatile.Read(ref _chunks[first + i]) != HugeFlag)
            {
                return false;
            }
        }

        for (int i = 0; i < span; i++)
        {
            ReleaseChunk(first + i);
        }

        return true;
    }

    private int InitialHint()
    {
        // Spread threads over the arena so that they do not all start on chunk 0 (Fibonacci hashing of the thread id).
        int h = (int)(((uint)Environment.CurrentManagedThreadId * 2654435769u) % (uint)_chunkCount);
        t_smallHint = h + 1;
        return h;
    }
}
