namespace PageCore.Legacy;

/// <summary>
/// The historical, broken <see cref="EpochDomain.Reclaim"/>, reachable only through
/// <see cref="EpochDomain.CreateWithLegacyReclaim"/> (the race lab's <c>epoch-reclaim --legacy</c> and
/// <c>--legacy-reclaim</c>, and the tests that show it caught). Kept apart so the fixed path reads clean.
/// </summary>
/// <remarks>
/// <para><b>Stale bound.</b> The oldest announced epoch is computed once, then the queue is drained for as long as its
/// head is at or below it. Reclaimer R scans and sees no reader (bound = infinity); reader W enters and loads X; thread A
/// unlinks X and defers it; R, still in its loop, dequeues X and frees it while W reads X. No check ever compared X's
/// tag with a bound computed after X was deferred. Not a weak-memory question: any architecture.</para>
/// <para><b>Peek, then dequeue.</b> The tag checked is the peeked head's; <c>TryDequeue</c> may return the next item if
/// another reclaimer took the peeked one, and that item runs unchecked. With an anchor reader inside (bound = its
/// announce a), queue [o (tag &lt;= a), X (tag &gt; a, loaded by the anchor)]: R1 and R2 both peek o; R1 dequeues o;
/// R2 dequeues X and frees it under the anchor. Reachable without user calls: two deferring threads crossing the
/// every-64th-deferral reclaim at once.</para>
/// <para><b>No driver.</b> Deferred items run only on every 64th deferral or an explicit Reclaim/Barrier: after the last
/// reader leaves, frees sit until somebody calls, and an allocation that fails never reclaims them.</para>
/// <para>The domain's <see cref="EpochDomain.WindowHook"/> is called after the bound and between peek and dequeue, so
/// a test or the race lab can widen both windows.</para>
/// </remarks>
internal static class LegacyEpochReclaim
{
    /// <summary>The historical reclaim pass: a stale bound, then peek-check-dequeue-run until the head is too young.</summary>
    /// <param name="domain">A domain created by <see cref="EpochDomain.CreateWithLegacyReclaim"/>.</param>
    /// <returns>How many items ran.</returns>
    public static int Reclaim(EpochDomain domain)
    {
        var queue = domain.DeferredQueue;
        long safe = domain.OldestAnnounced(); // once, before the loop: every item deferred later is judged by it
        Action<ReclaimWindow>? hook = domain.WindowHook;
        hook?.Invoke(ReclaimWindow.AfterBound);
        int ran = 0;
        while (queue.TryPeek(out EpochDomain.Deferred d) && d.Tag <= safe)
        {
            hook?.Invoke(ReclaimWindow.BetweenPeekAndDequeue);
            if (queue.TryDequeue(out d)) // may be another item than the one checked
            {
                d.Run();
                ran++;
            }
        }

        return ran;
    }
}
