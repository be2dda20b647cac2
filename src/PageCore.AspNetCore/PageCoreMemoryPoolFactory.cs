using System.Buffers;
using Microsoft.AspNetCore.Connections;
using PageCore.Buffers;

namespace PageCore.AspNetCore;

/// <summary>
/// Kestrel's buffer-pool factory on one PageCore arena: each <see cref="Create"/> (Kestrel calls it once per IO queue
/// and per transport and server part) returns a <see cref="PageMemoryPool"/> over the same arena. Disposing the factory (the DI container
/// does, when the host stops) drains the arena's caches and releases it once no page is rented.
/// </summary>
public sealed class PageCoreMemoryPoolFactory : IMemoryPoolFactory<byte>, IDisposable
{
    private readonly PageArena _arena;
    private readonly PageMemoryPoolOptions _poolOptions;
    private readonly PageMemoryPoolGroup _group;
    private int _disposed;

    /// <summary>Creates the factory and its arena.</summary>
    /// <param name="options">The arena's and the pools' options; copied.</param>
    /// <exception cref="ArgumentNullException"><paramref name="options"/> is null.</exception>
    /// <exception cref="ArgumentOutOfRangeException">An arena setting is out of range; the message names it.</exception>
    public PageCoreMemoryPoolFactory(PageCoreMemoryPoolOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        _arena = PageArena.Create(options.Arena ?? new PageArenaOptions());
        _poolOptions = (options.Pool ?? new PageMemoryPoolOptions()).Clone();
        _group = new PageMemoryPoolGroup(_arena);
    }

    /// <summary>The arena behind every pool of this factory (for statistics, <c>Verify</c> and <c>Drain</c>).</summary>
    public PageArena Arena => _arena;

    /// <summary>Rents that fell back to a heap buffer because the arena was exhausted, summed over this factory's pools.</summary>
    public long FallbackRents => _group.FallbackRents;

    /// <summary>Second disposes that were ignored, summed over this factory's pools.</summary>
    public long StaleDisposes => _group.StaleDisposes;

    /// <summary>Owner objects created so far (two per block head on its first rent; see <see cref="PageMemoryPool.OwnersCreated"/>).</summary>
    public long OwnersCreated => _group.OwnersCreated;

    /// <summary>A new pool over the factory's arena (Kestrel's <see cref="IMemoryPoolFactory{T}.Create"/>).</summary>
    /// <param name="options">Kestrel's options for the pool (its owner's name, for diagnostics); not used.</param>
    /// <returns>The pool. Disposing it refuses its further rents; the arena lives on for the factory's other pools.</returns>
    /// <exception cref="ObjectDisposedException">The factory was disposed.</exception>
    public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
    {
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        return new PageMemoryPool(_group, _poolOptions);
    }

    /// <summary>
    /// Drains the arena's caches and releases its memory when no page is rented any more. When pages are still rented
    /// (a connection that outlived the host), the arena is left alive rather than freed under them. Idempotent.
    /// </summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
        {
            return;
        }

        _arena.Drain();
        if (_arena.FreePageCount == _arena.PageCount)
        {
            _arena.Dispose();
        }
    }
}
