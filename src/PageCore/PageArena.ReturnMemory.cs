using System.Runtime.InteropServices;
using PageCore.Arena;

namespace PageCore;

/// <summary>Returning free memory to the operating system: the arena's side of the kernel's free page reporting.</summary>
public sealed unsafe partial class PageArena
{
    // One return pass at a time (the timer's, or a caller's); Dispose takes it too, to wait out a pass in progress.
    private readonly Lock _returnLock = new();

    // Per chunk: Environment.TickCount64 when a pass first saw it wholly free, 0 when the last pass saw it in use.
    // Read and written only under _returnLock.
    private long[]? _chunkFreeSince;
    private byte[]? _residency; // mincore's vector for one chunk, reused under _returnLock
    private long _bytesReturned;
    private int _returnPasses;
    private ReturnMemoryTimer? _returnTimer;

    /// <summary>
    /// Bytes of memory this arena gave back to the operating system so far (<see cref="ReturnFreeMemory"/>, by hand or on
    /// the timer of <see cref="PageArenaOptions.ReturnFreeMemoryAfter"/>): only pages that were resident when given back
    /// are counted. Also reported by the meter as <c>pagecore.memory.returned</c>.
    /// </summary>
    public long BytesReturned => Interlocked.Read(ref _bytesReturned);

    /// <summary>
    /// Bytes of the data pages resident in memory now (Linux <c>mincore</c>; elsewhere the whole arena). Costs one
    /// system call per chunk, under the lock that return passes take.
    /// </summary>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public long ResidentBytes
    {
        get
        {
            ThrowIfDisposed();
            lock (_returnLock)
            {
                long total = _pageCount << _pageShift;
                if (!OperatingSystem.IsLinux() || IsDisposed)
                {
                    return total;
                }

                long resident = 0;
                for (int c = 0; c < _core.ChunkCount; c++)
                {
                    resident += ResidentInChunk(c);
                }

                return resident;
            }
        }
    }

    /// <summary>
    /// Gives back to the operating system the memory of every chunk (<see cref="ChunkBytes"/>) that is wholly free now
    /// and was seen wholly free by passes for at least <paramref name="idleFor"/> (zero: every wholly free chunk). The
    /// pages stay in the arena, free; the next use of one faults in a zero page. Safe while other threads allocate: a
    /// chunk is claimed from the allocator while its memory is discarded, so no page of it is handed out meanwhile.
    /// </summary>
    /// <param name="idleFor">How long a chunk must have been seen free; null or zero for now.</param>
    /// <returns>Bytes given back by this call (pages that were resident). 0 in checked mode (free pages keep their poison)
    /// and where the system offers no way to discard memory (only Linux does here).</returns>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="idleFor"/> is negative.</exception>
    /// <exception cref="ObjectDisposedException">The arena was disposed.</exception>
    public long ReturnFreeMemory(TimeSpan? idleFor = null)
    {
        TimeSpan idle = idleFor ?? TimeSpan.Zero;
        ArgumentOutOfRangeException.ThrowIfLessThan(idle, TimeSpan.Zero, nameof(idleFor));
        ThrowIfDisposed();
        return ReturnPass((long)idle.TotalMilliseconds);
    }

    /// <summary>For tests: runs after a pass claimed a chunk and before it discards the chunk's memory (the window).</summary>
    internal Action<int>? ReturnMemoryHook { get; set; }

    /// <summary>Passes run so far (by the timer or <see cref="ReturnFreeMemory"/>), for tests.</summary>
    internal int ReturnPasses => Volatile.Read(ref _returnPasses);

    /// <summary>Starts the return timer when the options ask for one (called once, by the constructor).</summary>
    private void StartReturnMemoryTimer()
    {
        TimeSpan after = _options.ReturnFreeMemoryAfter;
        if (!CanReturnMemory || after == Timeout.InfiniteTimeSpan)
        {
            return;
        }

        _returnTimer = new ReturnMemoryTimer(this, (long)after.TotalMilliseconds);
    }

    /// <summary>Stops the timer and waits out a pass in progress (Dispose, after <c>_state</c> left 0).</summary>
    private void StopReturningMemory()
    {
        _returnTimer?.Dispose();
        lock (_returnLock)
        {
            // A pass that started before _state left 0 has finished; a later one sees _state and does nothing.
        }
    }

