using System.Diagnostics;
using PageCore.Legacy;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// Checked mode refuses every put on a freed block that a per-CPU cache holds, even while another thread's speculative
/// get has its transient reference on the block (count 2). The interleaving that breaks a put deciding on the count
/// alone, driven on real threads every round: the owner frees a block into its magazine; a getter's
/// <see cref="PageArena.TryGetPageUnlessZero"/> adds on it and, in the give-back hook between its add and its give-back,
/// waits for a misuser's <see cref="PageArena.PutPage"/> on the same block. The owner allocates nothing until the
/// round is over, so the block is free in its cache for the whole put.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class CheckedCachedPutTests(ITestOutputHelper output)
{
    private const int TestTimeoutMs = 60_000;

    /// <summary>
    /// Fixed form: over the churn budget, every misuse put inside the window is refused and writes nothing, no getter's
    /// reference is stolen, and the arena is whole at the end. Legacy form (<see cref="LegacyCachedPut"/>, the 4-byte put
    /// checked mode used before): a put accepted on the cached block, caught within the stated maximum (20 s).
    /// </summary>
    [Theory(Timeout = TestTimeoutMs)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task APutInsideASpeculativeGetOnACachedBlockIsRefused(bool legacy)
    {
        await Task.Yield();
        int seed = TestSupport.Seed(output, nameof(APutInsideASpeculativeGetOnACachedBlockIsRefused));
        using ArenaLease lease = TestSupport.Lease(caches: true, isChecked: true);
        PageArena arena = lease.Arena;
        TimeSpan budget = legacy ? TimeSpan.FromSeconds(20) : TestSupport.ChurnTime;
        var clock = Stopwatch.StartNew();
        DateTime hardDeadline = DateTime.UtcNow + TimeSpan.FromSeconds(40); // every wait below ends by then

        long published = -1; // the block of the current round
        int round = 0, window = 0, answered = 0, getterDone = 0, stop = 0;
        long accepted = 0, refused = 0, notInWindow = 0;
        string? firstAccepted = null, getterFailure = null;

        arena.GiveBackHook = head =>
        {
            // The getter's window: its reference is on the cached block. Open it for this round, wait for the misuser.
            int r = Volatile.Read(ref round);
            if (head.Value != (uint)Volatile.Read(ref published) || Volatile.Read(ref window) == r)
            {
                return;
            }

            Volatile.Write(ref window, r);
            while (Volatile.Read(ref answered) != r && Volatile.Read(ref stop) == 0 && DateTime.UtcNow < hardDeadline)
            {
                Thread.Yield();
            }
        };

        var getter = new Thread(() =>
        {
            int seen = 0;
            while (Volatile.Read(ref stop) == 0 && DateTime.UtcNow < hardDeadline)
            {
                int r = Volatile.Read(ref round);
                if (r == seen)
                {
                    Thread.Yield();
                    continue;
                }

                // The block is free in the owner's cache: the get must fail (it gives its reference back in the hook).
                if (arena.TryGetPageUnlessZero(new Pfn((uint)Volatile.Read(ref published))))
                {
                    Interlocked.CompareExchange(ref getterFailure, $"round {r}: a get on a freed, cached block succeeded", null);
                }

                seen = r;
                Volatile.Write(ref getterDone, r);
            }
        }) { Name = "getter", IsBackground = true };

        var misuser = new Thread(() =>
        {
            var rnd = new Random(seed);
            int seen = 0;
            while (Volatile.Read(ref stop) == 0 && DateTime.UtcNow < hardDeadline)
            {
                int w = Volatile.Read(ref window);
                if (w == seen)
                {
                    Thread.Yield();
                    continue;
                }

                seen = w;
                Thread.SpinWait(rnd.Next(0, 32));
                var p = new Pfn((uint)Volatile.Read(ref published));
                int before = arena.DescriptorOf(p).RefCount;
                try
                {
                    if (legacy)
                    {
                        LegacyCachedPut.PutPage(arena, p);
                    }
                    else
                    {
                        arena.PutPage(p);
                    }

                    Interlocked.Increment(ref accepted);
                    Interlocked.CompareExchange(ref firstAccepted, $"round {w}: put on cached pfn {p.Value} accepted (count {before} before) after {clock.Elapsed.TotalMilliseconds:F1} ms", null);
                }
                catch (PageBugException)
                {
                    Interlocked.Increment(ref refused);
                    if (arena.DescriptorOf(p).RefCount != before)
                    {
                        Interlocked.CompareExchange(ref firstAccepted, $"round {w}: a refused put changed the count from {before}", null);
                    }
                }

                Volatile.Write(ref answered, w);
            }
        }) { Name = "misuser", IsBackground = true };

        getter.Start();
        misuser.Start();
        var orders = new Random(seed + 1);
        int rounds = 0;
        try
        {
            while (clock.Elapsed < budget && DateTime.UtcNow < hardDeadline && !(legacy && Volatile.Read(ref accepted) > 0))
            {
                int order = orders.Next(4);
                Pfn b = arena.AllocPages(order);
                arena.FreePages(b, order); // into this thread's magazine, frozen while it is marked cached
                Volatile.Write(ref published, b.Value);
                int r = ++rounds;
                Volatile.Write(ref round, r);
                while (Volatile.Read(ref getterDone) != r && DateTime.UtcNow < hardDeadline)
                {
                    Thread.Yield();
                }

                Assert.True(Volatile.Read(ref getterDone) == r, $"round {r} did not finish");
                if (Volatile.Read(ref answered) != r)
                {
                    notInWindow++; // the getter's hook saw another block (cannot happen while the owner waits); counted
                }
            }
        }
        finally
        {
            Volatile.Write(ref stop, 1);
            TestSupport.JoinAll([getter, misuser], TimeSpan.FromSeconds(10));
            arena.GiveBackHook = null;
        }

        Assert.Null(getterFailure);
        long stolen = arena.Statistics[ArenaCounter.StolenReferences];
        output.WriteLine($"{(legacy ? "legacy" : "fixed")}: {rounds:N0} rounds, {refused:N0} puts refused, {accepted:N0} accepted, {stolen:N0} stolen references counted, {notInWindow} rounds without a put in the window, {clock.Elapsed.TotalMilliseconds:F0} ms; {firstAccepted ?? "no put accepted"}");
        if (legacy)
        {
            Assert.True(accepted > 0, $"the legacy put was not caught within {budget} ({rounds} rounds)");
            Assert.Equal(accepted, stolen); // each accepted put took a getter's reference, and the getter saw it
        }
        else
        {
            Assert.True(rounds >= 20, $"only {rounds} rounds ran");
            Assert.Null(firstAccepted);
            Assert.Equal(rounds - notInWindow, refused);
            Assert.Equal(0, stolen);
        }

        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}
