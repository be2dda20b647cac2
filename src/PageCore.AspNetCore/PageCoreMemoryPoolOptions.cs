using PageCore.Buffers;

namespace PageCore.AspNetCore;

/// <summary>How <see cref="PageCoreWebHostBuilderExtensions.UsePageCoreMemoryPool"/> builds Kestrel's buffer pool.</summary>
public sealed class PageCoreMemoryPoolOptions
{
    /// <summary>
    /// The arena every pool of the server rents from (one arena per server; Kestrel creates one pool per IO queue). The
    /// defaults suit a server: 256 MiB of 4 KiB pages, backed by a pinned array so that sockets can send from it, free
    /// memory given back to the system after <see cref="PageArenaOptions.ReturnFreeMemoryAfter"/>.
    /// </summary>
    public PageArenaOptions Arena { get; set; } = new();

    /// <summary>The pools' behaviour: checked mode, and whether an exhausted arena throws or falls back to heap buffers.</summary>
    public PageMemoryPoolOptions Pool { get; set; } = new();
}