    /// <summary>Whether this arena can give memory back: not checked (free pages keep their poison), and on Linux.</summary>
    private bool CanReturnMemory => !_checked && NativeRegion.CanDiscard;

    private long ReturnPass(long idleMs)
    {
        if (!CanReturnMemory)
        {
            return 0;
        }

        lock (_returnLock)
        {
            if (Volatile.Read(ref _state) != 0)
            {
                return 0;
            }

            _returnPasses++;
            long now = Environment.TickCount64;
            _chunkFreeSince ??= new long[_core.ChunkCount];
            long given = 0;
            for (int c = 0; c < _core.ChunkCount; c++)
            {
                if (!_core.IsChunkFree(c))
                {
                    _chunkFreeSince[c] = 0;
                    continue;
                }

                if (_chunkFreeSince[c] == 0)
                {
                    _chunkFreeSince[c] = now;
                }

                if (now - _chunkFreeSince[c] < idleMs)
                {
                    continue;
                }

                long resident = ResidentInChunk(c);
                if (resident != 0 && ClaimForReturn(c))
                {
                    ReturnMemoryHook?.Invoke(c);
                    bool discarded = _dataRegion.Discard((nuint)c * (nuint)ChunkBytes, (nuint)ChunkBytes);
                    if (!_options.LegacyReturnMemoryWithoutClaim)
                    {
                        _core.EndReturn(c);
                    }

                    if (discarded)
                    {
                        given += resident;
                    }
                }
            }

            Interlocked.Add(ref _bytesReturned, given);
            return given;
        }
    }

    /// <summary>Takes a wholly free chunk out of the allocator's reach for the discard (the legacy form does not).</summary>
    private bool ClaimForReturn(int chunk) =>
        _options.LegacyReturnMemoryWithoutClaim ? Legacy.LegacyReturnMemory.ClaimWithoutTakingIt() : _core.TryBeginReturn(chunk);

    /// <summary>Resident bytes of one chunk (Linux <c>mincore</c>); the whole chunk where that is not available. Under the lock.</summary>
    private long ResidentInChunk(int chunk)
    {
        int systemPage = Environment.SystemPageSize;
        long start = chunk * ChunkBytes;
        long bytes = Math.Min(ChunkBytes, (_pageCount << _pageShift) - start); // the last chunk may end with the arena
        long pages = bytes / systemPage;
        byte[] vector = _residency ??= new byte[ChunkBytes / systemPage];
        fixed (byte* v = vector)
        {
            if (Mincore((nint)(_base + start), (nuint)bytes, v) != 0)
            {
                return bytes;
            }
        }

        long resident = 0;
        for (int i = 0; i < pages; i++)
        {
            resident += vector[i] & 1;
        }

        return resident * systemPage;
    }

    [LibraryImport("libc", EntryPoint = "mincore", SetLastError = true)]
    private static partial int Mincore(nint address, nuint length, byte* vector);

    /// <summary>
    /// The timer behind <see cref="PageArenaOptions.ReturnFreeMemoryAfter"/>: a pass every quarter of the decay time (at
    /// least 50 ms, at most 5 s), so that a chunk is returned between one and one and a half decay times after it went
    /// wholly free (first seen free by a pass at most a period after, returned by the first pass a decay time later). It holds the arena weakly, so an arena that was never disposed can still be collected;
    /// the timer then stops itself.
    /// </summary>
    private sealed class ReturnMemoryTimer : IDisposable
    {
        private readonly WeakReference<PageArena> _arena;
        private readonly long _idleMs;
        private readonly Timer _timer;

        public ReturnMemoryTimer(PageArena arena, long idleMs)
        {
            _arena = new WeakReference<PageArena>(arena);
            _idleMs = idleMs;
            long period = Math.Clamp(idleMs / 4, 50, 5000);
            using (ExecutionContext.SuppressFlow())
            {
                _timer = new Timer(static s => ((ReturnMemoryTimer)s!).Tick(), this, period, period);
            }
        }

        public void Dispose() => _timer.Dispose();

        private void Tick()
        {
            if (!_arena.TryGetTarget(out PageArena? arena) || arena.IsDisposed)
            {
                _timer.Dispose();
                return;
            }

            arena.ReturnPass(_idleMs);
        }
    }
}
