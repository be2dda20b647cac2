using System.Text.Json;
using PageCore.Stress;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// <c>pagecore-stress scale</c>: a study at two thread counts writes JSON with one point per count, each with its
/// rounds' runs and real work in them, and a picture that is a real PNG or SVG; bad arguments are refused before
/// anything runs; a point ends at its fixed work, not at its time cap.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class ScaleTests(ITestOutputHelper output) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("pagecore-scale-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory(Timeout = 120_000)]
    [InlineData("alloc-churn", "png")]
    [InlineData("pcp-pingpong", "svg")]
    public async Task AStudyWritesWellFormedJsonAndAPicture(string scenario, string format)
    {
        await Task.Yield();
        int seed = TestSupport.Seed(output, nameof(AStudyWritesWellFormedJsonAndAPicture));
        string json = Path.Combine(_dir, $"{scenario}.json"), plot = Path.Combine(_dir, $"{scenario}.{format}");
        const long Ops = 20_000;
        var log = new StringWriter();
        int rc = Scale.Run(scenario, "1,2", Ops, rounds: 2, "60s", json, plot, seed, pin: false, pages: 16384, log);
        output.WriteLine(log.ToString());
        Assert.Equal(Program.Pass, rc);

        using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(json));
        JsonElement root = doc.RootElement;
        Assert.Equal(scenario, root.GetProperty("scenario").GetString());
        Assert.True(root.GetProperty("machine").GetProperty("processorCount").GetInt32() >= 1);
        JsonElement[] points = [.. root.GetProperty("points").EnumerateArray()];
        Assert.Equal([1, 2], points.Select(p => p.GetProperty("threads").GetInt32()));
        foreach (JsonElement p in points)
        {
            JsonElement[] runs = [.. p.GetProperty("runs").EnumerateArray()];
            Assert.Equal(2, runs.Length);
            foreach (JsonElement r in runs)
            {
                Assert.True(r.GetProperty("fewestWorkerOps").GetInt64() >= Ops, "a point ended before every worker did its fixed work");
                Assert.True(r.GetProperty("ops").GetInt64() >= Ops * r.GetProperty("runningThreads").GetInt32() / 2);
                Assert.False(r.GetProperty("capped").GetBoolean());
                Assert.Equal("Pass", r.GetProperty("outcome").GetString());
                Assert.True(r.GetProperty("opsPerSecondPerThread").GetDouble() > 0);
                Assert.True(r.GetProperty("ceilingOpsPerSecondPerThread").GetDouble() > r.GetProperty("opsPerSecondPerThread").GetDouble());
                Assert.True(r.GetProperty("p99Ns").GetInt64() >= r.GetProperty("p50Ns").GetInt64());
                Assert.NotEmpty(r.GetProperty("operations").EnumerateArray());
            }
        }

        byte[] picture = File.ReadAllBytes(plot);
        Assert.True(picture.Length > 5000, $"the picture has only {picture.Length} bytes");
        if (format == "png")
        {
            Assert.Equal(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A }, picture[..8]);
        }
        else
        {
            var svg = System.Xml.Linq.XDocument.Parse(System.Text.Encoding.UTF8.GetString(picture));
            Assert.Equal("svg", svg.Root!.Name.LocalName);
            Assert.Contains(scenario, svg.ToString()); // the title and the legend name the scenario
        }
    }

    [Theory]
    [InlineData("0", null, null)]
    [InlineData("1,x", null, null)]
    [InlineData("2,2", null, null)]
    [InlineData("1,2", "study.txt", null)]
    [InlineData("1,2", null, "no-such-directory/study.json")]
    public void BadArgumentsAreRefusedBeforeAnythingRuns(string threads, string? plot, string? json)
    {
        var log = new StringWriter();
        int rc = Scale.Run("alloc-churn", threads, 20_000, rounds: 1, "10s",
            json is null ? null : Path.Combine(_dir, json), plot is null ? null : Path.Combine(_dir, plot), 1, pin: false, pages: 16384, log);
        Assert.Equal(Program.BadArguments, rc);
        Assert.Equal("", log.ToString()); // nothing ran, nothing printed on the study's output
    }
}
