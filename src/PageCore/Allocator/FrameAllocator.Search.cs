using System.Numerics;
using System.Runtime.CompilerServices;

namespace PageCore.Allocator;

/// <summary>The allocator's searches: which words and chunks a claim tries, and in what order.</summary>
internal sealed unsafe partial class FrameAllocator
{
    /// <summary>
    /// The words of a chunk (bit i = word i) that may hold a free run of the order: not full for orders 0..5, all clear
    /// for 6, the first word of an all-clear aligned group for 7 and 8. None for a <see cref="Huge"/> chunk.
    /// </summary>
    private int CandidateWords(int chunk, int order)
    {
        int status = Volatile.Read(ref _status[chunk]);
        if (status is not (Normal or HeadOnly))
        {
            return 0;
        }

        ulong* w = _bits + ((long)chunk * WordsPerChunk);
        int mask;
        if (order < 6)
        {
            mask = ~ChunkScan.EqualWords(w, ulong.MaxValue, _vectors) & 0xFF;
        }
        else
        {
            int clear = ChunkScan.EqualWords(w, 0UL, _vectors);
            if (status == HeadOnly)
            {
                clear &= ~1; // word 0 holds the head, whatever its bits say
            }

            mask = order switch
            {
                6 => clear,
                7 => clear & (clear >> 1) & 0x55,
                _ => clear & (clear >> 1) & (clear >> 2) & (clear >> 3) & 0x11,
            };
        }

        return mask;
    }

    private bool TryAllocSmallScan(long hint, int order, out uint pfn)
    {
        long start = (ulong)hint < (ulong)_wordCount ? hint : InitialHintWord();
        int firstChunk = (int)(start / WordsPerChunk);
        int slot = Slot();

        // The hint's chunk (all its words, not only those after the hint), then the others in DenseOrder: first those
        // no other thread reserved, then those it did (ScanStep).
        for (int visited = 0; visited < 2 * ScanLength; visited++)
        {
            int c = ScanStep(firstChunk, visited, slot);
            if (c < 0)
            {
                continue;
            }

            int candidates = CandidateWords(c, order);
            while (candidates != 0)
            {
                int i = BitOperations.TrailingZeroCount(candidates);
                candidates &= candidates - 1;
                long word = ((long)c * WordsPerChunk) + i;
                if (order <= 6 ? TryClaimInWord(word, order, out pfn) : TryClaimWords(word, 1 << (order - 6), out pfn))
                {
                    MoveReservation(firstChunk, c, slot);
                    CountSteal(visited);
                    return true;
                }
            }
        }

        pfn = 0;
        return false;
    }

    private bool TryAllocHuge(int order, out uint pfn)
    {
        int span = 1 << (order - ChunkShift);
        int hint = t_hugeHint - 1;
        int start = (uint)hint < (uint)_chunkCount ? hint & ~(span - 1) : HugeHome(span);
        for (int segment = 0; segment < 2; segment++)
        {
            int from = segment == 0 ? start : 0;
            int to = segment == 0 ? _chunkCount : start;
            while (from < to)
            {
                // Next chunk whose status is Normal (SIMD over the status words), then its group.
                int c = ChunkScan.FindInRange(_status, from, to, Normal, Normal, _vectors);
                if (c < 0)
                {
                    break;
                }

                int group = c & ~(span - 1);
                if (group + span <= _chunkCount && GroupLooksFree(group, span) && TryClaimChunks(group, span))
                {
                    t_hugeHint = group + 1; // the same group first next time: after a free it is the thread's own again
                    pfn = (uint)group << ChunkShift;
                    return true;
                }

                from = group + span;
            }
        }

        pfn = 0;
        return false;
    }

