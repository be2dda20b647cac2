using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Xunit;

namespace PageCore.Tests;

public sealed class EpochTests
{
    [Fact]
    public void ASectionOfAnOlderDomainIsSeenAfterAnotherDomainWasUsed()
    {
        // A thread used A, then B (B's registration is now the thread's newest), and is inside A again: A must know it,
        // or Synchronize inside A's section would wait for the calling thread itself instead of being refused.
        using var a = new EpochDomain();
        using var b = new EpochDomain();
        using (a.Enter())
        {
        }

        using (b.Enter())
        {
        }

        using (a.Enter())
        {
            Assert.True(a.InSection);
            Assert.False(b.InSection);
            Assert.Throws<InvalidOperationException>(() => a.Synchronize());
            Assert.Throws<InvalidOperationException>(() => a.Barrier());
            Assert.True(b.Synchronize(TimeSpan.FromSeconds(10)));
        }

        Assert.False(a.InSection);
        Assert.True(a.Synchronize(TimeSpan.FromSeconds(10)));
    }

    [Fact]
    public void SectionsNestAndSynchronizeWithNoReaderReturnsAtOnce()
    {
        using var domain = new EpochDomain();
        Assert.False(domain.InSection);
        using (domain.Enter())
        {
            using (domain.Enter())
            {
                Assert.True(domain.InSection);
            }

            Assert.True(domain.InSection);
            Assert.Throws<InvalidOperationException>(() => domain.Synchronize());
        }

        Assert.False(domain.InSection);
        long before = domain.CurrentEpoch;
        domain.Synchronize();
        Assert.True(domain.CurrentEpoch > before);
    }

    [Fact]
    public void DeferredWorkRunsOnlyAfterTheReadersThatCouldSeeIt()
    {
        using var domain = new EpochDomain();
        int ran = 0;
        EpochGuard outer = domain.Enter();
        domain.Defer(_ => ran++, null);
        Assert.Equal(0, domain.Reclaim()); // the reader that was inside when it was deferred is still inside
        Assert.Equal(0, ran);
        outer.Dispose();
        Assert.Equal(1, domain.Reclaim());
        Assert.Equal(1, ran);
    }

    [Fact]
    public void DeferFreeReturnsThePagesAfterAGracePeriod()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false);
        PageArena arena = lease.Arena;
        using var domain = new EpochDomain();
        Pfn p = arena.AllocPages(2);
        EpochGuard reader = domain.Enter();
        domain.DeferFree(arena, p, 2);
        domain.Reclaim();
        Assert.Equal(1, arena.RefCount(p)); // not yet
        reader.Dispose();
        domain.Barrier();
        Assert.Equal(0, domain.PendingDeferred);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

[Collection(StressCollection.Name)]
public sealed class EpochConcurrencyTests(ITestOutputHelper output)
{
    [Theory(Timeout = 30_000)]
    [InlineData(false)]
    [InlineData(true)]
    [InlineData(true, true)] // asymmetric requested, the symmetric (full-fence) announce forced
    public async Task SynchronizeWaitsForOlderReadersAndNotForNewerOnes(bool asymmetric, bool forceSymmetric = false)
    {
        using var domain = new EpochDomain(1024, asymmetric, forceSymmetric);
        Assert.Equal(asymmetric && !forceSymmetric && ProcessBarrier.HandOver == HandOverForm.Asymmetric, domain.AsymmetricAnnounce);
        using var olderInside = new ManualResetEventSlim();
        using var releaseOlder = new ManualResetEventSlim();
        using var newerInside = new ManualResetEventSlim();
        using var releaseNewer = new ManualResetEventSlim();
        var older = new Thread(() =>
        {
            using (domain.Enter())
            {
                olderInside.Set();
                releaseOlder.Wait(TimeSpan.FromSeconds(20));
            }
        });
        older.Start();
        Assert.True(olderInside.Wait(TimeSpan.FromSeconds(10)));

        Task<bool> sync = Task.Run(() => domain.Synchronize(TimeSpan.FromSeconds(20)));
        await Task.Delay(200);
        Assert.False(sync.IsCompleted); // the older reader is still inside

        var newer = new Thread(() =>
        {
            using (domain.Enter())
            {
                newerInside.Set();
                releaseNewer.Wait(TimeSpan.FromSeconds(20));
            }
        });
        newer.Start();
        Assert.True(newerInside.Wait(TimeSpan.FromSeconds(10)));
        releaseOlder.Set();
        Assert.True(await sync.WaitAsync(TimeSpan.FromSeconds(10))); // done while the newer reader is still inside
        releaseNewer.Set();
        older.Join();
        newer.Join();
    }

