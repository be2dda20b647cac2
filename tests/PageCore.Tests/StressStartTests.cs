using System.Collections.Concurrent;
using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The stress harness's own guarantees: the clock starts when every thread of a run has started, a fixed form's run in
/// which a thread did nothing is inconclusive (never a pass), and a run told to stop at its first violation stops there.
/// </summary>
/// <remarks>
/// The failure these guard against: the deadline was set when the context was created, before the arena and the threads
/// were; a platform slow to create threads (an emulator) had whole runs end before their workers began, and those runs
/// printed PASS with 0 operations. <see cref="ProbeScenario"/> drives exactly that: a thread held back before it checks
/// in for longer than the whole duration, and a worker that returns without doing anything.
/// </remarks>
[Collection(StressCollection.Name)]
public sealed class StressStartTests(ITestOutputHelper output)
{
    private const int TimeoutMs = 60_000;
    private static readonly TimeSpan Short = TimeSpan.FromMilliseconds(500);

    [Fact(Timeout = TimeoutMs)]
    public async Task TheClockStartsWhenEveryThreadHasStarted()
    {
        int seed = TestSupport.Seed(output, "late start");
        var probe = new ProbeScenario();
        var ready = new ConcurrentDictionary<string, DateTime>();

        // One worker and the background thread take longer than the whole duration to get going.
        var ctx = new StressContext(3, Short, seed, 1024, legacy: false, pin: false, TextWriter.Null)
        {
            BeforeCheckIn = (name, index) =>
            {
                if (name is "probe-0" or "probe-walker")
                {
                    Thread.Sleep(2 * Short);
                }

                ready[name] = DateTime.UtcNow;
            },
        };
        StressResult result = await Task.Run(() => Program.RunForm(probe, ctx));
        output.WriteLine(string.Join(", ", ctx.Recorders.Select(r => $"{r.Name} {r.Total}")));

        Assert.Equal(0, result.Violations);
        Assert.Equal(4, ctx.Recorders.Count);
        // Every thread, the late ones included, worked, and the deadline was set after the slowest thread was ready.
        Assert.All(ctx.Recorders, r => Assert.True(r.Total > 0, $"{r.Name} did no operation"));
        Assert.True(ctx.Started, "the start gate never opened");
        Assert.True(ctx.Deadline - ctx.Duration >= ready.Values.Max(), $"deadline {ctx.Deadline:O} set before the last thread was ready at {ready.Values.Max():O}");
        Assert.Equal(Outcome.Pass, Verdict.Judge(ctx, result, minimum: 1));
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task ARunInWhichAWorkerDidNothingIsInconclusiveNotAPass()
    {
        int seed = TestSupport.Seed(output, "idle worker");
        var ctx = new StressContext(3, Short, seed, 1024, legacy: false, pin: false, TextWriter.Null);
        StressResult result = await Task.Run(() => Program.RunForm(new ProbeScenario { IdleWorker = 1 }, ctx));
        output.WriteLine(Verdict.IdleReason(ctx, 1));

        Assert.Equal(0, result.Violations);
        Assert.Equal(0, ctx.Recorders.Single(r => r.Name == "probe-1").Total);
        Assert.Equal(Outcome.Inconclusive, Verdict.Judge(ctx, result, minimum: 1));
        Assert.Equal(Program.Inconclusive, Verdict.ExitCode(Verdict.Judge(ctx, result, minimum: 1)));
        Assert.Contains("probe-1 0", Verdict.IdleReason(ctx, 1));

        // The same run with every worker at work passes: the verdict turns on the idle worker alone.
        var busy = new StressContext(3, Short, seed, 1024, legacy: false, pin: false, TextWriter.Null);
        StressResult busyResult = await Task.Run(() => Program.RunForm(new ProbeScenario(), busy));
        Assert.Equal(Outcome.Pass, Verdict.Judge(busy, busyResult, minimum: 1));
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task FewerOperationsThanTheMinimumExitTwoFromTheCommandLine()
    {
        int seed = TestSupport.Seed(output, "run --min-ops");
        string json = Path.Combine(Path.GetTempPath(), $"pagecore-min-ops-{Environment.ProcessId}.json");
        try
        {
            // No thread does 10^15 operations in 300 ms: a run that cannot reach its minimum must not pass.
            int exit = await Task.Run(() => Program.Main(["run", "alloc-churn", "--duration", "300ms", "--threads", "2", "--arena-pages", "4096",
                "--seed", seed.ToString(), "--min-ops", "1000000000000000", "--json", json]));
            Assert.Equal(Program.Inconclusive, exit);
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
            Assert.Equal("Inconclusive", doc.RootElement.GetProperty("outcome").GetString());
            Assert.Equal(0, doc.RootElement.GetProperty("violations").GetInt64());
            int threads = doc.RootElement.GetProperty("perThread").EnumerateObject().Count();
            Assert.True(threads >= 3, "two workers and a walker");
            Assert.Equal(threads, doc.RootElement.GetProperty("threadsBelowMinimum").GetArrayLength());
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task ARunToldToStopAtItsFirstViolationStopsThere()
    {
        int seed = TestSupport.Seed(output, "stop at first violation");

        // A duration the test's timeout could not wait out: the run must end at the planted violation.
        var ctx = new StressContext(3, TimeSpan.FromMinutes(10), seed, 1024, legacy: true, pin: false, TextWriter.Null) { StopAtFirstViolation = true };
        var probe = new ProbeScenario { ViolationAfter = 1000 };
        StressResult result = await Task.Run(() => Program.RunForm(probe, ctx));

        Assert.True(result.Violations >= 1);
        Assert.NotNull(result.FirstViolationAt);
        Assert.True(ctx.Deadline <= probe.AfterViolation, $"the deadline {ctx.Deadline:O} was not pulled in to the violation at {probe.AfterViolation:O}");
        Assert.Equal(Outcome.Caught, Verdict.Judge(ctx, result, minimum: 1));
    }

    [Fact(Timeout = TimeoutMs)]
    public async Task BackgroundThreadsStopAtTheDeadlineWhileAWorkerIsStillFinishing()
    {
        // With hundreds of threads on a few cores, workers that were still finishing after the deadline shared the
        // processors with walkers spinning until the last worker ended: a 2 s run went on for minutes. The probe's worker
        // 0 lingers a second after the deadline; the walker must have stopped before it returns.
        int seed = TestSupport.Seed(output, "background stops at the deadline");
        var ctx = new StressContext(2, Short, seed, 1024, legacy: false, pin: false, TextWriter.Null);
        var probe = new ProbeScenario { LingerAfterDeadline = TimeSpan.FromSeconds(1) };
        StressResult result = await Task.Run(() => Program.RunForm(probe, ctx));

        Assert.Equal(0, result.Violations);
        Assert.True(probe.WalkerStopped < probe.LingeringWorkerEnded, $"the walker stopped at {probe.WalkerStopped:O}, after the lingering worker ended at {probe.LingeringWorkerEnded:O}");
        Assert.True(probe.WalkerStopped >= ctx.Deadline, $"the walker stopped at {probe.WalkerStopped:O}, before the deadline {ctx.Deadline:O}");
    }

    /// <summary>
    /// A test-only scenario: workers allocate and free one page until the deadline, counting each; a background thread
    /// does the same until stopped. <see cref="IdleWorker"/> makes one worker return at once; <see cref="ViolationAfter"/>
    /// makes worker 0 report a violation after that many steps.
    /// </summary>
    private sealed class ProbeScenario : IScenario
    {
        public int IdleWorker { get; init; } = -1;

        public int ViolationAfter { get; init; } = -1;

        public DateTime AfterViolation { get; private set; } = DateTime.MaxValue;

        /// <summary>Worker 0 sleeps this long after its loop, past the deadline.</summary>
        public TimeSpan LingerAfterDeadline { get; init; }

        public DateTime WalkerStopped { get; private set; } = DateTime.MaxValue;

        public DateTime LingeringWorkerEnded { get; private set; } = DateTime.MinValue;

        public string Name => "probe";

        public string KernelCounterpart => "none (a test of the harness)";

        public string Rule => "harness";

        public bool HasLegacyForm => true;

        public string Description => "allocates and frees one page per step";

        public StressResult Run(StressContext ctx)
        {
            PageArena arena = PageArena.Create(new PageArenaOptions { Pages = ctx.ArenaPages });
            ctx.Arena = arena;
            ctx.DeclareOperations(new OpKind("step", [], []));
            var workers = Enumerable.Range(0, ctx.Threads)
                .Select(i => ($"probe-{i}", (Action<Recorder>)(rec => Work(ctx, arena, rec, i)))).ToList();
            var walker = new List<(string, Action<Recorder, CancellationToken>)>
            {
                ("probe-walker", (rec, stop) =>
                {
                    while (!stop.IsCancellationRequested)
                    {
                        Step(arena, rec);
                    }

                    WalkerStopped = DateTime.UtcNow;
                }),
            };
            TimeSpan elapsed = Harness.Run(ctx, workers, walker);
            return Harness.Finish(ctx, Name, arena, elapsed);
        }

        private static void Step(PageArena arena, Recorder rec)
        {
            if (arena.TryAllocPages(0, out Pfn p))
            {
                arena.FreePages(p, 0);
            }

            rec.Count(0);
        }

        private void Work(StressContext ctx, PageArena arena, Recorder rec, int id)
        {
            if (id == IdleWorker)
            {
                return;
            }

            long steps = 0;
            while (DateTime.UtcNow < ctx.Deadline)
            {
                Step(arena, rec);
                if (id == 0 && ++steps == ViolationAfter)
                {
                    ctx.Violation("planted violation");
                    AfterViolation = DateTime.UtcNow;
                }
            }

            if (id == 0 && LingerAfterDeadline > TimeSpan.Zero)
            {
                Thread.Sleep(LingerAfterDeadline);
                LingeringWorkerEnded = DateTime.UtcNow;
            }
        }
    }
}
