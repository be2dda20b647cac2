using System.Diagnostics;
using System.Reflection;
using BenchmarkDotNet.Attributes;

namespace PageCore.Benchmarks;

/// <summary>
/// A second way to set the C# paths next to C (<c>--native-interleaved [rounds]</c>): one process runs every
/// <see cref="NativeBenchmarks"/> loop in turn, round after round, and keeps each loop's best round. Interleaving puts
/// both sides of a ratio through the same slow and fast periods of a noisy machine, and the best round drops the
/// periods; BenchmarkDotNet runs each case in its own process at its own moment. The same process runs all the cases,
/// so the JIT's dynamic PGO sees every caller (as an application would); run it a few times, since the code the JIT
/// compiles for a loop can differ between processes.
/// </summary>
public static class InterleavedNative
{
    /// <summary>Runs <paramref name="rounds"/> rounds and prints a table; returns the exit code.</summary>
    public static int Run(int rounds)
    {
        if (rounds < 1)
        {
            Console.Error.WriteLine("pagecore-bench: --native-interleaved needs a positive round count.");
            return 64;
        }

        var bench = new NativeBenchmarks();
        try
        {
            bench.Setup();
        }
        catch (FileNotFoundException e)
        {
            Console.Error.WriteLine($"pagecore-bench: {e.Message}");
            return 1;
        }

        try
        {
            var cases = typeof(NativeBenchmarks).GetMethods()
                .Select(m => (Method: m, Attr: m.GetCustomAttribute<BenchmarkAttribute>(), Category: m.GetCustomAttribute<BenchmarkCategoryAttribute>()?.Categories[0] ?? ""))
                .Where(c => c.Attr is not null)
                .Select(c => (c.Category, Name: c.Attr!.Description ?? c.Method.Name, c.Attr.Baseline, Run: c.Method.CreateDelegate<Action>(bench)))
                .ToArray();
            const int callsPerRound = 20;
            int ops = NativeBenchmarks.Ops;
            foreach (var c in cases)
            {
                for (int i = 0; i < 300; i++)
                {
                    c.Run(); // past tiering: OSR, instrumentation, Tier1
                }
            }

            double[] best = Enumerable.Repeat(double.MaxValue, cases.Length).ToArray();
            for (int round = 0; round < rounds; round++)
            {
                for (int i = 0; i < cases.Length; i++)
                {
                    long start = Stopwatch.GetTimestamp();
                    for (int k = 0; k < callsPerRound; k++)
                    {
                        cases[i].Run();
                    }

                    double ns = Stopwatch.GetElapsedTime(start).TotalNanoseconds / ((double)callsPerRound * ops);
                    best[i] = Math.Min(best[i], ns);
                }
            }

            Console.WriteLine($"C# next to C, interleaved, best of {rounds} rounds of {callsPerRound} x {ops} operations per case");
            Console.WriteLine("| category | case | best ns/op | ratio to the category's C baseline |");
            Console.WriteLine("|---|---|---|---|");
            foreach (var group in cases.Select((c, i) => (c, i)).GroupBy(x => x.c.Category))
            {
                double baseline = group.Where(x => x.c.Baseline).Select(x => best[x.i]).DefaultIfEmpty(double.NaN).First();
                foreach (var (c, i) in group)
                {
                    Console.WriteLine($"| {c.Category} | {c.Name} | {best[i]:F3} | {best[i] / baseline:F2} |");
                }
            }

            return 0;
        }
        finally
        {
            bench.Cleanup();
        }
    }
}
