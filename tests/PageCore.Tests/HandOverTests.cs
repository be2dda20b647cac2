using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// Which hand-over form (<see cref="HandOverForm"/>) the process uses, and that the detection behind it agrees with the
/// kernel and is reported where it should be.
/// </summary>
public sealed class HandOverDetectionTests(ITestOutputHelper output)
{
    [Fact]
    public void TheProcessBarrierIsDetectedOnceWithADefiniteAnswer()
    {
        output.WriteLine($"{RuntimeInformation.OSDescription} {RuntimeInformation.ProcessArchitecture}: {ProcessBarrier.Kind}, {ProcessBarrier.Description}");
        ProcessBarrierKind expected =
            OperatingSystem.IsWindows() ? ProcessBarrierKind.FlushProcessWriteBuffers
            : OperatingSystem.IsLinux() ? (ProcessBarrier.QueryMembarrier()!.Value ? ProcessBarrierKind.Membarrier : ProcessBarrierKind.Unverified)
            : ProcessBarrier.Kind;
        Assert.Equal(expected, ProcessBarrier.Kind);
        Assert.Equal(ProcessBarrier.Kind == ProcessBarrierKind.Unverified ? HandOverForm.Symmetric : HandOverForm.Asymmetric, ProcessBarrier.HandOver);
        Assert.StartsWith(ProcessBarrier.HandOver == HandOverForm.Asymmetric ? "asymmetric (" : "symmetric (", ProcessBarrier.Description);
        if (OperatingSystem.IsLinux())
        {
            // Definite: a yes or a no, and the same one when asked again (registering again changes nothing).
            Assert.NotNull(ProcessBarrier.QueryMembarrier());
            Assert.Equal(ProcessBarrier.QueryMembarrier(), ProcessBarrier.QueryMembarrier());
        }
    }

    [Fact]
    public void TheSyscallNumbersAreTheKernelTables()
    {
        Assert.Equal(324, ProcessBarrier.MembarrierSyscallNumber(Architecture.X64));
        Assert.Equal(283, ProcessBarrier.MembarrierSyscallNumber(Architecture.Arm64));
        Assert.Equal(283, ProcessBarrier.MembarrierSyscallNumber(Architecture.RiscV64));
        Assert.Equal(389, ProcessBarrier.MembarrierSyscallNumber(Architecture.Arm));
        Assert.Null(ProcessBarrier.MembarrierSyscallNumber(Architecture.S390x)); // unknown: counted as "not available"
    }

