using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using PageCore.Buffers;
using Xunit;

namespace PageCore.Tests;

/// <summary>The <see cref="MemoryPool{T}"/> adapter: sizes, reuse, compound blocks, pins, and checked-mode misuse.</summary>
public sealed class MemoryPoolTests
{
    [Fact]
    public void RentGivesAlignedBlocksOfTheSmallestOrderAndDisposeFreesThem()
    {
        using ArenaLease lease = TestSupport.Lease();
        PageArena arena = lease.Arena;
        using var pool = new PageMemoryPool(arena);
        Assert.Equal(4096 << 10, pool.MaxBufferSize);
        foreach ((int size, int length) in new[] { (-1, 4096), (1, 4096), (4096, 4096), (4097, 8192), (20000, 32768), (4096 << 10, 4096 << 10) })
        {
            IMemoryOwner<byte> owner = pool.Rent(size);
            Assert.Equal(length, owner.Memory.Length);
            unsafe
            {
                using MemoryHandle h = owner.Memory.Pin();
                Assert.Equal(0, (long)h.Pointer % 4096); // page-aligned, and Pin never throws
            }

            owner.Memory.Span.Fill(7);
            Pfn head = ((PageMemoryManager)owner).Head;
            Assert.Equal(length > 4096, arena.IsFolioHead(head)); // larger buffers are compound pages
            if (length > 4096)
            {
                Assert.Equal(System.Numerics.BitOperations.Log2((uint)length / 4096), arena.OrderOf(head));
                Assert.Equal(head, arena.HeadOf(head + 1u)); // a get through a tail lands on the head
            }

            owner.Dispose();
        }

        IMemoryOwner<byte> a = pool.Rent();
        Pfn page = ((PageMemoryManager)a).Head;
        a.Dispose();
        IMemoryOwner<byte> b = pool.Rent(); // the same page comes back from the thread cache, with the other owner of its pair
        Assert.NotSame(a, b);
        Assert.Equal(page, ((PageMemoryManager)b).Head);
        b.Dispose();
        IMemoryOwner<byte> c = pool.Rent(); // and the first owner again: two owners per block, no allocation per rent
        Assert.Same(a, c);
        c.Dispose();
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(pool.MaxBufferSize + 1));
        Assert.Throws<ArgumentOutOfRangeException>(() => pool.Rent(-2));
        Assert.True(MemoryMarshal_TryGetArray(b.Memory)); // the default arena is a pinned array
        pool.Dispose();
        Assert.Throws<ObjectDisposedException>(() => pool.Rent());
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }

    private static bool MemoryMarshal_TryGetArray(Memory<byte> m) => System.Runtime.InteropServices.MemoryMarshal.TryGetArray<byte>(m, out _);

    [Fact]
    public void CheckedModeCatchesUseAfterDisposeDoubleDisposeAndUnbalancedPins()
    {
        using ArenaLease lease = TestSupport.Lease(isChecked: true);
        PageArena arena = lease.Arena;
        using var pool = new PageMemoryPool(arena, checkedMode: true);

        IMemoryOwner<byte> owner = pool.Rent(100);
        Memory<byte> memory = owner.Memory;
        memory.Span[0] = 1;
        owner.Dispose();
        Assert.Throws<ObjectDisposedException>(() => memory.Span[0] = 2);       // use after dispose
        Assert.Throws<ObjectDisposedException>(() => owner.Memory);
        Assert.Throws<InvalidOperationException>(() => owner.Dispose());     // double dispose

        IMemoryOwner<byte> pinned = pool.Rent();
        MemoryHandle handle = pinned.Memory.Pin();
        Assert.Throws<InvalidOperationException>(() => pinned.Dispose());    // freed under a pin: refused, nothing freed
        handle.Dispose();
        Assert.Throws<InvalidOperationException>(() => ((MemoryManager<byte>)pinned).Unpin()); // unpin without a pin
        pinned.Dispose();

        // Two renters of the same page never share an owner: the stale owner's dispose cannot free the new lease.
        IMemoryOwner<byte> first = pool.Rent();
        first.Dispose();
        IMemoryOwner<byte> second = pool.Rent();
        Assert.NotSame(first, second);
        Assert.Throws<InvalidOperationException>(() => first.Dispose());
        second.Memory.Span.Fill(3);
        second.Dispose();
        TestSupport.AssertFullyFreeAndCoalesced(arena);
    }
}

