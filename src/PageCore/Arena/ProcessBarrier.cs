using System.Runtime.InteropServices;

namespace PageCore;

/// <summary>What <see cref="Interlocked.MemoryBarrierProcessWide"/> is, as far as this library can tell.</summary>
public enum ProcessBarrierKind
{
    /// <summary>
    /// Not known to run a barrier on every CPU: Linux without <c>MEMBARRIER_CMD_PRIVATE_EXPEDITED</c> (a kernel before
    /// 4.14, a seccomp filter, a sandbox that refuses it), where the runtime falls back to an <c>mprotect</c> of a
    /// locked page. That is a TLB shootdown, and a shootdown need not interrupt the other CPUs: arm64 broadcasts a
    /// <c>TLBI</c> that runs no barrier there, and recent x64 kernels on AMD parts with <c>INVLPGB</c> do the same
    /// for processes that run on several CPUs. Also every OS not listed below, Android (the runtime does not call
    /// <c>membarrier</c> before API level 29) and an x64 process emulated on an arm64 Mac.
    /// </summary>
    Unverified,

    /// <summary>
    /// Linux, <c>membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)</c>: the kernel interrupts every CPU that runs a thread of
    /// the process and runs <c>smp_mb()</c> there. The runtime uses it when <c>MEMBARRIER_CMD_QUERY</c> lists it and
    /// <c>MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED</c> succeeds, which is what the detection checks.
    /// </summary>
    Membarrier,

    /// <summary>Windows, <c>FlushProcessWriteBuffers</c>: an inter-processor interrupt to every CPU that runs a thread of the process.</summary>
    FlushProcessWriteBuffers,

    /// <summary>
    /// macOS and iOS (native, not emulated): the runtime reads every thread's registers
    /// (<c>thread_get_register_pointer_values</c>), which stops each running thread, a full barrier on its CPU.
    /// </summary>
    ThreadRegisterSnapshot,
}

/// <summary>
/// The process-wide barrier the asymmetric hand-overs lean on (<see cref="HandOverForm"/>), detected once per process
/// when the first arena or epoch domain is created, and the hand-over form the library uses because of it.
/// </summary>
/// <remarks>
/// <para>The runtime implements <see cref="Interlocked.MemoryBarrierProcessWide"/> with <c>FlushProcessWriteBuffers</c>
/// on Windows, with a snapshot of every thread's registers on Apple platforms, and on Linux with
/// <c>membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)</c> when, at startup, <c>MEMBARRIER_CMD_QUERY</c> lists that command
/// and <c>MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED</c> returns 0; otherwise with two <c>mprotect</c> calls on a locked
/// page (dotnet/runtime <c>src/native/minipal/memorybarrierprocesswide.c</c>, formerly the PAL's
/// <c>FlushProcessWriteBuffers</c>). This class makes the same two calls (registering again is harmless: the
/// registration is a flag on the process's address space) and trusts the barrier only when both succeed; a failed
/// call, a missing <c>syscall</c> symbol, or an architecture whose syscall number it does not know means "not
/// available". The runtime made the same query at startup, so a seccomp filter that kills the process on
/// <c>membarrier</c> would have killed it then.</para>
/// <para>Where the barrier is not trusted the hand-overs take their <see cref="HandOverForm.Symmetric"/> form, on every
/// architecture: x64's store buffer reorders the owner's store and load exactly as arm64 does, and an <c>mprotect</c>
/// on a kernel with broadcast TLB invalidation interrupts no other CPU there either.</para>
/// </remarks>
public static partial class ProcessBarrier
{
    // include/uapi/linux/membarrier.h
    private const int MembarrierCmdQuery = 0;
    private const int MembarrierCmdPrivateExpedited = 1 << 3;
    private const int MembarrierCmdRegisterPrivateExpedited = 1 << 4;

    private static readonly ProcessBarrierKind s_kind = Detect();

    /// <summary>What <see cref="Interlocked.MemoryBarrierProcessWide"/> is in this process (detected once, then cached).</summary>
    public static ProcessBarrierKind Kind => s_kind;

