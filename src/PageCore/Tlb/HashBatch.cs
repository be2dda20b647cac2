namespace PageCore;

/// <summary>
/// A thread's batch of pending hash-entry invalidations (<c>struct ppc64_tlb_batch</c>): up to <see cref="Capacity"/>
/// entries of one address space at a time, filled while the thread is in lazy-MMU mode.
/// </summary>
/// <remarks>
/// <para>The kernel keeps one per CPU and disables preemption while it is active; here it is per thread, which is the
/// same thing for code that cannot migrate in the middle of a batch: the batch never leaves the thread that filled it.</para>
/// <para>T3: the batch is empty whenever its thread holds no page-table lock and is outside lazy-MMU mode, and it holds
/// entries of one address space only (a different one flushes it first). The fixed form drains it when lazy-MMU mode
/// is left, inside the PTE lock; the legacy form of seed 003 leaves it to the end of the gather.</para>
/// </remarks>
internal sealed class HashBatch
{
    /// <summary><c>PPC64_TLB_BATCH_NR</c>.</summary>
    public const int Capacity = 192;

    [ThreadStatic]
    private static HashBatch? t_batch;

    private readonly ulong[] _va = new ulong[Capacity];
    private readonly ulong[] _pte = new ulong[Capacity];

    /// <summary>The calling thread's batch.</summary>
    public static HashBatch Current => t_batch ??= new HashBatch();

    /// <summary>The address space whose entries the batch holds.</summary>
    public AddressSpace? Mm { get; private set; }

    /// <summary>Pending invalidations.</summary>
    public int Count { get; private set; }

    /// <summary>Lazy-MMU nesting depth (<c>batch->active</c>).</summary>
    public int Active { get; set; }

    /// <summary>
    /// <c>hpte_need_flush</c> while batching: queues the invalidation of <paramref name="oldPte"/>'s hash entry, flushing
    /// first when the batch holds another address space's entries, and when it is full.
    /// </summary>
    public void Add(AddressSpace mm, ulong va, ulong oldPte)
    {
        if (Count > 0 && Mm != mm)
        {
            Flush();
        }

        Mm = mm;
        _va[Count] = va;
        _pte[Count] = oldPte;
        if (++Count == Capacity)
        {
            Flush();
        }
    }

    /// <summary><c>__flush_tlb_pending</c>: invalidates every queued entry, then one <c>tlbsync</c> for them all.</summary>
    public void Flush()
    {
        if (Count == 0)
        {
            return;
        }

        AddressSpace mm = Mm!;
        for (int i = 0; i < Count; i++)
        {
            mm.InvalidateHashEntry(_va[i], _pte[i]);
        }

        Count = 0;
        Interlocked.MemoryBarrier(); // tlbsync: every invalidation is complete before anything after the flush
    }
}
