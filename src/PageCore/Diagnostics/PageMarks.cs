namespace PageCore.Diagnostics;

/// <summary>
/// One 2-bit mark per page, for <see cref="PageArena.Verify"/>'s walk: a quarter of a byte per page, so that the walk of
/// the largest arena the options allow (2^32 pages) needs one array of 1 GiB instead of a byte array longer than
/// <see cref="Array.MaxLength"/>.
/// </summary>
internal sealed class PageMarks
{
    private readonly byte[] _bits;

    /// <summary>Marks for <paramref name="pages"/> pages, all 0.</summary>
    public PageMarks(long pages) => _bits = new byte[(pages + 3) / 4];

    /// <summary>The mark of page <paramref name="page"/>, 0..3.</summary>
    public byte this[long page]
    {
        get => (byte)((_bits[page >> 2] >> Shift(page)) & 3);
        set
        {
            ref byte b = ref _bits[page >> 2];
            b = (byte)((b & ~(3 << Shift(page))) | ((value & 3) << Shift(page)));
        }
    }

    /// <summary>Whether every page of <paramref name="start"/>..+<paramref name="length"/> bears <paramref name="mark"/>.</summary>
    public bool All(long start, long length, byte mark)
    {
        long end = start + length;
        long page = start;
        for (; page < end && (page & 3) != 0; page++)
        {
            if (this[page] != mark) return false;
        }

        // Whole bytes: four pages each, compared as one byte (the mark repeated) a vector at a time.
        long wholeBytes = (end - page) >> 2;
        byte four = (byte)(mark * 0b0101_0101);
        for (long at = page >> 2, left = wholeBytes; left > 0;)
        {
            int span = (int)Math.Min(left, int.MaxValue);
            if (_bits.AsSpan((int)at, span).IndexOfAnyExcept(four) >= 0) return false;
            at += span;
            left -= span;
        }

        for (page += wholeBytes << 2; page < end; page++)
        {
            if (this[page] != mark) return false;
        }

        return true;
    }

    private static int Shift(long page) => (int)(page & 3) * 2;
}
