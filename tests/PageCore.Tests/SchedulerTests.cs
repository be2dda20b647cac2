using PageCore.Systematic;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The controlled scheduler itself: a racy counter is caught and a correct one is not, under both strategies; a
/// violation replays exactly from its seed; a deadlock and a livelock are reported as such; and only one logical thread
/// ever runs at a time. (The library's own code under the scheduler: <c>run speculative-walker --systematic</c>, in
/// <see cref="CliTests"/>.)
/// </summary>
[Collection(StressCollection.Name)]
public sealed class SchedulerTests(ITestOutputHelper output)
{
    private const int MaxSteps = 10_000;

    /// <summary>Two threads increment a counter by a read and a separate write: a lost update under some schedules.</summary>
    private static SystematicProgram RacyCounter(int seed)
    {
        int[] counter = [0];
        void Increment()
        {
            for (int i = 0; i < 2; i++)
            {
                int v = Atomic.Read(ref counter[0]);
                Atomic.Write(ref counter[0], v + 1);
            }
        }

        return new SystematicProgram(
            [("A", Increment), ("B", Increment)],
            () => counter[0] == 4 ? null : $"the counter is {counter[0]} after 4 increments: an update was lost");
    }

    /// <summary>The same counter with atomic adds: no schedule loses an update.</summary>
    private static SystematicProgram AtomicCounter(int seed)
    {
        int[] counter = [0];
        void Increment()
        {
            for (int i = 0; i < 2; i++)
            {
                Atomic.Add(ref counter[0], 1);
            }
        }

        return new SystematicProgram(
            [("A", Increment), ("B", Increment)],
            () => counter[0] == 4 ? null : $"the counter is {counter[0]} after 4 increments");
    }

    [Theory(Timeout = 60_000)]
    [InlineData("random")]
    [InlineData("pct")]
    public async Task ARacyCounterIsCaughtAndACorrectOneIsNot(string strategy)
    {
        int seed = TestSupport.Seed(output, $"racy counter, {strategy}");
        ExplorationResult racy = await Task.Run(() => Exploration.Explore(strategy, seed, 200, MaxSteps, RacyCounter, pctDepth: 2, pctSteps: 10));
        output.WriteLine($"racy: {racy.Schedules} schedules; {racy.FirstFailure}");
        Assert.NotNull(racy.FirstFailure);
        Assert.Equal(RunOutcome.Violation, racy.FirstFailure!.Outcome);
        Assert.Contains("an update was lost", racy.FirstFailure.Message);
        Assert.NotEmpty(racy.FirstFailure.Trace);

        ExplorationResult atomic = await Task.Run(() => Exploration.Explore(strategy, seed, 100, MaxSteps, AtomicCounter, pctDepth: 2, pctSteps: 10));
        output.WriteLine($"atomic: {atomic.Schedules} schedules, {atomic.FirstFailure?.ToString() ?? "none failed"}");
        Assert.Null(atomic.FirstFailure);
        Assert.Equal(100, atomic.Schedules);
    }

    [Theory(Timeout = 60_000)]
    [InlineData("random")]
    [InlineData("pct")]
    public async Task AViolationReplaysExactlyFromItsSeed(string strategy)
    {
        int seed = TestSupport.Seed(output, $"replay, {strategy}");
        ExplorationResult found = await Task.Run(() => Exploration.Explore(strategy, seed, 200, MaxSteps, RacyCounter, pctDepth: 2, pctSteps: 10));
        Assert.NotNull(found.FailingSeed);
        for (int i = 0; i < 3; i++)
        {
            ExplorationResult again = await Task.Run(() => Exploration.Explore(strategy, found.FailingSeed!.Value, 1, MaxSteps, RacyCounter, pctDepth: 2, pctSteps: 10));
            Assert.Equal(1, again.Schedules);
            Assert.NotNull(again.FirstFailure);
            Assert.Equal(found.FirstFailure!.ToString(), again.FirstFailure!.ToString()); // same text, same trace, step for step
        }

        output.WriteLine(found.FirstFailure!.ToString());
    }

