using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The Promela models of the five rules (native/models), checked with spin: every legacy model must give a
/// counterexample trail and every fixed model must verify. Without spin the script says so and the test fails: it is
/// never skipped silently (.ci/run installs spin when it is missing).
/// </summary>
[Collection(StressCollection.Name)] // alone: ten model builds
public sealed class ModelTests(ITestOutputHelper output)
{
    [Fact(Timeout = 300_000)]
    public async Task EveryLegacyModelGivesACounterexampleAndEveryFixedModelVerifies()
    {
        string text = await TestSupport.RunProcess(output, "bash", Path.Combine(TestSupport.RepoRoot(), "native", "models", "run-models.sh"));
        Assert.Equal(10, text.Split('\n').Count(l => l.StartsWith("| rule", StringComparison.Ordinal) && l.TrimEnd().EndsWith("| yes |", StringComparison.Ordinal)));
    }
}

/// <summary>native/ builds with the README's set-up (CMake, the system C compiler) and its benchmark runs.</summary>
[Collection(StressCollection.Name)]
public sealed class NativeBuildTests(ITestOutputHelper output)
{
    [Fact(Timeout = 300_000)]
    public async Task TheCReferenceBuildsAndItsBenchmarkRuns()
    {
        string root = TestSupport.RepoRoot();
        string build = Path.Combine(Path.GetTempPath(), "pagecore-native-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // Built for the architecture under test and run there (through PAGECORE_TARGET_RUNNER under emulation).
            await Run("cmake", $"-S \"{Path.Combine(root, "native")}\" -B \"{build}\" -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=\"{TestSupport.TargetCompiler}\"");
            await Run("cmake", $"--build \"{build}\"");
            string printed = await TestSupport.RunTarget(output, Path.Combine(build, "pagecore-native-bench"), "200000");
            foreach (string path in new[] { "get_page_unless_zero + put_page", "per-thread cache alloc + free", "the same with the C# API's checks", "core allocator alloc + free", "PTE fragment alloc + free" })
            {
                Assert.Contains(path, printed);
            }

            Assert.True(File.Exists(Path.Combine(build, "libpagecore_native.so")));
        }
        finally
        {
            try
            {
                Directory.Delete(build, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private Task<string> Run(string exe, string args) => TestSupport.RunProcess(output, exe, args);
}
