using System.Diagnostics;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The hash MMU judges rule 5, so its reads must never lie. Each test drives one interleaving
/// through <see cref="HashMmu.ProbeHook"/> against the legacy reads (<see cref="HashMmu.LegacyUncheckedReads"/>, where
/// the lie is asserted to happen) and the fixed ones (where it must not).
/// </summary>
public sealed class HashMmuReadTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    /// <summary>
    /// A full 16-slot table (every address hashes into both groups) with address <paramref name="a"/> in it; returns the
    /// absolute slot of every address inserted, by address.
    /// </summary>
    internal static Dictionary<ulong, int> Fill(HashMmu hash, int asid, ulong a, int count = 16)
    {
        var at = new Dictionary<ulong, int>();
        for (ulong va = a; at.Count < count; va += Page)
        {
            at[va] = Absolute(hash, asid, va, hash.Insert(asid, va, PfnOf(va), writable: true));
        }

        return at;
    }

    internal static Pfn PfnOf(ulong va) => new((uint)(va / Page) + 1000);

    internal static int Absolute(HashMmu hash, int asid, ulong va, int code)
    {
        Assert.True(code >= 0, $"insert of 0x{va:x} refused");
        return hash.FirstSlot(asid, va, code >> 3) + (code & 7);
    }

    internal static int Code(HashMmu hash, int asid, ulong va, int absolute) =>
        absolute - hash.FirstSlot(asid, va, 0) is >= 0 and < HashMmu.SlotsPerGroup and int s ? s : 8 | (absolute - hash.FirstSlot(asid, va, 1));

    /// <summary>
    /// Torn entry: between the translation's match on V and its read of R, A's entry is invalidated and B is inserted
    /// into the same slot (the only free one). Legacy: A translates to B's page. Fixed: a miss (A is gone).
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ATranslationNeverPairsOneAddressWithAnotherAddressesPage(bool legacy)
    {
        var hash = new HashMmu(groups: 2) { LegacyUncheckedReads = legacy };
        int asid = hash.AllocateAsid();
        ulong a = 0, b = 64 * Page;
        Dictionary<ulong, int> at = Fill(hash, asid, a);
        bool done = false;
        hash.ProbeHook = (probe, slot) =>
        {
            if (probe == HashProbe.TranslateMatched && slot == at[a] && !done)
            {
                done = true;
                Assert.True(hash.Invalidate(asid, a, Code(hash, asid, a, at[a])));
                Assert.Equal(at[a], Absolute(hash, asid, b, hash.Insert(asid, b, PfnOf(b), writable: false)));
            }
        };

        bool hit = hash.TryTranslate(asid, a, out Pfn pfn, out bool writable);
        output.WriteLine($"legacy={legacy}: hit {hit}, {pfn}, writable {writable}");
        Assert.True(done);
        if (legacy)
        {
            Assert.True(hit);
            Assert.Equal((PfnOf(b), false), (pfn, writable)); // the lie: A with B's page and permission
        }
        else
        {
            Assert.False(hit);
        }

        Assert.Equal(0, hash.ViolationCount);
    }

    /// <summary>
    /// A -> B -> A around the reads: B takes A's slot before R is read, then A comes back into it with another page
    /// before V is read again. Legacy: A with B's page. Fixed: R changed under a matching V, read again: A's new page.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AnEntryReusedAndRestoredAroundTheReadsIsReadAgain(bool legacy)
    {
        var hash = new HashMmu(groups: 2) { LegacyUncheckedReads = legacy };
        int asid = hash.AllocateAsid();
        ulong a = 0, b = 64 * Page;
        Dictionary<ulong, int> at = Fill(hash, asid, a);
        int step = 0;
        hash.ProbeHook = (probe, slot) =>
        {
            if (probe == HashProbe.TranslateMatched && step == 0)
            {
                step = 1;
                Assert.True(hash.Invalidate(asid, a, Code(hash, asid, a, at[a])));
                Assert.Equal(at[a], Absolute(hash, asid, b, hash.Insert(asid, b, PfnOf(b), writable: false)));
            }
            else if (probe == HashProbe.TranslateFirstWordRead && step == 1)
            {
                step = 2;
                Assert.True(hash.Invalidate(asid, b, Code(hash, asid, b, at[a])));
                Assert.Equal(at[a], Absolute(hash, asid, a, hash.Insert(asid, a, new Pfn(7), writable: true)));
            }
        };

        Assert.True(hash.TryTranslate(asid, a, out Pfn pfn, out bool writable));
        output.WriteLine($"legacy={legacy}: {pfn}, writable {writable}, step {step}");
        Assert.Equal(legacy ? (PfnOf(b), false) : (new Pfn(7), true), (pfn, writable));
        Assert.Equal(legacy ? 1 : 2, step); // the legacy read has no second step
        Assert.Equal(0, hash.ViolationCount);
    }

    /// <summary>
    /// False multi-hit: the translation reads A at slot i; A is invalidated, another address takes slot i, and A is
    /// hashed again into slot j, later in the scan. Legacy: a multi-hit reported, though the two entries were never valid
    /// at one instant. Fixed: no violation, and the translation is A's new entry.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AnEntrySeenAtItsOldAndNewSlotIsNoMultiHit(bool legacy)
    {
        var hash = new HashMmu(groups: 2) { LegacyUncheckedReads = legacy };
        int asid = hash.AllocateAsid();
        ulong a = 0;
        Dictionary<ulong, int> at = Fill(hash, asid, a);
        int primary = hash.FirstSlot(asid, a, 0), secondary = hash.FirstSlot(asid, a, 1);
        Assert.Equal(primary, at[a]); // the first insert took the primary group's first slot
        // Free one slot of A's secondary group (scanned after the primary one).
        ulong freed = at.Keys.First(va => at[va] >= secondary && at[va] < secondary + HashMmu.SlotsPerGroup);
        Assert.True(hash.Invalidate(asid, freed, Code(hash, asid, freed, at[freed])));
        ulong z = Enumerable.Range(100, 1000).Select(n => (ulong)n * Page).First(va => hash.FirstSlot(asid, va, 0) == primary);
        bool moved = false;
        hash.ProbeHook = (probe, slot) =>
        {
            if (probe == HashProbe.TranslateSlotRead && slot == at[a] && !moved)
            {
                moved = true;
                Assert.True(hash.Invalidate(asid, a, 0));
                Assert.Equal(at[a], Absolute(hash, asid, z, hash.Insert(asid, z, PfnOf(z), writable: true)));
                Assert.Equal(at[freed], Absolute(hash, asid, a, hash.Insert(asid, a, new Pfn(7), writable: true)));
            }
        };

        Assert.True(hash.TryTranslate(asid, a, out Pfn pfn, out _));
        output.WriteLine($"legacy={legacy}: {pfn}; violations: {string.Join(" | ", hash.Violations)}");
        Assert.True(moved);
        if (legacy)
        {
            Assert.Contains("multi-hit", hash.Violations.Single()); // the lie: a duplicate that never existed
        }
        else
        {
            Assert.Equal(0, hash.ViolationCount);
            Assert.Equal(new Pfn(7), pfn);
        }

        // A real multi-hit is still reported: two entries valid at once, planted through the legacy insert (which does
        // not scan again after its claim), then translated by the fixed reads.
        var twice = new HashMmu(groups: 2) { LegacyUncheckedReads = true };
        int id = twice.AllocateAsid();
        bool nested = false;
        twice.ProbeHook = (probe, _) =>
        {
            if (probe == HashProbe.InsertScanned && !nested)
            {
                nested = true;
                twice.Insert(id, a, new Pfn(1), writable: true);
            }
        };
        Assert.True(twice.Insert(id, a, new Pfn(2), writable: true) >= 0);
        Assert.Equal(2, twice.CountEntries(id));
        twice.LegacyUncheckedReads = false;
        Assert.True(twice.TryTranslate(id, a, out _, out _));
        Assert.Contains("multi-hit", twice.Violations.Single());
    }

    /// <summary>
    /// Missed duplicate: two inserts of one address at once (what a broken busy bit allows). Both scan before either
    /// claims, so neither first scan sees the other. Legacy: both publish, two valid entries, nothing reported. Fixed:
    /// the later claim's second scan sees the earlier entry; reported and refused.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void TwoInsertsOfOneAddressAtOnceAreCaught(bool legacy)
    {
        var hash = new HashMmu(groups: 2) { LegacyUncheckedReads = legacy };
        int asid = hash.AllocateAsid();
        ulong a = 5 * Page;
        int inner = int.MinValue;
        hash.ProbeHook = (probe, _) =>
        {
            if (probe == HashProbe.InsertScanned && inner == int.MinValue)
            {
                inner = -2;
                inner = hash.Insert(asid, a, new Pfn(1), writable: true); // the other CPU's insert, between scan and claim
            }
        };

        int outer = hash.Insert(asid, a, new Pfn(2), writable: true);
        output.WriteLine($"legacy={legacy}: inner slot {inner}, outer slot {outer}; violations: {string.Join(" | ", hash.Violations)}");
        Assert.True(inner >= 0);
        if (legacy)
        {
            Assert.True(outer >= 0);
            Assert.Equal(2, hash.CountEntries(asid)); // the lie: two entries for one address, and no report
            Assert.Equal(0, hash.ViolationCount);
        }
        else
        {
            Assert.Equal(-1, outer);
            Assert.Equal(1, hash.CountEntries(asid));
            Assert.Contains("at the same time", hash.Violations.Single());
            Assert.True(hash.TryTranslate(asid, a, out Pfn pfn, out _));
            Assert.Equal(new Pfn(1), pfn);
        }
    }
}

