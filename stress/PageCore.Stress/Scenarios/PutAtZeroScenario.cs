using PageCore.Descriptors;
using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>put-at-zero</c> (misuse writes nothing): owners freeze their pages (<c>page_ref_freeze</c>), work on them and
/// unfreeze them, while stale holders put at zero on those frozen pages (a use after the last reference, the misuse a
/// bug report exists for). A refused put must leave the counter exactly as it was at every instant, so the owner's
/// unfreeze is never refused and the count after it is exactly what the owner published, less the puts that did land
/// on a live count (those are counted by the stale holder and repaired by the owner).
/// </summary>
/// <remarks>
/// <para>The check is exact because owner and stale holder agree per round: the holder puts only while the owner's round
/// is open, reports how many of its puts were accepted (they found the count already unfrozen, K &gt; 1, and took one
/// reference each), and the owner then expects K minus that number. An observer thread reads every owner's count in a
/// loop: a negative count, even for an instant, is a refused put that wrote.</para>
/// <para>Legacy form (<c>--legacy</c>): <see cref="LegacyPutAtZero"/> decrements to -1, then adds the reference back. An
/// unfreeze between the two either is refused ("not frozen", refcount -1) or publishes K, and the undo then makes it K+1
/// while the stale holder's put was reported refused: the owner's count check fails. The same window on a free page
/// makes a correct allocation's <c>check_new_page</c> read -1 ("bad page state"); that variant is not driven here
/// because a stale put that lands after the allocation takes the new owner's only reference in any form, so it cannot
/// be told from a library fault (the tests drive the window with an observer instead).</para>
/// </remarks>
public sealed class PutAtZeroScenario : IScenario, ISystematicScenario
{
    private const int References = 64;

    /// <inheritdoc />
    public string Name => "put-at-zero";

    /// <inheritdoc />
    public string KernelCounterpart => "put_page_testzero on a frozen page vs page_ref_unfreeze (VM_BUG_ON_PAGE)";

    /// <inheritdoc />
    public string Rule => "misuse writes nothing";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "stale puts at zero on frozen pages while their owners unfreeze: refusals must not write";

    /// <inheritdoc />
    /// <remarks>An owner's operation is a whole round (a four-way handshake with its stale holder, who puts at zero many
    /// times in each), so an owner records far fewer operations than other scenarios' workers: 10 rounds is real work.</remarks>
    public long MinimumOperationsPerThread => 10;

    /// <inheritdoc />
    int ISystematicScenario.ProgramSteps => 16;

