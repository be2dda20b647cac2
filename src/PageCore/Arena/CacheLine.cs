namespace PageCore.Arena;

/// <summary>
/// Cache-line sizes used to keep shared hot fields apart (the runtime's <c>PaddingHelpers.CACHE_LINE_SIZE</c>).
/// </summary>
internal static class CacheLine
{
    /// <summary>
    /// The padding used in struct layouts, which need a compile-time constant. PageCore is built once for every
    /// architecture, so layouts use the largest line in use: 128 bytes (arm64's line, and x64's adjacent-line prefetch pair).
    /// </summary>
    public const int PaddedSize = 128;
}
