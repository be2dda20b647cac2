using System.Runtime.CompilerServices;

namespace PageCore.Systematic;

/// <summary>
/// The shared-memory operations of code under systematic test, each a <see cref="SchedulePoint"/> followed by the
/// operation itself: <see cref="Volatile"/> loads and stores, <see cref="Interlocked"/> operations, spin-waits and
/// locks. In a normal process every method inlines to the bare operation (the point folds away; the caller-information
/// arguments are constants the JIT drops with it), so the memory-ordering argument of each call site is the one of the
/// operation it names: <c>Read</c> = acquire, <c>Write</c> = release, the read-modify-writes and
/// <see cref="MemoryBarrier"/> = full fence.
/// </summary>
internal static class Atomic
{
    /// <summary><see cref="Volatile.Read(ref readonly int)"/> (acquire), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Read(ref int location, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Read, member, line);
        return Volatile.Read(ref location);
    }

    /// <summary><see cref="Volatile.Read(ref readonly long)"/> (acquire), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Read(ref long location, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Read, member, line);
        return Volatile.Read(ref location);
    }

    /// <summary><see cref="Volatile.Read(ref readonly uint)"/> (acquire), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static uint Read(ref uint location, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Read, member, line);
        return Volatile.Read(ref location);
    }

    /// <summary><see cref="Volatile.Read(ref readonly ulong)"/> (acquire), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Read(ref ulong location, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Read, member, line);
        return Volatile.Read(ref location);
    }

    /// <summary><see cref="Volatile.Read{T}(ref readonly T)"/> of a reference (acquire), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T? Read<T>(ref T? location, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
        where T : class
    {
        SchedulePoint.At(PointKind.Read, member, line);
        return Volatile.Read(ref location);
    }

    /// <summary><see cref="Volatile.Write(ref int, int)"/> (release), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(ref int location, int value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Write, member, line);
        Volatile.Write(ref location, value);
    }

    /// <summary><see cref="Volatile.Write(ref long, long)"/> (release), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write(ref long location, long value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Write, member, line);
        Volatile.Write(ref location, value);
    }

    /// <summary><see cref="Volatile.Write{T}(ref T, T)"/> of a reference (release), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Write<T>(ref T? location, T? value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
        where T : class
    {
        SchedulePoint.At(PointKind.Write, member, line);
        Volatile.Write(ref location, value);
    }

    /// <summary><see cref="Interlocked.CompareExchange(ref int, int, int)"/> (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int CompareExchange(ref int location, int value, int comparand, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.CompareExchange(ref location, value, comparand);
    }

    /// <summary><see cref="Interlocked.CompareExchange(ref long, long, long)"/> (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long CompareExchange(ref long location, long value, long comparand, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.CompareExchange(ref location, value, comparand);
    }

    /// <summary><see cref="Interlocked.CompareExchange(ref ulong, ulong, ulong)"/> (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong CompareExchange(ref ulong location, ulong value, ulong comparand, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.CompareExchange(ref location, value, comparand);
    }

    /// <summary><see cref="Interlocked.CompareExchange{T}(ref T, T, T)"/> of a reference (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static T? CompareExchange<T>(ref T? location, T? value, T? comparand, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
        where T : class
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.CompareExchange(ref location, value, comparand);
    }

    /// <summary><see cref="Interlocked.Exchange(ref int, int)"/> (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Exchange(ref int location, int value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.Exchange(ref location, value);
    }

    /// <summary><see cref="Interlocked.Add(ref int, int)"/> (full fence), after a schedule point; returns the new value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int Add(ref int location, int value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.Add(ref location, value);
    }

    /// <summary><see cref="Interlocked.Add(ref long, long)"/> (full fence), after a schedule point; returns the new value.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static long Add(ref long location, long value, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.ReadModifyWrite, member, line);
        return Interlocked.Add(ref location, value);
    }

    /// <summary><see cref="Interlocked.MemoryBarrier"/> (full fence), after a schedule point.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void MemoryBarrier([CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Fence, member, line);
        Interlocked.MemoryBarrier();
    }

    /// <summary>
    /// One turn of a spin-wait (<see cref="SpinWait.SpinOnce()"/>): a point at which, in a controlled run, the scheduler
    /// runs another thread (the spinner waits for someone else to act), and where the physical spin is skipped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SpinOnce(ref SpinWait spinner, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        SchedulePoint.At(PointKind.Spin, member, line);
        if (!SchedulePoint.Enabled || !ControlledScheduler.InRun)
        {
            spinner.SpinOnce();
        }
    }

    /// <summary>
    /// <see cref="Monitor.Enter(object)"/>, after a schedule point. In a controlled run the scheduler keeps the lock's
    /// owner: a thread that finds it held is blocked (not chosen) until the owner leaves, and a run in which every live
    /// thread is blocked is reported as a deadlock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Enter(object gate, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        if (SchedulePoint.Enabled && ControlledScheduler.InRun)
        {
            ControlledScheduler.EnterLock(gate, member, line);
            return;
        }

        Monitor.Enter(gate);
    }

    /// <summary><see cref="Monitor.Exit(object)"/>, then a schedule point (see <see cref="Enter"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Exit(object gate, [CallerMemberName] string member = "", [CallerLineNumber] int line = 0)
    {
        if (SchedulePoint.Enabled && ControlledScheduler.InRun)
        {
            ControlledScheduler.ExitLock(gate, member, line);
            return;
        }

        Monitor.Exit(gate);
    }
}