    [Fact(Timeout = 30_000)]
    public async Task AThreadThatDiesInsideASectionBlocksNothingAndAStuckOneOnlyTimesOut()
    {
        using var domain = new EpochDomain();
        var dead = new Thread(() => domain.Enter()); // never disposed: the thread exits inside its section
        dead.Start();
        dead.Join();
        Assert.True(await Task.Run(() => domain.Synchronize(TimeSpan.FromSeconds(10))));

        using var inside = new ManualResetEventSlim();
        using var release = new ManualResetEventSlim();
        var stuck = new Thread(() =>
        {
            using (domain.Enter())
            {
                inside.Set();
                release.Wait(TimeSpan.FromSeconds(20));
            }
        });
        stuck.Start();
        Assert.True(inside.Wait(TimeSpan.FromSeconds(10)));
        Assert.False(await Task.Run(() => domain.Synchronize(TimeSpan.FromMilliseconds(200))));
        release.Set();
        stuck.Join();
        Assert.True(domain.Synchronize(TimeSpan.FromSeconds(10)));
    }

    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    [InlineData(true, true)] // asymmetric requested, the symmetric (full-fence) announce forced
    public async Task AReaderInsideASectionNeverSeesReclaimedMemory(bool asymmetric, bool forceSymmetric = false)
    {
        // Writers replace a published page and free the old one through the domain; the checked arena poisons freed
        // pages, so a reader that could still reach a reclaimed page would read poison instead of its stamp.
        int seed = TestSupport.Seed(output, "epoch readers vs reclaim");
        using ArenaLease lease = TestSupport.Lease(pages: 4096, caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        using var domain = new EpochDomain(1024, asymmetric, forceSymmetric);
        Assert.Equal(asymmetric && !forceSymmetric && ProcessBarrier.HandOver == HandOverForm.Asymmetric, domain.AsymmetricAnnounce);
        long published = arena.AllocPages(0).Value;
        Stamp(arena, new Pfn((uint)published));
        var errors = new ConcurrentQueue<string>();
        long reads = 0, replacements = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            var readers = Enumerable.Range(0, 3).Select(i => new Thread(() =>
            {
                while (DateTime.UtcNow < deadline)
                {
                    using (domain.Enter())
                    {
                        var p = new Pfn((uint)Volatile.Read(ref published));
                        Span<long> words = MemoryMarshal.Cast<byte, long>(arena.GetSpan(p));
                        for (int k = 0; k < 4; k++)
                        {
                            if (words[k * 64] != p.Value + 1)
                            {
                                errors.Enqueue($"reader saw {words[k * 64]:x} in {p}: reclaimed while inside a section");
                                return;
                            }
                        }

                        reads++;
                    }
                }
            })).ToList();
            var writer = new Thread(() =>
            {
                var rng = new Random(seed);
                try
                {
                while (DateTime.UtcNow < deadline)
                {
                    Pfn next;
                    while (!arena.TryAllocPages(0, out next))
                    {
                        // Memory pressure: a preempted reader holds the grace period; wait it out (synchronize_rcu).
                        domain.Barrier();
                    }

                    Stamp(arena, next);
                    long old = Interlocked.Exchange(ref published, next.Value); // unlink (full fence)
                    domain.DeferFree(arena, new Pfn((uint)old), 0);
                    replacements++;
                    if (rng.Next(16) == 0) domain.Reclaim();
                }
                }
                catch (Exception ex)
                {
                    errors.Enqueue($"writer: {ex}");
                }
            });
            foreach (Thread t in readers) t.Start();
            writer.Start();
            TestSupport.JoinAll(readers.Append(writer), TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
        });

        domain.Barrier();
        arena.FreePages(new Pfn((uint)published), 0);
        output.WriteLine($"reads {reads}, replacements {replacements}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(5)));
        Assert.True(reads > 0 && replacements > 0);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    private static void Stamp(PageArena arena, Pfn p)
    {
        Span<long> words = MemoryMarshal.Cast<byte, long>(arena.GetSpan(p));
        words.Fill(p.Value + 1);
    }
}
