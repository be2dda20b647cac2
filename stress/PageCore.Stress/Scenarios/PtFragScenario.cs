using System.Runtime.InteropServices;
using PageCore.Legacy;

namespace PageCore.Stress.Scenarios;

/// <summary>
/// <c>pt-frag</c> (rule 1, seed 000): threads allocate and free page-table fragments on shared and private address
/// spaces, private ones are torn down and recreated with fragments still live, and hostile PFN walkers take speculative
/// references on the page-table pages (as the page-cache lookups in the seed did) and put them. Fragments are stamped
/// by their owner and checked when freed; the arena is checked mode, so a page freed while a fragment is live turns
/// into poison under the owner's stamp. At the end every page must be back.
/// </summary>
/// <remarks>
/// Legacy form: the pre-2018 allocator that counted fragments in the refcount with <c>set_page_count</c>
/// (<c>PageCore.Legacy.LegacyPteFragments</c>); a walker's get between the allocation and that store is lost, and the
/// page is freed under live fragments or a put underflows. Fixed form: <see cref="AddressSpace"/>, fragments counted in
/// their own field.
/// </remarks>
public sealed class PtFragScenario : IScenario
{
    private const int FragmentsPerPage = 16;
    private const int Slots = 64;

    /// <inheritdoc />
    public string Name => "pt-frag";

    /// <inheritdoc />
    public string KernelCounterpart => "pte_fragment_alloc / pte_fragment_free vs speculative gets (powerpc, seed 000)";

    /// <inheritdoc />
    public string Rule => "rule 1";

    /// <inheritdoc />
    public bool HasLegacyForm => true;

    /// <inheritdoc />
    public string Description => "fragments on shared and torn-down address spaces, stamped, against hostile PFN walkers";

    /// <inheritdoc />
    public StressResult Run(StressContext ctx)
    {
        PageArena arena = PageArena.Create(new PageArenaOptions { Pages = Math.Min(ctx.ArenaPages, 16384), Checked = true });
        ctx.Arena = arena;
        ctx.DeclareOperations(new OpKind("fragment alloc", [], [ArenaCounter.CoreAllocs, ArenaCounter.CacheRefills]),
            new OpKind("fragment free", [], []), new OpKind("teardown", [], []), Blocks.WalkerGet, Blocks.WalkerMiss);
        var epochs = new EpochDomain();
        IPteFragments shared = Create(ctx, arena, epochs);
        long[] published = new long[Slots];
        var workers = Enumerable.Range(0, ctx.Threads)
            .Select(i => ($"frag-{i}", (Action<Recorder>)(rec => Work(ctx, arena, epochs, shared, published, rec, i)))).ToList();
        var walkers = Enumerable.Range(0, Math.Max(1, ctx.Threads / 2))
            .Select(i => ($"walker-{i}", (Action<Recorder, CancellationToken>)((rec, stop) => Blocks.Walk(ctx, arena, rec, 3, 4, ctx.Seed ^ (0x1F83D9AB * (i + 1)), stop, published, randomOneIn: 4, maxSpin: 8)))).ToList();
        TimeSpan elapsed = Harness.Run(ctx, workers, walkers);
        shared.Dispose();
        epochs.Barrier();
        return Harness.Finish(ctx, Name, arena, elapsed);
    }

    private static IPteFragments Create(StressContext ctx, PageArena arena, EpochDomain epochs) =>
        ctx.Legacy ? new LegacyPteFragments(arena, FragmentsPerPage) : new AddressSpace(arena, FragmentsPerPage, epochs);

    private static void Work(StressContext ctx, PageArena arena, EpochDomain epochs, IPteFragments shared, long[] published, Recorder rec, int id)
    {
        var rng = new Random(ctx.Seed + id);
        IPteFragments mine = Create(ctx, arena, epochs);
        var held = new List<(IPteFragments Owner, PtFragment Frag, long Stamp)>();
        long serial = 0;
        try
        {
            while (DateTime.UtcNow < ctx.Deadline)
            {
                if (held.Count < 48 && rng.Next(2) == 0)
                {
                    IPteFragments mm = rng.Next(2) == 0 ? shared : mine;
                    long t = rec.Begin();
                    PtFragment f = mm.AllocFragment();
                    rec.End(0, t);
                    long stamp = ((long)(id + 1) << 40) | ++serial;
                    MemoryMarshal.Cast<byte, long>(mm.GetSpan(f)).Fill(stamp);
                    Volatile.Write(ref published[rng.Next(Slots)], f.Page.Value + 1L);
                    held.Add((mm, f, stamp));
                }
                else if (held.Count > 0)
                {
                    int i = rng.Next(held.Count);
                    (IPteFragments mm, PtFragment f, long stamp) = held[i];
                    held[i] = held[^1];
                    held.RemoveAt(held.Count - 1);
                    Release(ctx, mm, f, stamp, rec, deferred: rng.Next(8) == 0);
                }

                if (rng.Next(512) == 0)
                {
                    // Tear the private address space down with fragments of it still live (pte_frag_destroy).
                    long t = rec.Begin();
                    mine.Dispose();
                    rec.End(2, t);
                    mine = Create(ctx, arena, epochs);
                }
            }
        }
        finally
        {
            foreach ((IPteFragments mm, PtFragment f, long stamp) in held) Release(ctx, mm, f, stamp, rec, deferred: false);
            mine.Dispose();
        }
    }

    private static void Release(StressContext ctx, IPteFragments mm, PtFragment f, long stamp, Recorder rec, bool deferred)
    {
        int bad = MemoryMarshal.Cast<byte, long>(mm.GetSpan(f)).IndexOfAnyExcept(stamp);
        if (bad >= 0)
        {
            ctx.Violation($"fragment {f.Index} of {f.Page} was overwritten while live (its page was freed and poisoned, or handed out twice): F1/F2/F3", f.Page);
        }

        long t = rec.Begin();
        if (deferred && mm is AddressSpace space)
        {
            space.FreeFragmentDeferred(f);
        }
        else
        {
            mm.FreeFragment(f);
        }

        rec.End(1, t);
    }
}
