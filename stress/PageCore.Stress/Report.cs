using System.Runtime.InteropServices;
using System.Text.Json;

namespace PageCore.Stress;

/// <summary>The end-of-run table and the JSON report.</summary>
public static class Report
{
    /// <summary>A rate with an SI suffix.</summary>
    public static string Rate(double perSecond) =>
        perSecond >= 1e6 ? $"{perSecond / 1e6:F2}M" : perSecond >= 1e3 ? $"{perSecond / 1e3:F1}k" : $"{perSecond:F0}";

    /// <summary>A size in bytes with a binary suffix (KiB, MiB, GiB, TiB).</summary>
    public static string Bytes(long bytes)
    {
        string[] units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
        double value = bytes;
        int unit = 0;
        while (value >= 1024 && unit < units.Length - 1)
        {
            value /= 1024;
            unit++;
        }

        return unit == 0 ? $"{bytes} bytes" : $"{value:F1} {units[unit]}";
    }

    /// <summary>The processor's model name where the OS tells it (Linux), else the architecture.</summary>
    public static string ProcessorName()
    {
        try
        {
            if (OperatingSystem.IsLinux() && File.Exists("/proc/cpuinfo"))
            {
                string? line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
                if (line is not null)
                {
                    return line[(line.IndexOf(':') + 1)..].Trim();
                }
            }
        }
        catch (IOException)
        {
        }

        return RuntimeInformation.ProcessArchitecture.ToString();
    }

    /// <summary>One line describing the machine, ending with the hand-over form the arenas use (<see cref="ProcessBarrier"/>).</summary>
    public static string Machine() =>
        $"{ProcessorName()}, {Environment.ProcessorCount} processors, {RuntimeInformation.ProcessArchitecture}, {RuntimeInformation.OSDescription}, {RuntimeInformation.FrameworkDescription}, hand-over {ProcessBarrier.Description}";

    /// <summary>
    /// Prints the per-operation table, the operations of every thread (those below <paramref name="minimum"/> marked),
    /// fairness, counters and violations.
    /// </summary>
    public static void Print(TextWriter w, StressContext ctx, StressResult result, long minimum = Verdict.DefaultMinimumOperations)
    {
        IReadOnlyList<Recorder> recorders = ctx.Recorders;
        double seconds = Math.Max(1e-9, result.Elapsed.TotalSeconds);
        w.WriteLine();
        w.WriteLine($"{result.Scenario}{(result.Legacy ? " (legacy form)" : "")}: {seconds:F1}s, {ctx.Threads} workers, seed {ctx.Seed}, {ArenaText(ctx)}");
        long lockedOps = Enumerable.Range(0, ctx.Operations.Count).Where(i => ctx.Operations[i].TakesLock).Sum(i => recorders.Sum(r => r.CountOf(i)));
        w.WriteLine($"  {"operation",-20} {"ops",14} {"ops/s",9} {"CAS retry/op",12} {"slow path/op",12} {"lock wait/op",12} {"p50 ns",8} {"p99 ns",8} {"p99.9 ns",9} {"max ns",10}");
        for (int i = 0; i < ctx.Operations.Count; i++)
        {
            OpKind op = ctx.Operations[i];
            long ops = recorders.Sum(r => r.CountOf(i));
            var latency = new LatencyHistogram();
            foreach (Recorder r in recorders) latency.Add(r.Latency[i]);
            string retries = PerOp(result.Statistics, op.Retries, ops);
            string slow = PerOp(result.Statistics, op.SlowPaths, ops);
            string waits = op.TakesLock && lockedOps > 0 ? (result.LockWaits / (double)lockedOps).ToString("F4") : "-";
            w.WriteLine($"  {op.Name,-20} {ops,14:N0} {Rate(ops / seconds),9} {retries,12} {slow,12} {waits,12} {Ns(latency, 0.5),8} {Ns(latency, 0.99),8} {Ns(latency, 0.999),9} {(latency.Count == 0 ? "-" : latency.Max.ToString("N0")),10}");
        }

        w.WriteLine($"  latencies: one operation in {Recorder.SampleEvery} timed; lock waits: {(lockedOps == 0 ? "no measured operation takes a lock" : $"{result.LockWaits:N0} contentions over the operations that take one")}");
        // A fixed form's run counts only when every thread did the minimum (Verdict); a legacy form's is judged by its catch.
        string need = result.Legacy ? "" : $" (at least {minimum:N0} each for the run to count)";
        w.WriteLine($"  operations per thread{need}: " + string.Join(", ", recorders.Select(r => $"{r.Name} {r.Total:N0}{(!result.Legacy && r.Total < minimum ? " (BELOW MINIMUM)" : "")}")));
        long[] totals = recorders.Where(r => !r.Background).Select(r => r.Total).ToArray();
        if (totals.Length > 1 && totals.Max() > 0)
        {
            w.WriteLine($"  slowest / fastest worker: {(double)totals.Min() / totals.Max():P0}");
        }

        w.WriteLine($"  arena counters: {result.Statistics}");
        w.WriteLine($"  violations: {result.Violations:N0}" + (result.FirstViolationAt is { } first ? $", first after {first.TotalMilliseconds:F0} ms" : ""));
        foreach (string v in ctx.Violations) w.WriteLine($"    {v}");
        w.WriteLine("  final arena check:");
        w.WriteLine("    " + result.FinalReport.Replace(Environment.NewLine, Environment.NewLine + "    ").TrimEnd());
    }

