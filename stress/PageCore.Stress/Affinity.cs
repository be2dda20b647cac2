using System.Runtime.InteropServices;

namespace PageCore.Stress;

/// <summary>Pins the calling thread to one CPU (<c>sched_setaffinity</c> through libc on Linux).</summary>
public static partial class Affinity
{
    /// <summary>Whether pinning works on this operating system.</summary>
    public static bool Supported => OperatingSystem.IsLinux();

    /// <summary>Pins the calling thread to <paramref name="cpu"/>; returns an error text, or null on success.</summary>
    public static unsafe string? PinCurrentThread(int cpu)
    {
        if (!Supported)
        {
            return $"--pin is not supported on {RuntimeInformation.OSDescription} (it uses Linux's sched_setaffinity); threads run unpinned.";
        }

        const int MaskBytes = 128; // 1024 CPUs
        byte* mask = stackalloc byte[MaskBytes];
        new Span<byte>(mask, MaskBytes).Clear();
        mask[cpu / 8] = (byte)(1 << (cpu % 8));
        return SchedSetAffinity(0, MaskBytes, mask) == 0 ? null : $"sched_setaffinity to CPU {cpu} failed (errno {Marshal.GetLastPInvokeError()}).";
    }

    [LibraryImport("libc", EntryPoint = "sched_setaffinity", SetLastError = true)]
    private static unsafe partial int SchedSetAffinity(int pid, nuint size, byte* mask);
}