    [Fact(Timeout = 60_000)]
    public async Task LocksTakenInOppositeOrdersAreReportedAsADeadlock()
    {
        int seed = TestSupport.Seed(output, "deadlock");
        static SystematicProgram Program(int seed)
        {
            object a = new(), b = new();
            void Take(object first, object second)
            {
                Atomic.Enter(first);
                try
                {
                    Atomic.Enter(second);
                    Atomic.Exit(second);
                }
                finally
                {
                    Atomic.Exit(first);
                }
            }

            return new SystematicProgram([("AB", () => Take(a, b)), ("BA", () => Take(b, a))]);
        }

        ExplorationResult result = await Task.Run(() => Exploration.Explore("random", seed, 200, MaxSteps, Program));
        output.WriteLine($"{result.Schedules} schedules; {result.FirstFailure}");
        Assert.NotNull(result.FirstFailure);
        Assert.Equal(RunOutcome.Deadlock, result.FirstFailure!.Outcome);
        Assert.Contains("AB waits at", result.FirstFailure.Message);
        Assert.Contains("for a lock held by BA", result.FirstFailure.Message);

        // The same locks in one order never deadlock.
        static SystematicProgram Ordered(int seed)
        {
            object a = new(), b = new();
            void Take()
            {
                Atomic.Enter(a);
                Atomic.Enter(b);
                Atomic.Exit(b);
                Atomic.Exit(a);
            }

            return new SystematicProgram([("one", Take), ("two", Take)]);
        }

        ExplorationResult ordered = await Task.Run(() => Exploration.Explore("random", seed, 100, MaxSteps, Ordered));
        Assert.Null(ordered.FirstFailure);
    }

    [Fact(Timeout = 60_000)]
    public async Task ThreadsSpinningOnEachOtherHitTheStepBound()
    {
        int seed = TestSupport.Seed(output, "livelock");
        static SystematicProgram Program(int seed)
        {
            int[] flags = [0, 0];
            void Wait(int mine, int other)
            {
                Atomic.Write(ref flags[mine], 1);
                var spinner = default(SpinWait);
                while (Atomic.Read(ref flags[other]) == 0 || true) // waits for ever: a livelock by construction
                {
                    Atomic.SpinOnce(ref spinner);
                }
            }

            return new SystematicProgram([("left", () => Wait(0, 1)), ("right", () => Wait(1, 0))]);
        }

        ExplorationResult result = await Task.Run(() => Exploration.Explore("pct", seed, 1, 500, Program));
        output.WriteLine(result.FirstFailure?.ToString() ?? "none");
        Assert.Equal(RunOutcome.StepBound, result.FirstFailure!.Outcome);
        Assert.Equal(501, result.FirstFailure.Steps);
    }

    [Fact(Timeout = 60_000)]
    public async Task OnlyOneLogicalThreadRunsAtATime()
    {
        int seed = TestSupport.Seed(output, "one at a time");
        int running = 0, worst = 0;
        SystematicProgram Program(int seed)
        {
            void Body()
            {
                for (int i = 0; i < 50; i++)
                {
                    int now = Interlocked.Increment(ref running);
                    worst = Math.Max(worst, now);
                    Thread.SpinWait(200); // real time in which a second thread would show up if it ran
                    Interlocked.Decrement(ref running);
                    Atomic.MemoryBarrier(); // a point: the scheduler may switch here, and only here
                }
            }

            return new SystematicProgram([("a", Body), ("b", Body), ("c", Body)]);
        }

        ExplorationResult result = await Task.Run(() => Exploration.Explore("random", seed, 5, MaxSteps, Program));
        Assert.Null(result.FirstFailure);
        Assert.Equal(1, worst);
    }
}
