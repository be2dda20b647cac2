using System.Buffers;
using System.Collections.Concurrent;
using System.Runtime.InteropServices;
using Microsoft.AspNetCore.Connections;

/// <summary>
/// A control for the allocation comparison (bench/kestrel/get1m-alloc-rounds.sh): Kestrel's pool logic (a
/// <see cref="ConcurrentQueue{T}"/> of 4 KiB blocks) over either one pinned slab (<c>--pool slab</c>, PageCore's
/// layout: every block a slice of one array) or one pinned array per block (<c>--pool blocks</c>, Kestrel's layout).
/// It separates what the layout of the memory does from what PageCore's pool does. Not for use in a server: it never
/// shrinks and it throws when the slab is used up.
/// </summary>
internal sealed class ControlPoolFactory(bool oneSlab) : IMemoryPoolFactory<byte>
{
    /// <summary>Blocks per slab: 64 MiB, more than the bench's loads hold at once.</summary>
    private const int SlabBlocks = 16384;

    public MemoryPool<byte> Create(MemoryPoolOptions? options = null)
    {
        Console.Error.WriteLine($"control pool created ({(oneSlab ? "one slab" : "one array per block")})");
        return new ControlPool(oneSlab);
    }

    private sealed class ControlPool : MemoryPool<byte>
    {
        private readonly ConcurrentQueue<Block> _free = new();
        private readonly byte[]? _slab;
        private int _next;

        public ControlPool(bool oneSlab)
        {
            if (oneSlab)
            {
                _slab = GC.AllocateUninitializedArray<byte>(SlabBlocks * 4096, pinned: true);
            }
        }

        public override int MaxBufferSize => 4096;

        public override IMemoryOwner<byte> Rent(int minBufferSize = -1)
        {
            ArgumentOutOfRangeException.ThrowIfGreaterThan(minBufferSize, 4096);
            if (_free.TryDequeue(out Block? block))
            {
                return block;
            }

            Memory<byte> memory;
            if (_slab is null)
            {
                memory = MemoryMarshal.CreateFromPinnedArray(GC.AllocateUninitializedArray<byte>(4096, pinned: true), 0, 4096);
            }
            else
            {
                int index = Interlocked.Increment(ref _next) - 1;
                if (index >= SlabBlocks)
                {
                    throw new InvalidOperationException("The control pool's slab is used up.");
                }

                memory = MemoryMarshal.CreateFromPinnedArray(_slab, index * 4096, 4096);
            }

            return new Block(this, memory);
        }

        protected override void Dispose(bool disposing)
        {
        }

        private sealed class Block(ControlPool pool, Memory<byte> memory) : IMemoryOwner<byte>
        {
            public Memory<byte> Memory { get; } = memory;

            public void Dispose() => pool._free.Enqueue(this);
        }
    }
}
