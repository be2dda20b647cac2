using System.Buffers;
using PageCore.Buffers;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The pool adds nothing to a server's garbage: once its owners exist (one pair per block head, made on the first rent
/// of that head), a rent, a use of its memory and a dispose allocate no managed memory, on the renting thread and on
/// the disposing thread. What a Kestrel request allocates besides is the framework's (docs/kestrel.md, "Allocation").
/// </summary>
[Collection(StressCollection.Name)]
public sealed class PoolAllocationTests(ITestOutputHelper output)
{
    private static readonly int[] Sizes = [1, 4096, 4097, 16384, 65536];

    [Fact]
    public void RentAndDisposeAllocateNothingOnceTheOwnersExist()
    {
        using ArenaLease lease = TestSupport.Lease(pages: 4096, caches: true);
        using var pool = new PageMemoryPool(lease.Arena);
        var held = new IMemoryOwner<byte>[64];
        Cycle(pool, held); // makes the owners of every head these rents can reach
        Cycle(pool, held);

        long before = GC.GetAllocatedBytesForCurrentThread();
        long checksum = 0;
        for (int i = 0; i < 200; i++)
        {
            checksum += Cycle(pool, held);
        }

        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
        output.WriteLine($"{200 * held.Length} rents and disposes: {allocated} bytes allocated (checksum {checksum}); owners created {pool.OwnersCreated}");
        Assert.True(checksum > 0);
        Assert.Equal(0, allocated);
        Assert.Equal(0, pool.FallbackRents);
    }

    /// <summary>
    /// Kestrel's pattern: one thread rents and writes (the response writer), another disposes (the socket sender, after
    /// the send). Neither thread allocates per rent in the measured part. The blocks go over a single-producer ring that itself
    /// allocates nothing; every wait on it has a deadline.
    /// </summary>
    [Fact(Timeout = 60_000)]
    public async Task RentOnOneThreadDisposeOnAnotherAllocatesNothingPerRent()
    {
        await Task.Yield();
        using ArenaLease lease = TestSupport.Lease(pages: 8192, caches: true);
        using var pool = new PageMemoryPool(lease.Arena);
        const int Warm = 20_000, Measured = 100_000, Total = Warm + Measured;
        var ring = new IMemoryOwner<byte>?[256];
        long produced = 0, consumed = 0; // ring indices: the renter writes produced, the disposer consumed
        long renterBytes = -1, disposerBytes = -1, ownersBefore = 0, ownersAfter = 0;
        DateTime deadline = DateTime.UtcNow + TimeSpan.FromSeconds(40);
        var renter = new Thread(() =>
        {
            long before = 0;
            for (long i = 0; i < Total; i++)
            {
                if (i == Warm)
                {
                    ownersBefore = pool.OwnersCreated;
                    before = GC.GetAllocatedBytesForCurrentThread();
                }

                IMemoryOwner<byte> o = pool.Rent(Sizes[i % Sizes.Length]);
                o.Memory.Span[0] = (byte)i;
                var spin = new SpinWait();
                while (i - Volatile.Read(ref consumed) >= ring.Length)
                {
                    if (DateTime.UtcNow >= deadline)
                    {
                        o.Dispose();
                        return;
                    }

                    spin.SpinOnce();
                }

                ring[i % ring.Length] = o;
                Volatile.Write(ref produced, i + 1); // release: the slot's write before the index
            }

            renterBytes = GC.GetAllocatedBytesForCurrentThread() - before;
            ownersAfter = pool.OwnersCreated;
        }) { Name = "renter", IsBackground = true };
        var disposer = new Thread(() =>
        {
            long before = 0;
            for (long i = 0; i < Total; i++)
            {
                if (i == Warm)
                {
                    before = GC.GetAllocatedBytesForCurrentThread();
                }

                var spin = new SpinWait();
                while (Volatile.Read(ref produced) <= i) // acquire: the slot is read after the index
                {
                    if (DateTime.UtcNow >= deadline)
                    {
                        return;
                    }

                    spin.SpinOnce();
                }

                IMemoryOwner<byte> o = ring[i % ring.Length]!;
                ring[i % ring.Length] = null;
                Volatile.Write(ref consumed, i + 1);
                o.Dispose();
            }

            disposerBytes = GC.GetAllocatedBytesForCurrentThread() - before;
        }) { Name = "disposer", IsBackground = true };
        renter.Start();
        disposer.Start();
        TestSupport.JoinAll([renter, disposer], TimeSpan.FromSeconds(50));
        long newOwners = ownersAfter - ownersBefore;
        output.WriteLine($"renter allocated {renterBytes} bytes, disposer {disposerBytes} bytes over {Measured} blocks; owners created {pool.OwnersCreated}, {newOwners} of them in the measured part; fallbacks {pool.FallbackRents}");
        Assert.True(renterBytes >= 0 && disposerBytes >= 0, "the run did not reach its end before the deadline");

        // Blocks cross from the disposer's magazine to the renter's through the depots, so the renter can meet a block
        // head it never rented before even after the warm-up (more likely on a loaded machine): the pool then makes
        // that head's pair of owners, once (counted as two in OwnersCreated). That is the only allocation allowed, and
        // nothing per rent.
        Assert.True(renterBytes <= newOwners * MaxOwnerBytes, $"the renter allocated {renterBytes} bytes, more than the {newOwners} owners it created account for");
        Assert.Equal(0, disposerBytes);
        Assert.Equal(0, pool.FallbackRents);
        TestSupport.AssertFullyFreeAndCoalesced(lease.Arena);
    }

    /// <summary>A generous bound on what one owner object costs when the pool makes it (a head's pair counts two), far
    /// below what a per-rent allocation over 100,000 rents would add.</summary>
    private const long MaxOwnerBytes = 256;

    private static long Cycle(PageMemoryPool pool, IMemoryOwner<byte>[] held)
    {
        long sum = 0;
        for (int i = 0; i < held.Length; i++)
        {
            held[i] = pool.Rent(Sizes[i % Sizes.Length]);
            Span<byte> span = held[i].Memory.Span;
            span[^1] = 1;
            sum += span.Length;
        }

        for (int i = held.Length - 1; i >= 0; i--)
        {
            held[i].Dispose();
        }

        return sum;
    }
}
