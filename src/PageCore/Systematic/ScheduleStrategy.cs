namespace PageCore.Systematic;

/// <summary>
/// How a <see cref="ControlledScheduler"/> chooses the next logical thread at each schedule point. A strategy is
/// deterministic given its seed: the same seed and the same program give the same schedule, which is what makes a
/// violation replayable.
/// </summary>
internal abstract class ScheduleStrategy
{
    /// <summary>The strategy and its parameters, as printed with a violation.</summary>
    public abstract string Description { get; }

    /// <summary>Prepares a new schedule for <paramref name="threads"/> logical threads.</summary>
    public abstract void Start(int threads);

    /// <summary>
    /// The next thread to run among <paramref name="enabled"/> (indices of threads that are alive and not blocked; never
    /// empty), at step <paramref name="step"/>, where <paramref name="current"/> (or -1 when it cannot go on: it ended or
    /// is blocked) reached a point of kind <paramref name="kind"/>.
    /// </summary>
    public abstract int Next(ReadOnlySpan<int> enabled, int current, PointKind kind, long step);
}

/// <summary>
/// The random walk: at every point, any enabled thread with equal probability, except that a thread at a spin-wait
/// turn gives way to any other enabled thread (it waits for one of them to act).
/// </summary>
internal sealed class RandomWalkStrategy(int seed) : ScheduleStrategy
{
    private Random _random = new(seed);

    /// <inheritdoc/>
    public override string Description => $"random walk, seed {seed}";

    /// <inheritdoc/>
    public override void Start(int threads) => _random = new Random(seed);

    /// <inheritdoc/>
    public override int Next(ReadOnlySpan<int> enabled, int current, PointKind kind, long step)
    {
        if (kind == PointKind.Spin && current >= 0 && enabled.Length > 1)
        {
            int pick = enabled[_random.Next(enabled.Length - 1)];
            return pick == current ? enabled[^1] : pick; // uniformly among the others
        }

        return enabled[_random.Next(enabled.Length)];
    }
}

/// <summary>
/// PCT, probabilistic concurrency testing (Burckhardt, Kothari, Musuvathi, Nagarakatte, ASPLOS 2010): each thread gets a
/// distinct random priority of <paramref name="depth"/> or more; the highest-priority enabled thread always runs; at
/// <paramref name="depth"/>-1 change points, each drawn uniformly from the first <paramref name="steps"/> steps, the
/// running thread's priority drops to that change point's own value (1, 2, ..., depth-1: below every initial priority;
/// the values are the draw order, not the order in time). A bug that needs
/// <paramref name="depth"/> ordering constraints is found with probability at least 1 / (n * k^(depth-1)) per schedule,
/// n threads and k steps. A thread at a spin-wait turn drops below every thread (each later spin lower still), so it runs
/// again only when every thread above it is blocked, spinning lower, or done.
/// </summary>
internal sealed class PctStrategy(int seed, int depth, long steps) : ScheduleStrategy
{
    private Random _random = new(seed);
    private long[] _priority = [];
    private long[] _changePoints = [];
    private long _lowest;

    /// <inheritdoc/>
    public override string Description => $"PCT depth {depth} over {steps} steps, seed {seed}";

    /// <inheritdoc/>
    public override void Start(int threads)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(depth, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(steps, 1);
        _random = new Random(seed);
        int[] order = Enumerable.Range(0, threads).ToArray();
        _random.Shuffle(order);
        _priority = new long[threads];
        for (int i = 0; i < threads; i++)
        {
            _priority[order[i]] = depth + i; // distinct, all above the change points' ranks 1..depth-1
        }

        // Not sorted: change point i lowers to rank i+1 whatever its step, so a later change may drop a thread below an
        // earlier one (the paper's k_1..k_{d-1} are drawn independently, each with its own priority value).
        _changePoints = Enumerable.Range(0, depth - 1).Select(_ => 1 + _random.NextInt64(steps)).ToArray();
        _lowest = 0;
    }

    /// <inheritdoc/>
    public override int Next(ReadOnlySpan<int> enabled, int current, PointKind kind, long step)
    {
        if (current >= 0)
        {
            int change = Array.IndexOf(_changePoints, step);
            if (change >= 0)
            {
                _priority[current] = change + 1;
            }

            if (kind == PointKind.Spin)
            {
                _priority[current] = --_lowest; // below everyone, until it is the only one left
            }
        }

        int best = enabled[0];
        foreach (int t in enabled)
        {
            if (_priority[t] > _priority[best])
            {
                best = t;
            }
        }

        return best;
    }
}