    /// <summary>
    /// One round in its smallest form: the owner holds two references, freezes them, says so, unfreezes them and, once
    /// the stale holder is done, puts what is left; the stale holder waits for the freeze and puts once (a put at zero
    /// while the page is frozen, refused; or, after the unfreeze, a put that lands on the live count, accepted and
    /// reported). Legacy: the refused put decrements to -1 and adds the reference back; an unfreeze between the two
    /// leaves the page one reference too high, and it never frees.
    /// </summary>
    Systematic.SystematicProgram ISystematicScenario.Program(bool legacy)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024, PerCpuCaches = false });
        Pfn page = arena.AllocPages(0);
        arena.GetPages(page, 1); // the owner's two references
        int[] flags = new int[3]; // frozen, stale done, stale put accepted
        void Owner()
        {
            if (!arena.FreezeRefs(page, 2))
            {
                throw new InvalidOperationException("the owner could not freeze its own two references");
            }

            Systematic.Atomic.Write(ref flags[0], 1);
            arena.UnfreezeRefs(page, 2);
            var spinner = default(SpinWait);
            while (Systematic.Atomic.Read(ref flags[1]) == 0)
            {
                Systematic.Atomic.SpinOnce(ref spinner);
            }

            for (int i = Systematic.Atomic.Read(ref flags[2]); i < 2; i++)
            {
                arena.PutPage(page); // the last one frees the page
            }
        }

        void Stale()
        {
            var spinner = default(SpinWait);
            while (Systematic.Atomic.Read(ref flags[0]) == 0)
            {
                Systematic.Atomic.SpinOnce(ref spinner);
            }

            try
            {
                if (legacy)
                {
                    LegacyPutAtZero.PutPage(arena, page);
                }
                else
                {
                    arena.PutPage(page);
                }

                Systematic.Atomic.Write(ref flags[2], 1); // it landed on the live count after the unfreeze: the owner puts one less
            }
            catch (PageBugException)
            {
                // refused: the page was frozen, the misuse the report exists for
            }

            Systematic.Atomic.Write(ref flags[1], 1);
        }

        string? Check()
        {
            int count = arena.RefCount(page);
            bool allocated = (arena.DescriptorOf(page).Flags & (uint)Descriptors.PageFlags.AllocatedHead) != 0;
            return count == 0 && !allocated ? null : $"the page is left with refcount {count}{(allocated ? ", still allocated" : "")}: a refused put wrote the counter";
        }

        return new Systematic.SystematicProgram([("owner", Owner), ("stale", Stale)], Check, () => arena.Dispose(force: true));
    }

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 1L << 14) });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("freeze+unfreeze round", [], []), new OpKind("stale put (refused)", [], []),
            new OpKind("stale put (on a live count)", [], []), new OpKind("observation", [], []));
        int pairs = Math.Max(1, (ctx.Threads - 1) / 2);
        var rounds = new Round[pairs];
        for (int i = 0; i < pairs; i++)
        {
            rounds[i] = new Round { Number = i };
        }

        var workers = new List<(string, Action<Recorder>)>();
        for (int i = 0; i < pairs; i++)
        {
            Round round = rounds[i];
            workers.Add(($"owner-{i}", rec => Own(ctx, arena, round, rec)));
            workers.Add(($"stale-{i}", rec => PutStale(ctx, arena, round, rec)));
        }

        var observers = new List<(string, Action<Recorder, CancellationToken>)>
        {
            ("observer", (rec, stop) => Observe(ctx, arena, rounds, rec, stop)),
        };
        TimeSpan elapsed = Harness.Run(ctx, workers, observers);
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static void Own(StressContext ctx, PageArena arena, Round round, Recorder rec)
    {
        var rng = new Random(ctx.Seed + round.Number); // the pair's own stream: the same for the same --seed
        Pfn page = arena.AllocPages(0);
        arena.GetPages(page, References - 1);
        Volatile.Write(ref round.Page, page.Value + 1L);
        try
        {
            long n = 0;
            while (DateTime.UtcNow < ctx.Deadline && ctx.ViolationCount == 0)
            {
                long t = rec.Begin();
                if (!arena.FreezeRefs(page, References))
                {
                    ctx.Violation($"the owner holds all {References} references but its freeze failed: count {arena.RefCount(page)}", page);
                    return;
                }

                // Open the round: the stale holder starts putting at zero (release: it sees the page frozen).
                n++;
                Volatile.Write(ref round.Open, n);

                // The owner's work on the frozen page lasts until the stale holder has started putting, so that the
                // unfreeze lands among its puts at zero (inside a legacy put's window between its write and its undo).
                if (!WaitFor(ref round.Attempting, n, ctx))
                {
                    return;
                }

                Thread.SpinWait(rng.Next(64));
                try
                {
                    arena.UnfreezeRefs(page, References);
                }
                catch (PageBugException bug)
                {
                    ctx.Violation(bug); // a correct unfreeze refused: a put at zero wrote the counter
                    return;
                }

                // Close the round and wait for the stale holder's count of accepted puts.
                Volatile.Write(ref round.Closed, n);
                if (!WaitFor(ref round.Acked, n, ctx))
                {
                    return;
                }

                int accepted = Volatile.Read(ref round.Accepted);
                int expected = References - accepted;
                int count = PageRef.Count(ref arena.DescriptorOf(page));
                if (count != expected)
                {
                    ctx.Violation($"round {n}: after the owner's unfreeze to {References} and {accepted} stale puts that landed on the live count, the count is {count}, not {expected}: a refused put wrote the counter", page);
                    return;
                }

                if (accepted > 0)
                {
                    arena.GetPages(page, accepted); // the owner repairs what the stale holder took
                }

                rec.End(0, t);
            }
        }
        finally
        {
            Volatile.Write(ref round.Done, 1);
            try
            {
                if (arena.RefCount(page) == References)
                {
                    for (int i = 1; i < References; i++)
                    {
                        arena.PutPage(page); // every reference but the owner's first
                    }

                    arena.FreePages(page, 0);
                }
            }
            catch (PageBugException bug)
            {
                ctx.Violation(bug);
            }
        }
    }

    private static void PutStale(StressContext ctx, PageArena arena, Round round, Recorder rec)
    {
        long n = 0;
        while (Volatile.Read(ref round.Done) == 0)
        {
            n++;
            while (Volatile.Read(ref round.Open) < n)
            {
                if (Volatile.Read(ref round.Done) != 0)
                {
                    return;
                }

                Thread.Yield();
            }

            var page = new Pfn((uint)(Volatile.Read(ref round.Page) - 1));
            Volatile.Write(ref round.Attempting, n);
            int accepted = 0;
            do
            {
                long t = rec.Begin();
                try
                {
                    if (ctx.Legacy)
                    {
                        LegacyPutAtZero.PutPage(arena, page);
                    }
                    else
                    {
                        arena.PutPage(page);
                    }

                    accepted++; // the count was live (unfrozen already): one of the owner's references taken
                    rec.End(2, t);
                }
                catch (PageBugException)
                {
                    rec.End(1, t); // refused: nothing may have changed
                }
            }
            // Never the owner's last reference: that put would free the owner's page (into a cache, count 1 again), and
            // the owner's check of the count would judge a free as a write (seen once under emulation, where all 64
            // stale puts landed on the live count before the round closed).
            while (Volatile.Read(ref round.Closed) < n && Volatile.Read(ref round.Done) == 0 && accepted < References - 1);

            Volatile.Write(ref round.Accepted, accepted);
            Volatile.Write(ref round.Acked, n);
        }
    }

    private static void Observe(StressContext ctx, PageArena arena, Round[] rounds, Recorder rec, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            foreach (Round round in rounds)
            {
                long page = Volatile.Read(ref round.Page);
                if (page == 0)
                {
                    continue;
                }

                for (int i = 0; i < 256; i++)
                {
                    int count = Volatile.Read(ref arena.DescriptorOf(new Pfn((uint)(page - 1))).RefCount);
                    if (count < 0)
                    {
                        ctx.Violation($"the observer read refcount {count}: a refused put at zero wrote the counter", new Pfn((uint)(page - 1)));
                        return;
                    }
                }

                rec.Count(3);
            }

            Thread.Yield(); // leave the cores to the pairs now and then: a round needs both of its threads

        }
    }

    private static bool WaitFor(ref long field, long value, StressContext ctx)
    {
        var spin = new SpinWait();
        DateTime limit = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (Volatile.Read(ref field) < value)
        {
            if (DateTime.UtcNow > limit)
            {
                ctx.Violation("the stale holder did not answer a round within 30 s");
                return false;
            }

            spin.SpinOnce(sleep1Threshold: -1); // yield, never sleep: a round is a few microseconds of work
        }

        return true;
    }

    /// <summary>One owner/stale-holder pair's handshake (not a hot path: the pair exchanges one round at a time).</summary>
    private sealed class Round
    {
        public int Number;
        public long Page;
        public long Open;
        public long Attempting;
        public long Closed;
        public long Acked;
        public int Accepted;
        public int Done;
    }
}
