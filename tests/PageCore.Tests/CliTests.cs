using System.Diagnostics;
using System.Text.Json;
using PageCore.Diagnostics;
using PageCore.Stress;
using PageCore.Stress.Scenarios;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The edges of <c>pagecore-stress</c>'s command line that a new user meets: every bad argument, unwritable output path
/// and impossible arena answers with exit 64 and one plain line before any run starts; a set-up failure (the
/// environment, not PageCore) answers with exit 71; the report names the arena a scenario really built.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class CliTests(ITestOutputHelper output)
{
    [Theory(Timeout = 60_000)]
    [InlineData("--seed takes a whole number, not 'notanumber'", "run", "alloc-churn", "--seed", "notanumber")]
    [InlineData("--threads takes a whole number, not 'many'", "run", "alloc-churn", "--threads", "many")]
    [InlineData("longer than the limit of 24h", "run", "alloc-churn", "--duration", "25h")]
    [InlineData("is not a duration", "run", "alloc-churn", "--duration", "ten")]
    [InlineData("the directory '/nonexistent-pagecore/dir' does not exist", "run", "alloc-churn", "--duration", "100ms", "--json", "/nonexistent-pagecore/dir/x.json")]
    [InlineData("--dump-on-bug '/dev/null/x' cannot hold files", "run", "alloc-churn", "--duration", "100ms", "--dump-on-bug", "/dev/null/x")]
    [InlineData("--arena-pages 2147483648 needs 8.1 TiB", "run", "alloc-churn", "--duration", "100ms", "--arena-pages", "2147483648")]
    [InlineData("--max-legacy '30h' is longer than the limit of 24h", "race-lab", "--max-legacy", "30h")]
    [InlineData("--json '/nonexistent-pagecore/x.json'", "scale", "alloc-churn", "--json", "/nonexistent-pagecore/x.json")]
    [InlineData("--plot '/nonexistent-pagecore/x.svg'", "scale", "alloc-churn", "--plot", "/nonexistent-pagecore/x.svg")]
    public async Task BadInputAnswersWithExit64AndOnePlainLine(string expected, params string[] args)
    {
        if (!OperatingSystem.IsLinux() && args.Contains("/dev/null/x"))
        {
            Assert.Skip("/dev/null is a Linux path");
        }

        (int exit, string stdout, string stderr) = await RunCaptured(args);
        output.WriteLine($"exit {exit}\nstdout: {stdout}\nstderr: {stderr}");

        Assert.Equal(Program.BadArguments, exit);
        string first = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries)[0];
        Assert.StartsWith("pagecore-stress: ", first);
        Assert.Contains(expected, first);
        Assert.DoesNotContain("System.", stderr); // no type names
        Assert.DoesNotContain("   at ", stderr); // no stack trace
        Assert.DoesNotContain("machine:", stdout); // refused before the run started
    }

    [Fact(Timeout = 120_000)]
    public async Task AnArenaTheEnvironmentRefusesIsASetUpFailureNotAViolation()
    {
        if (!OperatingSystem.IsLinux() || TestSupport.TargetRunner is not null)
        {
            Assert.Skip("needs a Linux shell's ulimit on the host's own dotnet (an emulator needs its own address space)");
        }

        // A 4 GiB arena under a 3 GB address-space limit: the mmap fails with ENOMEM.
        string dll = Path.Combine(AppContext.BaseDirectory, "pagecore-stress.dll");
        var psi = new ProcessStartInfo("bash", ["-c", $"ulimit -v 3000000 && exec dotnet \"{dll}\" run alloc-churn --arena-pages 1048576 --duration 1s --threads 2"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["CI"] = "true";
        using Process child = Process.Start(psi)!;
        Task<string> stdout = child.StandardOutput.ReadToEndAsync();
        Task<string> stderr = child.StandardError.ReadToEndAsync();
        await child.WaitForExitAsync();
        string err = await stderr;
        output.WriteLine($"exit {child.ExitCode}\nstdout: {await stdout}\nstderr: {err}");

        Assert.Equal(Program.SetupFailed, child.ExitCode);
        string[] lines = err.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("pagecore-stress: set-up failed: the arena of 1,048,576 pages", lines[0]);
        Assert.Contains("lower --arena-pages", lines[0]);
    }

    [Fact(Timeout = 60_000)]
    public async Task TheReportNamesTheArenaAScenarioReallyBuilt()
    {
        int seed = TestSupport.Seed(output, "capped arena");
        string json = Path.Combine(Path.GetTempPath(), $"pagecore-capped-{Environment.ProcessId}.json");
        try
        {
            // exhaustion caps its arena at 4,096 pages whatever --arena-pages says.
            (int exit, string stdout, _) = await RunCaptured(["run", "exhaustion", "--duration", "300ms", "--threads", "2", "--arena-pages", "65536", "--seed", seed.ToString(), "--json", json]);
            output.WriteLine(stdout);
            Assert.NotEqual(Program.BadArguments, exit);
            Assert.Contains("arena 4,096 pages (the scenario's cap; --arena-pages asked for 65,536)", stdout);
            using var doc = JsonDocument.Parse(File.ReadAllText(json));
            JsonElement options = doc.RootElement.GetProperty("options");
            Assert.Equal(4096, options.GetProperty("arenaPages").GetInt64());
            Assert.Equal(65536, options.GetProperty("arenaPagesRequested").GetInt64());
        }
        finally
        {
            File.Delete(json);
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task TheRaceLabSaysWhatItWillDoAndPrintsALinePerRunAsItEnds()
    {
        int seed = TestSupport.Seed(output, "race-lab progress");
        var lines = new List<(TimeSpan At, string Line)>();
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var w = new TimedWriter(line => { lock (lines) lines.Add((clock.Elapsed, line)); });
        int exit = await Task.Run(() => RaceLab.Run("1s", "2s", 1, "pt-frag", fixedOnly: false, threads: 2, seed, pin: false, pages: 16384, minOps: 1, w));
        foreach ((TimeSpan at, string line) in lines) output.WriteLine($"{at.TotalSeconds,6:F2}s {line}");

        Assert.NotEqual(Program.BadArguments, exit);
        // The plan comes before any run, with its bound; then one line per legacy run and per fixed form, each written
        // when its run ended (the legacy run's line comes before the fixed form has run its second).
        Assert.Contains(lines, l => l.Line.StartsWith("1 legacy run (each until caught, at most 2s) and 1 fixed form (1s each): at most 3s", StringComparison.Ordinal));
        int legacy = lines.FindIndex(l => l.Line.Contains("pt-frag --legacy --seed", StringComparison.Ordinal));
        int fixedForm = lines.FindIndex(l => l.Line.Contains($"pt-frag --seed {seed}:", StringComparison.Ordinal));
        Assert.True(legacy >= 0 && fixedForm > legacy, "a line for the legacy run, then one for the fixed form");
        Assert.True(lines[fixedForm].At - lines[legacy].At >= TimeSpan.FromSeconds(0.9), "the legacy run's line was written before the fixed form ran");
    }

    /// <summary>A writer that hands each completed line to a callback.</summary>
    private sealed class TimedWriter(Action<string> onLine) : TextWriter
    {
        private readonly System.Text.StringBuilder _line = new();

        public override System.Text.Encoding Encoding => System.Text.Encoding.UTF8;

        public override void Write(char value)
        {
            if (value == '\n')
            {
                onLine(_line.ToString().TrimEnd('\r'));
                _line.Clear();
            }
            else
            {
                _line.Append(value);
            }
        }
    }

    [Theory(Timeout = 180_000)]
    [InlineData("random")] // PCT needs hundreds of schedules on this program: SchedulerTests covers it on a smaller one
    public async Task TheSchedulerFindsTheRefcountRaceInTheLegacyFormOnlyAndReplaysIt(string strategy)
    {
        // speculative-walker's small configuration: the library's own PageRef and LegacyPageCount, whose every atomic
        // operation is a schedule point, under the controlled scheduler.
        int seed = TestSupport.Seed(output, $"systematic speculative-walker, {strategy}");
        (int exit, string stdout, string stderr) = await RunCaptured(["run", "speculative-walker", "--legacy", "--systematic", "--strategy", strategy, "--schedules", "1000", "--seed", seed.ToString()]);
        output.WriteLine(stdout + stderr);
        Assert.Equal(Program.Violated, exit);
        Assert.Contains("CAUGHT: the legacy form violated its invariants at schedule", stdout);
        string first = stdout.Split('\n').Single(l => l.StartsWith("  first violation at schedule", StringComparison.Ordinal));
        Assert.Contains("AddBySetPageCount", stdout); // the trace passes through the legacy store
        string replay = stdout.Split('\n').Single(l => l.StartsWith("  replay: ", StringComparison.Ordinal));
        string[] replayArgs = replay["  replay: pagecore-stress ".Length..].Trim().Split(' ');

        // The printed command reproduces the same first violation, step for step.
        (int again, string replayed, _) = await RunCaptured(replayArgs);
        Assert.Equal(Program.Violated, again);
        string firstAgain = replayed.Split('\n').Single(l => l.StartsWith("  first violation at schedule", StringComparison.Ordinal));
        Assert.Equal(first[first.IndexOf(", seed", StringComparison.Ordinal)..], firstAgain[firstAgain.IndexOf(", seed", StringComparison.Ordinal)..]);
        Assert.Equal(TraceOf(stdout), TraceOf(replayed));

        (int fixedExit, string fixedOut, _) = await RunCaptured(["run", "speculative-walker", "--systematic", "--strategy", strategy, "--schedules", "100", "--seed", seed.ToString()]);
        output.WriteLine(fixedOut);
        Assert.Equal(Program.Pass, fixedExit);
        Assert.Contains("PASS: every invariant held in 100 schedules", fixedOut);

        static string TraceOf(string text) => string.Join('\n', text.Split('\n').Where(l => l.StartsWith("  step ", StringComparison.Ordinal)));
    }

    [Fact(Timeout = 180_000)]
    public async Task TheSystematicRaceLabCatchesEveryLegacyFormAndHoldsEveryFixedOne()
    {
        int seed = TestSupport.Seed(output, "race-lab --systematic");
        (int exit, string stdout, string stderr) = await RunCaptured(["race-lab", "--systematic", "--schedules", "100", "--legacy-runs", "3", "--seed", seed.ToString()]);
        output.WriteLine(stdout + stderr);
        Assert.Equal(Program.Pass, exit);
        Assert.Contains("PASS: every legacy form was caught and every fixed form held", stdout);
        foreach (string name in new[] { "speculative-walker", "tail-refcount", "cached-contract", "put-at-zero" })
        {
            string row = stdout.Split('\n').Single(l => l.StartsWith($"| {name} |", StringComparison.Ordinal));
            Assert.Contains("| 3 of 3 |", row);
            Assert.Contains("| held | 100 |", row);
        }
    }

    [Fact(Timeout = 60_000)]
    public async Task AScenarioWithoutASystematicConfigurationSaysWhichHaveOne()
    {
        (int exit, _, string stderr) = await RunCaptured(["run", "alloc-churn", "--systematic"]);
        Assert.Equal(Program.BadArguments, exit);
        Assert.Contains("has no configuration for the controlled scheduler yet; those that have: speculative-walker, tail-refcount, cached-contract, put-at-zero", stderr);
    }

    [Fact(Timeout = 120_000)]
    public async Task TheLiveViewsLastFrameGivesTheWholeRunsRates()
    {
        string? script = new[] { "/usr/bin/script", "/bin/script" }.FirstOrDefault(File.Exists);
        if (!OperatingSystem.IsLinux() || script is null || TestSupport.TargetRunner is not null)
        {
            Assert.Skip("needs util-linux's script (a terminal for the live view) and the host's own dotnet");
        }

        // The live view draws only on a terminal: script gives the run one.
        string dll = Path.Combine(AppContext.BaseDirectory, "pagecore-stress.dll");
        var psi = new ProcessStartInfo(script, ["-qec", $"dotnet \"{dll}\" run pcp-pingpong --duration 1s --threads 2 --arena-pages 4096", "/dev/null"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment.Remove("CI"); // the live view is off under CI
        using Process child = Process.Start(psi)!;
        Task<string> stdout = child.StandardOutput.ReadToEndAsync();
        Task<string> stderr = child.StandardError.ReadToEndAsync();
        await child.WaitForExitAsync();
        string text = System.Text.RegularExpressions.Regex.Replace(await stdout + await stderr, @"\x1b\[[0-9;?]*[a-zA-Z]", "");
        output.WriteLine(text.Length > 3000 ? text[^3000..] : text);
        Assert.Equal(Program.Pass, child.ExitCode);
        int last = text.LastIndexOf("ops/s (run)", StringComparison.Ordinal);
        Assert.True(last >= 0, "the last frame's header says the rates are the whole run's");
        Assert.Contains("done: ", text[last..]);
        Assert.DoesNotContain("│           0 │", text[last..]); // no operation at 0 ops/s in the last frame
    }

    [Fact]
    public void AHookDrawsTheSameChoicesForTheSameSeedAndThreadName()
    {
        static int[] Draw(int seed, string name)
        {
            int[] drawn = [];
            SeededChance.Reset(seed);
            var t = new Thread(() => drawn = Enumerable.Range(0, 32).Select(_ => SeededChance.Next(1000)).ToArray()) { Name = name };
            t.Start();
            t.Join();
            return drawn;
        }

        Assert.Equal(Draw(7, "reader-1"), Draw(7, "reader-1"));
        Assert.NotEqual(Draw(7, "reader-1"), Draw(7, "reader-2"));
        Assert.NotEqual(Draw(7, "reader-1"), Draw(8, "reader-1"));
    }

    [Theory]
    [InlineData("", "(first sample)")]
    [InlineData(null, "(first sample)")]
    [InlineData("12", "(+12 in 1s)")]
    [InlineData("-592", "(-592 in 1s)")]
    [InlineData("0.5", "(+0.5 in 1s)")]
    public void TheMonitorSignsEachChange(string? rate, string expected) => Assert.Equal(expected, ProcessMonitor.Change(rate, 1));

    [Fact]
    public void PageMarksKeepFourPagesPerByteAndTestRuns()
    {
        int seed = TestSupport.Seed(output, "page marks");
        var rng = new Random(seed);
        const int Pages = 1000;
        var marks = new PageMarks(Pages);
        byte[] reference = new byte[Pages];
        for (int i = 0; i < 5000; i++)
        {
            int p = rng.Next(Pages);
            byte m = (byte)rng.Next(4);
            marks[p] = m;
            reference[p] = m;
        }

        for (int p = 0; p < Pages; p++)
        {
            Assert.Equal(reference[p], marks[p]);
        }

        // Runs of every alignment and length, against the byte-per-page reference; then a long run of one mark.
        for (int i = 0; i < 2000; i++)
        {
            int start = rng.Next(Pages);
            int length = 1 + rng.Next(Pages - start);
            byte m = (byte)rng.Next(4);
            Assert.Equal(reference.AsSpan(start, length).IndexOfAnyExcept(m) < 0, marks.All(start, length, m));
        }

        for (int p = 3; p < 997; p++) marks[p] = 1;
        Assert.True(marks.All(3, 994, 1));
        marks[500] = 2;
        Assert.False(marks.All(3, 994, 1));
        Assert.True(marks.All(501, 496, 1));
    }

    /// <summary>Runs the command in this process with its output captured (the collection runs alone, so nothing else writes meanwhile).</summary>
    private static async Task<(int Exit, string Stdout, string Stderr)> RunCaptured(string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        TextWriter oldOut = Console.Out, oldErr = Console.Error;
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            int exit = await Task.Run(() => Program.Main(args));
            return (exit, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }
}
