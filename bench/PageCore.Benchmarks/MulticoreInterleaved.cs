using System.Diagnostics;
using System.Runtime.InteropServices;

namespace PageCore.Benchmarks;

/// <summary>
/// How the shared allocator scales from one thread to two (<c>--multicore-interleaved [rounds]</c>): alloc+free of each
/// order with the per-CPU caches off, on one thread and on two, next to the private-counter ceiling (three
/// <see cref="Interlocked"/> operations on a line of the thread's own) and, for frees from another thread, next to the
/// ring that carries the pages alone. Every case runs once per round, one thread then two (the order swapped every
/// round), so both sides of a ratio go through the same slow and fast periods of a noisy machine; the table gives the
/// median and the lowest per-operation time of each and the median of the per-round ratios. Fixed work per thread: the
/// time per operation is the wall time of the slowest thread over its own operations, so 1.00 is perfect scaling.
/// Contention is counted from <see cref="PageArena.Statistics"/> in one more two-thread run per case, on an arena that
/// collects statistics (the timed one does not): CAS retries, handshake rollbacks and reservation steals per operation.
/// </summary>
public static partial class MulticoreInterleaved
{
    private const int Pad = 32; // longs: 256 bytes between two threads' private counters

    /// <summary>Runs <paramref name="rounds"/> rounds and prints the table; returns the exit code.</summary>
    public static int Run(int rounds, int opsPerThread = 100_000)
    {
        if (rounds < 1 || opsPerThread < 1000)
        {
            Console.Error.WriteLine("pagecore-bench: --multicore-interleaved needs a positive round count (and at least 1000 operations per thread).");
            return 64;
        }

        // Timed with statistics off, as the other C#-next-to-C cases (the per-thread counters cost a few ns per
        // operation on this path); the contention column comes from one more two-thread run of each case on an arena
        // that counts.
        using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1 << 16, PerCpuCaches = false, CollectStatistics = false });
        using PageArena counted = PageArena.Create(new PageArenaOptions { Pages = 1 << 16, PerCpuCaches = false });
        using var one = new WorkerGang(1);
        using var two = new WorkerGang(2);
        long[] counters = new long[4 * Pad];
        var ring = new SpscRing(1024);
        string pinned = Environment.ProcessorCount >= 2 && OperatingSystem.IsLinux()
            ? (Pin(two) ? "threads pinned to CPUs 0 and 1" : "pinning failed: threads unpinned")
            : "threads unpinned";
        List<Case> cases = Cases(arena, counters, ring);
        List<Case> countedCases = Cases(counted, counters, ring);
        Case crossBaseline = cases[^2], cross = cases[^1];

        foreach (Case c in cases)
        {
            for (int i = 0; i < 3; i++)
            {
                if (!c.TwoOnly)
                {
                    Time(one, c.Work, opsPerThread / 10); // warm-up: tiering, OSR, the arena's first touches
                }

                Time(two, c.Work, opsPerThread / 10);
            }
        }

        var oneNs = cases.Select(_ => new List<double>()).ToArray();
        var twoNs = cases.Select(_ => new List<double>()).ToArray();
        var contention = new long[cases.Count];
        for (int round = 0; round < rounds; round++)
        {
            for (int i = 0; i < cases.Count; i++)
            {
                Case c = cases[i];
                bool oneFirst = round % 2 == 0;
                for (int k = 0; k < 2; k++)
                {
                    if (k == 0 == oneFirst)
                    {
                        if (!c.TwoOnly)
                        {
                            oneNs[i].Add(Time(one, c.Work, opsPerThread));
                        }
                    }
                    else
                    {
                        twoNs[i].Add(Time(two, c.Work, opsPerThread));
                    }
                }
            }
        }

        for (int i = 0; i < cases.Count; i++)
        {
            long before = Contention(counted);
            Time(two, countedCases[i].Work, opsPerThread);
            contention[i] = Contention(counted) - before;
        }

        PrintMachine();
        Console.WriteLine($"Shared allocator, one thread against two: {rounds} interleaved rounds, {opsPerThread:N0} operations per thread per run, ns per operation per thread; {pinned}");
        Console.WriteLine();
        Console.WriteLine("| group | case | 1 thread median (min) | 2 threads median (min) | 2T / 1T, median of rounds | contention per op, 2T |");
        Console.WriteLine("|---|---|--:|--:|--:|--:|");
        for (int i = 0; i < cases.Count; i++)
        {
            Case c = cases[i];
            if (c.TwoOnly)
            {
                continue;
            }

            double[] ratios = oneNs[i].Zip(twoNs[i], (a, b) => b / a).ToArray();
            Console.WriteLine($"| {c.Group} | {c.Name} | {Interleaving.Median(oneNs[i]):F1} ({oneNs[i].Min():F1}) | {Interleaving.Median(twoNs[i]):F1} ({twoNs[i].Min():F1}) | {Interleaving.Median(ratios):F2} | {contention[i] / (2.0 * opsPerThread):F4} |");
        }

        int b = cases.Count - 2, x = cases.Count - 1;
        double[] crossRatios = twoNs[b].Zip(twoNs[x], (r, f) => f / r).ToArray();
        Console.WriteLine();
        Console.WriteLine("| cross-thread (2 threads) | ns per item median (min) | ratio to the ring alone, median of rounds | contention per item |");
        Console.WriteLine("|---|--:|--:|--:|");
        Console.WriteLine($"| {crossBaseline.Name} | {Interleaving.Median(twoNs[b]):F1} ({twoNs[b].Min():F1}) | 1.00 | |");
        Console.WriteLine($"| {cross.Name} | {Interleaving.Median(twoNs[x]):F1} ({twoNs[x].Min():F1}) | {Interleaving.Median(crossRatios):F2} | {contention[x] / (double)opsPerThread:F4} |");

        foreach (PageArena a in new[] { arena, counted })
        {
            if (a.Verify() is { IsClean: false } report)
            {
                Console.Error.WriteLine($"pagecore-bench: an arena is not clean after the run: {report}");
                return 1;
            }
        }

        return 0;
    }

    private static List<Case> Cases(PageArena arena, long[] counters, SpscRing ring)
    {
        var cases = new List<Case> { new("ceiling", "private counters, 3 atomics", (t, n) => PrivateCounters(counters, t, n)) };
        foreach (int order in new[] { 0, 4, 6, 7, 8, 9, 10 })
        {
            cases.Add(new("alloc+free, caches off", $"order {order}", (_, n) => AllocFree(arena, order, n)));
        }

        // Cross-thread frees run on two threads only: thread 0 allocates and sends, thread 1 receives and frees.
        cases.Add(new("cross-thread", "the ring alone (page numbers)", (t, n) => RingOnly(ring, t, n), TwoOnly: true));
        cases.Add(new("cross-thread", "order 0 allocated on A, freed on B", (t, n) => RingFree(arena, ring, t, n), TwoOnly: true));
        return cases;
    }

    /// <summary>
    /// Pins the gang's threads to CPUs 0, 1, ... (the caller, thread 0 of both gangs, to CPU 0), so that neither run
    /// loses time to the scheduler moving its threads; Linux only.
    /// </summary>
    private static bool Pin(WorkerGang gang)
    {
        int failed = 0;
        gang.Run(t =>
        {
            if (!PinCurrentThread(t))
            {
                Interlocked.Increment(ref failed);
            }
        });
        return failed == 0;
    }

    private static unsafe bool PinCurrentThread(int cpu)
    {
        const int MaskBytes = 128; // 1024 CPUs
        byte* mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        mask[cpu / 8] = (byte)(1 << (cpu % 8));
        return SchedSetAffinity(0, MaskBytes, mask) == 0;
    }

    [DllImport("libc", EntryPoint = "sched_setaffinity")]
    private static extern unsafe int SchedSetAffinity(int pid, nuint size, byte* mask);

    private static double Time(WorkerGang gang, Action<int, int> work, int opsPerThread)
    {
        long start = Stopwatch.GetTimestamp();
        gang.Run(t => work(t, opsPerThread));
        return Stopwatch.GetElapsedTime(start).TotalNanoseconds / opsPerThread;
    }

    private static long Contention(PageArena arena)
    {
        ArenaStatistics s = arena.Statistics;
        return s[ArenaCounter.AllocCasRetries] + s[ArenaCounter.FreeCasRetries] + s[ArenaCounter.HandshakeRollbacks] + s[ArenaCounter.ReservationSteals];
    }

    private static void PrivateCounters(long[] counters, int thread, int n)
    {
        ref long c = ref counters[(thread + 1) * Pad];
        for (int i = 0; i < n; i++)
        {
            Interlocked.Increment(ref c);
            Interlocked.Decrement(ref c);
            Interlocked.Increment(ref c);
        }
    }

    private static void AllocFree(PageArena arena, int order, int n)
    {
        for (int i = 0; i < n; i++)
        {
            Pfn p = arena.AllocPages(order);
            arena.FreePages(p, order);
        }
    }

    private static void RingOnly(SpscRing ring, int thread, int n)
    {
        if (thread == 0)
        {
            for (int i = 0; i < n; i++)
            {
                ring.Send((uint)i + 1);
            }
        }
        else
        {
            for (int i = 0; i < n; i++)
            {
                ring.Receive();
            }
        }
    }

    private static void RingFree(PageArena arena, SpscRing ring, int thread, int n)
    {
        if (thread == 0)
        {
            for (int i = 0; i < n; i++)
            {
                ring.Send(arena.AllocPages(0).Value);
            }
        }
        else
        {
            for (int i = 0; i < n; i++)
            {
                arena.FreePages(new Pfn(ring.Receive()), 0);
            }
        }
    }

    private static void PrintMachine()
    {
        Console.WriteLine($"Machine: {Interleaving.Machine()}");
        if (Environment.ProcessorCount < 2)
        {
            Console.WriteLine("One CPU: two threads share it, and the 2T columns measure time-sharing, not scaling.");
        }
    }

    private sealed record Case(string Group, string Name, Action<int, int> Work, bool TwoOnly = false);

    /// <summary>
    /// A single-producer, single-consumer ring of page numbers: the producer's index and the consumer's index on lines of
    /// their own, each published with a release store and read with an acquire load; a full or empty ring spins.
    /// </summary>
    private sealed class SpscRing(int capacity)
    {
        private readonly uint[] _slots = new uint[capacity];
        private readonly PaddedLong _head = new(); // next to receive (the consumer's)
        private readonly PaddedLong _tail = new(); // next to send (the producer's)

        public void Send(uint value)
        {
            long tail = _tail.Value;
            var spin = new SpinWait();
            while (tail - Volatile.Read(ref _head.Value) >= _slots.Length)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            _slots[tail % _slots.Length] = value;
            Volatile.Write(ref _tail.Value, tail + 1); // release: the slot before the index
        }

        public uint Receive()
        {
            long head = _head.Value;
            var spin = new SpinWait();
            while (Volatile.Read(ref _tail.Value) == head) // acquire: the index before the slot
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            uint value = _slots[head % _slots.Length];
            Volatile.Write(ref _head.Value, head + 1);
            return value;
        }
    }

    [StructLayout(LayoutKind.Explicit, Size = 256)]
    private sealed class PaddedLong
    {
        [FieldOffset(128)] public long Value;
    }
}
