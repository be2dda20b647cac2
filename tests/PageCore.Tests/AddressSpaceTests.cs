using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Xunit;

namespace PageCore.Tests;

public sealed class AddressSpaceTests
{
    [Fact]
    public void FragmentsAreHandedOutOnceAndCountedInTheirOwnField()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        var mm = new AddressSpace(arena, fragmentsPerPage: 4);
        var frags = Enumerable.Range(0, 10).Select(_ => mm.AllocFragment()).ToList();

        // F2: disjoint, each (page, index) once, 4 per page.
        Assert.Equal(10, frags.Distinct().Count());
        Assert.Equal(3, frags.Select(f => f.Page).Distinct().Count());
        Assert.All(frags.GroupBy(f => f.Page), g => Assert.Equal(g.Count(), g.Select(f => f.Index).Distinct().Count()));

        // F1: handed out + still cached; F5: the refcount is the page's own 1, whatever the fragments.
        Pfn last = frags[^1].Page;
        Assert.Equal(4, arena.DescriptorOf(frags[0].Page).PtFragCount);
        Assert.Equal(4, arena.DescriptorOf(last).PtFragCount); // 2 handed out + 2 cached
        Assert.All(frags.Select(f => f.Page).Distinct(), p => Assert.Equal(1, arena.RefCount(p)));
        Assert.True(arena.TryGetPageUnlessZero(last)); // a speculative getter changes the refcount only
        Assert.Equal(4, arena.DescriptorOf(last).PtFragCount);
        arena.PutPage(last);

        foreach (PtFragment f in frags) mm.FreeFragment(f);
        Assert.Equal(2, mm.DestructorRuns); // F3: the cached page is not destroyed while the cache holds it
        Assert.Equal(2, arena.DescriptorOf(last).PtFragCount);
        Assert.Throws<PageBugException>(() => mm.FreeFragment(frags[0])); // its page is gone: count 0
        mm.Dispose();
        Assert.Equal(3, mm.DestructorRuns);
        mm.Dispose();
        Assert.Equal(3, mm.DestructorRuns); // exactly once
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void TeardownWithAPartlyUsedCachedPageKeepsLiveFragments()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false);
        PageArena arena = lease.Arena;
        var mm = new AddressSpace(arena, fragmentsPerPage: 8);
        PtFragment a = mm.AllocFragment();
        PtFragment b = mm.AllocFragment();
        mm.Dispose(); // cancels the 6 fragments never handed out
        Assert.Equal(2, arena.DescriptorOf(a.Page).PtFragCount);
        Assert.Equal(0, mm.DestructorRuns);
        mm.GetSpan(b).Fill(7);
        mm.FreeFragment(a);
        Assert.Equal(0, mm.DestructorRuns);
        mm.FreeFragment(b);
        Assert.Equal(1, mm.DestructorRuns);
        Assert.Throws<ObjectDisposedException>(() => mm.AllocFragment());
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void ADeferredFreeWaitsForTheGracePeriod()
    {
        using ArenaLease lease = TestSupport.Lease(caches: false, isChecked: true);
        PageArena arena = lease.Arena;
        using var epochs = new EpochDomain();
        var mm = new AddressSpace(arena, fragmentsPerPage: 4, epochs);
        var frags = Enumerable.Range(0, 4).Select(_ => mm.AllocFragment()).ToList();
        Pfn page = frags[0].Page;
        EpochGuard walker = epochs.Enter(); // a lockless walker that may still read the table
        mm.FreeFragmentDeferred(frags[0]);
        for (int i = 1; i < 4; i++) mm.FreeFragment(frags[i]);
        epochs.Reclaim();
        Assert.Equal(0, mm.DestructorRuns); // the destructor waits too: the table's lock stays usable for the walker
        Assert.Equal(1, arena.RefCount(page)); // F4: not freed, not reusable
        Assert.NotEqual(PageArena.PoisonByte, arena.GetSpan(page)[0]);
        walker.Dispose();
        epochs.Barrier();
        Assert.Equal(1, mm.DestructorRuns);
        Assert.Equal(0, arena.RefCount(page));
        Assert.Equal(PageArena.PoisonByte, arena.GetSpan(page)[0]);

        // An address space made without a domain defers in its own, which its teardown drains.
        var own = new AddressSpace(arena);
        PtFragment f = own.AllocFragment();
        own.FreeFragmentDeferred(f);
        own.Dispose();
        Assert.Equal(1, own.DestructorRuns);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void BadFragmentSizesAreRefused()
    {
        using ArenaLease lease = TestSupport.Lease();
        Assert.Throws<ArgumentOutOfRangeException>(() => new AddressSpace(lease.Arena, fragmentsPerPage: 2));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AddressSpace(lease.Arena, fragmentsPerPage: 12));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AddressSpace(lease.Arena, fragmentsPerPage: 128));
    }
}

[Collection(StressCollection.Name)]
public sealed class AddressSpaceConcurrencyTests(ITestOutputHelper output)
{
    [Fact(Timeout = 60_000)]
    public async Task FragmentsUnderConcurrentAllocFreeAndWalkersStayDisjointAndAllComeBack()
    {
        int seed = TestSupport.Seed(output, "pt fragments + walkers");
        using ArenaLease lease = TestSupport.Lease(pages: 4096, isChecked: true);
        PageArena arena = lease.Arena;
        var mm = new AddressSpace(arena, fragmentsPerPage: 16);
        var errors = new ConcurrentQueue<string>();
        long allocs = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            using var stop = new CancellationTokenSource();
            var workers = Enumerable.Range(0, 2 * Environment.ProcessorCount).Select(id => new Thread(() =>
            {
                var rng = new Random(seed + id);
                var held = new List<(PtFragment Frag, long Stamp)>();
                long serial = 0;
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        if (held.Count < 32 && rng.Next(2) == 0)
                        {
                            PtFragment f = mm.AllocFragment();
                            long stamp = ((long)(id + 1) << 40) | ++serial;
                            MemoryMarshal.Cast<byte, long>(mm.GetSpan(f)).Fill(stamp);
                            held.Add((f, stamp));
                            Interlocked.Increment(ref allocs);
                        }
                        else if (held.Count > 0)
                        {
                            int i = rng.Next(held.Count);
                            (PtFragment f, long stamp) = held[i];
                            held.RemoveAt(i);
                            if (MemoryMarshal.Cast<byte, long>(mm.GetSpan(f)).IndexOfAnyExcept(stamp) >= 0)
                            {
                                errors.Enqueue($"fragment {f} was overwritten while live (two owners, or its page was freed)");
                            }

                            mm.FreeFragment(f);
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
                finally
                {
                    foreach ((PtFragment f, _) in held) mm.FreeFragment(f);
                }
            })).ToList();
            var walker = new Thread(() =>
            {
                var rng = new Random(~seed);
                while (!stop.IsCancellationRequested)
                {
                    var p = new Pfn((uint)rng.Next(4096));
                    if (arena.TryGetPageUnlessZero(p)) arena.PutPage(p);
                }
            });
            foreach (Thread t in workers) t.Start();
            walker.Start();
            TestSupport.JoinAll(workers, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
            stop.Cancel();
            TestSupport.JoinAll([walker], TimeSpan.FromSeconds(30));
        });

        mm.Dispose();
        output.WriteLine($"fragments allocated {allocs}, page-table pages destroyed {mm.DestructorRuns}");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(10)));
        Assert.True(allocs > 0);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
