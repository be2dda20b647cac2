using System.Reflection;
using System.Runtime.InteropServices;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The three defects of the historical reclaim (<c>Legacy/LegacyEpochReclaim.cs</c>), each driven through its exact
/// interleaving with an anchor reader held inside its section, a hook that holds a reclaimer in the race window, and a
/// checked arena that poisons what it frees. Each test runs both forms: the historical one must be caught, the fixed
/// one must hold.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class EpochReclaimTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);

    /// <summary>
    /// Finding 1, the stale bound. R computes its bound while no reader is inside (infinity) and is held there by the
    /// hook; reader W enters and loads X; A unlinks X and defers it; R goes on. The historical pass frees X under W
    /// (caught: W reads poison); the fixed pass read the global epoch before its scan, X's tag is above it, X is held.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AnItemDeferredAfterAPassComputedItsBoundIsNotRunByThatPass(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        using EpochDomain domain = legacy ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        domain.StopDriver(); // only the passes this test drives
        Pfn x = NewObject(arena);
        long published = x.Value;
        using var bound = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        Thread? reclaimer = null;
        domain.WindowHook = w =>
        {
            if (Thread.CurrentThread == reclaimer && w == ReclaimWindow.AfterBound && !bound.IsSet)
            {
                bound.Set();
                go.Wait(Wait);
            }
        };

        reclaimer = new Thread(() => domain.Reclaim()) { Name = "R" };
        reclaimer.Start();
        Assert.True(bound.Wait(Wait)); // R's bound is computed: no reader was inside
        using var anchor = new AnchorReader(domain, arena, () => new Pfn((uint)Volatile.Read(ref published)));
        Assert.True(anchor.Loaded.Wait(Wait)); // W is inside and holds X
        Pfn y = NewObject(arena);
        Interlocked.Exchange(ref published, y.Value); // A unlinks X ...
        domain.DeferFree(arena, x, 0); // ... and defers it
        go.Set();
        await Task.Run(() => TestSupport.JoinAll([reclaimer], Wait));
        bool poisoned = anchor.CheckAndLeave();

        Assert.Equal(legacy, poisoned);
        output.WriteLine(legacy ? "historical reclaim: the anchor read poison from X (caught)" : "fixed reclaim: X was held back while the anchor was inside");
        domain.Barrier();
        Assert.Equal(0, domain.PendingDeferred);
        arena.FreePages(y, 0);
    }

    /// <summary>
    /// Finding 2, peek then dequeue. Queue [o, X] with o older than the anchor and X deferred after the anchor loaded it.
    /// R2 checks o and is held by the hook; R1 takes o and stops at X; R2 resumes. The historical R2 dequeues X, which
    /// it never checked, and frees it under the anchor (caught). The fixed form lets one pass run at a time and runs only
    /// the item it took and checked: X is held.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task TheItemWhoseTagWasCheckedIsTheItemThatRuns(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        using EpochDomain domain = legacy ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        domain.StopDriver();
        int oldRan = 0;
        domain.Defer(_ => Interlocked.Increment(ref oldRan), null); // o: older than the anchor
        Pfn x = NewObject(arena);
        long published = x.Value;
        using var anchor = new AnchorReader(domain, arena, () => new Pfn((uint)Volatile.Read(ref published)));
        Assert.True(anchor.Loaded.Wait(Wait));
        Pfn y = NewObject(arena);
        Interlocked.Exchange(ref published, y.Value);
        domain.DeferFree(arena, x, 0); // X: younger than the anchor

        using var held = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        Thread? r2 = null;
        domain.WindowHook = w =>
        {
            // The last point before R2 takes an item: after the peek (historical), after the bound (fixed: no peek).
            bool window = legacy ? w == ReclaimWindow.BetweenPeekAndDequeue : w == ReclaimWindow.AfterBound;
            if (Thread.CurrentThread == r2 && window && !held.IsSet)
            {
                held.Set();
                go.Wait(Wait);
            }
        };
        r2 = new Thread(() => domain.Reclaim()) { Name = "R2" };
        r2.Start();
        Assert.True(held.Wait(Wait));
        var r1 = new Thread(() => domain.Reclaim()) { Name = "R1" };
        r1.Start();

        // Orchestration only: the historical R1 ends at once; the fixed one waits for R2's pass, so R2 is let go after a
        // while either way. Nothing is asserted about time.
        r1.Join(TimeSpan.FromMilliseconds(500));
        go.Set();
        await Task.Run(() => TestSupport.JoinAll([r1, r2], Wait));
        bool poisoned = anchor.CheckAndLeave();

        Assert.Equal(1, oldRan);
        Assert.Equal(legacy, poisoned);
        output.WriteLine(legacy ? "historical reclaim: R2 ran X, which it never checked (caught)" : "fixed reclaim: X was held back");
        domain.Barrier();
        Assert.Equal(0, domain.PendingDeferred);
        arena.FreePages(y, 0);
    }

    /// <summary>
    /// Finding 3, no driver: a reader inside while every page of the arena is deferred; after it leaves, nobody calls
    /// Reclaim. The historical form leaves the arena empty (the allocation fails); the fixed arena's failing allocation
    /// reclaims the domain that deferred frees into it (the timer is stopped here, so this is the allocation path).
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task AnAllocationAboutToFailReclaimsTheDomainsThatDeferredIntoTheArena(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: true);
        PageArena arena = lease.Arena;
        EpochDomain domain = legacy ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        domain.StopDriver();
        using (var anchor = new AnchorReader(domain, null, () => default))
        {
            Assert.True(anchor.Loaded.Wait(Wait));
            await Task.Run(() =>
            {
                while (arena.TryAllocPages(0, out Pfn p))
                {
                    domain.DeferFree(arena, p, 0);
                }
            });
            Assert.Equal(1024, domain.PendingDeferred); // the anchor held every one of them
            anchor.CheckAndLeave();
        }

        bool allocated = await Task.Run(() => arena.TryAllocPages(0, out Pfn again) && Free(arena, again));
        Assert.Equal(!legacy, allocated);
        output.WriteLine(legacy ? $"historical reclaim: 0 free pages, {domain.PendingDeferred} frees pending (caught)" : "fixed: the failing allocation reclaimed the domain");
        domain.Barrier();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    /// <summary>
    /// Finding 3, no driver: a few deferrals (fewer than the 64 that trigger a pass) while a reader is inside; after it
    /// leaves nobody calls anything. The fixed domain's timer runs them; the historical ones sit (caught after 1 s).
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(true)]
    [InlineData(false)]
    public async Task DeferredItemsRunAfterTheLastReaderLeavesWithoutAnyCall(bool legacy)
    {
        using EpochDomain domain = legacy ? EpochDomain.CreateWithLegacyReclaim() : new EpochDomain();
        int ran = 0;
        using (var anchor = new AnchorReader(domain, null, () => default))
        {
            Assert.True(anchor.Loaded.Wait(Wait));
            for (int i = 0; i < 10; i++)
            {
                domain.Defer(_ => Interlocked.Increment(ref ran), null);
            }

            anchor.CheckAndLeave();
        }

        // Wait until they ran (fixed), or a second for the historical form, which nothing drives.
        DateTime deadline = DateTime.UtcNow + (legacy ? TimeSpan.FromSeconds(1) : Wait);
        while (Volatile.Read(ref ran) < 10 && DateTime.UtcNow < deadline)
        {
            await Task.Delay(10);
        }

        Assert.Equal(legacy ? 0 : 10, Volatile.Read(ref ran));
        Assert.Equal(legacy ? 10 : 0, domain.PendingDeferred);
    }

    /// <summary>
    /// The allocation-failure path drains the caches even when another drainer is active (it waits for it): before the
    /// fix it called <c>Drain(wait: false)</c>, which returned at once, and the allocation failed while the pages it
    /// needed sat in a magazine. The other drainer is simulated by holding the caches' stealer flag for a moment.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task AnAllocationDoesNotFailBecauseAnotherDrainerIsActive()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 1024, caches: true);
        PageArena arena = lease.Arena;
        var all = new List<Pfn>();
        while (arena.TryAllocPages(0, out Pfn p))
        {
            all.Add(p);
        }

        // Freed on another thread: the pages sit in that thread's magazine (and the depots), not in the shared allocator.
        await Task.Run(() =>
        {
            var t = new Thread(() => all.ForEach(p => arena.FreePages(p, 0)));
            t.Start();
            t.Join();
        });
        Assert.True(arena.CachedPageCount > 0);

        object caches = typeof(PageArena).GetField("_caches", BindingFlags.NonPublic | BindingFlags.Instance)!.GetValue(arena)!;
        FieldInfo stealer = caches.GetType().GetField("_stealer", BindingFlags.NonPublic | BindingFlags.Instance)!;
        stealer.SetValue(caches, 1); // another drainer is active
        Task release = Task.Run(async () =>
        {
            await Task.Delay(200);
            stealer.SetValue(caches, 0); // ... and ends
        });

        // Enough order-0 allocations to exhaust this thread's share without the other thread's magazine.
        bool ok = await Task.Run(() =>
        {
            var got = new List<Pfn>();
            bool all1024 = true;
            for (int i = 0; i < 1024 && all1024; i++)
            {
                all1024 = arena.TryAllocPages(0, out Pfn p);
                if (all1024)
                {
                    got.Add(p);
                }
            }

            got.ForEach(p => arena.FreePages(p, 0));
            return all1024;
        });
        await release;
        Assert.True(ok, "an allocation failed while the arena's free pages sat in another thread's magazine");
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    /// <summary>
    /// The race after the drain: a churning thread whose magazine the failing allocation's drain just emptied refills a
    /// whole batch from the shared allocator before the retry, and the allocation fails while that batch sits in the
    /// churner's magazine. Under the reclaim's pressure a refill takes one block, and a batch taken before the pressure
    /// is returned by the next drain: when the allocation finally fails, it holds every page but the few the churner
    /// has in hand. Trials until the deadline; the seed is printed.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task AnAllocationFailsOnlyWhenTheOtherThreadsHoldNoMoreThanTheyUse()
    {
        int seed = TestSupport.Seed(output, "refill between drain and retry");
        var rng = new Random(seed);
        const int Pages = 1024;
        DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(6);
        int trials = 0, worstShortfall = 0;
        while (DateTime.UtcNow < deadline && trials < 200)
        {
            trials++;
            using ArenaLease lease = TestSupport.Lease(pages: Pages, caches: true, batch: 32);
            PageArena arena = lease.Arena;
            using var stop = new CancellationTokenSource();
            int churnerHolds = 0;
            var churner = new Thread(() =>
            {
                while (!stop.IsCancellationRequested)
                {
                    if (arena.TryAllocPages(0, out Pfn c))
                    {
                        Volatile.Write(ref churnerHolds, 1);
                        Thread.SpinWait(rng.Next(64));
                        Volatile.Write(ref churnerHolds, 0);
                        arena.FreePages(c, 0);
                    }
                }
            }) { IsBackground = true };
            churner.Start();
            var held = new List<Pfn>();
            int shortfall = await Task.Run(() =>
            {
                while (arena.TryAllocPages(0, out Pfn p))
                {
                    held.Add(p);
                }

                // Failed: the churner has at most one page in hand and one in its magazine; everything else is ours.
                return Pages - held.Count;
            });
            stop.Cancel();
            Assert.True(churner.Join(TimeSpan.FromSeconds(10)), "the churner did not stop");
            long cached = arena.CachedPageCount;
            held.ForEach(p => arena.FreePages(p, 0));
            worstShortfall = Math.Max(worstShortfall, shortfall);
            Assert.True(shortfall <= 2, $"trial {trials}: the allocation failed holding {held.Count} of {Pages} pages; {cached} sat in caches once the churner stopped (seed {seed})");
            TestSupport.AssertFullyFreeAndCoalesced(arena);
        }

        output.WriteLine($"{trials} trials, largest shortfall at failure {worstShortfall} pages");
        Assert.True(trials > 0);
    }

    /// <summary>
    /// Callbacks may defer and reclaim (and even run a barrier) re-entrantly without deadlock, and a barrier runs every
    /// item deferred before its call even while another thread's pass is in progress (it waits for that pass).
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task CallbacksMayDeferAndReclaimReentrantlyAndBarrierWaitsForARunningPass()
    {
        using var domain = new EpochDomain();
        int inner = 0, outer = 0, nested = 0;
        domain.Defer(_ =>
        {
            outer++;
            domain.Defer(_ => inner++, null);
            nested += domain.Reclaim(); // a nested pass on the same thread: runs the item just deferred
            domain.Barrier();
        }, null);
        await Task.Run(domain.Barrier);
        Assert.Equal((1, 1, 1), (outer, inner, nested));

        using var inPass = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        Thread? r = null;
        domain.WindowHook = w =>
        {
            if (Thread.CurrentThread == r && !inPass.IsSet)
            {
                inPass.Set();
                go.Wait(Wait);
            }
        };
        r = new Thread(() => domain.Reclaim());
        r.Start();
        Assert.True(inPass.Wait(Wait)); // R holds the pass lock, its bound computed before the deferral below
        int late = 0;
        domain.Defer(_ => late++, null);
        Task barrier = Task.Run(domain.Barrier);
        await Task.Delay(100);
        Assert.False(barrier.IsCompleted); // waits for R's pass rather than running beside it
        go.Set();
        await barrier.WaitAsync(Wait);
        r.Join();
        Assert.Equal(1, late);
        Assert.Equal(0, domain.PendingDeferred);
    }

    private static Pfn NewObject(PageArena arena)
    {
        Pfn p = arena.AllocPages(0);
        MemoryMarshal.Cast<byte, long>(arena.GetSpan(p)).Fill(p.Value + 1);
        return p;
    }

    private static bool Free(PageArena arena, Pfn p)
    {
        arena.FreePages(p, 0);
        return true;
    }

    /// <summary>
    /// A reader thread that enters a section, loads the published object, and stays inside until told to check the
    /// object it loaded (still inside) and leave.
    /// </summary>
    private sealed class AnchorReader : IDisposable
    {
        private readonly ManualResetEventSlim _check = new();
        private readonly Thread _thread;
        private bool _poisoned;

        public AnchorReader(EpochDomain domain, PageArena? arena, Func<Pfn> load)
        {
            _thread = new Thread(() =>
            {
                using (domain.Enter())
                {
                    Pfn x = load();
                    Loaded.Set();
                    _check.Wait(Wait);
                    if (arena is not null)
                    {
                        long word = MemoryMarshal.Cast<byte, long>(arena.GetSpan(x))[7];
                        _poisoned = word != x.Value + 1;
                    }
                }
            }) { Name = "anchor" };
            _thread.Start();
        }

        public ManualResetEventSlim Loaded { get; } = new();

        /// <summary>Lets the reader check its object and leave; true when it read anything but its stamp (poison).</summary>
        public bool CheckAndLeave()
        {
            _check.Set();
            Assert.True(_thread.Join(Wait), "the anchor reader did not finish");
            return _poisoned;
        }

        public void Dispose()
        {
            _check.Set();
            _thread.Join(Wait);
            _check.Dispose();
            Loaded.Dispose();
        }
    }
}
