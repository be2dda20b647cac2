using System.Diagnostics;
using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;

namespace PageCore.Stress;

/// <summary>
/// The out-of-process side: <c>ps</c> lists .NET processes, <c>monitor --pid N</c> attaches with the diagnostics client and
/// prints the <c>PageCore</c> meter's instruments as the target publishes them (EventPipe, provider
/// <c>System.Diagnostics.Metrics</c>), and <c>--dump-on-bug</c> writes a dump of the running process at its first bug report.
/// </summary>
public static class ProcessMonitor
{
    /// <summary>The .NET processes that publish a diagnostics endpoint: pid, name and command line.</summary>
    public static IReadOnlyList<(int Pid, string Name, string CommandLine)> Processes()
    {
        var list = new List<(int, string, string)>();
        foreach (int pid in DiagnosticsClient.GetPublishedProcesses().Order())
        {
            string name = "?", cmd = "";
            try
            {
                name = Process.GetProcessById(pid).ProcessName;
                string cmdline = $"/proc/{pid}/cmdline";
                if (File.Exists(cmdline))
                {
                    cmd = File.ReadAllText(cmdline).Replace('\0', ' ').Trim();
                }
            }
            catch (Exception ex) when (ex is ArgumentException or InvalidOperationException or IOException or UnauthorizedAccessException)
            {
                // the process exited meanwhile, or is not ours to read
            }

            list.Add((pid, name, cmd));
        }

        return list;
    }

    /// <summary>
    /// Attaches to <paramref name="pid"/> and writes one line per published value of a <c>PageCore</c> instrument
    /// (<c>name[tags] value</c>, with the rate for counters) until <paramref name="duration"/> passes or the target exits.
    /// </summary>
    /// <returns>How many values were received.</returns>
    public static int Watch(int pid, TimeSpan duration, TextWriter output, int refreshSeconds = 1)
    {
        var client = new DiagnosticsClient(pid);
        string sessionId = Guid.NewGuid().ToString();
        var provider = new EventPipeProvider("System.Diagnostics.Metrics", EventLevel.Informational, 0x2, new Dictionary<string, string>
        {
            ["SessionId"] = sessionId,
            ["Metrics"] = PageCoreMetrics.MeterName,
            ["RefreshInterval"] = refreshSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture),
            ["MaxTimeSeries"] = "1000",
            ["MaxHistograms"] = "10",
        });
        int received = 0;

        // The whole session runs on its own task, so a target that never answers the stop (or a trace source that does
        // not drain) cannot hold the caller past its duration and a grace period.
        Task watching = Task.Run(() =>
        {
            using EventPipeSession session = client.StartEventPipeSession([provider], requestRundown: false);
            using var source = new EventPipeEventSource(session.EventStream);
            source.Dynamic.All += e =>
            {
                if (e.ProviderName != "System.Diagnostics.Metrics" || (string?)e.PayloadByName("sessionId") != sessionId)
                {
                    return;
                }

                string? line = e.EventName switch
                {
                    "CounterRateValuePublished" or "UpDownCounterRateValuePublished" =>
                        $"{Name(e)} {e.PayloadByName("value")} {Change(e.PayloadByName("rate") as string, refreshSeconds)}",
                    "GaugeValuePublished" => $"{Name(e)} {e.PayloadByName("lastValue")}",
                    "Error" or "MultipleSessionsNotSupportedError" or "TimeSeriesLimitReached" => $"monitor: {e.EventName} {e.PayloadByName("errorMessage")}",
                    _ => null,
                };
                if (line is not null)
                {
                    lock (output)
                    {
                        output.WriteLine($"{DateTime.Now:HH:mm:ss} pid {pid} {line}");
                        received++;
                    }
                }
            };
            Task processing = Task.Run(source.Process);
            Task.WaitAny(processing, Task.Delay(duration));
            try
            {
                session.Stop();
            }
            catch (Exception ex) when (ex is ServerNotAvailableException or EndOfStreamException or IOException)
            {
                // the target exited first
            }

            processing.Wait(TimeSpan.FromSeconds(5));
        });
        if (!watching.Wait(duration + TimeSpan.FromSeconds(20)))
        {
            lock (output)
            {
                output.WriteLine($"monitor: pid {pid} did not end the session in time; stopped waiting for it");
            }
        }

