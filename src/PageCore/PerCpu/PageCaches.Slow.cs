using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using PageCore.Allocator;
using PageCore.Arena;
using PageCore.Descriptors;
using PageCore.Diagnostics;

namespace PageCore.PerCpu;

/// <summary>
/// The caches' slow paths: refill and spill between a magazine and the per-CPU depots or the shared allocator, the
/// depots' batch words, the stealer's side of the hand-over, and the registry of magazines.
/// </summary>
internal sealed unsafe partial class PageCaches
{
    /// <summary>
    /// The allocation slow path: refills the magazine (the given one, or the calling thread's, created on first use)
    /// from a depot or the shared allocator, then pops. Returns a cache-owned block, or <see cref="NoPage"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public uint AllocSlow(Magazine? m, int order) => TryAllocSlow(m, order, out uint pfn) ? pfn : NoPage;

    private bool TryAllocSlow(Magazine? m, int order, out uint pfn)
    {
        m ??= CurrentMagazine();
        bool owned = _symmetric ? EnterSymmetric(m) : EnterAsymmetric(m);
        try
        {
            if (owned)
            {
                ref int count = ref m.Hot.Count(order);
                if (count == 0)
                {
                    count = Refill(m, order);
                }

                if (count > 0)
                {
                    int c = --count;
                    pfn = m.Slots[(order * _stride) + c];
                    return true;
                }

                pfn = 0;
                return false;
            }
        }
        finally
        {
            LeaveOwner(m);
        }

        // A stealer holds the magazine right now: go around it, straight to the shared allocator.
        if (_core.TryAlloc(order, out pfn))
        {
            _arena.AdoptIntoCache(pfn, order);
            return true;
        }

        return false;
    }

    /// <summary>The free slow path: spills the oldest batch of a full magazine to a depot (or the shared allocator), then pushes.</summary>
    public void FreeSlow(Magazine? m, uint pfn, int order)
    {
        m ??= CurrentMagazine();
        bool owned = _symmetric ? EnterSymmetric(m) : EnterAsymmetric(m);
        try
        {
            if (owned)
            {
                ref int count = ref m.Hot.Count(order);
                if (count >= Capacity(order))
                {
                    count = Spill(m, order, count);
                }

                m.Slots[(order * _stride) + count] = pfn;
                count++;
                return;
            }
        }
        finally
        {
            LeaveOwner(m);
        }

        _arena.ReleaseCachedToCore(pfn, order);
    }

    /// <summary>Fills an empty magazine for <paramref name="order"/>: one depot batch, else a bulk claim from the allocator.</summary>
    private int Refill(Magazine m, int order)
    {
        Span<uint> dest = m.Slots.AsSpan(order * _stride, Capacity(order));
        _counters?.Add(ArenaCounter.CacheRefills);
        int got = PopDepot(order, dest);
        if (got != 0)
        {
            _counters?.Add(ArenaCounter.DepotTakes);
        }
        else
        {
            _counters?.Add(ArenaCounter.CoreAllocs);
            got = _core.AllocBulk(order, dest[..RefillCount(order)]);
            foreach (uint p in dest[..got])
            {
                _arena.AdoptIntoCache(p, order);
            }
        }

        return got;
    }

    /// <summary>Moves the oldest batch out of a full magazine into a depot (or the allocator); returns the new count.</summary>
    private int Spill(Magazine m, int order, int count)
    {
        int batch = Batch(order);
        Span<uint> slots = m.Slots.AsSpan(order * _stride, count);
        Span<uint> oldest = slots[..batch];
        for (int i = 0; i < batch; i++)
        {
            _desc[oldest[i]].Next = i + 1 < batch ? oldest[i + 1] + 1 : 0;
        }

        long word = ((long)batch << 32) | (oldest[0] + 1L);
        _counters?.Add(ArenaCounter.CacheSpills);
        if (PushDepot(order, word))
        {
            _counters?.Add(ArenaCounter.DepotPuts);
        }
        else
        {
            foreach (uint p in oldest)
            {
                _desc[p].Next = 0;
                _arena.ReleaseCachedToCore(p, order);
            }
        }

        slots[batch..].CopyTo(slots);
        return count - batch;
    }

    /// <summary>Takes one batch from a depot (this CPU's first) into <paramref name="dest"/>; returns its length.</summary>
    private int PopDepot(int order, Span<uint> dest)
    {
        int cpu = CurrentCpu();
        for (int k = 0; k < _cpuCount; k++)
        {
            long* slots = DepotOf(cpu, order);
            for (int s = 0; s < DepotSlots; s++)
            {
                if (Volatile.Read(ref slots[s]) != 0)
                {
                    long word = TakeBatch(ref slots[s]);
                    if (word != 0)
                    {
                        return UnchainBatch(word, dest);
                    }
                }
            }

            cpu = cpu + 1 == _cpuCount ? 0 : cpu + 1;
        }

        return 0;
    }

