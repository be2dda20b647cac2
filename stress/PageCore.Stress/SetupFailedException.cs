namespace PageCore.Stress;

/// <summary>
/// The environment could not give a run what it needs (memory for the arena, a permission): not a bug of PageCore and
/// not a usage error. <c>pagecore-stress</c> prints one line with <see cref="Cause"/> and <see cref="Remedy"/> and exits
/// with <see cref="Program.SetupFailed"/>.
/// </summary>
public sealed class SetupFailedException(string cause, string remedy, Exception? inner = null)
    : Exception($"{cause}; {remedy}", inner)
{
    /// <summary>What failed, in a phrase.</summary>
    public string Cause { get; } = cause;

    /// <summary>What the user can do about it, in a phrase.</summary>
    public string Remedy { get; } = remedy;
}
