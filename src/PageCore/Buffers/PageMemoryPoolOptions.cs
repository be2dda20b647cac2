namespace PageCore.Buffers;

/// <summary>How a <see cref="PageMemoryPool"/> behaves.</summary>
public sealed class PageMemoryPoolOptions
{
    /// <summary>
    /// Checked mode (the counterpart of ASP.NET Core's diagnostic pool): each rent gets its own owner, which throws on
    /// use after dispose, double dispose, dispose with pins outstanding and unpin without a pin. Slower; for tests.
    /// Default false.
    /// </summary>
    public bool Checked { get; set; }

    /// <summary>
    /// When the arena has no free block of the order a rent needs: true throws <see cref="OutOfPagesException"/> (for
    /// tests that want to see exhaustion); false (the default, what a server wants) hands out a buffer from the shared
    /// array pool instead and counts it in <see cref="PageMemoryPool.FallbackRents"/>.
    /// </summary>
    public bool ThrowWhenExhausted { get; set; }

    /// <summary>
    /// The largest buffer the pool hands out and advertises as <see cref="System.Buffers.MemoryPool{T}.MaxBufferSize"/>,
    /// in bytes, or 0 (the default) for the largest block of the arena that fits a <see cref="Memory{T}"/>. Rounded
    /// down to a block size (a page times a power of two); at least one page. Consumers size their buffers by it: a
    /// pipe rents segments of at most this size, and Kestrel's writers take larger writes from elsewhere.
    /// </summary>
    public int MaxBufferSize { get; set; }

    internal PageMemoryPoolOptions Clone() => (PageMemoryPoolOptions)MemberwiseClone();
}