    /// <summary>Publishes a chained batch in an empty depot slot (this CPU's first); false when all are full.</summary>
    private bool PushDepot(int order, long word)
    {
        int cpu = CurrentCpu();
        for (int k = 0; k < _cpuCount; k++)
        {
            long* slots = DepotOf(cpu, order);
            for (int s = 0; s < DepotSlots; s++)
            {
                if (Volatile.Read(ref slots[s]) == 0 && TryPublishBatch(ref slots[s], word))
                {
                    return true;
                }
            }

            cpu = cpu + 1 == _cpuCount ? 0 : cpu + 1;
        }

        return false;
    }

    /// <summary>Depot slot transition: empty -> batch.</summary>
    /// <remarks>Invariant: a slot holds at most one batch, and a batch is in at most one slot. CAS from 0, a full fence,
    /// so the chain links written before it are visible to whoever takes the batch.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool TryPublishBatch(ref long slot, long word) => Interlocked.CompareExchange(ref slot, word, 0) == 0;

    /// <summary>Depot slot transition: batch -> empty, taking the whole batch.</summary>
    /// <remarks>Invariant: exactly one taker gets a given batch (the exchange returns it to one thread only). Full fence:
    /// the taker sees the links the publisher wrote.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long TakeBatch(ref long slot) => Interlocked.Exchange(ref slot, 0);

    private int UnchainBatch(long word, Span<uint> dest)
    {
        int count = (int)(word >> 32);
        uint link = (uint)word;
        int i = 0;
        for (; i < count && link != 0; i++)
        {
            uint p = link - 1;
            dest[i] = p;
            link = _desc[p].Next;
            _desc[p].Next = 0;
        }

        if (i != count)
        {
            throw new InvalidOperationException($"PageCore: a per-CPU batch of {count} blocks held only {i}: the chain was corrupted.");
        }

        return count;
    }

    private long EmptyMagazine(Magazine m)
    {
        long moved = 0;
        for (int o = 0; o < Orders; o++)
        {
            // Count and top are read once each: the stealer owns the magazine here, but if the hand-over was broken
            // (the legacy form) the owner may be popping at the same time, and a second read of top could find NoPage,
            // a PFN no descriptor has.
            ref int count = ref m.Hot.Count(o);
            int n = count;
            for (int i = 0; i < n; i++)
            {
                _arena.ReleaseCachedToCore(m.Slots[(o * _stride) + i], o);
            }

            moved += (long)n << o;
            count = 0;
            ref uint top = ref m.Hot.Top(o);
            uint t = top;
            if (t != NoPage)
            {
                _arena.ReleaseCachedToCore(t, o);
                top = NoPage;
                moved += 1L << o;
            }
        }

        return moved;
    }

    private long DrainDepots()
    {
        long moved = 0;
        uint[] buffer = new uint[Capacity(0)];
        for (int cpu = 0; cpu < _cpuCount; cpu++)
        {
            for (int o = 0; o < Orders; o++)
            {
                long* slots = DepotOf(cpu, o);
                for (int s = 0; s < DepotSlots; s++)
                {
                    long word = TakeBatch(ref slots[s]);
                    if (word == 0)
                    {
                        continue;
                    }

                    int count = UnchainBatch(word, buffer);
                    for (int i = 0; i < count; i++)
                    {
                        _arena.ReleaseCachedToCore(buffer[i], o);
                    }

                    moved += (long)count << o;
                }
            }
        }

        return moved;
    }

    /// <summary>
    /// Stealer transition: marks every magazine in <paramref name="mags"/> <c>StealPending</c>, then fences, so that the
    /// loads of <c>Busy</c> that follow decide which magazines are the stealer's.
    /// </summary>
    /// <remarks>
    /// Invariant: after this, each owner either is visibly <c>Busy</c> (the stealer waits or skips it) or sees
    /// <c>StealPending</c> = 1 at its next entry (it stays off the slots). Ordering: release stores, then the stealer's
    /// half of the Dekker handshake. Asymmetric form: <see cref="Interlocked.MemoryBarrierProcessWide"/>, assumed to
    /// run a full barrier on every CPU that runs a thread of the process (see <see cref="EnterAsymmetric"/> and
    /// <see cref="ProcessBarrier"/>); it also orders these stores before this thread's later loads. Symmetric form: a
    /// local full fence, matched by the one in <see cref="EnterSymmetric"/>.
    /// </remarks>
    private void AnnounceSteal(Magazine[] mags)
    {
        foreach (Magazine m in mags)
        {
            Volatile.Write(ref m.Hot.StealPending, 1);
        }

        if (mags.Length == 0)
        {
            return;
        }

        if (_symmetric)
        {
            Interlocked.MemoryBarrier();
        }
        else if (_legacyNoRemoteBarrier)
        {
            Legacy.LegacyHandOver.StealerFenceWithoutRemoteBarrier();
        }
        else
        {
            Interlocked.MemoryBarrierProcessWide();
        }
    }

