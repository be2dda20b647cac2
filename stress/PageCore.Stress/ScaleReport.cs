using System.Text.Json;
using PageCore.Stress.Scenarios;
using ScottPlot;

namespace PageCore.Stress;

/// <summary>One thread count of a <c>scale</c> study: what its run measured.</summary>
/// <param name="Threads">The thread count asked for (the scenario's <c>--threads</c>).</param>
/// <param name="Running">Threads that ran and recorded operations (a scenario may add walkers or pair up workers).</param>
/// <param name="Seconds">Wall time of the point's workload.</param>
/// <param name="Ops">Operations of every type, every thread.</param>
/// <param name="OpsPerSecondPerThread">Ops over running threads and seconds.</param>
/// <param name="CeilingPerThread">The private-counter ceiling with <paramref name="Running"/> threads, operations per second per thread.</param>
/// <param name="P50Ns">Median latency over the sampled operations of every type.</param>
/// <param name="P99Ns">99th percentile.</param>
/// <param name="P999Ns">99.9th percentile.</param>
/// <param name="MaxNs">Largest sample.</param>
/// <param name="RetriesPerOp">The scenario's CAS-retry counters per operation: each retry is a cache line that moved.</param>
/// <param name="SlowPathsPerOp">The scenario's slow-path counters per operation (refills, spills, shared-allocator entries).</param>
/// <param name="Fairness">Fewest over most operations of a worker (1 when alone).</param>
/// <param name="FewestWorkerOps">Operations of the worker that did the fewest (at least the fixed work unless capped).</param>
/// <param name="Capped">The point ended at <c>--max-duration</c> before its threads did their work.</param>
/// <param name="Outcome">The run's verdict (a scale point must pass like any fixed form's run).</param>
/// <param name="Operations">Per operation type: name, operations, p99 ns.</param>
public sealed record ScalePoint(
    int Threads, int Running, double Seconds, long Ops, double OpsPerSecondPerThread, double CeilingPerThread,
    long P50Ns, long P99Ns, long P999Ns, long MaxNs, double RetriesPerOp, double SlowPathsPerOp, double Fairness,
    long FewestWorkerOps, bool Capped, Outcome Outcome, IReadOnlyList<(string Name, long Ops, long P99Ns)> Operations)
{
    /// <summary>
    /// The median of each figure over several runs of one thread count (the operations of the run with the median
    /// throughput); the outcome is the worst of them, and the point is capped if any run was.
    /// </summary>
    public static ScalePoint Median(IReadOnlyList<ScalePoint> runs)
    {
        static double Med(IEnumerable<double> values)
        {
            double[] v = [.. values.Order()];
            return v.Length % 2 == 1 ? v[v.Length / 2] : (v[(v.Length / 2) - 1] + v[v.Length / 2]) / 2;
        }

        ScalePoint middle = runs.OrderBy(r => r.OpsPerSecondPerThread).ElementAt(runs.Count / 2);
        Outcome worst = runs.Any(r => r.Outcome == Outcome.Fail) ? Outcome.Fail : runs.Any(r => r.Outcome != Outcome.Pass) ? Outcome.Inconclusive : Outcome.Pass;
        return new ScalePoint(
            middle.Threads, middle.Running, Med(runs.Select(r => r.Seconds)), (long)Med(runs.Select(r => (double)r.Ops)),
            Med(runs.Select(r => r.OpsPerSecondPerThread)), Med(runs.Select(r => r.CeilingPerThread)),
            (long)Med(runs.Select(r => (double)r.P50Ns)), (long)Med(runs.Select(r => (double)r.P99Ns)), (long)Med(runs.Select(r => (double)r.P999Ns)),
            runs.Max(r => r.MaxNs), Med(runs.Select(r => r.RetriesPerOp)), Med(runs.Select(r => r.SlowPathsPerOp)), Med(runs.Select(r => r.Fairness)),
            runs.Min(r => r.FewestWorkerOps), runs.Any(r => r.Capped), worst, middle.Operations);
    }

    /// <summary>The point's figures from a finished run.</summary>
    public static ScalePoint From(StressContext ctx, StressResult result, double ceiling, long minimum)
    {
        IReadOnlyList<Recorder> recorders = ctx.Recorders;
        double seconds = Math.Max(1e-9, result.Elapsed.TotalSeconds);
        long ops = recorders.Sum(r => r.Total);
        var all = new LatencyHistogram();
        var operations = new List<(string, long, long)>();
        for (int i = 0; i < ctx.Operations.Count; i++)
        {
            var h = new LatencyHistogram();
            foreach (Recorder r in recorders) h.Add(r.Latency[i]);
            all.Add(h);
            operations.Add((ctx.Operations[i].Name, recorders.Sum(r => r.CountOf(i)), h.Count == 0 ? 0 : h.Quantile(0.99)));
        }

        // Each counter once, though several operation types may name it.
        long retries = ctx.Operations.SelectMany(o => o.Retries).Distinct().Sum(c => result.Statistics[c]);
        long slow = ctx.Operations.SelectMany(o => o.SlowPaths).Distinct().Sum(c => result.Statistics[c]);
        long[] workers = recorders.Where(r => !r.Background).Select(r => r.Total).ToArray();
        double fairness = workers.Length == 0 || workers.Max() == 0 ? 0 : (double)workers.Min() / workers.Max();
        int running = Math.Max(1, recorders.Count);
        return new ScalePoint(
            ctx.Threads, recorders.Count, seconds, ops, ops / (double)running / seconds, ceiling,
            all.Count == 0 ? 0 : all.Quantile(0.5), all.Count == 0 ? 0 : all.Quantile(0.99), all.Count == 0 ? 0 : all.Quantile(0.999), all.Max,
            ops == 0 ? 0 : retries / (double)ops, ops == 0 ? 0 : slow / (double)ops, fairness,
            workers.Length == 0 ? 0 : workers.Min(), recorders.Any(r => !r.Background && r.Total < ctx.OperationsPerThread), Verdict.Judge(ctx, result, minimum), operations);
    }
}

