using System.Diagnostics.Metrics;
using Xunit;

namespace PageCore.Tests;

/// <summary>The <c>PageCore</c> meter, read in process with a <see cref="MeterListener"/>.</summary>
[Collection(StressCollection.Name)] // alone: other tests' arenas would move the process-wide sums
public sealed class MetricsTests(ITestOutputHelper output)
{
    internal static Dictionary<string, long> Collect()
    {
        var values = new Dictionary<string, long>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == PageCoreMetrics.MeterName)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((instrument, value, tags, _) =>
        {
            string key = instrument.Name;
            foreach (KeyValuePair<string, object?> tag in tags)
            {
                key += $"[{tag.Key}={tag.Value}]";
            }

            lock (values)
            {
                values[key] = values.GetValueOrDefault(key) + value;
            }
        });
        listener.Start();
        listener.RecordObservableInstruments();
        return values;
    }

    [Fact(Timeout = 30_000)]
    public async Task TheMeterReportsAllocationsFreesCachesAndBugs()
    {
        await Task.Run(() =>
        {
            using ArenaLease lease = TestSupport.Lease(pages: 4096);
            PageArena arena = lease.Arena;
            Dictionary<string, long> before = Collect();
            long Delta(Dictionary<string, long> after, string key) => after.GetValueOrDefault(key) - before.GetValueOrDefault(key);

            var held = new List<(Pfn, int)>();
            for (int i = 0; i < 10; i++) held.Add((arena.AllocPages(0), 0));
            for (int i = 0; i < 3; i++) held.Add((arena.AllocPages(2), 2));
            held.Add((arena.AllocPages(5), 5));
            Dictionary<string, long> mid = Collect();
            Assert.Equal(10, Delta(mid, "pagecore.pages.allocated[order=0]"));
            Assert.Equal(12, Delta(mid, "pagecore.pages.allocated[order=2]"));
            Assert.Equal(32, Delta(mid, "pagecore.pages.allocated[order=5]"));
            Assert.InRange(Delta(mid, "pagecore.cache.hits") + Delta(mid, "pagecore.cache.misses"), 12, 13); // 13 cache allocations (a thread's very first has no magazine to hit or miss)
            Assert.True(Delta(mid, "pagecore.cache.misses") >= 1);

            foreach ((Pfn p, int order) in held) arena.FreePages(p, order);
            Dictionary<string, long> after = Collect();
            Assert.Equal(10, Delta(after, "pagecore.pages.freed[order=0]"));
            Assert.Equal(12, Delta(after, "pagecore.pages.freed[order=2]"));
            Assert.Equal(32, Delta(after, "pagecore.pages.freed[order=5]"));
            Assert.True(after.GetValueOrDefault("pagecore.pages.free") >= arena.FreePageCount);
            Assert.True(after.GetValueOrDefault("pagecore.arenas") >= 1);

            Assert.Throws<PageBugException>(() => arena.FreePages(held[0].Item1, 0)); // a double free
            Dictionary<string, long> last = Collect();
            Assert.True(Delta(last, "pagecore.bugs") >= 1);
            output.WriteLine(string.Join(Environment.NewLine, last.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key} = {kv.Value}")));
        });
    }

    [Fact(Timeout = 30_000)]
    public async Task ADisposedArenaLeavesTheMeter()
    {
        await Task.Run(() =>
        {
            long arenas = Collect().GetValueOrDefault("pagecore.arenas");
            PageArena arena = TestSupport.NewArena(pages: 1024);
            Assert.Equal(arenas + 1, Collect().GetValueOrDefault("pagecore.arenas"));
            arena.Dispose();
            Assert.Equal(arenas, Collect().GetValueOrDefault("pagecore.arenas"));
        });
    }
}
