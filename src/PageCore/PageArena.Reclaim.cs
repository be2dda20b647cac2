using System.Runtime.CompilerServices;

namespace PageCore;

/// <summary>
/// The allocation-failure path (<c>__alloc_pages_slowpath</c>'s direct reclaim and <c>drain_all_pages</c>): before an
/// allocation gives up, the per-CPU caches are drained (waiting for a drain already in progress, never skipping it) and
/// the epoch domains that defer frees into this arena run a reclaim pass.
/// </summary>
public sealed unsafe partial class PageArena
{
    /// <summary>Set while this thread runs the epoch domains' passes for an allocation: a callback's own failed allocation must not start another.</summary>
    [ThreadStatic]
    private static bool t_reclaimingEpochs;

    /// <summary>The epoch domains registered by <see cref="EpochDomain.DeferFree"/> or an address space, weakly held; copy on write.</summary>
    private WeakReference<EpochDomain>[] _epochDomains = [];

    /// <summary>
    /// Registers <paramref name="domain"/> (once; dead entries are dropped on the way): an allocation about to fail runs
    /// a pass of it. Weak: a domain nobody uses any more is not kept alive by the arena.
    /// </summary>
    internal void RegisterEpochDomain(EpochDomain domain)
    {
        while (true)
        {
            WeakReference<EpochDomain>[] current = Volatile.Read(ref _epochDomains);
            var next = new List<WeakReference<EpochDomain>>(current.Length + 1);
            foreach (WeakReference<EpochDomain> w in current)
            {
                if (w.TryGetTarget(out EpochDomain? d))
                {
                    if (ReferenceEquals(d, domain))
                    {
                        return;
                    }

                    next.Add(w);
                }
            }

            next.Add(new WeakReference<EpochDomain>(domain));
            if (Interlocked.CompareExchange(ref _epochDomains, [.. next], current) == current)
            {
                return;
            }
        }
    }

    /// <summary>Drains and retries of one reclaim, at most: each drain returns what other threads' refills carried off since the last.</summary>
    private const int ReclaimRounds = 4;

    /// <summary>
    /// The reclaim before an allocation fails: drain the caches, waiting for another drainer rather than skipping (its
    /// pages may be the ones this allocation needs), and retry; after the first drain, a pass of every registered
    /// epoch domain, whose frees land in this thread's magazine or the shared allocator. While it runs, other threads'
    /// refills take one block at a time (<see cref="PerCpu.PageCaches.EnterPressure"/>); a batch refilled between a
    /// drain and its retry is returned by the next drain, for up to <see cref="ReclaimRounds"/> rounds while the caches
    /// still hold pages. Like the kernel's retry after <c>drain_all_pages</c>, this can still fail while other threads
    /// allocate the last pages themselves: that is exhaustion, not pages stranded in a cache.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool ReclaimAndRetry(int order, out uint p)
    {
        PerCpu.PageCaches? caches = _caches;
        if (caches is null)
        {
            ReclaimEpochDomains();
            return _core.TryAlloc(order, out p);
        }

        _counters?.Add(ArenaCounter.Reclaims);
        caches.EnterPressure();
        try
        {
            for (int round = 0; round < ReclaimRounds; round++)
            {
                caches.Drain(wait: true);
                if (_core.TryAlloc(order, out p))
                {
                    return true;
                }

                int ran = round == 0 ? ReclaimEpochDomains() : 0;
                if (ran == 0 && caches.CachedPages == 0)
                {
                    break; // nothing came back and nothing sits in a cache: exhausted
                }
            }
        }
        finally
        {
            caches.ExitPressure();
        }

        p = 0;
        return false;
    }

    /// <summary>A pass of every registered epoch domain (not nested in one this thread runs already); how many items ran.</summary>
    private int ReclaimEpochDomains()
    {
        WeakReference<EpochDomain>[] domains = Volatile.Read(ref _epochDomains);
        if (domains.Length == 0 || t_reclaimingEpochs)
        {
            return 0;
        }

        int ran = 0;
        t_reclaimingEpochs = true;
        try
        {
            foreach (WeakReference<EpochDomain> w in domains)
            {
                if (w.TryGetTarget(out EpochDomain? d))
                {
                    ran += d.ReclaimForAllocation();
                }
            }
        }
        finally
        {
            t_reclaimingEpochs = false;
        }

        return ran;
    }
}
