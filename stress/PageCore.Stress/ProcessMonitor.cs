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
                        $"{Name(e)} {e.PayloadByName("value")} (+{e.PayloadByName("rate")} in {refreshSeconds}s)",
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

    private static string Name(TraceEvent e)
    {
        string tags = (string?)e.PayloadByName("tags") ?? "";
        return tags.Length == 0 ? (string)e.PayloadByName("instrumentName") : $"{e.PayloadByName("instrumentName")}[{tags}]";
    }

    /// <summary>
    /// From now on, the first <see cref="PageBugException"/> created in this process writes a dump of it into
    /// <paramref name="directory"/> (through the diagnostics client, as <c>dotnet-dump</c> does) and prints its path.
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
                new DiagnosticsClient(Environment.ProcessId).WriteDump(DumpType.Normal, path);
                output.WriteLine($"dump-on-bug: {bug.Operation}: {bug.Reason}; dump written to {path}");
            }
            catch (Exception ex) when (ex is ServerErrorException or ServerNotAvailableException or IOException or UnsupportedCommandException)
            {
                output.WriteLine($"dump-on-bug: {bug.Operation}: {bug.Reason}; the dump failed: {ex.Message}");
            }
        };
    }
}
