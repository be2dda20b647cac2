namespace PageCore.Stress;

/// <summary>
/// Forwards the items of a growing, append-only record (bug reports an address space kept, violations a hash MMU
/// counted) to the run's violations exactly once each, whichever thread looks first.
/// </summary>
internal sealed class ForwardOnce
{
    private long _forwarded;

    /// <summary>Reports items [already forwarded, <paramref name="total"/>) through <paramref name="report"/>.</summary>
    /// <remarks>The range is claimed by CAS on the forwarded count, so two threads that look at once never report the
    /// same item; the loser retries against the winner's count.</remarks>
    public void Forward(long total, Action<long> report)
    {
        long seen = Interlocked.Read(ref _forwarded);
        while (seen < total)
        {
            long now = Interlocked.CompareExchange(ref _forwarded, total, seen);
            if (now == seen)
            {
                for (long i = seen; i < total; i++)
                {
                    report(i);
                }

                return;
            }

            seen = now;
        }
    }
}