/// <summary>The <c>scale</c> study's JSON and picture.</summary>
public static class ScaleReport
{
    /// <summary>Writes the study: machine, options and every point with its operation types.</summary>
    public static void WriteJson(string path, string scenario, int[] threads, long opsPerThread, int rounds, TimeSpan maxDuration, int seed, long pages, bool pin, IReadOnlyList<ScalePoint> points, IReadOnlyDictionary<int, List<ScalePoint>> runs)
    {
        using FileStream file = File.Create(path);
        using var w = new Utf8JsonWriter(file, new JsonWriterOptions { Indented = true });
        w.WriteStartObject();
        w.WriteString("kind", "pagecore-stress scale");
        w.WriteString("scenario", scenario);
        Report.WriteMachine(w);
        w.WriteStartObject("options");
        w.WriteStartArray("threads");
        foreach (int t in threads) w.WriteNumberValue(t);
        w.WriteEndArray();
        w.WriteNumber("opsPerThread", opsPerThread);
        w.WriteNumber("rounds", rounds);
        w.WriteNumber("maxDurationSeconds", maxDuration.TotalSeconds);
        w.WriteNumber("seed", seed);
        w.WriteNumber("arenaPages", pages);
        w.WriteBoolean("pin", pin);
        w.WriteEndObject();
        w.WriteStartArray("points"); // medians over the rounds, then each round's run
        foreach (ScalePoint p in points)
        {
            w.WriteStartObject();
            WritePoint(w, p);
            w.WriteStartArray("runs");
            foreach (ScalePoint run in runs[p.Threads])
            {
                w.WriteStartObject();
                WritePoint(w, run);
                w.WriteEndObject();
            }

            w.WriteEndArray();
            w.WriteEndObject();
        }

        w.WriteEndArray();
        w.WriteEndObject();
    }