    private bool EnterStealer(bool wait)
    {
        if (Interlocked.CompareExchange(ref _stealer, 1, 0) == 0)
        {
            return true;
        }

        if (!wait)
        {
            return false;
        }

        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref _stealer, 1, 0) != 0)
        {
            spin.SpinOnce();
        }

        return true;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private long* DepotOf(int cpu, int order) => _depot + (cpu * _cpuStride) + (order * DepotSlots);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private int CurrentCpu() => (int)((uint)Thread.GetCurrentProcessorId() % (uint)_cpuCount);

    /// <summary>The calling thread's magazine for these caches, created and registered on first use.</summary>
    private Magazine CurrentMagazine()
    {
        Magazine? m = t_magazine;
        if (m is not null && m.Owner == this)
        {
            return m;
        }

        // The thread's list of magazines (one per arena it used); drop those of disposed arenas on the way.
        Magazine? prev = null;
        for (Magazine? cur = t_magazines; cur is not null; cur = cur.NextOfThread)
        {
            if (cur.Owner == this)
            {
                t_magazine = cur;
                return cur;
            }

            if (cur.Owner._disposed)
            {
                if (prev is null) t_magazines = cur.NextOfThread;
                else prev.NextOfThread = cur.NextOfThread;
            }
            else
            {
                prev = cur;
            }
        }

        if (_disposed)
        {
            throw new ObjectDisposedException(nameof(PageArena));
        }

        var created = new Magazine(this, _stride, forPool: false) { NextOfThread = t_magazines };
        t_magazines = created;
        t_magazine = created;
        int registered = Register(created);
        if (registered >= 64 && (registered & (registered - 1)) == 0)
        {
            // The registry doubled: return the blocks of threads that exited and forget their magazines.
            Drain(wait: false);
        }

        return created;
    }

    private int Register(Magazine m)
    {
        while (true)
        {
            Magazine[] current = Volatile.Read(ref _magazines);
            Magazine[] next = [.. current, m];
            if (Interlocked.CompareExchange(ref _magazines, next, current) == current)
            {
                return next.Length;
            }
        }
    }

    /// <summary>Unregisters magazines of exited threads that were just emptied (and only those: a magazine registered
    /// after the drain's snapshot may still hold blocks).</summary>
    private void Forget(ICollection<Magazine> emptied)
    {
        foreach (Magazine m in emptied)
        {
            long[] counts = CountsOf(m);
            for (int i = 0; i < counts.Length; i++)
            {
                Interlocked.Add(ref _retiredCounts[i], counts[i]);
            }
        }

        while (true)
        {
            Magazine[] current = Volatile.Read(ref _magazines);
            Magazine[] next = Array.FindAll(current, m => !emptied.Contains(m));
            if (next.Length == current.Length || Interlocked.CompareExchange(ref _magazines, next, current) == current)
            {
                return;
            }
        }
    }

    /// <summary>Calls <paramref name="visit"/> for every cached block (PFN, order). Only meaningful when quiescent.</summary>
    public void ForEachCached(Action<uint, int> visit)
    {
        foreach (Magazine m in Volatile.Read(ref _magazines))
        {
            for (int o = 0; o < Orders; o++)
            {
                int count = Volatile.Read(ref m.Hot.Count(o));
                for (int i = 0; i < count; i++)
                {
                    visit(m.Slots[(o * _stride) + i], o);
                }

                uint top = Volatile.Read(ref m.Hot.Top(o));
                if (top != NoPage)
                {
                    visit(top, o);
                }
            }
        }

        for (int cpu = 0; cpu < _cpuCount; cpu++)
        {
            for (int o = 0; o < Orders; o++)
            {
                long* slots = DepotOf(cpu, o);
                for (int s = 0; s < DepotSlots; s++)
                {
                    long word = Volatile.Read(ref slots[s]);
                    int count = (int)(word >> 32);
                    uint link = (uint)word;
                    for (int i = 0; i < count && link != 0; i++)
                    {
                        visit(link - 1, o);
                        link = _desc[link - 1].Next;
                    }
                }
            }
        }
    }

    /// <summary>
    /// Tests only: called by <see cref="Drain"/> right after it emptied a thread's magazine and handed it back to its
    /// owner (StealPending cleared), before it decides whether to forget the magazine. Null by default; read once per
    /// magazine on the drain's slow path.
    /// </summary>
    internal Action<Magazine>? AfterReleaseHook { get; set; }
}
