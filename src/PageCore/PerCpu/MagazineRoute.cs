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

    /// <summary>
    /// The caches whose magazines this route pops and pushes on the arena's inlined fast path, or null: for a thread,
    /// the caches of an unchecked arena whose hand-over is asymmetric; for a pool (never stolen), those of any
    /// unchecked arena. One field load either way.
    /// </summary>
    PageCaches? FastCaches(PageArena arena);

    /// <summary>
    /// Pops a cache-owned block, or returns <see cref="PageCaches.NoPage"/>: the fast path's pop, only for a magazine of
    /// <see cref="FastCaches"/>.
    /// </summary>
    uint Pop(Magazine m, int order);

    /// <summary>
    /// Pushes a cache-owned block; false when the magazine has no room (or is held by a stealer): the fast path's push,
    /// only for a magazine of <see cref="FastCaches"/>.
    /// </summary>
    bool Push(Magazine m, int order, uint pfn);

    /// <summary><see cref="Pop"/> for a magazine of any caches, in the form its caches use (the arena's uncommon paths).</summary>
    uint PopAny(Magazine m, int order);

    /// <summary><see cref="Push"/> for a magazine of any caches, in the form its caches use (the arena's uncommon paths).</summary>
    bool PushAny(Magazine m, int order, uint pfn);
}

/// <summary>The calling thread's magazine, found through a thread-static; operated inside the hand-over protocol.</summary>
internal readonly struct ThreadRoute : IMagazineRoute
{
    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Magazine? Find() => PageCaches.LastThreadMagazine();

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public PageCaches? FastCaches(PageArena arena) => arena.FastThreadCaches;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Pop(Magazine m, int order) => PageCaches.TryPop(m, order);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Push(Magazine m, int order, uint pfn) => PageCaches.TryPush(m, order, pfn);

    /// <inheritdoc/>
    public uint PopAny(Magazine m, int order) => m.Owner.OwnerPop(m, order);

    /// <inheritdoc/>
    public bool PushAny(Magazine m, int order, uint pfn) => m.Owner.OwnerPush(m, order, pfn);
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
    public PageCaches? FastCaches(PageArena arena) => arena.FastPoolCaches;

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public uint Pop(Magazine m, int order) => PageCaches.PoolPop(m, order);

    /// <inheritdoc/>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool Push(Magazine m, int order, uint pfn) => PageCaches.PoolPush(m, order, pfn);

    /// <inheritdoc/>
    public uint PopAny(Magazine m, int order) => PageCaches.PoolPop(m, order);

    /// <inheritdoc/>
    public bool PushAny(Magazine m, int order, uint pfn) => PageCaches.PoolPush(m, order, pfn);
}