    private static void WritePoint(Utf8JsonWriter w, ScalePoint p)
    {
        w.WriteNumber("threads", p.Threads);
        w.WriteNumber("runningThreads", p.Running);
        w.WriteNumber("seconds", p.Seconds);
        w.WriteNumber("ops", p.Ops);
        w.WriteNumber("opsPerSecondPerThread", p.OpsPerSecondPerThread);
        w.WriteNumber("ceilingOpsPerSecondPerThread", p.CeilingPerThread);
        w.WriteNumber("p50Ns", p.P50Ns);
        w.WriteNumber("p99Ns", p.P99Ns);
        w.WriteNumber("p999Ns", p.P999Ns);
        w.WriteNumber("maxNs", p.MaxNs);
        w.WriteNumber("casRetriesPerOp", p.RetriesPerOp);
        w.WriteNumber("slowPathsPerOp", p.SlowPathsPerOp);
        w.WriteNumber("fairness", p.Fairness);
        w.WriteNumber("fewestWorkerOps", p.FewestWorkerOps);
        w.WriteBoolean("capped", p.Capped);
        w.WriteString("outcome", p.Outcome.ToString());
        w.WriteStartArray("operations");
        foreach ((string name, long ops, long p99) in p.Operations)
        {
            w.WriteStartObject();
            w.WriteString("name", name);
            w.WriteNumber("ops", ops);
            w.WriteNumber("p99Ns", p99);
            w.WriteEndObject();
        }

        w.WriteEndArray();
    }

    /// <summary>
    /// Draws the study: throughput per thread relative to the first point, for the scenario and for the private-counter
    /// ceiling (left axis; flat is perfect scaling), and the scenario's p99 and p99.9 latency (right axis), against
    /// threads (on a log-2 scale). The first point's absolute figures are in the legend. SVG or PNG by the file's
    /// extension.
    /// </summary>
    public static void Plot(string path, string scenario, IReadOnlyList<ScalePoint> points)
    {
        double[] x = points.Select(p => Math.Log2(p.Threads)).ToArray(); // thread counts grow by doubling: equal steps
        ScalePoint first = points[0];
        var plot = new Plot();
        var own = plot.Add.Scatter(x, points.Select(p => p.OpsPerSecondPerThread / first.OpsPerSecondPerThread).ToArray());
        own.LegendText = $"{scenario}: throughput per thread ({first.OpsPerSecondPerThread / 1e6:F2} Mops/s at {first.Threads})";
        own.LineWidth = 2;
        own.MarkerSize = 8;
        var ceiling = plot.Add.Scatter(x, points.Select(p => p.CeilingPerThread / first.CeilingPerThread).ToArray());
        ceiling.LegendText = $"private-counter ceiling ({first.CeilingPerThread / 1e6:F0} Mops/s at {first.Threads})";
        ceiling.MarkerShape = MarkerShape.OpenSquare;
        ceiling.MarkerSize = 8;
        var p99 = plot.Add.Scatter(x, points.Select(p => (double)p.P99Ns).ToArray());
        p99.LegendText = $"{scenario}: p99 latency (ns, right axis)";
        p99.MarkerShape = MarkerShape.FilledTriangleUp;
        p99.MarkerSize = 8;
        p99.Axes.YAxis = plot.Axes.Right;
        var p999 = plot.Add.Scatter(x, points.Select(p => (double)p.P999Ns).ToArray());
        p999.LegendText = $"{scenario}: p99.9 latency (ns, right axis)";
        p999.MarkerShape = MarkerShape.OpenTriangleUp;
        p999.MarkerSize = 8;
        p999.LineWidth = 1;
        p999.Axes.YAxis = plot.Axes.Right;
        plot.Axes.Bottom.TickGenerator = new ScottPlot.TickGenerators.NumericManual(x, points.Select(p => p.Threads.ToString(System.Globalization.CultureInfo.InvariantCulture)).ToArray());
        plot.Axes.Bottom.Label.Text = "threads";
        plot.Axes.Left.Label.Text = "throughput per thread, relative to the first point";
        plot.Axes.Right.Label.Text = "latency, ns";
        plot.Axes.SetLimitsY(0, Math.Max(1.2, points.Max(p => Math.Max(p.OpsPerSecondPerThread / first.OpsPerSecondPerThread, p.CeilingPerThread / first.CeilingPerThread)) * 1.1), plot.Axes.Left);
        plot.Axes.SetLimitsY(0, Math.Max(1, points.Max(p => p.P999Ns)) * 1.15, plot.Axes.Right);
        plot.Title($"pagecore-stress scale {scenario}: {Report.ProcessorName()}, {Environment.ProcessorCount} CPUs");
        plot.ShowLegend(Alignment.LowerLeft);
        if (path.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
        {
            plot.SaveSvg(path, 900, 560);
        }
        else
        {
            plot.SavePng(path, 900, 560);
        }
    }
}
