using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using PageCore.AspNetCore;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// ASP.NET Core's Kestrel serving from the PageCore pool (<c>UsePageCoreMemoryPool</c>) on 127.0.0.1: echoes of every
/// size around a page and past a megabyte, sent with a content length and chunked, and 1 MiB responses, each checked by
/// SHA-256; then the arena is drained and verified: no page leaked, no bug reported, no fallback to heap buffers.
/// </summary>
[Collection(StressCollection.Name)]
public sealed class KestrelTests(ITestOutputHelper output)
{
    private static readonly int[] EchoSizes = [0, 1, 4095, 4096, 4097, 65536, (1 << 20) + 1];
    private const int GetSize = 1 << 20;

    [Theory(Timeout = 180_000)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task KestrelOnThePageCorePoolServesEveryBodyIntact(bool checkedPool)
    {
        int seed = TestSupport.Seed(output, nameof(KestrelOnThePageCorePoolServesEveryBodyIntact));
        long bugsBefore = PageBugException.ReportedCount;
        WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
        builder.Logging.ClearProviders();
        builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
        builder.WebHost.UsePageCoreMemoryPool(o =>
        {
            o.Arena.Pages = 16384; // 64 MiB
            o.Arena.ReturnFreeMemoryAfter = Timeout.InfiniteTimeSpan;
            o.Pool.Checked = checkedPool;
        });
        WebApplication app = builder.Build();
        app.MapPost("/echo", (HttpContext ctx) => ctx.Request.BodyReader.CopyToAsync(ctx.Response.BodyWriter));
        app.MapGet("/bytes/{n:int}", async (HttpContext ctx, int n) =>
        {
            byte[] body = Pattern(n);
            for (int at = 0; at < n; at += 16384)
            {
                await ctx.Response.BodyWriter.WriteAsync(body.AsMemory(at, Math.Min(16384, n - at)));
            }
        });

        PageCoreMemoryPoolFactory factory = app.Services.GetRequiredService<PageCoreMemoryPoolFactory>();
        PageArena arena = factory.Arena;
        await app.StartAsync();
        try
        {
            string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
            output.WriteLine($"serving on {address}, pool checked: {checkedPool}");
            using var client = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };
            var rng = new Random(seed);
            int checks = 0;
            foreach (int size in EchoSizes)
            {
                byte[] body = new byte[size];
                rng.NextBytes(body);
                foreach (bool chunked in new[] { false, true })
                {
                    using var request = new HttpRequestMessage(HttpMethod.Post, "/echo")
                    {
                        Content = chunked ? new StreamContent(new UnseekableStream(body)) : new ByteArrayContent(body),
                    };
                    request.Content.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
                    request.Headers.TransferEncodingChunked = chunked;
                    using HttpResponseMessage response = await client.SendAsync(request);
                    Assert.Equal(HttpStatusCode.OK, response.StatusCode);
                    byte[] echoed = await response.Content.ReadAsByteArrayAsync();
                    Assert.True(SHA256.HashData(echoed).AsSpan().SequenceEqual(SHA256.HashData(body)),
                        $"echo of {size} bytes ({(chunked ? "chunked" : "content-length")}) came back as {echoed.Length} bytes with another SHA-256");
                    checks++;
                }
            }

            byte[] expected = SHA256.HashData(Pattern(GetSize));
            byte[][] gets = await Task.WhenAll(Enumerable.Range(0, 8).Select(_ => client.GetByteArrayAsync($"/bytes/{GetSize}")));
            foreach (byte[] got in gets)
            {
                Assert.True(SHA256.HashData(got).AsSpan().SequenceEqual(expected), $"a 1 MiB GET came back as {got.Length} bytes with another SHA-256");
                checks++;
            }

            (long[] allocated, _, _, _) = arena.UsageByOrder();
            output.WriteLine($"{checks} bodies checked; pages allocated by order {string.Join(",", allocated)}; fallbacks {factory.FallbackRents}, stale disposes {factory.StaleDisposes}");
            Assert.True(allocated.Sum() > 0, "Kestrel did not rent from the PageCore pool");
            Assert.Equal(0, factory.FallbackRents);
        }
        finally
        {
            await app.StopAsync();
        }

        arena.Drain();
        ArenaReport report = arena.Verify();
        Assert.True(report.IsClean, report.ToString());
        Assert.Equal(arena.PageCount, arena.FreePageCount); // no page leaked
        Assert.Equal(bugsBefore, PageBugException.ReportedCount);
        await app.DisposeAsync(); // disposes the factory, which releases the arena
        Assert.True(arena.IsDisposed);
    }

    private static byte[] Pattern(int n)
    {
        byte[] b = new byte[n];
        for (int i = 0; i < n; i++)
        {
            b[i] = (byte)((i * 31) + 7);
        }

        return b;
    }

    /// <summary>A stream without a length, so that HttpClient sends it chunked.</summary>
    private sealed class UnseekableStream(byte[] data) : Stream
    {
        private int _position;

        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();
        public override long Position { get => throw new NotSupportedException(); set => throw new NotSupportedException(); }

        public override int Read(byte[] buffer, int offset, int count)
        {
            int n = Math.Min(Math.Min(count, 5000), data.Length - _position); // odd pieces, across page boundaries
            Array.Copy(data, _position, buffer, offset, n);
            _position += n;
            return n;
        }

        public override void Flush() { }
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    }
}
