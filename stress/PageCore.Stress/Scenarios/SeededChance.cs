namespace PageCore.Stress.Scenarios;

/// <summary>
/// Random choices made inside hooks (a yield or a sleep that widens a window), on whatever thread reaches the hook: each
/// thread draws from its own generator, seeded from the run's seed and the thread's name, so that with the same
/// <c>--seed</c> every named thread makes the same sequence of choices. (Which choice meets which interleaving still
/// depends on the scheduler: a run on real threads cannot fix that.)
/// </summary>
public static class SeededChance
{
    private static int s_seed;
    private static int s_generation;

    [ThreadStatic] private static Random? t_random;
    [ThreadStatic] private static int t_generation;

    /// <summary>Starts a run's choices from <paramref name="seed"/>: every thread reseeds at its next draw.</summary>
    public static void Reset(int seed)
    {
        Volatile.Write(ref s_seed, seed);
        Interlocked.Increment(ref s_generation);
    }

    /// <summary>A number in 0..<paramref name="maxExclusive"/>-1 from the calling thread's generator.</summary>
    public static int Next(int maxExclusive)
    {
        int generation = Volatile.Read(ref s_generation);
        if (t_random is null || t_generation != generation)
        {
            t_random = new Random(Volatile.Read(ref s_seed) ^ StableHash(Thread.CurrentThread.Name ?? "unnamed"));
            t_generation = generation;
        }

        return t_random.Next(maxExclusive);
    }

    /// <summary>FNV-1a of the name: the same in every process (string.GetHashCode is randomized per process).</summary>
    private static int StableHash(string name)
    {
        uint hash = 2166136261;
        foreach (char c in name)
        {
            hash = (hash ^ c) * 16777619;
        }

        return (int)hash;
    }
}
