using Xunit;

namespace PageCore.Tests;

/// <summary>The software hash MMU, the Linux side of it (busy bit, lazy-MMU batches), and the gather's ordering.</summary>
public sealed class HashMmuTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    private static AddressSpace NewMm(PageArena arena, HashMmu hash, bool legacy = false, bool batching = true) =>
        new(arena, new AddressSpaceOptions { HashMmu = hash, LegacyHashBatchInGather = legacy, HashBatching = batching });

    [Fact]
    public void InsertTranslateEvictAndInvalidate()
    {
        var hash = new HashMmu(groups: 2); // 16 slots: every address hashes into both groups
        int asid = hash.AllocateAsid();
        var slots = new int[20];
        for (int i = 0; i < 16; i++)
        {
            slots[i] = hash.Insert(asid, (ulong)i * Page, new Pfn((uint)(100 + i)), writable: i % 2 == 0);
            Assert.InRange(slots[i], 0, 15);
        }

        Assert.Equal(0, hash.Evictions);
        Assert.True(hash.TryTranslate(asid, 3 * Page, out Pfn p, out bool w));
        Assert.Equal((new Pfn(103), false), (p, w));
        Assert.False(hash.TryTranslate(asid + 1, 3 * Page, out _, out _)); // another address space's id misses

        // Both groups full: the next insert evicts one entry of its primary group.
        slots[16] = hash.Insert(asid, 16 * Page, new Pfn(116), writable: true);
        Assert.Equal(1, hash.Evictions);
        Assert.Equal(16, hash.CountEntries(asid));
        int evicted = Enumerable.Range(0, 16).Single(i => !hash.TryTranslate(asid, (ulong)i * Page, out _, out _));
        Assert.False(hash.Invalidate(asid, (ulong)evicted * Page, slots[evicted])); // the slot holds another address now
        Assert.True(hash.TryTranslate(asid, 16 * Page, out p, out _));
        Assert.Equal(new Pfn(116), p);

        Assert.True(hash.UpdatePermission(asid, 16 * Page, slots[16], new Pfn(116), writable: false));
        Assert.True(hash.TryTranslate(asid, 16 * Page, out _, out w));
        Assert.False(w);
        Assert.True(hash.Invalidate(asid, 16 * Page, slots[16]));
        Assert.False(hash.Invalidate(asid, 16 * Page, slots[16]));
        Assert.False(hash.TryTranslate(asid, 16 * Page, out _, out _));
        Assert.Equal(0, hash.ViolationCount);

        // A second entry for an address that still has a valid one is the hardware's machine check: refused, reported.
        int live = evicted == 0 ? 1 : 0;
        Assert.Equal(-1, hash.Insert(asid, (ulong)live * Page, new Pfn(999), writable: true));
        Assert.Equal(1, hash.ViolationCount);
        Assert.Contains("duplicate", hash.Violations.Single());
        Assert.Equal(15, hash.InvalidateAll(asid));
        Assert.Equal(0, hash.CountEntries(asid));
        Assert.Throws<ArgumentOutOfRangeException>(() => new HashMmu(groups: 3));
    }

    [Fact]
    public void AccessHashesFaultsAndRefusesWritesToReadOnlyPages()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(64);
        var mm = NewMm(arena, hash);
        Assert.Equal(AccessResult.Faulted, mm.Access(0x5000, write: true));
        Assert.Equal(AccessResult.Hit, mm.Access(0x5123, write: true));
        Pte pte = mm.Mappings().Single().Entry;
        Assert.True(pte.Bits.HasFlag(PteBits.Hashed | PteBits.Dirty | PteBits.Accessed));
        Assert.False(pte.Bits.HasFlag(PteBits.Busy));

        Pfn ro = arena.AllocPages(0);
        Assert.True(mm.MapPage(0x9000, ro, writable: false));
        Assert.Equal(AccessResult.Hashed, mm.Access(0x9000, write: false));
        Assert.Equal(AccessResult.Denied, mm.Access(0x9000, write: true));
        Assert.Equal(2, hash.CountEntries(mm.Asid));
        Assert.Equal(0, mm.VerifyHash());

        Assert.Equal(2, mm.Zap(0, 0x10000)); // the PTE lock is released only after the batch is drained
        Assert.Equal(0, hash.CountEntries(mm.Asid));
        Assert.Throws<InvalidOperationException>(() => new AddressSpace(arena).Access(0, false));
        mm.Dispose();
        arena.PutPage(ro);
        Assert.Equal(0, hash.ViolationCount);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TheBatchIsDrainedBeforeThePteLockIsReleased(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(64);
        var mm = NewMm(arena, hash, legacy);
        for (ulong i = 0; i < 4; i++) mm.Access(i * Page, write: true);
        Assert.Equal(4, hash.CountEntries(mm.Asid));
        var tlb = new MmuGather(mm);
        using (PteMapLocked map = mm.PteOffsetMapLock(0))
        {
            mm.EnterLazyMmu();
            for (int i = 0; i < 4; i++)
            {
                Pte old = map[i];
                map.Set(i, Pte.None);
                tlb.RemovePage(old.Pfn, (ulong)i * Page);
            }

            Assert.Equal(4, hash.CountEntries(mm.Asid)); // batched, not yet invalidated
            mm.LeaveLazyMmu();
            Assert.Equal(legacy ? 4 : 0, hash.CountEntries(mm.Asid)); // the fix: drained inside the lock
        }

        Assert.Equal(legacy ? 4 : 0, hash.CountEntries(mm.Asid)); // legacy: still there after the unlock
        tlb.Dispose(); // the gather's flush drains the legacy batch before it frees the pages
        Assert.Equal(0, hash.CountEntries(mm.Asid));
        Assert.Equal(0, hash.ViolationCount);
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    /// <summary>Seed 003: a fault hashes a new PTE for an address whose old entry's invalidation is still batched.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AFaultAfterAZapNeverHashesASecondEntry(bool legacy)
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(64);
        var mm = NewMm(arena, hash, legacy);
        ulong va = 0x40000;
        Pfn ro = arena.AllocPages(0);
        Assert.True(mm.MapPage(va, ro, writable: false));
        arena.PutPage(ro);
        Assert.Equal(AccessResult.Hashed, mm.Access(va, write: false)); // a read-only hash entry
        var tlb = new MmuGather(mm);
        Assert.Equal(1, mm.Zap(va, Page, tlb)); // unmap_mapping_range: the PTE lock is dropped here
        // Another access before the gather finishes: the read-only entry does not allow the store, the PTE is none, so
        // the page-fault path maps a new page and the hash fault hashes it.
        AccessResult r = mm.Access(va, write: true);
        tlb.Dispose();
        output.WriteLine($"legacy={legacy}: {r}; violations: {string.Join(" | ", hash.Violations)}");
        if (legacy)
        {
            Assert.Equal(1, hash.ViolationCount);
            Assert.Contains("duplicate", hash.Violations.Single());
        }
        else
        {
            Assert.Equal(AccessResult.Faulted, r);
            Assert.Equal(0, hash.ViolationCount);
            Assert.Equal(0, mm.VerifyHash());
        }

        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void TheGatherFreesOnlyAfterItsFlushAndChecksForLiveTranslations()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true, caches: false); // a freed page reads refcount 0
        PageArena arena = lease.Arena;
        var hash = new HashMmu(64);
        var mm = NewMm(arena, hash);
        mm.Access(0, write: true);
        mm.Access(Page, write: true);
        Pfn first = mm.Mappings()[0].Entry.Pfn;

        var tlb = new MmuGather(mm);
        Assert.Equal(1, mm.Zap(0, Page, tlb));
        Assert.Equal(1, tlb.PendingPages);
        Assert.Equal(1, arena.RefCount(first)); // unhooked, not freed before the flush
        tlb.Flush();
        Assert.Equal(0, arena.RefCount(first));
        Assert.Equal(1, tlb.Flushes);

        // The T1 check can fail: hand the gather a page that is still mapped and hashed.
        Pfn second = mm.Mappings()[0].Entry.Pfn;
        arena.GetPage(second);
        tlb.RemovePage(second, Page);
        tlb.Dispose();
        Assert.Equal(1, hash.ViolationCount);
        Assert.Contains("T1", hash.Violations.Single());
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void ANestedGatherFlushesItsWholeRange()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(64);
        var mm = NewMm(arena, hash);
        for (ulong i = 0; i < 8; i++) mm.Access(i * Page, write: true);

        var alone = new MmuGather(mm);
        alone.TrackRange(0, 4 * Page);
        alone.Dispose();
        Assert.Equal(8, hash.CountEntries(mm.Asid)); // no other gather: nothing to flush

        var other = new MmuGather(mm); // another thread zapping the same address space
        var nested = new MmuGather(mm);
        nested.TrackRange(0, 4 * Page);
        nested.Dispose();
        Assert.Equal(4, hash.CountEntries(mm.Asid)); // mm_tlb_flush_nested: the whole range is flushed
        other.Dispose();
        Assert.Equal(0, hash.ViolationCount);
        mm.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    [Fact]
    public void CollapseAndTeardownInvalidateEveryEntry()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(256);
        var mm = NewMm(arena, hash, batching: false);
        for (ulong i = 0; i < 6; i++) mm.Access(i * Page, write: true);
        Assert.Equal(CollapseResult.Collapsed, mm.Collapse(0));
        Assert.Equal(0, hash.CountEntries(mm.Asid)); // the cleared PTEs' entries are gone before the old pages are freed
        Assert.Equal(AccessResult.Hit, mm.Access(3 * Page, write: true)); // huge mappings are not hashed here
        for (ulong i = 0; i < 3; i++) mm.Access(mm.HugePageSize + i * Page, write: false);
        Assert.Equal(3, hash.CountEntries(mm.Asid));
        mm.Dispose();
        Assert.Equal(0, hash.CountEntries(mm.Asid));
        Assert.Equal(0, hash.ViolationCount);
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

