namespace PageCore.Stress;

/// <summary>
/// Checks of the files and directories a command writes (<c>--json</c>, <c>--plot</c>, <c>--dump-on-bug</c>), made
/// before the run starts: a path that cannot be written is a usage error (exit 64) found in a moment, not a crash after
/// the whole run.
/// </summary>
internal static class OutputPaths
{
    /// <summary>
    /// Whether a file can be created or replaced at <paramref name="path"/>: its directory exists and lets this process
    /// create the file. The probe leaves nothing behind (a file it created is deleted again). Returns the problem in one
    /// line, or null.
    /// </summary>
    /// <param name="option">The option the path came from, for the message.</param>
    /// <param name="path">The path as given.</param>
    public static string? CheckFile(string option, string path)
    {
        if (!TryFullPath(option, path, out string full, out string? problem))
        {
            return problem;
        }

        if (Directory.Exists(full))
        {
            return $"{option} '{path}' is a directory; give a file name.";
        }

        string? directory = Path.GetDirectoryName(full);
        if (directory is null || !Directory.Exists(directory))
        {
            return $"{option} '{path}': the directory '{directory}' does not exist; create it or choose another path.";
        }

        bool existed = File.Exists(full);
        try
        {
            using (new FileStream(full, FileMode.OpenOrCreate, FileAccess.Write, FileShare.ReadWrite))
            {
            }

            if (!existed)
            {
                File.Delete(full);
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"{option} '{path}' cannot be written: {ex.Message}";
        }

        return null;
    }

    /// <summary>
    /// Whether files can be written into the directory <paramref name="path"/>, creating it (and its parents) as the run
    /// would. Returns the problem in one line, or null.
    /// </summary>
    /// <param name="option">The option the path came from, for the message.</param>
    /// <param name="path">The directory as given.</param>
    public static string? CheckDirectory(string option, string path)
    {
        if (!TryFullPath(option, path, out string full, out string? problem))
        {
            return problem;
        }

        if (File.Exists(full))
        {
            return $"{option} '{path}' is a file; give a directory.";
        }

        string probe = Path.Combine(full, $".pagecore-probe-{Environment.ProcessId}");
        try
        {
            Directory.CreateDirectory(full);
            using (new FileStream(probe, FileMode.Create, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose))
            {
            }
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"{option} '{path}' cannot hold files: {ex.Message}";
        }

        return null;
    }

    private static bool TryFullPath(string option, string path, out string full, out string? problem)
    {
        full = "";
        problem = null;
        if (string.IsNullOrWhiteSpace(path))
        {
            problem = $"{option} needs a path.";
            return false;
        }

        try
        {
            full = Path.GetFullPath(path);
            return true;
        }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException or PathTooLongException)
        {
            problem = $"{option} '{path}' is not a valid path: {ex.Message}";
            return false;
        }
    }
}
