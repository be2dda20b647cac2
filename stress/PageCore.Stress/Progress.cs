namespace PageCore.Stress;

/// <summary>Progress lines while a scenario runs: one plain line per second at most (a live view comes with the harness issue).</summary>
public static class Progress
{
    /// <summary>Prints the operation rates once a second until every worker has finished.</summary>
    public static void Report(StressContext ctx, Func<IReadOnlyDictionary<string, long>> sample, IEnumerable<Thread> workers)
    {
        Thread[] threads = workers.ToArray();
        IReadOnlyDictionary<string, long> previous = sample();
        TimeSpan last = ctx.Clock.Elapsed;
        while (threads.Any(t => t.IsAlive))
        {
            threads.First(t => t.IsAlive).Join(TimeSpan.FromSeconds(1));
            TimeSpan now = ctx.Clock.Elapsed;
            if (now - last < TimeSpan.FromSeconds(0.9))
            {
                continue; // a line covers about a second; the tail after the last full second shows in the summary
            }

            IReadOnlyDictionary<string, long> current = sample();
            double seconds = (now - last).TotalSeconds;
            string rates = string.Join(", ", current.Select(kv => $"{kv.Key} {Rate((kv.Value - previous[kv.Key]) / seconds)}/s"));
            ctx.Log.WriteLine($"[{now.TotalSeconds,5:F1}s] {rates}; violations {ctx.ViolationCount}");
            previous = current;
            last = now;
        }
    }

    /// <summary>A rate with an SI suffix.</summary>
    public static string Rate(double perSecond) =>
        perSecond >= 1e6 ? $"{perSecond / 1e6:F2}M" : perSecond >= 1e3 ? $"{perSecond / 1e3:F1}k" : $"{perSecond:F0}";
}