[Collection(StressCollection.Name)]
public sealed class HashMmuReadRaceTests(ITestOutputHelper output)
{
    private const ulong Page = 4096;

    /// <summary>
    /// The torn entry as a real race: one thread translates A while another cycles A's slot (invalidate A, insert B
    /// into it, the only free slot, invalidate B, insert A again); a probe on the translating thread spins a random
    /// while between the match on V and the rest of the read, to widen the window. A translation of A must be A's page
    /// and permission or a miss. Legacy: runs until the first lie, up to <c>LegacyBudget</c>, and must see one. Fixed:
    /// runs the churn time and must see none.
    /// </summary>
    [Theory(Timeout = 60_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task TranslationsRacingASlotsReuseNeverTear(bool legacy)
    {
        TimeSpan legacyBudget = TimeSpan.FromSeconds(20);
        int seed = TestSupport.Seed(output, $"torn translation, legacy={legacy}");
        var hash = new HashMmu(groups: 2) { LegacyUncheckedReads = legacy };
        int asid = hash.AllocateAsid();
        ulong a = 0, b = 64 * Page;
        Dictionary<ulong, int> at = HashMmuReadTests.Fill(hash, asid, a);
        int slot = at[a];
        int aCode = HashMmuReadTests.Code(hash, asid, a, slot), bCode = HashMmuReadTests.Code(hash, asid, b, slot);
        Pfn aPage = HashMmuReadTests.PfnOf(a), bPage = HashMmuReadTests.PfnOf(b);
        TimeSpan budget = legacy ? legacyBudget : TestSupport.ChurnTime;
        long translations = 0, hits = 0, cycles = 0, lies = 0;
        string? firstLie = null;
        TimeSpan? caughtAt = null;
        int translator = -1;
        var widen = new Random(seed);
        hash.ProbeHook = (probe, _) =>
        {
            if (probe == HashProbe.TranslateMatched && Environment.CurrentManagedThreadId == translator)
            {
                Thread.SpinWait(widen.Next(64));
            }
        };

        var clock = Stopwatch.StartNew();
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        await Task.Run(() =>
        {
            using var stop = new CancellationTokenSource();
            var reader = new Thread(() =>
            {
                translator = Environment.CurrentManagedThreadId;
                try
                {
                    while (!stop.IsCancellationRequested && clock.Elapsed < budget)
                    {
                        translations++;
                        if (!hash.TryTranslate(asid, a, out Pfn pfn, out bool writable))
                        {
                            continue;
                        }

                        hits++;
                        if (pfn != aPage || !writable)
                        {
                            lies++;
                            firstLie ??= $"0x{a:x} translated to {pfn} writable={writable} (A's page is {aPage}, B's {bPage}) after {clock.Elapsed.TotalMilliseconds:F1} ms";
                            caughtAt ??= clock.Elapsed;
                            if (legacy)
                            {
                                stop.Cancel(); // caught: the budget is a maximum, not a duration
                            }
                        }
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                }
                finally
                {
                    stop.Cancel();
                }
            }) { Name = "translator" };
            var cycler = new Thread(() =>
            {
                try
                {
                    while (!stop.IsCancellationRequested && clock.Elapsed < budget + TimeSpan.FromSeconds(1))
                    {
                        Assert.True(hash.Invalidate(asid, a, aCode));
                        Assert.Equal(bCode, hash.Insert(asid, b, bPage, writable: false));
                        Assert.True(hash.Invalidate(asid, b, bCode));
                        Assert.Equal(aCode, hash.Insert(asid, a, aPage, writable: true));
                        cycles++;
                    }
                }
                catch (Exception ex)
                {
                    errors.Enqueue(ex.ToString());
                    stop.Cancel();
                }
            }) { Name = "cycler" };
            reader.Start();
            cycler.Start();
            TestSupport.JoinAll([reader, cycler], budget + TimeSpan.FromSeconds(20));
        });

        output.WriteLine($"legacy={legacy}: {translations:N0} translations ({hits:N0} hits), {cycles:N0} slot cycles, {lies:N0} torn; time to detection {(caughtAt is { } t ? $"{t.TotalMilliseconds:F1} ms" : "none")} (budget {budget.TotalSeconds:F1} s)");
        if (firstLie is not null)
        {
            output.WriteLine("first: " + firstLie);
        }

        Assert.True(errors.IsEmpty, string.Join(Environment.NewLine, errors.Take(3)));
        Assert.True(cycles > 0 && hits > 0, "the race did not run");
        Assert.Equal(0, hash.ViolationCount);
        if (legacy)
        {
            Assert.True(lies > 0, $"no torn translation within {budget.TotalSeconds:F0} s");
        }
        else
        {
            Assert.True(lies == 0, firstLie);
        }
    }
}
