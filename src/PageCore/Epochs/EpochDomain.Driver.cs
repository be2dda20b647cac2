namespace PageCore;

/// <summary>
/// What drives deferred items when nobody calls <see cref="EpochDomain.Reclaim"/>: a one-shot timer, and the arenas'
/// allocation-failure path.
/// </summary>
public sealed partial class EpochDomain
{
    private const int MinDriverDelayMs = 1;
    private const int MaxDriverDelayMs = 256;

    /// <summary>Created on the first arming; its state is a weak reference, so an armed timer never keeps the domain alive.</summary>
    private Timer? _timer;

    /// <summary>1 while the timer is due (one arming at a time), else 0.</summary>
    private int _timerArmed;

    /// <summary>The next arming's delay: back to the minimum when a pass ran something, doubled when it ran nothing.</summary>
    private int _driverDelayMs = MinDriverDelayMs;

    /// <summary>Set by <see cref="Dispose"/>: the timer is gone and is not armed again.</summary>
    private int _driverStopped;

    /// <summary>The last arena this domain registered with (a cache: the arena ignores a second registration).</summary>
    private PageArena? _registeredArena;

    /// <summary>
    /// Registers the domain with <paramref name="arena"/>, so that an allocation about to fail there runs a pass of this
    /// domain first. The arena holds the domain weakly. Called by <see cref="DeferFree"/> and by
    /// <see cref="AddressSpace"/>, whose deferred callbacks free pages into its arena.
    /// </summary>
    internal void RegisterArena(PageArena arena)
    {
        if (_legacyReclaim || ReferenceEquals(Volatile.Read(ref _registeredArena), arena))
        {
            return;
        }

        arena.RegisterEpochDomain(this);
        Volatile.Write(ref _registeredArena, arena);
    }

    /// <summary>
    /// Arms the one-shot timer unless it is armed already (one volatile read on the deferral path when it is). The
    /// exchange on <see cref="_timerArmed"/> elects one armer; the timer's own tick clears it before its pass, so a
    /// deferral that saw it set is taken by that pass or re-arms it afterwards (see <see cref="OnTimer"/>).
    /// </summary>
    private void ArmDriver()
    {
        if (_legacyReclaim || Volatile.Read(ref _timerArmed) != 0 || Volatile.Read(ref _driverStopped) != 0
            || Interlocked.Exchange(ref _timerArmed, 1) != 0)
        {
            return;
        }

        try
        {
            (Volatile.Read(ref _timer) ?? CreateTimer()).Change(Volatile.Read(ref _driverDelayMs), Timeout.Infinite);
        }
        catch (ObjectDisposedException)
        {
            // Disposed with the domain meanwhile: nothing left to drive.
        }
    }

    private Timer CreateTimer()
    {
        Timer created;
        using (ExecutionContext.SuppressFlow())
        {
            // No captured context: the timer must not carry the first deferrer's AsyncLocals into every tick.
            created = new Timer(static s => OnTimer((WeakReference<EpochDomain>)s!), new WeakReference<EpochDomain>(this), Timeout.Infinite, Timeout.Infinite);
        }

        Timer? seen = Interlocked.CompareExchange(ref _timer, created, null);
        if (seen is not null)
        {
            created.Dispose();
            return seen;
        }

        if (Volatile.Read(ref _driverStopped) != 0)
        {
            created.Dispose();
        }

        return created;
    }

    /// <summary>
    /// A timer tick, on a thread-pool thread: clears the armed flag first, then tries a pass, which re-arms the timer at
    /// its end if items remain. If another pass holds the lock, that pass's own end re-arms it (it ends after the flag was
    /// cleared). A callback's exception is kept for the next explicit call.
    /// </summary>
    private static void OnTimer(WeakReference<EpochDomain> weak)
    {
        if (!weak.TryGetTarget(out EpochDomain? domain))
        {
            return;
        }

        // Back off first; a pass that runs something resets the delay before it re-arms the timer.
        int delay = Volatile.Read(ref domain._driverDelayMs);
        Volatile.Write(ref domain._driverDelayMs, Math.Min(2 * delay, MaxDriverDelayMs));
        Volatile.Write(ref domain._timerArmed, 0);
        domain.TryReclaim(keepFailure: true);
    }

    internal void StopDriver()
    {
        Volatile.Write(ref _driverStopped, 1);
        Interlocked.Exchange(ref _timer, null)?.Dispose();
    }

    /// <summary>
    /// The allocation-failure path of an arena this domain registered with: a pass if none is running, else a short
    /// bounded wait for the running one (it frees pages too), never a nested pass on a thread already running one.
    /// Bounded so that a callback waiting on a lock the allocating thread holds cannot deadlock it. A callback's exception
    /// is kept for the next explicit call.
    /// </summary>
    internal int ReclaimForAllocation()
    {
        if (_legacyReclaim || Monitor.IsEntered(_gate))
        {
            return 0;
        }

        return TryReclaim(keepFailure: true, waitMs: 50);
    }
}