    /// <summary>The arena the run used, and the cap when the scenario built a smaller one than <c>--arena-pages</c> asked for.</summary>
    internal static string ArenaText(StressContext ctx) =>
        ctx.ArenaPagesBuilt == 0 ? "no arena built"
        : ctx.ArenaPagesBuilt == ctx.ArenaPages ? $"arena {ctx.ArenaPagesBuilt:N0} pages"
        : $"arena {ctx.ArenaPagesBuilt:N0} pages (the scenario's cap; --arena-pages asked for {ctx.ArenaPages:N0})";

    /// <summary>
    /// Writes the figures as JSON, with the machine, the options, the seed, the operations of every thread, the minimum
    /// each needed and the outcome.
    /// </summary>
    public static void WriteJson(string path, StressContext ctx, StressResult result, long minimum = Verdict.DefaultMinimumOperations)
    {
        using FileStream file = File.Create(path);
        using var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        IReadOnlyList<Recorder> recorders = ctx.Recorders;
        double seconds = Math.Max(1e-9, result.Elapsed.TotalSeconds);
        w.WriteStartObject();
        w.WriteString("scenario", result.Scenario);
        w.WriteBoolean("legacy", result.Legacy);
        WriteMachine(w);
        w.WriteStartObject("options");
        w.WriteNumber("threads", ctx.Threads);
        w.WriteNumber("durationSeconds", ctx.Duration.TotalSeconds);
        w.WriteNumber("seed", ctx.Seed);
        w.WriteNumber("arenaPages", ctx.ArenaPagesBuilt);
        w.WriteNumber("arenaPagesRequested", ctx.ArenaPages);
        w.WriteBoolean("pin", ctx.Pin);
        w.WriteNumber("minimumOpsPerThread", minimum);
        w.WriteEndObject();
        w.WriteString("outcome", Verdict.Judge(ctx, result, minimum).ToString());
        w.WriteNumber("elapsedSeconds", seconds);
        w.WriteStartArray("operations");
        for (int i = 0; i < ctx.Operations.Count; i++)
        {
            OpKind op = ctx.Operations[i];
            long ops = recorders.Sum(r => r.CountOf(i));
            var latency = new LatencyHistogram();
            foreach (Recorder r in recorders) latency.Add(r.Latency[i]);
            w.WriteStartObject();
            w.WriteString("name", op.Name);
            w.WriteNumber("ops", ops);
            w.WriteNumber("opsPerSecond", ops / seconds);
            w.WriteNumber("casRetries", op.Retries.Sum(c => result.Statistics[c]));
            w.WriteNumber("slowPathEntries", op.SlowPaths.Sum(c => result.Statistics[c]));
            w.WriteNumber("lockWaits", op.TakesLock ? result.LockWaits : 0);
            w.WriteNumber("latencySamples", latency.Count);
            w.WriteNumber("p50Ns", latency.Quantile(0.5));
            w.WriteNumber("p99Ns", latency.Quantile(0.99));
            w.WriteNumber("p999Ns", latency.Quantile(0.999));
            w.WriteNumber("maxNs", latency.Max);
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteStartObject("perThread");
        foreach (Recorder r in recorders) w.WriteNumber(r.Name, r.Total);
        w.WriteEndObject();
        w.WriteStartArray("threadsBelowMinimum");
        foreach (Recorder r in Verdict.BelowMinimum(ctx, minimum)) w.WriteStringValue(r.Name);
        w.WriteEndArray();
        w.WriteStartObject("arenaCounters");
        foreach ((string name, long value) in result.Statistics.ToDictionary()) w.WriteNumber(name, value);
        w.WriteEndObject();
        w.WriteNumber("violations", result.Violations);
        if (result.FirstViolationAt is { } first) w.WriteNumber("firstViolationSeconds", first.TotalSeconds);
        w.WriteStartArray("violationSamples");
        foreach (string v in ctx.Violations) w.WriteStringValue(v);
        w.WriteEndArray();
        w.WriteString("finalReport", result.FinalReport);
        w.WriteEndObject();
    }

    /// <summary>The "machine" object of a JSON report: processor, count, architecture, OS, runtime, hand-over form.</summary>
    public static void WriteMachine(Utf8JsonWriter w)
    {
        w.WriteStartObject("machine");
        w.WriteString("processor", ProcessorName());
        w.WriteNumber("processorCount", Environment.ProcessorCount);
        w.WriteString("architecture", RuntimeInformation.ProcessArchitecture.ToString());
        w.WriteString("os", RuntimeInformation.OSDescription);
        w.WriteString("dotnet", RuntimeInformation.FrameworkDescription);
        w.WriteString("handOver", ProcessBarrier.HandOver.ToString());
        w.WriteString("processBarrier", ProcessBarrier.Kind.ToString());
        w.WriteEndObject();
    }

    private static string PerOp(ArenaStatistics stats, ArenaCounter[] counters, long ops) =>
        counters.Length == 0 || ops == 0 ? "-" : (counters.Sum(c => stats[c]) / (double)ops).ToString("F4");

    private static string Ns(LatencyHistogram h, double q) => h.Count == 0 ? "-" : h.Quantile(q).ToString("N0");
}