    /// <summary>
    /// The form new arenas and asymmetric epoch domains use: <see cref="HandOverForm.Asymmetric"/> when
    /// <see cref="Kind"/> is a barrier on every CPU, else <see cref="HandOverForm.Symmetric"/>.
    /// </summary>
    public static HandOverForm HandOver => s_kind == ProcessBarrierKind.Unverified ? HandOverForm.Symmetric : HandOverForm.Asymmetric;

    /// <summary>One line for reports: the form and the reason, e.g. "asymmetric (membarrier private expedited)".</summary>
    public static string Description => s_kind switch
    {
        ProcessBarrierKind.Membarrier => "asymmetric (membarrier private expedited)",
        ProcessBarrierKind.FlushProcessWriteBuffers => "asymmetric (FlushProcessWriteBuffers)",
        ProcessBarrierKind.ThreadRegisterSnapshot => "asymmetric (thread register snapshot)",
        _ => "symmetric (no process-wide barrier known to run on every CPU)",
    };

    /// <summary>The form an arena or an asymmetric domain uses: the process's, unless a test forces the symmetric one.</summary>
    internal static HandOverForm Resolve(bool forceSymmetric) => forceSymmetric ? HandOverForm.Symmetric : HandOver;

    /// <summary>
    /// Asks the kernel, as the runtime does, whether <c>MEMBARRIER_CMD_PRIVATE_EXPEDITED</c> works in this process:
    /// true when <c>MEMBARRIER_CMD_QUERY</c> lists it and <c>MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED</c> returns 0;
    /// false on any failure (an error return such as ENOSYS or EPERM, no <c>syscall</c> in libc, an unknown syscall
    /// number). Null off Linux. Internal so that tests can compare it with the kernel's answer read another way.
    /// </summary>
    internal static bool? QueryMembarrier()
    {
        if (!OperatingSystem.IsLinux() || OperatingSystem.IsAndroid())
        {
            return null;
        }

        if (MembarrierSyscallNumber(RuntimeInformation.ProcessArchitecture) is not { } number)
        {
            return false;
        }

        try
        {
            nint mask = Syscall(number, MembarrierCmdQuery, 0, 0);
            return mask >= 0
                && (mask & MembarrierCmdPrivateExpedited) != 0
                && Syscall(number, MembarrierCmdRegisterPrivateExpedited, 0, 0) == 0;
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or MarshalDirectiveException)
        {
            return false;
        }
    }

    /// <summary>
    /// <c>__NR_membarrier</c> for the architectures whose number was checked against the kernel's tables: x86-64's
    /// <c>syscall_64.tbl</c> (324), the generic table arm64, riscv64 and loongarch64 use (283), arm's (389). Null for
    /// the rest, which then count as "not available".
    /// </summary>
    internal static nint? MembarrierSyscallNumber(Architecture architecture) => architecture switch
    {
        Architecture.X64 => 324,
        Architecture.Arm64 or Architecture.RiscV64 or Architecture.LoongArch64 => 283,
        Architecture.Arm => 389,
        _ => null,
    };

    private static ProcessBarrierKind Detect()
    {
        if (OperatingSystem.IsWindows())
        {
            return ProcessBarrierKind.FlushProcessWriteBuffers;
        }

        if (OperatingSystem.IsMacOS() || OperatingSystem.IsMacCatalyst() || OperatingSystem.IsIOS() || OperatingSystem.IsTvOS())
        {
            // An x64 process under Rosetta: recent runtimes replace the register snapshot there by a timed wait.
            return RuntimeInformation.ProcessArchitecture == RuntimeInformation.OSArchitecture
                ? ProcessBarrierKind.ThreadRegisterSnapshot
                : ProcessBarrierKind.Unverified;
        }

        return QueryMembarrier() == true ? ProcessBarrierKind.Membarrier : ProcessBarrierKind.Unverified;
    }

    [LibraryImport("libc", EntryPoint = "syscall", SetLastError = true)]
    private static partial nint Syscall(nint number, nint command, nint flags, nint cpuId);
}