/// <summary>System.IO.Pipelines over the page pool: a concurrency test (socket tasks), so it runs alone and bounded.</summary>
[Collection(StressCollection.Name)]
public sealed class PipelinesTests(ITestOutputHelper output)
{
    /// <summary>A loopback socket echo with System.IO.Pipelines on both ends, every buffer from the page pool.</summary>
    [Fact(Timeout = 60_000)]
    public async Task PipelinesEchoOverLoopbackKeepsEveryByte()
    {
        int seed = TestSupport.Seed(output, "pipelines echo");
        using ArenaLease lease = TestSupport.Lease(pages: 4096, isChecked: true);
        PageArena arena = lease.Arena;
        using var pool = new PageMemoryPool(arena, checkedMode: true);
        var payload = new byte[3 * 1024 * 1024 + 123];
        new Random(seed).NextBytes(payload);

        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        Task server = Task.Run(async () =>
        {
            using Socket peer = await listener.AcceptAsync();
            await using var stream = new NetworkStream(peer, ownsSocket: false);
            PipeReader reader = PipeReader.Create(stream, new StreamPipeReaderOptions(pool, bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true));
            PipeWriter writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(pool, minimumBufferSize: 4096, leaveOpen: true));
            while (true)
            {
                ReadResult read = await reader.ReadAsync();
                foreach (ReadOnlyMemory<byte> segment in read.Buffer)
                {
                    await writer.WriteAsync(segment); // echo
                }

                reader.AdvanceTo(read.Buffer.End);
                if (read.IsCompleted)
                {
                    break;
                }
            }

            await writer.CompleteAsync();
            await reader.CompleteAsync();
            peer.Shutdown(SocketShutdown.Send);
        });

        using var client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        await client.ConnectAsync(listener.LocalEndPoint!);
        await using var clientStream = new NetworkStream(client, ownsSocket: false);
        PipeWriter send = PipeWriter.Create(clientStream, new StreamPipeWriterOptions(pool, minimumBufferSize: 4096, leaveOpen: true));
        PipeReader receive = PipeReader.Create(clientStream, new StreamPipeReaderOptions(pool, bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true));
        Task sender = Task.Run(async () =>
        {
            var rng = new Random(seed ^ 1);
            for (int offset = 0; offset < payload.Length;)
            {
                int n = Math.Min(1 + rng.Next(20000), payload.Length - offset);
                Memory<byte> buffer = send.GetMemory(n);
                n = Math.Min(n, buffer.Length);
                payload.AsMemory(offset, n).CopyTo(buffer);
                send.Advance(n);
                await send.FlushAsync();
                offset += n;
            }

            await send.CompleteAsync();
            client.Shutdown(SocketShutdown.Send);
        });

        long received = 0;
        while (true)
        {
            ReadResult read = await receive.ReadAsync();
            foreach (ReadOnlyMemory<byte> segment in read.Buffer)
            {
                Assert.True(segment.Span.SequenceEqual(payload.AsSpan((int)received, segment.Length)), $"bytes differ in [{received}, {received + segment.Length})");
                received += segment.Length;
            }

            receive.AdvanceTo(read.Buffer.End);
            if (read.IsCompleted)
            {
                break;
            }
        }

        await receive.CompleteAsync();
        await sender;
        await server;
        output.WriteLine($"echoed {received} bytes through pipelines on page-pool buffers");
        Assert.Equal(payload.Length, received);
        TestSupport.AssertFullyFreeAndCoalesced(arena); // every buffer was returned
    }
}
