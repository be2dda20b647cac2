using System.CommandLine;
using System.CommandLine.Parsing;
using System.Text.Json;
using PageCore.Stress.Scenarios;

namespace PageCore.Stress;

/// <summary>
/// <c>pagecore-stress</c>: runs PageCore's stress scenarios on real threads. Exit codes: 0 pass, 1 invariant violated,
/// 2 inconclusive, 64 bad arguments.
/// </summary>
public static class Program
{
    /// <summary>Exit code: every invariant held.</summary>
    public const int Pass = 0;

    /// <summary>Exit code: an invariant was violated.</summary>
    public const int Violated = 1;

    /// <summary>Exit code: bad arguments.</summary>
    public const int BadArguments = 64;

    /// <summary>Entry point.</summary>
    public static int Main(string[] args)
    {
        var scenarioArg = new Argument<string>("scenario") { Description = "The scenario to run (see 'list')." };
        var legacy = new Option<bool>("--legacy") { Description = "Run the historical (broken) form of the scenario, where it has one." };
        var threads = new Option<int>("--threads") { Description = "Worker threads (default: 2 x processor count).", DefaultValueFactory = _ => 2 * Environment.ProcessorCount };
        var duration = new Option<string>("--duration") { Description = "How long to run: 500ms, 10s, 2m (default 10s).", DefaultValueFactory = _ => "10s" };
        var seed = new Option<int?>("--seed") { Description = "Random seed (default: a random one, printed)." };
        var pages = new Option<long>("--arena-pages") { Description = "Pages in the arena (a multiple of 1024; default 65536 = 256 MiB).", DefaultValueFactory = _ => 65536 };
        var json = new Option<string?>("--json") { Description = "Write the result as JSON to this file." };

        var list = new Command("list", "List every scenario, its kernel counterpart, the rule it exercises, and whether it has a legacy form.");
        list.SetAction(_ => List());

        var run = new Command("run", "Run one scenario.") { scenarioArg, legacy, threads, duration, seed, pages, json };
        run.SetAction(pr => Run(
            pr.GetValue(scenarioArg)!, pr.GetValue(legacy), pr.GetValue(threads), pr.GetValue(duration)!,
            pr.GetValue(seed), pr.GetValue(pages), pr.GetValue(json)));

        var root = new RootCommand("pagecore-stress: PageCore's stress scenarios on real threads, with invariants checked while they run.") { list, run };
        ParseResult parsed = root.Parse(args);
        if (parsed.Errors.Count > 0)
        {
            foreach (ParseError error in parsed.Errors)
            {
                Console.Error.WriteLine($"pagecore-stress: {error.Message}");
            }

            Console.Error.WriteLine("See 'pagecore-stress --help'.");
            return BadArguments;
        }

        return parsed.Invoke();
    }

    private static int List()
    {
        Console.WriteLine($"{"scenario",-14} {"legacy",-6} {"rule",-26} kernel counterpart");
        foreach (IScenario s in ScenarioCatalog.All)
        {
            Console.WriteLine($"{s.Name,-14} {(s.HasLegacyForm ? "yes" : "no"),-6} {s.Rule,-26} {s.KernelCounterpart}");
            Console.WriteLine($"{"",-14} {s.Description}");
        }

        return Pass;
    }

