using System.Diagnostics;
using PageCore.Stress;
using Xunit;

namespace PageCore.Tests;

/// <summary>The out-of-process tools against a child stress process: the live monitor, and the dump on a bug report.</summary>
[Collection(StressCollection.Name)] // alone: the metrics event source serves one session at a time
public sealed class MonitorTests(ITestOutputHelper output)
{
    private static Process StartStress(string arguments)
    {
        // Through the host's dotnet, or, for a self-contained test executable of another architecture (linux-arm64
        // under qemu-user), its own pagecore-stress apphost through PAGECORE_TARGET_RUNNER.
        string dll = Path.Combine(AppContext.BaseDirectory, "pagecore-stress.dll");
        string? runner = TestSupport.TargetRunner;
        var psi = new ProcessStartInfo(
            runner ?? "dotnet",
            runner is null ? $"\"{dll}\" {arguments}" : $"\"{Path.Combine(AppContext.BaseDirectory, "pagecore-stress")}\" {arguments}")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.Environment["CI"] = "true"; // plain progress lines
        return Process.Start(psi)!;
    }

    [Fact(Timeout = 120_000)]
    public async Task TheMonitorShowsLiveFiguresFromARunningStressProcess()
    {
        // The child outlives the watch (it is killed at the end); under emulation the event session takes longer to
        // deliver, so the watch is longer there (PAGECORE_TEST_TIME_SCALE, at most 5x).
        using Process child = StartStress("run alloc-churn --duration 5m --threads 2 --arena-pages 16384");
        Task<string> childOut = child.StandardOutput.ReadToEndAsync();
        Task<string> childErr = child.StandardError.ReadToEndAsync(); // drained, so the child never blocks on a full pipe
        try
        {
            await Task.Run(() =>
            {
                DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
                while (!ProcessMonitor.Processes().Any(p => p.Pid == child.Id))
                {
                    Assert.True(DateTime.UtcNow < deadline, "the child never published a diagnostics endpoint");
                    Thread.Sleep(100);
                }

                Assert.Contains(ProcessMonitor.Processes(), p => p.Pid == child.Id && p.CommandLine.Contains("alloc-churn"));
                var text = new StringWriter();
                int received = ProcessMonitor.Watch(child.Id, TimeSpan.FromSeconds(4) * Math.Min(TestSupport.TimeScale, 5), text);
                output.WriteLine(text.ToString());
                Assert.True(received > 0, "no value arrived");
                string[] allocated = text.ToString().Split('\n').Where(l => l.Contains("pagecore.pages.allocated[order=0]")).ToArray();
                Assert.NotEmpty(allocated);
                long last = long.Parse(allocated[^1].Split(' ')[4]);
                Assert.True(last > 0, "the child allocated nothing?");
                Assert.Contains("pagecore.pages.free", text.ToString());
                Assert.Contains("pagecore.cache.hits", text.ToString());
            });
        }
        finally
        {
            if (!child.HasExited)
            {
                child.Kill(entireProcessTree: true);
            }

            await child.WaitForExitAsync();
            _ = await childOut + await childErr;
        }
    }

    [Fact(Timeout = 120_000)]
    public async Task DumpOnBugWritesADumpOfTheProcessAtTheFirstBugReport()
    {
        if (TestSupport.TargetRunner is { } runner && !File.Exists("/proc/sys/fs/binfmt_misc/status"))
        {
            // The runtime writes the dump by starting its own createdump (an arm64 binary under emulation) with execve,
            // which the kernel can only start through a binfmt_misc registration of the emulator; none is mounted here.
            Assert.Skip($"cannot run under {runner}: the runtime's createdump is started with execve, and this kernel has no binfmt_misc registration to run it through {runner}");
        }

        string dir = Path.Combine(Path.GetTempPath(), "pagecore-dumps-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // put-at-zero's stale holders put at zero from their first round on: each put is refused with a bug report
            // (a PageBugException) at once, in either form, so the first report does not depend on when a race is won;
            // the legacy form is then caught (its undo lands on the owner's unfreeze) within a second on 2 cores.
            using Process child = StartStress($"run put-at-zero --legacy --duration 5s --threads 4 --arena-pages 16384 --dump-on-bug \"{dir}\"");
            Task<string> childOut = child.StandardOutput.ReadToEndAsync();
            Task<string> childErr = child.StandardError.ReadToEndAsync();
            await child.WaitForExitAsync();
            string printed = await childOut + await childErr;
            output.WriteLine(printed.Length > 4000 ? printed[..4000] : printed);
            string line = printed.Split('\n').First(l => l.StartsWith("dump-on-bug:", StringComparison.Ordinal));
            Assert.Contains("dump written to ", line);
            Assert.DoesNotContain("[createdump]", printed); // the dump tool's own progress lines stay out of the run's output
            string path = line[(line.IndexOf("dump written to ", StringComparison.Ordinal) + "dump written to ".Length)..].Trim();
            Assert.True(File.Exists(path), $"no dump at {path}");
            Assert.True(new FileInfo(path).Length > 1024 * 1024, "the dump is too small to be a process dump");
            Assert.Single(Directory.GetFiles(dir)); // the first bug only
            Assert.Equal(Program.Violated, child.ExitCode); // the legacy form was caught
        }
        finally
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
