using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;

namespace PageCore.Benchmarks;

/// <summary>
/// Runs the benchmarks on the host runtime (BenchmarkDotNet 0.14.0 has no net10 moniker: never pass --runtimes).
/// BenchmarkDotNet exits 0 even when it ran nothing, so this program sets its own exit code: 1 when a benchmark was
/// rejected or failed, or when nothing ran. With <c>--results DIR</c> it copies the GitHub-markdown reports to DIR.
/// <c>--native-interleaved [rounds]</c> runs <see cref="InterleavedNative"/> instead of BenchmarkDotNet;
/// <c>--hash-reads-interleaved [rounds]</c> runs <see cref="HashReadBenchmarks.RunInterleaved"/>;
/// <c>--multicore-interleaved [rounds]</c> runs <see cref="MulticoreInterleaved"/>; <c>--fragmentation ...</c> runs
/// <see cref="Fragmentation"/>; <c>--headline [rounds] [--keys N]</c> runs <see cref="HeadlineInterleaved"/>.
/// </summary>
public static class Program
{
    /// <summary>Entry point.</summary>
    public static int Main(string[] args)
    {
        int hashReads = Array.IndexOf(args, "--hash-reads-interleaved");
        if (hashReads >= 0)
        {
            return HashReadBenchmarks.RunInterleaved(hashReads + 1 < args.Length && int.TryParse(args[hashReads + 1], out int n) ? n : 30);
        }

        int headline = Array.IndexOf(args, "--headline");
        if (headline >= 0)
        {
            int rounds = 15;
            if (headline + 1 < args.Length && !args[headline + 1].StartsWith("--", StringComparison.Ordinal)
                && !int.TryParse(args[headline + 1], out rounds))
            {
                Console.Error.WriteLine($"pagecore-bench: --headline takes a round count, not '{args[headline + 1]}'.");
                return 64;
            }

            int keys = HeadlineInterleaved.DefaultKeys;
            int keysAt = Array.IndexOf(args, "--keys");
            if (keysAt >= 0 && (keysAt + 1 >= args.Length || !int.TryParse(args[keysAt + 1], out keys)))
            {
                Console.Error.WriteLine("pagecore-bench: --keys takes a power of two from 1 to 16384.");
                return 64;
            }

            return HeadlineInterleaved.Run(rounds, keys);
        }

        if (args.Contains("--fragmentation"))
        {
            return Fragmentation.Run(args);
        }

        int multicore = Array.IndexOf(args, "--multicore-interleaved");
        if (multicore >= 0)
        {
            int rounds = 15;
            if (multicore + 1 < args.Length && !int.TryParse(args[multicore + 1], out rounds))
            {
                Console.Error.WriteLine($"pagecore-bench: --multicore-interleaved takes a round count, not '{args[multicore + 1]}'.");
                return 64;
            }

            return MulticoreInterleaved.Run(rounds);
        }

        int interleaved = Array.IndexOf(args, "--native-interleaved");
        if (interleaved >= 0)
        {
            int rounds = 30;
            if (interleaved + 1 < args.Length && !int.TryParse(args[interleaved + 1], out rounds))
            {
                Console.Error.WriteLine($"pagecore-bench: --native-interleaved takes a round count, not '{args[interleaved + 1]}'.");
                return 64;
            }

            return InterleavedNative.Run(rounds);
        }

        string? resultsDir = null;
        var rest = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            if (args[i] == "--results" && i + 1 < args.Length)
            {
                resultsDir = args[++i];
            }
            else
            {
                rest.Add(args[i]);
            }
        }

        if (rest.Contains("--runtimes") || rest.Contains("-r"))
        {
            Console.Error.WriteLine("pagecore-bench: --runtimes is not supported (BenchmarkDotNet 0.14.0 has no net10 moniker); the benchmarks run on the host runtime.");
            return 64;
        }

        // --list (flat or tree) and --info only print: BenchmarkDotNet returns no summaries for them, which is success
        // here, not "none ran".
        bool printOnly = rest.Contains("--list") || rest.Contains("--info") || rest.Contains("--help") || rest.Contains("-h") || rest.Contains("--version");

        IConfig config = DefaultConfig.Instance
            .AddJob(Job.Default.WithWarmupCount(4).WithIterationCount(12).WithLaunchCount(1).AsDefault())
            .WithOption(ConfigOptions.JoinSummary, false);

        Summary[] summaries = BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run([.. rest], config).ToArray();
        int reports = summaries.Sum(s => s.Reports.Length);
        if (printOnly && reports == 0)
        {
            return 0;
        }

        bool failed = summaries.Length == 0 || reports == 0
            || summaries.Any(s => s.HasCriticalValidationErrors || s.Reports.Any(r => !r.Success));
        if (resultsDir is not null)
        {
            Directory.CreateDirectory(resultsDir);
            foreach (Summary s in summaries)
            {
                foreach (string file in Directory.GetFiles(s.ResultsDirectoryPath, "*-report-github.md"))
                {
                    File.Copy(file, Path.Combine(resultsDir, Path.GetFileName(file)), overwrite: true);
                }
            }
        }

        if (failed)
        {
            Console.Error.WriteLine($"pagecore-bench: {reports} benchmark reports; some benchmarks were rejected, failed, or none ran.");
            return 1;
        }

        return 0;
    }
}
