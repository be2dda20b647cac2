using System.Diagnostics;
using Xunit;
using Xunit.Abstractions;

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
        string root = AppContext.BaseDirectory;
        while (!File.Exists(Path.Combine(root, "PageCore.sln")))
        {
            root = Path.GetDirectoryName(root) ?? throw new InvalidOperationException("PageCore.sln not found");
        }

        var psi = new ProcessStartInfo("bash", Path.Combine(root, "native", "models", "run-models.sh"))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using Process p = Process.Start(psi)!;
        Task<string> stdout = p.StandardOutput.ReadToEndAsync();
        Task<string> stderr = p.StandardError.ReadToEndAsync();
        await p.WaitForExitAsync();
        string text = await stdout + await stderr;
        output.WriteLine(text);
        Assert.True(p.ExitCode == 0, $"run-models.sh exited {p.ExitCode}:{Environment.NewLine}{text}");
        Assert.Equal(10, text.Split('\n').Count(l => l.StartsWith("| rule", StringComparison.Ordinal) && l.TrimEnd().EndsWith("| yes |", StringComparison.Ordinal)));
    }
}