    private bool GroupLooksFree(int group, int span)
    {
        for (int i = 0; i < span; i++)
        {
            if (Volatile.Read(ref _status[group + i]) != Normal || !AllWordsClear(group + i))
            {
                return false;
            }
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool AllWordsClear(int chunk) =>
        ChunkScan.EqualWords(_bits + ((long)chunk * WordsPerChunk), 0UL, _vectors) == 0xFF;

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

    /// <summary>Frees a huge block's chunks; with <paramref name="keepHead"/> its first page stays in use (<see cref="HeadOnly"/>).</summary>
    private bool TryFreeHuge(uint pfn, int order, bool keepHead)
    {
        int first = (int)(pfn >> ChunkShift);
        int span = 1 << (order - ChunkShift);
        for (int i = 0; i < span; i++)
        {
            if (Volatile.Read(ref _status[first + i]) != Huge)
            {
                return false;
            }
        }

        for (int i = keepHead ? 1 : 0; i < span; i++)
        {
            ReleaseChunk(first + i);
        }

        if (keepHead)
        {
            ShrinkHugeChunkToHead(first);
        }

        return true;
    }

    /// <summary>Steps of a small allocation's scan: the hint's chunk, then three passes over the chunks (<see cref="DenseOrder"/>).</summary>
    private int ScanLength => 1 + (3 * _chunkCount);

    /// <summary>
    /// The chunk a small allocation visits at step <paramref name="visited"/> of its scan, or -1 to skip the step:
    /// first the chunk it last allocated in (its hint, where its recent blocks are); then the partly used chunks from
    /// the lowest up; then the wholly free chunks whose buddy chunk is in use; then any wholly free chunk, lowest first.
    /// This keeps the working set dense, as LLFree's reservations prefer partly used trees: used memory gathers in the
    /// low chunks and the high ones stay wholly free, so their memory can be given back (<see cref="TryBeginReturn"/>);
    /// and, as the buddy allocator splits the smallest free block, a new chunk is broken off a pair that is already
    /// broken before a whole pair (an order-10 block) is. The wholly-free test is racy: a wrong guess only changes which
    /// chunk is tried first. Threads meet in the lowest chunk with room only when their own is full, once per batch.
    /// </summary>
    private int DenseOrder(int firstChunk, int visited)
    {
        if (visited == 0)
        {
            return firstChunk;
        }

        int pass = (visited - 1) / _chunkCount;
        int c = DenseChunk(firstChunk, visited);
        if (c == firstChunk)
        {
            return -1;
        }

        bool free = IsChunkFree(c);
        bool take = pass switch
        {
            0 => !free,
            1 => free && ((c ^ 1) >= _chunkCount || !IsChunkFree(c ^ 1)),
            _ => free,
        };
        return take ? c : -1;
    }

    /// <summary>
    /// The chunk a small allocation's scan visits at step <paramref name="visited"/> (0 .. 2 x <see cref="ScanLength"/>),
    /// or -1 to skip the step: the <see cref="DenseOrder"/> once over the chunks that no other thread reserved, then once
    /// over those that another thread did (memory is short elsewhere: the chunk is shared rather than the allocation
    /// failed).
    /// </summary>
    private int ScanStep(int firstChunk, int visited, int slot)
    {
        bool theirs = visited >= ScanLength;
        int step = theirs ? visited - ScanLength : visited;

        // The reservation first: one int, where the dense order's tests read the chunk's bitfield line.
        return ReservedByOther(DenseChunk(firstChunk, step), slot) == theirs ? DenseOrder(firstChunk, step) : -1;
    }

    /// <summary>The chunk that step <paramref name="visited"/> of <see cref="DenseOrder"/> looks at, taken or not.</summary>
    private int DenseChunk(int firstChunk, int visited) => visited == 0 ? firstChunk : (visited - 1) % _chunkCount;

    /// <summary>Counts an allocation that found room only in another thread's reserved chunk (scan step <paramref name="visited"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void CountSteal(int visited)
    {
        if (visited >= ScanLength)
        {
            _counters?.Add(ArenaCounter.ReservationSteals);
        }
    }

    private long InitialHintWord()
    {
        // No hint yet (or a stale one): start at the lowest chunk, where the working set is kept.
        t_wordHint = 1;
        return 0;
    }
}