        lock (output)
        {
            return received;
        }
    }

    /// <summary>
    /// The change of a counter over one refresh period, signed: "(+12 in 1s)", "(-592 in 1s)" (an up-down counter that
    /// went down), "(first sample)" when the runtime has no earlier value to compare with (an empty rate).
    /// </summary>
    public static string Change(string? rate, int refreshSeconds)
    {
        if (string.IsNullOrWhiteSpace(rate)
            || !double.TryParse(rate, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double value))
        {
            return "(first sample)";
        }

        string number = value.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture);
        return value < 0 ? $"({number} in {refreshSeconds}s)" : $"(+{number} in {refreshSeconds}s)";
    }

    private static string Name(TraceEvent e)
    {
        string tags = (string?)e.PayloadByName("tags") ?? "";
        return tags.Length == 0 ? (string)e.PayloadByName("instrumentName") : $"{e.PayloadByName("instrumentName")}[{tags}]";
    }

    /// <summary>
    /// From now on, the first <see cref="PageBugException"/> created in this process writes a dump of it into
    /// <paramref name="directory"/> (see <see cref="WriteDump"/>) and prints its path.
    /// </summary>
    public static void DumpOnFirstBug(string directory, TextWriter output)
    {
        Directory.CreateDirectory(directory);
        int done = 0;
        PageBugException.Reported += bug =>
        {
            if (Interlocked.Exchange(ref done, 1) != 0)
            {
                return;
            }

            string path = Path.Combine(Path.GetFullPath(directory), $"pagecore-{Environment.ProcessId}-{DateTime.UtcNow:yyyyMMddHHmmss}.dmp");
            try
            {
                WriteDump(path);
                output.WriteLine($"dump-on-bug: {bug.Operation}: {bug.Reason}; dump written to {path}");
            }
            catch (Exception ex) when (ex is ServerErrorException or ServerNotAvailableException or IOException or UnsupportedCommandException or InvalidOperationException or System.ComponentModel.Win32Exception)
            {
                output.WriteLine($"dump-on-bug: {bug.Operation}: {bug.Reason}; the dump failed: {ex.Message}");
            }
        };
    }

    /// <summary>
    /// Writes a dump of this process to <paramref name="path"/>. Where the runtime ships <c>createdump</c> (beside the
    /// runtime's own files) it is started here with its output captured, so that its progress lines do not land in the
    /// run's output (a dump requested through the diagnostics client starts the same tool with this process's stdout);
    /// elsewhere the diagnostics client asks the runtime for it.
    /// </summary>
    private static void WriteDump(string path)
    {
        string tool = Path.Combine(System.Runtime.InteropServices.RuntimeEnvironment.GetRuntimeDirectory(), OperatingSystem.IsWindows() ? "createdump.exe" : "createdump");
        if (!File.Exists(tool))
        {
            new DiagnosticsClient(Environment.ProcessId).WriteDump(DumpType.Normal, path);
            return;
        }

        var start = new System.Diagnostics.ProcessStartInfo(tool)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string arg in new[] { "--normal", "-f", path, Environment.ProcessId.ToString(System.Globalization.CultureInfo.InvariantCulture) })
        {
            start.ArgumentList.Add(arg);
        }

        using var process = System.Diagnostics.Process.Start(start) ?? throw new InvalidOperationException($"{tool} did not start");
        Task<string> stdout = process.StandardOutput.ReadToEndAsync();
        Task<string> stderr = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromMinutes(2)))
        {
            process.Kill();
            throw new IOException($"{tool} did not finish within 2 minutes");
        }

        if (process.ExitCode != 0 || !File.Exists(path))
        {
            string said = (stderr.Result + stdout.Result).Trim().Split('\n').LastOrDefault() ?? "";
            throw new IOException($"{tool} exited with {process.ExitCode}: {said}");
        }
    }
}
