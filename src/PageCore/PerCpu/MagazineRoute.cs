using System.Runtime.CompilerServices;

namespace PageCore.PerCpu;

/// <summary>
/// How an allocation or a free reaches a magazine: the calling thread's (<see cref="ThreadRoute"/>) or a
/// <see cref="PagePool"/>'s (<see cref="PoolRoute"/>). The arena's cached paths are generic over a struct route, so the
/// JIT compiles one specialised copy per route with the other route's branches gone (a pool's path has no thread-local
/// lookup and no hand-over protocol; a thread's path has no pool test), instead of one body that tests for a pool on
/// every call.
/// </summary>
internal interface IMagazineRoute
{
    /// <summary>
    /// The magazine this route would use, not yet checked against any caches: the caller compares its
    /// <see cref="Magazine.Owner"/> with the caches it means (a thread's last magazine may belong to another arena). Null
    /// when the calling thread has never had one.
    /// </summary>
    Magazine? Find();

    /// <summary>Pops a cache-owned block, or returns <see cref="PageCaches.NoPage"/>.</summary>
    uint Pop(Magazine m, int order);

    /// <summary>Pushes a cache-owned block; false when the magazine has no room (or is held by a stealer).</summary>
    bool Push(Magazine m, int order, uint pfn);
}

/// <summary>The calling thread's magazine, found through a thread-static; operated inside the hand-over protocol.</summary>
internal readonly struct ThreadRoute : IMagazineRoute
{
    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Magazine? Find() => PageCaches.LastThreadMagazine();

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Pop(Magazine m, int order) => PageCaches.TryPop(m, order);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Push(Magazine m, int order, uint pfn) => PageCaches.TryPush(m, order, pfn);
}

/// <summary>
/// A <see cref="PagePool"/>'s magazine, held by the caller: never stolen (see <see cref="PageCaches.Drain"/>), so it is
/// popped and pushed directly.
/// </summary>
internal readonly struct PoolRoute : IMagazineRoute
{
    private readonly Magazine _magazine;

    /// <summary>Routes to <paramref name="magazine"/>.</summary>
    public PoolRoute(Magazine magazine) => _magazine = magazine;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Magazine? Find() => _magazine;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Pop(Magazine m, int order) => PageCaches.PoolPop(m, order);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Push(Magazine m, int order, uint pfn) => PageCaches.PoolPush(m, order, pfn);
}
