using System.Text.RegularExpressions;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The C11 clients of every protocol (native/weak), model-checked with GenMC under RC11 and IMM: each fixed form (the C#
/// code's orderings) must verify under both models, each legacy form must be caught by an assertion under both. Without
/// GenMC (at $GENMC, or ../shared/tools/genmc beside the repository) or its run-time packages the script says which is
/// missing and exits 2, and this test fails with that message: it is never skipped (.ci/run installs the packages).
/// </summary>
[Collection(StressCollection.Name)] // alone: 48 model-checking runs
public sealed partial class WeakMemoryTests(ITestOutputHelper output)
{
    private const int MinimumProtocols = 10;

    [Fact(Timeout = 600_000)]
    public async Task EveryFixedClientVerifiesAndEveryLegacyClientIsCaughtUnderRc11AndImm()
    {
        string text = await TestSupport.RunProcess(output, "bash", Path.Combine(TestSupport.RepoRoot(), "native", "weak", "run-weak.sh"));

        // | client | form | model | expected | result (detail) | as expected |
        var rows = text.Split('\n')
            .Select(l => l.Trim())
            .Where(l => l.StartsWith('|') && !l.StartsWith("| client", StringComparison.Ordinal) && !l.StartsWith("|---", StringComparison.Ordinal))
            .Select(l => Regex.Split(l.Trim('|'), @"(?<!\\)\|").Select(c => c.Trim()).ToArray())
            .Where(c => c.Length == 6)
            .ToList();
        string[] clients = rows.Select(r => r[0]).Distinct().ToArray();
        Assert.True(clients.Length >= MinimumProtocols, $"{clients.Length} protocols checked, at least {MinimumProtocols} expected:{Environment.NewLine}{text}");
        foreach (string client in clients)
        {
            foreach ((string form, string expected) in new[] { ("fixed", "verified"), ("legacy", "caught") })
            {
                foreach (string model in new[] { "rc11", "imm" })
                {
                    string[]? row = rows.FirstOrDefault(r => r[0] == client && r[1] == form && r[2] == model);
                    Assert.True(row is not null, $"{client} {form} has no {model} row");
                    Assert.True(row[4].StartsWith(expected, StringComparison.Ordinal) && row[5] == "yes", $"{client} {form} under {model}: {row[4]}, expected {expected}");
                }
            }
        }

        Match summary = Summary().Match(text.TrimEnd().Split('\n')[^1]);
        Assert.True(summary.Success, "the script's last line is not the weak-memory summary");
        Assert.Equal(2 * clients.Length, int.Parse(summary.Groups["verified"].Value));
        Assert.Equal(2 * clients.Length, int.Parse(summary.Groups["caught"].Value));
        Assert.Equal(0, int.Parse(summary.Groups["unexpected"].Value));
    }

    [GeneratedRegex(@"^weak-memory: (?<verified>\d+) verified, (?<caught>\d+) caught, (?<unexpected>\d+) unexpected$")]
    private static partial Regex Summary();
}
