using System.Diagnostics;
using Xunit;

namespace PageCore.Tests;

/// <summary>Concurrency tests run one at a time: xunit's Timeout is reliable only without parallel collections.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class StressCollection
{
    public const string Name = "Stress";
}

/// <summary>Seeds and budgets shared by the tests.</summary>
internal static class TestSupport
{
    /// <summary>Seconds each timed concurrency test runs its churn (PAGECORE_TEST_SECONDS overrides).</summary>
    public static TimeSpan ChurnTime =>
        TimeSpan.FromSeconds(double.TryParse(Environment.GetEnvironmentVariable("PAGECORE_TEST_SECONDS"), out double s) ? s : 1.5);

    /// <summary>
    /// The factor on the fixed run lengths of the tests that must see an interleaving happen within a run
    /// (PAGECORE_TEST_TIME_SCALE, at least 1, default 1): under emulation (linux-arm64 under qemu-user, 60-130x slower)
    /// a run of fixed length does too little to drive it. Their Timeout is fixed, so keep the scaled runs under it.
    /// </summary>
    public static double TimeScale =>
        double.TryParse(Environment.GetEnvironmentVariable("PAGECORE_TEST_TIME_SCALE"), System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double f) && f > 1 ? f : 1;

    /// <summary><paramref name="length"/> times <see cref="TimeScale"/>.</summary>
    public static TimeSpan Scaled(TimeSpan length) => length * TimeScale;

    /// <summary>
    /// The C compiler for the architecture under test: PAGECORE_TARGET_CC (e.g. aarch64-linux-gnu-gcc, for the test
    /// executable under emulation), else $CC, else cc. Host tools (spin's verifiers, GenMC) keep the host's compiler.
    /// </summary>
    public static string TargetCompiler =>
        Environment.GetEnvironmentVariable("PAGECORE_TARGET_CC") is { Length: > 0 } target ? target
        : Environment.GetEnvironmentVariable("CC") is { Length: > 0 } cc ? cc : "cc";

    /// <summary>
    /// The emulator that runs binaries of the architecture under test (PAGECORE_TARGET_RUNNER, e.g. qemu-aarch64-static
    /// for the linux-arm64 test executable under emulation), or null when they run directly.
    /// </summary>
    public static string? TargetRunner =>
        Environment.GetEnvironmentVariable("PAGECORE_TARGET_RUNNER") is { Length: > 0 } runner ? runner : null;

    /// <summary>
    /// Runs a binary built for the architecture under test (with <see cref="TargetCompiler"/>): directly, or through PAGECORE_TARGET_RUNNER when
    /// set (e.g. qemu-aarch64-static, for an arm64 probe run from the test executable under emulation, where the kernel
    /// cannot start an arm64 binary itself).
    /// </summary>
    public static Task<string> RunTarget(ITestOutputHelper output, string exe, string args)
    {
        return TargetRunner is { } runner
            ? RunProcess(output, runner, $"\"{exe}\" {args}".TrimEnd())
            : RunProcess(output, exe, args);
    }

    /// <summary>A seed, printed so that a failure can be replayed with PAGECORE_TEST_SEED.</summary>
    public static int Seed(ITestOutputHelper output, string test)
    {
        int seed = int.TryParse(Environment.GetEnvironmentVariable("PAGECORE_TEST_SEED"), out int fixedSeed)
            ? fixedSeed
            : Random.Shared.Next();
        output.WriteLine($"{test}: seed {seed} (replay with PAGECORE_TEST_SEED={seed}), threads {2 * Environment.ProcessorCount}, processors {Environment.ProcessorCount}");
        return seed;
    }

    public static PageArena NewArena(long pages = 4096, int maxOrder = 10, bool caches = true, bool isChecked = false, int batch = 32, bool symmetricHandOver = false, TimeSpan? returnAfter = null, bool legacyReturn = false) =>
        PageArena.Create(new PageArenaOptions
        {
            Pages = pages,
            MaxOrder = maxOrder,
            PerCpuCaches = caches,
            Checked = isChecked,
            PerCpuBatch = batch,
            ForceSymmetricHandOver = symmetricHandOver,
            ReturnFreeMemoryAfter = returnAfter ?? new PageArenaOptions().ReturnFreeMemoryAfter,
            LegacyReturnMemoryWithoutClaim = legacyReturn,
        });

