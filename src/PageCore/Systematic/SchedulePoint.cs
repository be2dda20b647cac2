using System.Runtime.CompilerServices;

namespace PageCore.Systematic;

/// <summary>What a thread is about to do at a schedule point.</summary>
internal enum PointKind
{
    /// <summary>A load another thread may race with (a volatile or plain shared read).</summary>
    Read,

    /// <summary>A store another thread may race with.</summary>
    Write,

    /// <summary>An atomic read-modify-write (CAS, exchange, add).</summary>
    ReadModifyWrite,

    /// <summary>A full fence.</summary>
    Fence,

    /// <summary>One turn of a spin-wait: the thread waits for another to act, so the scheduler runs someone else.</summary>
    Spin,

    /// <summary>A lock acquisition.</summary>
    LockEnter,

    /// <summary>A lock release.</summary>
    LockExit,
}

/// <summary>
/// The schedule points of systematic concurrency testing: every shared-memory operation of code under test announces
/// itself here first. In a normal process <see cref="Enabled"/> is false, a <c>static readonly</c> field the JIT reads as
/// a constant once the class is initialised, so each call folds to nothing at Tier1 and the operation that follows is
/// the only instruction left. In a process that switched it on (the <c>PageCore.Systematic.Enabled</c> runtime switch,
/// or <c>PAGECORE_SYSTEMATIC=1</c>, read once when this class is first used), a thread that runs inside a
/// <see cref="ControlledScheduler"/> run stops at every point and the scheduler chooses who runs next; threads outside
/// such a run pay one thread-static read per point and run on.
/// </summary>
internal static class SchedulePoint
{
    /// <summary>Whether schedule points are live in this process (fixed for the process's lifetime).</summary>
    internal static readonly bool Enabled =
        (AppContext.TryGetSwitch("PageCore.Systematic.Enabled", out bool on) && on)
        || Environment.GetEnvironmentVariable("PAGECORE_SYSTEMATIC") == "1";

    /// <summary>
    /// A schedule point: in a controlled run, the scheduler may switch to another logical thread here, before the
    /// operation the caller is about to make. <paramref name="member"/> and <paramref name="line"/> name the caller's
    /// source line in the trace of a violation.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void At(PointKind kind, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        if (Enabled)
        {
            ControlledScheduler.Point(kind, member, line);
        }
    }
}