[Collection(StressCollection.Name)]
public sealed class HashMmuConcurrencyTests(ITestOutputHelper output)
{
    /// <summary>Accessors (reads and writes) against zappers and mappers of read-only pages on the same addresses.</summary>
    [Fact(Timeout = 60_000)]
    public async Task AccessesAgainstZapsNeverHashTwoEntriesForOneAddress()
    {
        int seed = TestSupport.Seed(output, "hash MMU under churn");
        using ArenaLease lease = TestSupport.Lease(pages: 8192, isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(128);
        var mm = new AddressSpace(arena, new AddressSpaceOptions { HashMmu = hash });
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long ops = 0;
        await Task.Run(() =>
        {
            DateTime deadline = DateTime.UtcNow + TestSupport.ChurnTime;
            var threads = Enumerable.Range(0, 2 * Environment.ProcessorCount).Select(id => new Thread(() =>
            {
                var rng = new Random(seed + id);
                try
                {
                    while (DateTime.UtcNow < deadline)
                    {
                        ulong va = (ulong)rng.Next(64) << 12;
                        switch (rng.Next(4))
                        {
                            case 0:
                            case 1:
                                mm.Access(va, write: rng.Next(2) == 0);
                                break;
                            case 2:
                                mm.Zap(va, Math.Min((ulong)(1 + rng.Next(8)) << 12, (64UL << 12) - va));
                                break;
                            default:
                                Pfn p = arena.AllocPages(0);
                                mm.MapPage(va, p, writable: rng.Next(2) == 0);
                                arena.PutPage(p);
                                break;
                        }

                        Interlocked.Increment(ref ops);
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
            })).ToList();
            foreach (Thread t in threads) t.Start();
            TestSupport.JoinAll(threads, TestSupport.ChurnTime + TimeSpan.FromSeconds(30));
        });

        output.WriteLine($"{ops} operations; hash: {hash.Inserts} inserts, {hash.Evictions} evictions, {hash.Invalidations} invalidations");
        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(5)));
        Assert.Equal(0, mm.VerifyHash());
        Assert.True(hash.ViolationCount == 0, string.Join(Environment.NewLine, hash.Violations.Take(5)));
        mm.Dispose();
        mm.Epochs.Barrier();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

public sealed class HashBatchTests
{
    [Fact]
    public void ABatchHoldsOneAddressSpaceAndAtMost192Entries()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096, isChecked: true);
        PageArena arena = lease.Arena;
        var hash = new HashMmu(1024);
        var a = new AddressSpace(arena, new AddressSpaceOptions { HashMmu = hash });
        var b = new AddressSpace(arena, new AddressSpaceOptions { HashMmu = hash });
        for (ulong i = 0; i < 200; i++) a.Access(i << 12, write: true);
        b.Access(0, write: true);
        var hashedPtes = a.Mappings().Select(m => (m.Address, m.Entry.Value)).ToList();

        HashBatch batch = HashBatch.Current;
        for (int i = 0; i < HashBatch.Capacity - 1; i++) batch.Add(a, hashedPtes[i].Address, hashedPtes[i].Value);
        Assert.Equal(HashBatch.Capacity - 1, batch.Count);
        Assert.Equal(200, hash.CountEntries(a.Asid)); // queued, nothing invalidated yet
        batch.Add(a, hashedPtes[191].Address, hashedPtes[191].Value);
        Assert.Equal(0, batch.Count);                 // full at 192: flushed
        Assert.Equal(8, hash.CountEntries(a.Asid));

        batch.Add(a, hashedPtes[192].Address, hashedPtes[192].Value);
        Pte bPte = b.Mappings().Single().Entry;
        batch.Add(b, 0, bPte.Value);                  // another address space: a's entry is flushed first
        Assert.Equal(7, hash.CountEntries(a.Asid));
        Assert.Equal(1, batch.Count);
        batch.Flush();
        Assert.Equal(0, hash.CountEntries(b.Asid));
        Assert.Equal(0, hash.ViolationCount);
        a.Dispose();
        b.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