    /// <summary>
    /// The kernel's answer read another way: native/probes/membarrier_query.c asks the same two questions from C, with the
    /// system headers' <c>__NR_membarrier</c> and commands. Its syscall number must be the library's for this
    /// architecture, and its answer the library's. Also, when the library says the runtime uses <c>membarrier</c>, the
    /// runtime must not have set up its fallback, whose helper page it locks (<c>mlock</c>): no locked memory.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task OnLinuxTheDetectionMatchesTheKernelAskedFromC()
    {
        if (!OperatingSystem.IsLinux())
        {
            Assert.NotEqual(ProcessBarrierKind.Membarrier, ProcessBarrier.Kind); // nothing to compare with off Linux
            return;
        }

        string dir = Path.Combine(Path.GetTempPath(), $"pagecore-membarrier-{Environment.ProcessId}");
        Directory.CreateDirectory(dir);
        try
        {
            string source = Path.Combine(TestSupport.RepoRoot(), "native", "probes", "membarrier_query.c");
            string exe = Path.Combine(dir, "membarrier_query");
            await TestSupport.RunProcess(output, TestSupport.TargetCompiler, $"-O2 -o \"{exe}\" \"{source}\"");
            string line = (await TestSupport.RunTarget(output, exe, "")).Split('\n').First(l => l.StartsWith("nr=", StringComparison.Ordinal));
            Dictionary<string, long> fields = line.Split(' ').Select(f => f.Split('=')).ToDictionary(kv => kv[0], kv => long.Parse(kv[1]));
            Assert.Equal(ProcessBarrier.MembarrierSyscallNumber(RuntimeInformation.ProcessArchitecture), (nint)fields["nr"]);
            bool kernelSays = fields["expedited"] == 1;
            Assert.Equal(kernelSays, ProcessBarrier.QueryMembarrier());
            Assert.Equal(kernelSays ? ProcessBarrierKind.Membarrier : ProcessBarrierKind.Unverified, ProcessBarrier.Kind);

            Interlocked.MemoryBarrierProcessWide();
            string? locked = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("VmLck:", StringComparison.Ordinal));
            output.WriteLine($"kernel: {line.Trim()}; library: {ProcessBarrier.Kind}; {locked}");
            if (kernelSays && locked is not null)
            {
                Assert.Equal("0", locked["VmLck:".Length..].Trim().Split(' ')[0]);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void StatisticsReportTheFormAndATestCanForceTheSymmetricOne(bool collectStatistics, bool isChecked)
    {
        foreach (bool force in new[] { false, true })
        {
            using var arena = PageArena.Create(new PageArenaOptions
            {
                Pages = 1024,
                CollectStatistics = collectStatistics,
                Checked = isChecked,
                ForceSymmetricHandOver = force,
            });
            HandOverForm expected = force ? HandOverForm.Symmetric : ProcessBarrier.HandOver;
            Assert.Equal(expected, arena.Statistics.HandOver);
            Assert.EndsWith($"HandOver {expected}", arena.Statistics.ToString());

            // The symmetric form never takes the thread's inlined (unfenced) path; a pool's is the same in both forms.
            Assert.Equal(expected == HandOverForm.Symmetric || isChecked, arena.FastThreadCaches is null);
            Assert.Equal(isChecked, arena.FastPoolCaches is null);
            Pfn p = arena.AllocPages(0);
            arena.FreePages(p, 0);
        }
    }

    [Fact]
    public void AnAsymmetricEpochDomainFallsBackToFullFencesWhenForced()
    {
        using var forced = new EpochDomain(16, asymmetricAnnounce: true, forceSymmetric: true);
        using var asymmetric = new EpochDomain(16, asymmetricAnnounce: true);
        using var full = new EpochDomain(16);
        Assert.False(forced.AsymmetricAnnounce);
        Assert.Equal(ProcessBarrier.HandOver == HandOverForm.Asymmetric, asymmetric.AsymmetricAnnounce);
        Assert.False(full.AsymmetricAnnounce);
    }

    [Fact]
    public void TheStressHeaderNamesTheForm()
    {
        string machine = PageCore.Stress.Report.Machine();
        output.WriteLine(machine);
        Assert.EndsWith($", hand-over {ProcessBarrier.Description}", machine);
    }
}

/// <summary>The magazine hand-over under a stealer that never stops, in both forms, and the meter's report of the form.</summary>
[Collection(StressCollection.Name)]
public sealed class HandOverConcurrencyTests(ITestOutputHelper output)
{
    /// <summary>
    /// Owners pop and push their magazines in tight loops (orders 0..3, a few blocks held, each stamped with its owner
    /// and checked before it is freed) while a stealer drains every magazine back to back. A hand-over that let owner and
    /// stealer both take the magazine hands a block out twice: the second owner's stamp overwrites the first's, a free or
    /// a drain finds a descriptor in the wrong state, or the arena's final check finds the pages miscounted. Both fixed
    /// forms: the symmetric one forced, the asymmetric one wherever this machine's barrier allows it.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task OwnersAndANonStopStealerNeverShareABlock(bool symmetricHandOver)
    {
        int seed = TestSupport.Seed(output, $"magazine steal symmetric={symmetricHandOver}");
        ArenaLease lease = NewStealArena(symmetricHandOver, legacy: false);
        PageArena arena = lease.Arena;
        Assert.Equal(symmetricHandOver ? HandOverForm.Symmetric : ProcessBarrier.HandOver, arena.Statistics.HandOver);
        (long ops, long drains, TimeSpan? caught, string[] errors, bool joined) = await Task.Run(() => RunSteal(arena, seed, TestSupport.ChurnTime));
        output.WriteLine($"owner operations {ops}, drains {drains}, form {arena.Statistics.HandOver}");
        Assert.True(joined, "a thread of the hand-over drive did not finish (the arena is left undisposed: freeing its memory under a running thread would crash the test host)");
        using ArenaLease disposeAtEnd = lease;
        Assert.True(errors.Length == 0, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.Null(caught);
        Assert.True(ops > 0 && drains > 0, "the hand-over was not exercised");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    /// <summary>
    /// The same drive against <see cref="Legacy.LegacyHandOver"/>: owners unfenced, the stealer's barrier a fence on its
    /// own CPU only (the runtime's <c>mprotect</c> fallback where a TLB shootdown interrupts nobody). The owner's store of
    /// <c>Busy</c> and its load of <c>StealPending</c> reorder through the store buffer, on x64 as on arm64, and a block
    /// gets two owners. Runs until caught, at most <see cref="LegacyBudget"/>; prints the time to detection.
    /// </summary>
    /// <remarks>Seen on the 2-core AMD EPYC development machine at a load average of about 25: caught after 4.3, 14.2 and 22.1 s.</remarks>
    [Fact(Timeout = 150_000)]
    public async Task TheAsymmetricHandOverWithoutABarrierOnTheOwnersCpuIsCaught()
    {
        if (TestSupport.TargetRunner is { } runner)
        {
            // How soon a store-buffer reordering shows is a property of the CPUs that run the threads; under emulation
            // the budget bounds nothing: caught within it in one run on the 2-core development machine, missed in a CI
            // run beside two CPU hogs. The fixed forms still run there (OwnersAndANonStopStealerNeverShareABlock).
            Assert.Skip($"not a dependable catch under {runner}: the time to detection of the unfenced hand-over depends on real CPUs' store buffers, and emulation at 60-130x the cost makes the {LegacyBudget.TotalSeconds} s budget meaningless");
        }

        int seed = TestSupport.Seed(output, "magazine steal legacy (no remote barrier)");
        ArenaLease lease = NewStealArena(symmetricHandOver: false, legacy: true);
        (long ops, long drains, TimeSpan? caught, string[] errors, bool joined) = await Task.Run(() => RunSteal(lease.Arena, seed, LegacyBudget));
        output.WriteLine($"owner operations {ops}, drains {drains}, caught after {caught?.TotalMilliseconds:F0} ms (budget {LegacyBudget.TotalSeconds} s)");
        output.WriteLine(string.Join(Environment.NewLine, errors.Take(3)));
        if (joined)
        {
            lease.Dispose();
        }
        else
        {
            // The corrupted caches left a thread spinning (a magazine whose busy mark two owners raced on): that is the
            // legacy form caught too. The arena is left undisposed on purpose: releasing its native memory under a
            // running thread would crash the whole test host.
            output.WriteLine("a thread of the drive never finished: the corrupted hand-over left it spinning");
        }

        Assert.True(caught is not null || !joined, $"a block handed out twice went unnoticed for {LegacyBudget.TotalSeconds} s ({ops} owner operations, {drains} drains)");
    }

    private static readonly TimeSpan LegacyBudget = TimeSpan.FromSeconds(60);

    private static ArenaLease NewStealArena(bool symmetricHandOver, bool legacy) =>
        new(PageArena.Create(new PageArenaOptions
        {
            Pages = 2048,
            MaxOrder = 3,
            PerCpuBatch = 4,
            ForceSymmetricHandOver = symmetricHandOver,
            LegacyStealWithoutRemoteBarrier = legacy,
        }));

    /// <summary>
    /// Runs owners and a stealer until <paramref name="budget"/> has passed or the first error; returns the figures, when
    /// the first error came, and whether every thread finished (a thread that did not must not see its arena disposed).
    /// </summary>
    private static (long Ops, long Drains, TimeSpan? Caught, string[] Errors, bool Joined) RunSteal(PageArena arena, int seed, TimeSpan budget)
    {
        var errors = new ConcurrentQueue<string>();
        long ops = 0, drains = 0, caughtTicks = -1;
        int owners = Math.Max(2, Environment.ProcessorCount);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        using var stop = new CancellationTokenSource();
        void Report(string error)
        {
            errors.Enqueue(error);
            Interlocked.CompareExchange(ref caughtTicks, clock.Elapsed.Ticks, -1);
            stop.Cancel();
        }

        var threads = new List<Thread>();
        for (int t = 0; t < owners; t++)
        {
            int id = t + 1;
            threads.Add(new Thread(() =>
            {
                var rng = new Random(seed + id);
                var held = new List<Block>();
                long serial = 0, mine = 0;
                try
                {
                    while (clock.Elapsed < budget && !stop.IsCancellationRequested)
                    {
                        for (int k = 0; k < 256; k++, mine++)
                        {
                            if (held.Count < 6 && (held.Count == 0 || rng.Next(2) == 0))
                            {
                                int order = rng.Next(4);
                                if (arena.TryAllocPages(order, out Pfn p))
                                {
                                    var b = new Block(p, order, ((long)id << 40) | ++serial);
                                    Blocks.Stamp(arena, b);
                                    held.Add(b);
                                }
                            }
                            else if (held.Count > 0)
                            {
                                Free(arena, held[^1], Report);
                                held.RemoveAt(held.Count - 1);
                            }
                        }
                    }

                    foreach (Block b in held) Free(arena, b, Report);
                }
                catch (Exception ex)
                {
                    Report($"owner {id}: {ex.GetType().Name}: {ex.Message}");
                }
                finally
                {
                    Interlocked.Add(ref ops, mine);
                }
            }) { Name = $"owner-{id}", IsBackground = true });
        }

        var stealer = new Thread(() =>
        {
            try
            {
                while (!stop.IsCancellationRequested && clock.Elapsed < budget + TimeSpan.FromSeconds(30))
                {
                    arena.Drain();
                    drains++;
                }
            }
            catch (Exception ex)
            {
                Report($"stealer: {ex.GetType().Name}: {ex.Message}");
            }
        }) { Name = "stealer", IsBackground = true };

        foreach (Thread t in threads) t.Start();
        stealer.Start();
        DateTime ownersDeadline = DateTime.UtcNow + budget + TimeSpan.FromSeconds(40);
        bool joined = threads.All(t => t.Join(Max(TimeSpan.Zero, ownersDeadline - DateTime.UtcNow)));
        stop.Cancel();
        joined &= stealer.Join(TimeSpan.FromSeconds(20));
        long at = Interlocked.Read(ref caughtTicks);
        return (ops, drains, at < 0 ? null : TimeSpan.FromTicks(at), errors.ToArray(), joined);

        static TimeSpan Max(TimeSpan a, TimeSpan b) => a > b ? a : b;
    }

    [Fact(Timeout = 30_000)]
    public async Task TheMeterCountsArenasByFormAndNamesTheBarrier()
    {
        await Task.Run(() =>
        {
            Dictionary<string, long> before = MetricsTests.Collect();
            using ArenaLease symmetric = TestSupport.Lease(pages: 1024, symmetricHandOver: true);
            using ArenaLease asProcess = TestSupport.Lease(pages: 1024);
            Dictionary<string, long> after = MetricsTests.Collect();
            output.WriteLine(string.Join(", ", after.Where(kv => kv.Key.StartsWith("pagecore.handover", StringComparison.Ordinal)).Select(kv => $"{kv.Key} = {kv.Value}")));
            long Delta(string form) => after.GetValueOrDefault($"pagecore.handover[form={form}]") - before.GetValueOrDefault($"pagecore.handover[form={form}]");
            Assert.Equal(ProcessBarrier.HandOver == HandOverForm.Symmetric ? 2 : 1, Delta("symmetric"));
            Assert.Equal(ProcessBarrier.HandOver == HandOverForm.Symmetric ? 0 : 1, Delta("asymmetric"));
            Assert.True(after.ContainsKey("pagecore.handover[form=asymmetric]") && after.ContainsKey("pagecore.handover[form=symmetric]"));
        });

        KeyValuePair<string, object?> tag = Assert.Single(PageCoreMetrics.Meter.Tags ?? [], t => t.Key == "pagecore.process_barrier");
        Assert.Equal(ProcessBarrier.Kind.ToString(), tag.Value);
    }

    private static void Free(PageArena arena, Block b, Action<string> report)
    {
        if (Blocks.FindDamage(arena, b) is { } page)
        {
            report($"{page} (block {b.Pfn} order {b.Order}): stamp overwritten, expected {b.Stamp:x}: a block handed out twice");
        }

        arena.FreePages(b.Pfn, b.Order);
    }
}
