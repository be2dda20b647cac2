using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace PageCore.Arena;

/// <summary>
/// One reservation that never moves: <c>mmap</c> through libc on Linux and macOS (address space first, memory only
/// when a page is touched), with <c>madvise(MADV_HUGEPAGE)</c> on Linux where the kernel allows it, and
/// <see cref="NativeMemory.AlignedAlloc"/> elsewhere; or (<see cref="ReservePinnedArray"/>) one byte array on the pinned
/// object heap, so that the memory can also be exposed as an <see cref="ArraySegment{T}"/>. The memory reads as zero
/// when it is handed out.
/// </summary>
/// <remarks>Kernel counterpart: the direct map that <c>mem_map</c> and the page frames live in.</remarks>
internal sealed unsafe partial class NativeRegion : IDisposable
{
    private const int ProtRead = 0x1;
    private const int ProtWrite = 0x2;
    private const int MapPrivate = 0x02;
    private const int LinuxMapAnonymous = 0x20;
    private const int LinuxMapNoReserve = 0x4000;
    private const int MacMapAnonymous = 0x1000;
    private const int LinuxMadvHugePage = 14;
    private const int LinuxMadvDontNeed = 4;
    private const nint MapFailed = -1;

    private void* _mapping;
    private readonly nuint _mappingLength;
    private readonly bool _mapped;
    private byte[]? _array;

    /// <summary>The aligned start of the usable memory.</summary>
    public byte* Pointer { get; private set; }

    /// <summary>The usable length in bytes.</summary>
    public nuint Length { get; }

    /// <summary>True when <c>madvise(MADV_HUGEPAGE)</c> was accepted for this region.</summary>
    public bool HugePagesAdvised { get; }

    /// <summary>The pinned array the memory lives in (<see cref="ReservePinnedArray"/>), or null for native memory.</summary>
    public byte[]? Array => _array;

    /// <summary>The index in <see cref="Array"/> of the byte at <see cref="Pointer"/>; 0 for native memory.</summary>
    public int ArrayOffset { get; private init; }

    /// <summary>Whether <see cref="Discard"/> can give memory back here (Linux: <c>madvise(MADV_DONTNEED)</c>).</summary>
    public static bool CanDiscard => OperatingSystem.IsLinux();

    private NativeRegion(void* mapping, nuint mappingLength, byte* pointer, nuint length, bool mapped, bool huge)
    {
        _mapping = mapping;
        _mappingLength = mappingLength;
        Pointer = pointer;
        Length = length;
        _mapped = mapped;
        HugePagesAdvised = huge;
    }

    /// <summary>Reserves <paramref name="length"/> zeroed bytes aligned to <paramref name="alignment"/> (a power of two).</summary>
    /// <exception cref="OutOfMemoryException">The reservation failed.</exception>
    public static NativeRegion Reserve(nuint length, nuint alignment, bool adviseHugePages)
    {
        if (length == 0) length = 1;
        if (alignment < 64) alignment = 64;
        if (OperatingSystem.IsLinux() || OperatingSystem.IsMacOS() || OperatingSystem.IsFreeBSD())
        {
            // mmap returns system-page-aligned memory; over-reserve when a larger alignment is asked for.
            nuint systemPage = (nuint)Environment.SystemPageSize;
            nuint slack = alignment > systemPage ? alignment : 0;
            nuint mapLength = checked(length + slack);
            int flags = MapPrivate | (OperatingSystem.IsLinux() ? LinuxMapAnonymous | LinuxMapNoReserve : MacMapAnonymous);
            nint p = Mmap(0, mapLength, ProtRead | ProtWrite, flags, -1, 0);
            if (p == MapFailed || p == 0)
            {
                throw new OutOfMemoryException(
                    $"mmap of {mapLength} bytes failed (errno {Marshal.GetLastPInvokeError()}).");
            }

            byte* aligned = (byte*)(((nuint)p + alignment - 1) & ~(alignment - 1));
            bool huge = false;
            if (adviseHugePages && OperatingSystem.IsLinux() && length >= 2 * 1024 * 1024)
            {
                // Where transparent huge pages are off or unsupported the call fails; that is not an error.
                huge = Madvise((nint)aligned, length, LinuxMadvHugePage) == 0;
            }

            return new NativeRegion((void*)p, mapLength, aligned, length, mapped: true, huge);
        }

        void* block = NativeMemory.AlignedAlloc(length, alignment);
        NativeMemory.Clear(block, length);
        return new NativeRegion(block, length, (byte*)block, length, mapped: false, huge: false);
    }

    /// <summary>
    /// Reserves <paramref name="length"/> zeroed bytes aligned to <paramref name="alignment"/> (a power of two, at most
    /// 2 MiB) inside one byte array on the pinned object heap: the garbage collector never moves it, and the array stays
    /// reachable from this region until <see cref="Dispose"/>. A fresh array from the pinned object heap is memory the
    /// collector has just committed, so, as with <c>mmap</c>, a page becomes resident only when touched.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">The array would be longer than <see cref="System.Array.MaxLength"/>.</exception>
    /// <exception cref="OutOfMemoryException">The allocation failed.</exception>
    public static NativeRegion ReservePinnedArray(nuint length, nuint alignment, bool adviseHugePages)
    {
        if (length == 0) length = 1;
        if (alignment < 64) alignment = 64;
        ulong total = (ulong)length + alignment;
        if (total > (ulong)System.Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(length), length, $"A pinned array holds at most {System.Array.MaxLength} bytes with its alignment.");
        }

        byte[] array = GC.AllocateArray<byte>((int)total, pinned: true);
        byte* start = (byte*)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(array));
        byte* aligned = (byte*)(((nuint)start + alignment - 1) & ~(alignment - 1));
        bool huge = false;
        if (adviseHugePages && OperatingSystem.IsLinux() && length >= 2 * 1024 * 1024)
        {
            huge = Madvise((nint)aligned, length, LinuxMadvHugePage) == 0;
        }

        return new NativeRegion(null, 0, aligned, length, mapped: false, huge)
        {
            _array = array,
            ArrayOffset = (int)(aligned - start),
        };
    }

    /// <summary>
    /// Gives the memory of a range back to the operating system while keeping the range reserved
    /// (<c>madvise(MADV_DONTNEED)</c>): the next touch faults in a zero page. Only for memory no one uses: its contents
    /// are lost. Linux only (<see cref="CanDiscard"/>); elsewhere it does nothing and returns false.
    /// </summary>
    /// <param name="offset">The start, from <see cref="Pointer"/>; a multiple of the system page size.</param>
    /// <param name="length">The length; a multiple of the system page size.</param>
    /// <returns>True when the kernel took the range back.</returns>
    public bool Discard(nuint offset, nuint length)
    {
        byte* p = Pointer;
        if (!CanDiscard || p == null || offset + length > Length)
        {
            return false;
        }

        return Madvise((nint)(p + offset), length, LinuxMadvDontNeed) == 0;
    }

    /// <summary>Returns the memory to the operating system (or drops the pinned array). Idempotent.</summary>
    public void Dispose()
    {
        if (_array is not null)
        {
            _array = null; // the collector frees it; like munmap, any span or address still in use dangles
            Pointer = null;
            return;
        }

        void* mapping = _mapping;
        if (mapping == null) return;
        _mapping = null;
        Pointer = null;
        if (_mapped)
        {
            _ = Munmap((nint)mapping, _mappingLength);
        }
        else
        {
            NativeMemory.AlignedFree(mapping);
        }
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint Mmap(nint address, nuint length, int protection, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int Munmap(nint address, nuint length);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int Madvise(nint address, nuint length, int advice);
}
