using System.Reflection;
using System.Runtime.CompilerServices;
using PageCore;

namespace PageCore.JitCheck;

/// <summary>
/// Compiles each hot-path transition with the optimizing JIT (RuntimeHelpers.PrepareMethod; run with
/// DOTNET_TieredCompilation=0 so the code compiled is the final code) so that DOTNET_JitDisasm dumps it. The transitions
/// are internal to PageCore and this assembly is not one of its friends, so they are found by reflection. Besides the
/// library's own methods, <see cref="Sequences"/> holds the two call-site sequences whose order matters across methods
/// (a reader's section after EpochDomain.Enter) and <see cref="Scratch"/> the negative controls the checker must reject.
/// </summary>
internal static class Program
{
    // Type name (in PageCore) -> method names. Every method of that name is prepared (overloads included).
    private static readonly (string Type, string[] Methods)[] Targets =
    [
        ("PageCore.Descriptors.PageRef",
        [
            "Count", "SetAllocated", "Inc", "IncChecked", "Add", "TryGetFromOne", "TryGetUnlessZeroFrom",
            "TryPutFromTwo", "PutUnlessLast", "PutTestZero", "TryPutLast", "Freeze", "Unfreeze", "Pair", "TryPutPair",
        ]),
        ("PageCore.PerCpu.PageCaches", ["EnterAsymmetric", "EnterSymmetric", "LeaveOwner", "AnnounceSteal"]),
        ("PageCore.Allocator.FrameAllocator",
        [
            "TryClaimChunk", "ReleaseChunk", "ShrinkHugeChunkToHead", "TryEndHeadOnly", "ClaimStands", "TryClaimInWord",
            "ClaimManyInWord", "TryClaimWords", "ClearBit", "ClearRun", "ClearWords", "ConvertHugeToBits",
        ]),
        ("PageCore.EpochDomain", ["Enter", "Announce", "ScanFence", "Exit"]),
    ];

    private static int Main()
    {
        Assembly lib = typeof(EpochDomain).Assembly;
        int prepared = 0;
        var missing = new List<string>();
        foreach ((string typeName, string[] methods) in Targets)
        {
            Type t = lib.GetType(typeName, throwOnError: true)!;
            foreach (string name in methods)
            {
                MethodInfo[] found = t.GetMethods(BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static | BindingFlags.Instance | BindingFlags.DeclaredOnly)
                    .Where(m => m.Name == name).ToArray();
                if (found.Length == 0)
                {
                    missing.Add($"{typeName}.{name}");
                }

                foreach (MethodInfo m in found)
                {
                    RuntimeHelpers.PrepareMethod(m.MethodHandle);
                    prepared++;
                }
            }
        }

        foreach (MethodInfo m in typeof(Sequences).GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly)
                     .Concat(typeof(Scratch).GetMethods(BindingFlags.Public | BindingFlags.Static | BindingFlags.DeclaredOnly)))
        {
            RuntimeHelpers.PrepareMethod(m.MethodHandle);
            prepared++;
        }

        // Run the reader sequence once for real, so the inlined Enter path is exercised and not only compiled.
        using (var domain = new EpochDomain(maxThreads: 4))
        {
            long shared = 7;
            if (Sequences.EpochReaderSection(domain, ref shared) != 7)
            {
                return 3;
            }
        }

        Console.WriteLine($"JitCheck: prepared {prepared} methods, arch {System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture}");
        foreach (string m in missing)
        {
            Console.WriteLine($"JitCheck: MISSING {m}");
        }

        return missing.Count == 0 ? 0 : 2;
    }
}

/// <summary>Call-site sequences built from PageCore's public API, as a caller's code sees them after inlining.</summary>
internal static class Sequences
{
    /// <summary>The epoch reader: EpochDomain.Enter (announce with Interlocked.Exchange), then an acquire load of shared data.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long EpochReaderSection(EpochDomain domain, ref long shared)
    {
        using EpochGuard g = domain.Enter();
        return Volatile.Read(ref shared);
    }

    /// <summary>The bare shape of both handshakes: a CAS on one word, then an acquire load of another.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int CasThenAcquire(ref long word, ref int status)
    {
        if (Interlocked.CompareExchange(ref word, 1, 0) != 0)
        {
            return -1;
        }

        return Volatile.Read(ref status);
    }

    /// <summary>The bare epoch announce: an exchange into a slot, then an acquire load of another word.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static long ExchangeThenAcquire(ref long slot, ref long shared, long e)
    {
        Interlocked.Exchange(ref slot, e);
        return Volatile.Read(ref shared);
    }
}

/// <summary>
/// Negative controls: scratch copies of transitions with the ordering removed. check.py --self-test asserts them with the
/// real transitions' expectations and must see them fail.
/// </summary>
internal static class Scratch
{
    /// <summary>PageCaches.LeaveOwner with its Volatile.Write turned into a plain store.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void LeaveOwnerPlain(ref int busy) => busy = 0;

    /// <summary>PageRef.Count with its Volatile.Read turned into a plain load.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static int CountPlain(ref int refCount) => refCount;

    /// <summary>PageCaches.EnterSymmetric without its Interlocked.MemoryBarrier.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static bool EnterSymmetricNoFence(ref int busy, ref int stealPending)
    {
        Volatile.Write(ref busy, 1);
        return Volatile.Read(ref stealPending) == 0;
    }
}