    /// <summary>An arena that is force-disposed at the end of a test, so a failed assertion is not hidden by Dispose refusing.</summary>
    public static ArenaLease Lease(long pages = 4096, int maxOrder = 10, bool caches = true, bool isChecked = false, int batch = 32, bool symmetricHandOver = false) =>
        new(NewArena(pages, maxOrder, caches, isChecked, batch, symmetricHandOver));

    /// <summary>
    /// The repository root: PAGECORE_REPO_ROOT when set (a published test executable, e.g. the linux-arm64 one run under
    /// emulation, lies outside the repository), else the first folder above the test binaries that holds PageCore.sln.
    /// </summary>
    public static string RepoRoot()
    {
        string? configured = Environment.GetEnvironmentVariable("PAGECORE_REPO_ROOT");
        if (!string.IsNullOrEmpty(configured))
        {
            string full = Path.GetFullPath(configured);
            return File.Exists(Path.Combine(full, "PageCore.sln"))
                ? full
                : throw new InvalidOperationException($"PAGECORE_REPO_ROOT={configured}: no PageCore.sln there");
        }

        for (string? d = AppContext.BaseDirectory; d is not null; d = Path.GetDirectoryName(d))
        {
            if (File.Exists(Path.Combine(d, "PageCore.sln")))
            {
                return d;
            }
        }

        throw new InvalidOperationException("PageCore.sln not found above " + AppContext.BaseDirectory + " (set PAGECORE_REPO_ROOT to the repository)");
    }

    /// <summary>
    /// Runs a child process to its end and returns everything it printed (stdout, then stderr), also written to
    /// <paramref name="output"/>; asserts exit code 0. The test host's MSBuild settings are kept from the child, so a
    /// child build is a build of its own.
    /// </summary>
    public static async Task<string> RunProcess(ITestOutputHelper output, string exe, string args, string? dir = null)
    {
        var psi = new ProcessStartInfo(exe, args)
        {
            WorkingDirectory = dir ?? Environment.CurrentDirectory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string key in psi.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase) || k.StartsWith("VSTEST", StringComparison.OrdinalIgnoreCase)).ToList())
        {
            psi.Environment.Remove(key);
        }

        psi.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        psi.Environment["DOTNET_NOLOGO"] = "1";
        using Process p = Process.Start(psi)!;
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        string text = await stdout + await stderr;
        output.WriteLine($"$ {exe} {args}{Environment.NewLine}{text}");
        Assert.True(p.ExitCode == 0, $"{exe} {args} exited {p.ExitCode}:{Environment.NewLine}{text}");
        return text;
    }

    /// <summary>Drains, verifies, and checks that the whole arena is free as blocks of MaxOrder.</summary>
    public static void AssertFullyFreeAndCoalesced(PageArena arena)
    {
        arena.Drain();
        ArenaReport report = arena.Verify();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(0, report.AllocatedPages);
        Assert.Equal(0, report.CachedPages);
        Assert.Equal(arena.PageCount, report.FreePages);
        Assert.Equal(arena.PageCount >> arena.MaxOrder, report.FreeBlocksByOrder[arena.MaxOrder]);
        for (int k = 0; k < arena.MaxOrder; k++)
        {
            Assert.Equal(0, report.FreeBlocksByOrder[k]);
        }

        Assert.Equal(arena.PageCount, arena.FreePageCount);
    }

    /// <summary>Joins worker threads within a deadline; fails the test (instead of hanging) if one does not finish.</summary>
    public static void JoinAll(IEnumerable<Thread> threads, TimeSpan limit)
    {
        DateTime deadline = DateTime.UtcNow + limit;
        foreach (Thread t in threads)
        {
            TimeSpan left = deadline - DateTime.UtcNow;
            Assert.True(t.Join(left > TimeSpan.Zero ? left : TimeSpan.Zero), $"worker {t.Name} did not finish within {limit}");
        }
    }
}

/// <summary>Owns an arena for one test and releases it with <c>Dispose(force: true)</c>.</summary>
internal sealed class ArenaLease(PageArena arena) : IDisposable
{
    public PageArena Arena { get; } = arena;

    public void Dispose() => Arena.Dispose(force: true);
}
