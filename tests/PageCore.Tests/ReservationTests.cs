using PageCore.Allocator;
using PageCore.Diagnostics;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// Chunk reservations (FrameAllocator.Reservations.cs): threads that allocate at once work in different chunks, so
/// that no bitfield line is shared between them; a thread still finds room in another's chunk when nothing else has
/// any; huge allocations of different threads start in different lines of status words; and a dead thread's slot is
/// given back.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class ReservationTests(ITestOutputHelper output)
{
    /// <summary>
    /// The interleaving that made two threads share a line: A allocates in the lowest chunk and keeps its page; B, with
    /// no hint, scans the dense order and finds the lowest partly used chunk, A's. With reservations B must go to
    /// another chunk.
    /// </summary>
    [Fact(Timeout = 30_000)]
    public async Task ThreadsThatAllocateAtOnceWorkInDifferentChunks()
    {
        await Task.Yield();
        using var alloc = new FrameAllocator(8 * FrameAllocator.ChunkPages, useVectors: true);
        var pfns = new uint[3];
        var slots = new int[3];
        for (int t = 0; t < 3; t++)
        {
            int me = t;
            var thread = new Thread(() =>
            {
                Assert.True(alloc.TryAlloc(0, out pfns[me]));
                Assert.True(alloc.TryAlloc(0, out uint second)); // the same thread stays in its chunk
                Assert.Equal(pfns[me] >> FrameAllocator.ChunkShift, second >> FrameAllocator.ChunkShift);
                slots[me] = FrameAllocator.CurrentSlot;
            });
            thread.Start();
            TestSupport.JoinAll([thread], TimeSpan.FromSeconds(20)); // one after the other: each sees the others' pages
        }

        int[] chunks = pfns.Select(p => (int)(p >> FrameAllocator.ChunkShift)).ToArray();
        output.WriteLine($"chunks {string.Join(", ", chunks)}, slots {string.Join(", ", slots)}");
        Assert.Equal(3, chunks.Distinct().Count());
        for (int t = 0; t < 3; t++)
        {
            Assert.Equal(slots[t], alloc.ReservedBy(chunks[t]));
        }
    }

    [Fact(Timeout = 30_000)]
    public async Task AThreadTakesAnotherThreadsChunkWhenNothingElseHasRoom()
    {
        await Task.Yield();
        var counters = new ContentionCounters();
        using var alloc = new FrameAllocator(2 * FrameAllocator.ChunkPages, useVectors: true, counters);
        uint first = 0;
        var a = new Thread(() => Assert.True(alloc.TryAlloc(0, out first)));
        a.Start();
        TestSupport.JoinAll([a], TimeSpan.FromSeconds(20));

        int got = 0;
        var b = new Thread(() =>
        {
            while (alloc.TryAlloc(0, out _))
            {
                got++;
            }
        });
        b.Start();
        TestSupport.JoinAll([b], TimeSpan.FromSeconds(20));
        long steals = counters.Snapshot()[ArenaCounter.ReservationSteals];
        output.WriteLine($"B allocated {got} pages; {steals} scans ended in A's chunk");
        Assert.Equal((2 * FrameAllocator.ChunkPages) - 1, got); // every free page, A's chunk included
        Assert.InRange(steals, 1, FrameAllocator.WordsPerChunk); // one per word entered by a scan; the hint does the rest
        Assert.Equal(0, alloc.FreePages);
    }

    [Fact(Timeout = 30_000)]
    public async Task HugeAllocationsOfTwoThreadsStartInDifferentLinesAndStayThere()
    {
        await Task.Yield();
        using var alloc = new FrameAllocator(256 * FrameAllocator.ChunkPages, useVectors: true);
        using var bothHold = new Barrier(2);
        var first = new int[2];
        var slots = new int[2];
        var reused = new bool[2];
        var threads = Enumerable.Range(0, 2).Select(t => new Thread(() =>
        {
            slots[t] = FrameAllocator.CurrentSlot;
            Assert.True(alloc.TryAlloc(9, out uint pfn));
            first[t] = (int)(pfn >> FrameAllocator.ChunkShift);
            bothHold.SignalAndWait(TimeSpan.FromSeconds(10));
            Assert.True(alloc.TryFree(pfn, 9));
            reused[t] = true;
            for (int i = 0; i < 100; i++)
            {
                Assert.True(alloc.TryAlloc(9, out uint again));
                reused[t] &= again == pfn; // alone in its line, the thread gets its own chunk back every time
                Assert.True(alloc.TryFree(again, 9));
            }
        })).ToList();
        threads.ForEach(t => t.Start());
        TestSupport.JoinAll(threads, TimeSpan.FromSeconds(20));
        output.WriteLine($"slots {slots[0]}, {slots[1]}: chunks {first[0]}, {first[1]}");
        Assert.True(reused[0] && reused[1], "a thread did not get its own chunk back"); // whatever the slots
        if (alloc.HugeHomeOf(slots[0], 1) != alloc.HugeHomeOf(slots[1], 1))
        {
            // Slots are the process's: two whose homes coincide (a difference of 8 here) start in one line by design.
            Assert.True(Math.Abs(first[0] - first[1]) >= 32, "the two threads' status words share 128 bytes");
        }

        Assert.Equal(256 * FrameAllocator.ChunkPages, alloc.FreePages);
    }

    [Fact(Timeout = 30_000)]
    public async Task ADeadThreadsSlotIsGivenBack()
    {
        await Task.Yield();
        int slot = 0;
        var t = new Thread(() => slot = FrameAllocator.CurrentSlot);
        t.Start();
        TestSupport.JoinAll([t], TimeSpan.FromSeconds(20));
        t = null;
        bool free = false;
        DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!free && DateTime.UtcNow < deadline)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            free = FrameAllocator.SlotIsFree(slot);
        }

        Assert.True(free, $"slot {slot} was not given back after its thread ended");
    }
}