    private static int Run(string name, bool legacy, int threads, string durationText, int? seed, long pages, string? jsonPath)
    {
        IScenario? scenario = ScenarioCatalog.Find(name);
        if (scenario is null)
        {
            return Bad($"unknown scenario '{name}'; known: {string.Join(", ", ScenarioCatalog.All.Select(s => s.Name))}.");
        }

        if (legacy && !scenario.HasLegacyForm)
        {
            return Bad($"scenario '{scenario.Name}' has no legacy form.");
        }

        if (threads is < 1 or > 1024)
        {
            return Bad($"--threads must be between 1 and 1024 (got {threads}).");
        }

        if (!TryParseDuration(durationText, out TimeSpan duration))
        {
            return Bad($"--duration '{durationText}' is not a duration such as 500ms, 10s or 2m.");
        }

        if (pages < 1024 || pages % 1024 != 0 || pages > (1L << 31))
        {
            return Bad($"--arena-pages must be a multiple of 1024 between 1024 and 2^31 (got {pages}).");
        }

        int actualSeed = seed ?? Random.Shared.Next();
        Console.WriteLine($"pagecore-stress run {scenario.Name}{(legacy ? " --legacy" : "")} --threads {threads} --duration {durationText} --seed {actualSeed} --arena-pages {pages}");
        Console.WriteLine($"machine: {Environment.ProcessorCount} processors, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, .NET {Environment.Version}");

        var ctx = new StressContext(threads, duration, actualSeed, pages, legacy, Console.Out);
        StressResult result = scenario.Run(ctx);

        Console.WriteLine();
        Console.WriteLine($"{result.Scenario}: {result.Elapsed.TotalSeconds:F1}s, seed {actualSeed}");
        foreach ((string op, long count) in result.Operations)
        {
            Console.WriteLine($"  {op,-18} {count,14:N0}  ({Progress.Rate(count / result.Elapsed.TotalSeconds)}/s)");
        }

        Console.WriteLine($"  violations         {result.Violations,14:N0}");
        foreach (string v in ctx.Violations)
        {
            Console.WriteLine($"    {v}");
        }

        Console.WriteLine("final arena check:");
        Console.WriteLine("  " + result.FinalReport.Replace(Environment.NewLine, Environment.NewLine + "  ").TrimEnd());
        if (jsonPath is not null)
        {
            WriteJson(jsonPath, result, ctx);
        }

        bool pass = result.Violations == 0;
        Console.WriteLine(pass ? "PASS: every invariant held" : $"FAIL: {result.Violations} invariant violations (replay with --seed {actualSeed})");
        return pass ? Pass : Violated;
    }

    private static int Bad(string message)
    {
        Console.Error.WriteLine($"pagecore-stress: {message}");
        return BadArguments;
    }

    /// <summary>Parses 500ms, 10s, 2m, 1h, or a plain number of seconds.</summary>
    public static bool TryParseDuration(string text, out TimeSpan duration)
    {
        duration = default;
        text = text.Trim();
        (string number, double scale) = text switch
        {
            _ when text.EndsWith("ms", StringComparison.OrdinalIgnoreCase) => (text[..^2], 0.001),
            _ when text.EndsWith('s') || text.EndsWith('S') => (text[..^1], 1.0),
            _ when text.EndsWith('m') || text.EndsWith('M') => (text[..^1], 60.0),
            _ when text.EndsWith('h') || text.EndsWith('H') => (text[..^1], 3600.0),
            _ => (text, 1.0),
        };
        if (!double.TryParse(number, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value)
            || value <= 0 || value * scale > 24 * 3600)
        {
            return false;
        }

        duration = TimeSpan.FromSeconds(value * scale);
        return true;
    }

    private static void WriteJson(string path, StressResult result, StressContext ctx)
    {
        using FileStream file = File.Create(path);
        using var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("scenario", result.Scenario);
        w.WriteBoolean("legacy", result.Legacy);
        w.WriteNumber("threads", ctx.Threads);
        w.WriteNumber("seed", ctx.Seed);
        w.WriteNumber("arenaPages", ctx.ArenaPages);
        w.WriteNumber("processors", Environment.ProcessorCount);
        w.WriteNumber("elapsedSeconds", result.Elapsed.TotalSeconds);
        w.WriteStartObject("operations");
        foreach ((string op, long count) in result.Operations)
        {
            w.WriteNumber(op, count);
        }

        w.WriteEndObject();
        w.WriteNumber("violations", result.Violations);
        if (result.FirstViolationAt is { } first)
        {
            w.WriteNumber("firstViolationSeconds", first.TotalSeconds);
        }

        w.WriteStartArray("violationSamples");
        foreach (string v in ctx.Violations)
        {
            w.WriteStringValue(v);
        }

        w.WriteEndArray();
        w.WriteString("finalReport", result.FinalReport);
        w.WriteEndObject();
    }
}
