using System.Diagnostics.Metrics;
using System.Reflection;

namespace PageCore;

/// <summary>
/// The <c>PageCore</c> <see cref="Meter"/>: observable instruments over every live <see cref="PageArena"/> of the process,
/// read only when a listener collects (nothing is added to the allocation paths beyond the per-thread counters the
/// arena keeps anyway). Read it with a <see cref="MeterListener"/> in process, or out of process with
/// <c>pagecore-stress monitor --pid N</c> (or any EventPipe metrics reader).
/// </summary>
/// <remarks>
/// Instruments (tags: <c>order</c> where given):
/// <c>pagecore.pages.allocated</c> and <c>pagecore.pages.freed</c> (counters, <c>{page}</c>, per order: blocks times
/// 2^order), <c>pagecore.pages.free</c> (up-down counter, <c>{page}</c>), <c>pagecore.cache.hits</c> and
/// <c>pagecore.cache.misses</c> (counters, per-thread caches and page pools), <c>pagecore.cas.retries</c> (counter:
/// allocation, free and speculative-get retries), <c>pagecore.memory.returned</c> (counter, bytes given back to the
/// operating system, see <see cref="PageArena.ReturnFreeMemory"/>), <c>pagecore.memory.resident</c> (up-down counter,
/// resident bytes of the data pages), <c>pagecore.bugs</c> (counter: <see cref="PageBugException"/>s
/// reported in the process), <c>pagecore.arenas</c> (up-down counter), <c>pagecore.handover</c> (up-down counter,
/// <c>{arena}</c>, tag <c>form</c> = <c>asymmetric</c> or <c>symmetric</c>: live arenas by how their magazines are handed
/// over to a stealer, see <see cref="HandOverForm"/>; both tags are always reported, 0 where no arena uses that form).
/// The meter itself carries the tag <c>pagecore.process_barrier</c>: <see cref="ProcessBarrier.Kind"/>. The per-order
/// and cache figures need <see cref="PageArenaOptions.CollectStatistics"/> (the default) for the shared allocator's part.
/// </remarks>
public static class PageCoreMetrics
{
    /// <summary>The meter's name.</summary>
    public const string MeterName = "PageCore";

    private static readonly List<WeakReference<PageArena>> s_arenas = [];
    private static readonly Meter s_meter = CreateMeter();

    /// <summary>The meter (created on first use of the library's arenas).</summary>
    public static Meter Meter => s_meter;

    internal static void Register(PageArena arena)
    {
        lock (s_arenas)
        {
            s_arenas.RemoveAll(w => !w.TryGetTarget(out _));
            s_arenas.Add(new WeakReference<PageArena>(arena));
        }
    }

    internal static void Unregister(PageArena arena)
    {
        lock (s_arenas)
        {
            s_arenas.RemoveAll(w => !w.TryGetTarget(out PageArena? a) || a == arena);
        }
    }

    /// <summary>
    /// Runs <paramref name="read"/> over the live arenas under the registry's lock: an arena's Dispose unregisters under
    /// the same lock before it releases memory, so an observation never reads a released arena.
    /// </summary>
    private static T Observe<T>(Func<List<PageArena>, T> read)
    {
        lock (s_arenas)
        {
            var live = new List<PageArena>();
            foreach (WeakReference<PageArena> w in s_arenas)
            {
                if (w.TryGetTarget(out PageArena? a) && !a.IsDisposed)
                {
                    live.Add(a);
                }
            }

            return read(live);
        }
    }

    private static Meter CreateMeter()
    {
        string version = typeof(PageCoreMetrics).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0";
        var meter = new Meter(MeterName, version, [new KeyValuePair<string, object?>("pagecore.process_barrier", ProcessBarrier.Kind.ToString())]);
        meter.CreateObservableCounter("pagecore.pages.allocated", () => ByOrder(freed: false), "{page}", "Pages allocated, by block order");
        meter.CreateObservableCounter("pagecore.pages.freed", () => ByOrder(freed: true), "{page}", "Pages freed, by block order");
        meter.CreateObservableUpDownCounter("pagecore.pages.free", () => Observe(live => live.Sum(a => a.FreePageCount)), "{page}", "Free pages (shared allocator and caches)");
        meter.CreateObservableCounter("pagecore.cache.hits", () => Observe(live => live.Sum(a => a.UsageByOrder().Hits)), "{block}", "Allocations served by a per-thread cache or page pool without a refill");
        meter.CreateObservableCounter("pagecore.cache.misses", () => Observe(live => live.Sum(a => a.UsageByOrder().Misses)), "{block}", "Cache allocations that needed a refill");
        meter.CreateObservableCounter("pagecore.cas.retries", () => Observe(live => live.Sum(Retries)), "{retry}", "CAS retries in allocation, free and speculative gets");
        meter.CreateObservableCounter("pagecore.bugs", () => PageBugException.ReportedCount, "{report}", "Page bug reports (refused operations) in the process");
        meter.CreateObservableCounter("pagecore.memory.returned", () => Observe(live => live.Sum(a => a.BytesReturned)), "By", "Memory given back to the operating system (resident bytes of wholly free chunks)");
        meter.CreateObservableUpDownCounter("pagecore.memory.resident", () => Observe(live => live.Sum(a => a.ResidentBytes)), "By", "Resident bytes of the arenas' data pages (Linux mincore)");
        meter.CreateObservableUpDownCounter("pagecore.arenas", () => Observe(live => (long)live.Count), "{arena}", "Live arenas");
        meter.CreateObservableUpDownCounter("pagecore.handover", ByHandOver, "{arena}", "Live arenas by magazine hand-over form (asymmetric: the stealer's process-wide barrier; symmetric: a fence on both sides)");
        return meter;
    }

    private static IEnumerable<Measurement<long>> ByHandOver()
    {
        (long asymmetric, long symmetric) = Observe(live =>
        {
            long sym = live.Count(a => a.HandOver == HandOverForm.Symmetric);
            return (live.Count - sym, sym);
        });
        return
        [
            new Measurement<long>(asymmetric, new KeyValuePair<string, object?>("form", "asymmetric")),
            new Measurement<long>(symmetric, new KeyValuePair<string, object?>("form", "symmetric")),
        ];
    }

    private static long Retries(PageArena a)
    {
        ArenaStatistics s = a.Statistics;
        return s[ArenaCounter.AllocCasRetries] + s[ArenaCounter.FreeCasRetries] + s[ArenaCounter.SpeculativeGetRetries];
    }

    private static IEnumerable<Measurement<long>> ByOrder(bool freed)
    {
        Dictionary<int, long> sums = Observe(live =>
        {
            var d = new Dictionary<int, long>();
            foreach (PageArena a in live)
            {
                (long[] allocated, long[] freedBlocks, _, _) = a.UsageByOrder();
                long[] blocks = freed ? freedBlocks : allocated;
                for (int o = 0; o < blocks.Length; o++)
                {
                    d[o] = d.GetValueOrDefault(o) + (blocks[o] << o);
                }
            }

            return d;
        });
        return sums.Select(kv => new Measurement<long>(kv.Value, new KeyValuePair<string, object?>("order", kv.Key)));
    }
}
