namespace PageCore;

/// <summary>Where a <see cref="PageArena"/>'s data pages live (<see cref="PageArenaOptions.Backing"/>).</summary>
public enum ArenaBacking
{
    /// <summary><see cref="PinnedArray"/> when the pages fit one array (2 GiB less the alignment), else <see cref="Native"/>.</summary>
    Auto = 0,

    /// <summary>
    /// One byte array on the pinned object heap: never moved, so addresses are as stable as native memory, and a block
    /// can also be exposed as an <see cref="ArraySegment{T}"/> (<see cref="PageArena.TryGetArraySegment"/>), which
    /// APIs that want arrays (sockets sending a list of buffers, streams) need. The array counts in the garbage
    /// collector's heap size (and in a container's GC heap limit) once created, though its pages become resident only
    /// when touched.
    /// </summary>
    PinnedArray = 1,

    /// <summary>A native reservation outside the garbage collector's heap (<c>mmap</c>); no arrays.</summary>
    Native = 2,
}
