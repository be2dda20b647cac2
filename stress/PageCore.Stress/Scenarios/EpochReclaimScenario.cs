using System.Runtime.InteropServices;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>epoch-reclaim</c> (rule 4's grace periods, <c>call_rcu</c>): anchor readers stay inside their epoch sections across
/// many reclaim passes, loading published objects (pages of a checked arena, stamped with a sequence number) and checking
/// every object they loaded again and again while still inside; deferrers replace objects and free the old ones through
/// <see cref="EpochDomain.DeferFree"/>; several reclaimers call <see cref="EpochDomain.Reclaim"/> at once, each held a
/// moment in the race window by the domain's hook. A pass whose bound saw no reader inside opens a window; an anchor that
/// enters meanwhile claims it, unlinks and defers the object it just loaded, and stays on that object for 60 ms while the
/// pass goes on to its items. A freed page is poisoned (checked arena), so a reader that still holds one sees its stamp
/// change.
/// </summary>
/// <remarks>
/// Legacy form: the historical reclaim (<c>PageCore.Legacy.LegacyEpochReclaim</c>): a bound computed once per pass and
/// used for items deferred after it, and a peeked item's check applied to whichever item the dequeue returns. Fixed form:
/// each pass reads the global epoch before it scans the readers, takes each item before checking it, and runs one pass
/// at a time. Both forms run with the same hook widening the window between the bound and the items.
/// </remarks>
public sealed class EpochReclaimScenario : IScenario
{
    private const int Slots = 64;
    private const int Deferrer = 0, Reclaimer = 1, Section = 2, Check = 3, Claimed = 4;

    [ThreadStatic]
    private static bool t_noLinger;

    /// <summary>
    /// The calling thread's passes do not linger in <see cref="Linger"/>: a worker whose deferrals start passes under
    /// its own locks (page-table locks), where lingering only convoys the other workers.
    /// </summary>
    internal static void MarkNoLinger() => t_noLinger = true;

    /// <inheritdoc />
    public string Name => "epoch-reclaim";

    /// <inheritdoc />
    public string KernelCounterpart => "call_rcu / rcu_do_batch vs long rcu_read_lock sections (a stale reclaim bound; peek then dequeue)";

    /// <inheritdoc />
    public string Rule => "rule 4";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "anchor readers inside across many reclaims vs deferrers and several reclaimers, poison on free";

    /// <inheritdoc />
    /// <remarks>A reclaimer's operation is a whole reclaim pass (each runs or holds back every item queued when it
    /// began), and every pass sleeps or yields at each window of the widening hook, and waits for the anchor that claimed
    /// a stale window (in both forms), so a reclaimer records tens of passes a second on 2 loaded cores (12-136 seen in
    /// 1 s runs beside two CPU hogs, 2 with four hogs and another test process): 5 is real work.</remarks>
    public long MinimumOperationsPerThread => 5;

    /// <summary>
    /// The domain a scenario uses: the historical reclaim when <paramref name="legacyReclaim"/>, else the library's
    /// default; both with the hook that widens a pass's windows (<see cref="Linger"/>), so that the fixed form faces the
    /// same interleavings that break the historical one.
    /// </summary>
    /// <param name="legacyReclaim">Whether the domain reclaims with the historical algorithm.</param>
    /// <param name="lingerWhenBounded">Whether a pass that saw a reader inside (a bound that cannot be stale in a
    /// harmful way) lingers too; false makes such passes quick, so that passes, and the scans among them that find no
    /// reader inside, come as often as possible.</param>
    internal static EpochDomain NewDomain(bool legacyReclaim, bool lingerWhenBounded = true)
    {
        EpochDomain domain = legacyReclaim ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        domain.WindowHook = window => Linger(domain, window, lingerWhenBounded);
        return domain;
    }

    private static volatile bool s_staleBoundOpen;

    /// <summary>
    /// True while a reclaim pass lingers after a bound taken with no reader inside: with the historical reclaim, every
    /// item deferred meanwhile will be run by that pass whoever reads it (the fixed reclaim holds those items back).
    /// Readers of the scenarios that use <see cref="NewDomain"/> act inside their sections then (<see
    /// cref="TryClaimStaleWindow"/>), so that one of them stands on a node when it is retired.
    /// </summary>
    internal static bool StaleBoundOpen => s_staleBoundOpen;

    private const int WindowFree = 0, WindowClaimed = 1, WindowUsed = 2;

    /// <summary>Who uses the open window: free, claimed by one reader (<see cref="TryClaimStaleWindow"/>), used.</summary>
    private static int s_window;

    /// <summary>
    /// A reader inside its section claims the open window (at most one per window): the lingering pass then waits (a
    /// bounded time) until the reader has retired what it stands on (<see cref="StaleWindowUsed"/>), and only then runs
    /// its items, so the interleaving that breaks the historical reclaim happens whenever a window opens, not only when
    /// the scheduler happens to allow it. False when no window is open or another reader claimed it.
    /// </summary>
    internal static bool TryClaimStaleWindow() =>
        s_staleBoundOpen && Interlocked.CompareExchange(ref s_window, WindowClaimed, WindowFree) == WindowFree;

    /// <summary>The claiming reader has retired what it stands on: the lingering pass may go on and run it.</summary>
    internal static void StaleWindowUsed() => Volatile.Write(ref s_window, WindowUsed);

    /// <summary>
    /// The hook of <see cref="NewDomain"/>: every pass lingers after its bound (a preemption at the worst point), so the
    /// readers that enter meanwhile are the ones a stale bound ignores; after a bound that saw no reader inside it opens
    /// the window a reader may claim (<see cref="TryClaimStaleWindow"/>).
    /// </summary>
    internal static void Linger(EpochDomain domain, ReclaimWindow window, bool lingerWhenBounded)
    {
        if (t_noLinger)
        {
            return; // a thread whose passes may run under its own locks (see MarkNoLinger)
        }

        if (window == ReclaimWindow.AfterBound)
        {
            // The pass's bound is stale from here on. It is unbounded (the dangerous case) when it saw no reader inside;
            // this check is made just after the pass's own scan, so it is a good guess of what the pass saw.
            if (domain.OldestAnnounced() == long.MaxValue)
            {
                OpenStaleWindow();
            }
            else if (lingerWhenBounded)
            {
                Thread.Sleep(1);
            }
        }
        else if (SeededChance.Next(8) == 0)
        {
            Thread.Yield(); // now and then between a peek and its dequeue, where two passes can swap items
        }
    }

    /// <summary>
    /// Called by a pass whose bound saw no reader inside, between its bound and its items: opens the window for 3 ms,
    /// then, if a reader claimed it (<see cref="TryClaimStaleWindow"/>), waits until that reader has retired what it
    /// stands on (at most 50 ms, a reader descheduled by other load), so that this pass's items include it.
    /// </summary>
    private static void OpenStaleWindow()
    {
        Volatile.Write(ref s_window, WindowFree);
        s_staleBoundOpen = true;
        Thread.Sleep(3);
        s_staleBoundOpen = false;
        long until = Environment.TickCount64 + 50;
        while (Volatile.Read(ref s_window) == WindowClaimed && Environment.TickCount64 < until)
        {
            Thread.Sleep(1);
        }
    }

    /// <summary>
    /// The hook: the reclaiming thread lingers between its bound and its items (a preemption, made likely), so readers
    /// enter and deferrers defer meanwhile.
    /// </summary>
    internal static void Widen(ReclaimWindow window)
    {
        if (SeededChance.Next(2) == 0)
        {
            Thread.Sleep(1); // a preemption: readers enter, load, and objects are unlinked meanwhile
        }
        else
        {
            Thread.Yield();
        }
    }

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 16384), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("replace+defer", [], [ArenaCounter.Reclaims]), new OpKind("reclaim", [], [], TakesLock: true),
            new OpKind("anchor section", [], []), new OpKind("object check", [], []), new OpKind("unlinked inside window", [], []));
        EpochDomain domain = ctx.Legacy || ctx.LegacyReclaim ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        // Both forms face the same adversary: every pass is held a moment in its windows, and one whose bound saw no
        // reader inside opens the window an anchor claims (see Anchor).
        domain.WindowHook = window =>
        {
            if (window == ReclaimWindow.AfterBound && domain.OldestAnnounced() == long.MaxValue)
            {
                OpenStaleWindow();
            }
            else
            {
                Widen(window);
            }
        };
        long[] published = new long[Slots * 16]; // one slot per 128 bytes
        long sequence = 0;
        for (int i = 0; i < Slots; i++)
        {
            published[i * 16] = TryNewObject(arena, ref sequence, out Pfn p) ? p.Value : throw new InvalidOperationException("the arena cannot hold the scenario's objects");
        }

        int deferrers = Math.Max(1, ctx.Threads / 2);
        int reclaimers = Math.Max(2, ctx.Threads - deferrers);
        var workers = Enumerable.Range(0, deferrers)
            .Select(i => ($"deferrer-{i}", (Action<Recorder>)(rec => Defer(ctx, arena, domain, published, rec, i, ref sequence))))
            .Concat(Enumerable.Range(0, reclaimers).Select(i => ($"reclaimer-{i}", (Action<Recorder>)(rec => ReclaimLoop(ctx, domain, rec)))))
            .ToList();
        var anchors = Enumerable.Range(0, Math.Max(2, ctx.Threads / 2))
            .Select(i => ($"anchor-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Anchor(ctx, arena, domain, published, rec, ctx.Seed ^ (0x3C6EF372 * (i + 1)), ref sequence, stop))))
            .ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, anchors);
        domain.WindowHook = null;
        domain.Barrier();
        for (int i = 0; i < Slots; i++)
        {
            arena.FreePages(new Pfn((uint)published[i * 16]), 0);
        }

        domain.Dispose();
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    /// <summary>A fresh object: a page whose every word holds its stamp (sequence number above, PFN below).</summary>
    private static bool TryNewObject(PageArena arena, ref long sequence, out Pfn p)
    {
        if (!arena.TryAllocPages(0, out p))
        {
            return false;
        }

        long stamp = (Interlocked.Increment(ref sequence) << 32) | p.Value;
        MemoryMarshal.Cast<byte, long>(arena.GetSpan(p)).Fill(stamp); // plain stores, published by the exchange
        return true;
    }

    private static void Defer(StressContext ctx, PageArena arena, EpochDomain domain, long[] published, Recorder rec, int id, ref long sequence)
    {
        var rng = new Random(ctx.Seed + id);
        while (DateTime.UtcNow < ctx.Deadline)
        {
            long t = rec.Begin();
            if (!TryNewObject(arena, ref sequence, out Pfn fresh))
            {
                // The arena's failure path reclaimed what it could; readers hold the rest for now.
                Thread.Yield();
                continue;
            }

            long old = Interlocked.Exchange(ref published[rng.Next(Slots) * 16], fresh.Value); // unlink (full fence)
            domain.DeferFree(arena, new Pfn((uint)old), 0);
            rec.End(Deferrer, t);
        }
    }

    private static void ReclaimLoop(StressContext ctx, EpochDomain domain, Recorder rec)
    {
        while (DateTime.UtcNow < ctx.Deadline)
        {
            long t = rec.Begin();
            domain.Reclaim();
            rec.End(Reclaimer, t);
        }
    }

    /// <summary>
    /// Reads object <paramref name="p"/> over <paramref name="ms"/> milliseconds (a reader that stays on it, inside its
    /// section, while the lingering pass runs its items): false as soon as a word is not the stamp.
    /// </summary>
    private static bool StillIntact(PageArena arena, Pfn p, long stamp, int ms)
    {
        long until = Environment.TickCount64 + ms;
        do
        {
            foreach (long word in MemoryMarshal.Cast<byte, long>(arena.GetSpan(p)))
            {
                if (word != stamp)
                {
                    return false;
                }
            }

            Thread.Sleep(1);
        }
        while (Environment.TickCount64 < until);
        return true;
    }

    /// <summary>
    /// Unlinks <paramref name="p"/> (if it is still published: a deferrer may have replaced it already) by publishing
    /// <paramref name="spare"/> in its slot, and defers its free; called by an anchor inside its section. The spare was
    /// allocated before the section, so nothing here can wait on an allocation (whose failure path reclaims the domain
    /// the lingering pass holds). True when the spare was used.
    /// </summary>
    private static bool UnlinkInsideSection(PageArena arena, EpochDomain domain, long[] published, Pfn p, Pfn spare)
    {
        for (int i = 0; i < Slots; i++)
        {
            if (Volatile.Read(ref published[i * 16]) == p.Value)
            {
                if (Interlocked.CompareExchange(ref published[i * 16], spare.Value, p.Value) != p.Value) // unlink (full fence)
                {
                    return false; // replaced meanwhile
                }

                domain.DeferFree(arena, p, 0);
                return true;
            }
        }

        return false;
    }

    /// <summary>
    /// An anchor: inside a section for a random number of rounds (many reclaim passes), loading objects and checking
    /// every object it loaded in this section on every round; then outside briefly, so that passes also meet moments with
    /// no reader inside.
    /// </summary>
    private static void Anchor(StressContext ctx, PageArena arena, EpochDomain domain, long[] published, Recorder rec, int seed, ref long sequence, CancellationToken stop)
    {
        var rng = new Random(seed);
        var held = new List<(Pfn Page, long Stamp)>();
        Pfn? spare = null; // the object an anchor publishes when it unlinks one inside a stale window
        while (!stop.IsCancellationRequested)
        {
            if (spare is null && TryNewObject(arena, ref sequence, out Pfn fresh))
            {
                spare = fresh;
            }

            long t = rec.Begin();
            using (domain.Enter())
            {
                held.Clear();
                int rounds = 1 + rng.Next(64);
                for (int round = 0; round < rounds && !stop.IsCancellationRequested; round++)
                {
                    var p = new Pfn((uint)Volatile.Read(ref published[rng.Next(Slots) * 16]));
                    long stamp = MemoryMarshal.Cast<byte, long>(arena.GetSpan(p))[0];
                    if ((uint)stamp != p.Value)
                    {
                        ctx.Violation($"an anchor read {stamp:x16} from object {p} it had just loaded inside its section: the object was freed (poisoned) while reachable", p);
                        break;
                    }

                    held.Add((p, stamp));
                    if (spare is { } replacement && TryClaimStaleWindow())
                    {
                        // A pass that saw no reader inside is lingering: unlink the object this anchor just loaded and
                        // defer its free from inside the section (as a reader may: call_rcu), then go on reading it. The
                        // historical pass runs that free now; the fixed one holds it until this section ends.
                        if (UnlinkInsideSection(arena, domain, published, p, replacement))
                        {
                            spare = null;
                            rec.Count(Claimed);
                        }

                        StaleWindowUsed();
                        if (!StillIntact(arena, p, stamp, 60))
                        {
                            ctx.Violation($"an anchor read a changed word from object {p} (stamped {stamp:x16}) that it loaded, unlinked and deferred inside its section, while still inside: the free ran before the section ended", p);
                            break;
                        }
                    }
                    foreach ((Pfn page, long expected) in held)
                    {
                        Span<long> words = MemoryMarshal.Cast<byte, long>(arena.GetSpan(page));
                        int k = rng.Next(words.Length);
                        if (words[k] != expected)
                        {
                            ctx.Violation($"an anchor read {words[k]:x16} (word {k}) from object {page} it loaded earlier in the same section, stamped {expected:x16}: the object was freed while a reader that loaded it was still inside", page);
                            round = rounds; // leave the section
                            break;
                        }

                        rec.Count(Check);
                    }

                    Thread.SpinWait(rng.Next(256));
                }
            }

            rec.End(Section, t);
            if (rng.Next(4) == 0)
            {
                Thread.Yield(); // outside a while: passes also meet moments with no reader inside
            }
            else
            {
                Thread.SpinWait(rng.Next(2048));
            }
        }

        if (spare is { } unused)
        {
            arena.FreePages(unused, 0); // never published
        }
    }
}
