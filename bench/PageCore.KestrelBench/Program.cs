// A minimal Kestrel server for bench/kestrel/wrk-rounds.sh: the same endpoints on Kestrel's own buffer pool or on a
// PageCore arena, so that wrk can compare the two in alternating rounds.
//
//   --pool kestrel|pagecore|slab|blocks
//                             kestrel: Kestrel's default pool (nothing registered); pagecore: UsePageCoreMemoryPool;
//                             slab, blocks: the control pools of ControlPool.cs (Kestrel's queue over one pinned slab,
//                             or over one pinned array per block)
//   --port N                  listen on http://127.0.0.1:N (default 5000)
//   --decay SECONDS|off       PageArenaOptions.ReturnFreeMemoryAfter (default 5; off: never; pagecore only)
//   --no-caches               PageArenaOptions.PerCpuCaches = false (pagecore only)
//   --no-huge-pages           PageArenaOptions.AdviseHugePages = false (pagecore only)
//   --no-statistics           PageArenaOptions.CollectStatistics = false (pagecore only)
//   --checked                 PageMemoryPoolOptions.Checked = true (pagecore only)
//   --arena-checked           PageArenaOptions.Checked = true (pagecore only)
//   --pages N                 PageArenaOptions.Pages (pagecore only; default: the library's default)
//
// Environment: PAGECORE_BENCH_MAX_BUFFER=N sets PageMemoryPoolOptions.MaxBufferSize (pagecore only; by default the
// pool advertises the arena's largest block, 4 MiB, where Kestrel's own pool advertises 4 KiB).
//
// Endpoints: GET /plaintext, POST /echo, GET /bytes/{n}, GET /stats, POST /collect, POST /verify (pagecore only).
using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Runtime;
using System.Text;
using System.Text.Json;
using PageCore.AspNetCore;

string pool = "kestrel";
int port = 5000;
double decaySeconds = 5;
bool poolChecked = false, arenaChecked = false, caches = true, hugePages = true, statistics = true;
long pages = 0;
for (int i = 0; i < args.Length; i++)
{
    string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
    switch (args[i])
    {
        case "--pool": pool = Next(); break;
        case "--port": port = int.Parse(Next(), CultureInfo.InvariantCulture); break;
        case "--decay":
            string decay = Next();
            decaySeconds = decay == "off" ? double.PositiveInfinity : double.Parse(decay, CultureInfo.InvariantCulture);
            break;
        case "--no-caches": caches = false; break;
        case "--no-huge-pages": hugePages = false; break;
        case "--no-statistics": statistics = false; break;
        case "--checked": poolChecked = true; break;
        case "--arena-checked": arenaChecked = true; break;
        case "--pages": pages = long.Parse(Next(), CultureInfo.InvariantCulture); break;
        default:
            Console.Error.WriteLine($"unknown argument: {args[i]}");
            return 2;
    }
}

if (pool is not ("kestrel" or "pagecore" or "slab" or "blocks"))
{
    Console.Error.WriteLine($"--pool must be kestrel, pagecore, slab or blocks, not {pool}");
    return 2;
}

// The server's own arguments are not configuration: the builder gets none.
WebApplicationBuilder builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = [] });
builder.Logging.ClearProviders();
builder.Logging.AddConsole();
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.WebHost.ConfigureKestrel(k =>
{
    k.AddServerHeader = false;
    k.Listen(IPAddress.Loopback, port);
});
if (pool == "pagecore")
{
    builder.WebHost.UsePageCoreMemoryPool(o =>
    {
        o.Arena.ReturnFreeMemoryAfter = double.IsPositiveInfinity(decaySeconds) ? Timeout.InfiniteTimeSpan : TimeSpan.FromSeconds(decaySeconds);
        o.Arena.Checked = arenaChecked;
        o.Arena.PerCpuCaches = caches;
        o.Arena.AdviseHugePages = hugePages;
        o.Arena.CollectStatistics = statistics;
        if (pages > 0)
        {
            o.Arena.Pages = pages;
        }

        o.Pool.Checked = poolChecked;
        if (Environment.GetEnvironmentVariable("PAGECORE_BENCH_MAX_BUFFER") is { Length: > 0 } max)
        {
            o.Pool.MaxBufferSize = int.Parse(max, CultureInfo.InvariantCulture);
        }
    });
}

if (pool is "slab" or "blocks")
{
    builder.Services.AddSingleton<Microsoft.AspNetCore.Connections.IMemoryPoolFactory<byte>>(new ControlPoolFactory(oneSlab: pool == "slab"));
}

WebApplication app = builder.Build();
PageCoreMemoryPoolFactory? factory = pool == "pagecore" ? app.Services.GetRequiredService<PageCoreMemoryPoolFactory>() : null;

// Every request but /stats is counted, so that the script can divide allocated bytes by requests served.
app.Use((ctx, next) =>
{
    if (!ctx.Request.Path.StartsWithSegments("/stats", StringComparison.Ordinal))
    {
        Interlocked.Increment(ref Bench.Requests);
    }

    return next(ctx);
});

app.MapGet("/plaintext", (RequestDelegate)Bench.Plaintext);
app.MapPost("/echo", (RequestDelegate)Bench.Echo);
app.MapGet("/bytes/{n}", (RequestDelegate)Bench.Bytes);
app.MapGet("/stats", (RequestDelegate)(ctx => Bench.WriteJson(ctx, w => Bench.Stats(w, pool, factory))));
app.MapPost("/collect", (RequestDelegate)(ctx =>
{
    GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
    GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
    GC.WaitForPendingFinalizers();
    return Bench.WriteJson(ctx, w => w.WriteNumber("rss_bytes", Bench.RssBytes()));
}));
if (factory is not null)
{
    // A full check of the arena: meaningful only while no other request is running (the script calls it when idle).
    app.MapPost("/verify", (RequestDelegate)(ctx =>
    {
        factory.Arena.Drain();
        var report = factory.Arena.Verify();
        return Bench.WriteJson(ctx, w =>
        {
            w.WriteBoolean("clean", report.IsClean);
            w.WriteString("report", report.ToString());
        });
    }));
}

// A sampled count of what is allocated, by type (GC AllocationTick events: one per ~100 KB allocated, naming the type
// of the object that crossed the mark): GET /alloc-types lists them, POST /alloc-types/reset starts over.
AllocationTypes? types = Environment.GetEnvironmentVariable("PAGECORE_BENCH_ALLOC_TYPES") == "1" ? new AllocationTypes() : null;
if (types is not null)
{
    app.MapGet("/alloc-types", (RequestDelegate)(ctx => ctx.Response.WriteAsync(types.Report())));
    app.MapPost("/alloc-types/reset", (RequestDelegate)(ctx => { types.Reset(); return Task.CompletedTask; }));
}

await app.RunAsync();
return 0;

internal sealed class AllocationTypes : System.Diagnostics.Tracing.EventListener
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _bytes = new();

    public void Reset() => _bytes.Clear();

    public string Report() =>
        string.Join('\n', _bytes.OrderByDescending(kv => kv.Value).Take(25).Select(kv => $"{kv.Value,14:N0}  {kv.Key}")) + "\n";

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
        {
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
        }
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (e.EventName is { } name && name.StartsWith("GCAllocationTick", StringComparison.Ordinal) && e.PayloadNames is { } names)
        {
            int t = names.IndexOf("TypeName");
            int a = names.IndexOf("AllocationAmount64");
            if (t >= 0 && a >= 0 && e.Payload![t] is string type)
            {
                _bytes.AddOrUpdate(type, Convert.ToInt64(e.Payload[a], CultureInfo.InvariantCulture), (_, v) => v + Convert.ToInt64(e.Payload[a], CultureInfo.InvariantCulture));
            }
        }
    }
}

internal static class Bench
{
    public const int Chunk = 16 * 1024;

    /// <summary>Requests served, /stats excluded.</summary>
    public static long Requests;

    private static readonly byte[] Hello = "Hello, World!"u8.ToArray();

    /// <summary>
    /// 16 KiB of the pattern byte i = (byte)(i * 31 + 7); 16384 * 31 is a multiple of 256, so the pattern of a longer
    /// body is this array repeated.
    /// </summary>
    private static readonly byte[] Pattern = MakePattern();

    private static byte[] MakePattern()
    {
        var p = new byte[Chunk];
        for (int i = 0; i < p.Length; i++)
        {
            p[i] = (byte)((i * 31) + 7);
        }

        return p;
    }

    public static Task Plaintext(HttpContext ctx)
    {
        HttpResponse r = ctx.Response;
        r.StatusCode = 200;
        r.ContentType = "text/plain";
        r.ContentLength = Hello.Length;
        return r.BodyWriter.WriteAsync(Hello).AsTask();
    }

    /// <summary>The request body back, through the request's and the response's pipes (Content-Length or chunked).</summary>
    public static async Task Echo(HttpContext ctx)
    {
        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/octet-stream";
        if (ctx.Request.ContentLength is long length)
        {
            ctx.Response.ContentLength = length;
        }

        PipeReader reader = ctx.Request.BodyReader;
        PipeWriter writer = ctx.Response.BodyWriter;
        while (true)
        {
            ReadResult read = await reader.ReadAsync(ctx.RequestAborted);
            ReadOnlySequence<byte> buffer = read.Buffer;
            foreach (ReadOnlyMemory<byte> segment in buffer)
            {
                writer.Write(segment.Span);
            }

            reader.AdvanceTo(buffer.End);
            FlushResult flush = await writer.FlushAsync(ctx.RequestAborted);
            if (read.IsCompleted || read.IsCanceled || flush.IsCompleted || flush.IsCanceled)
            {
                break;
            }
        }
    }

    /// <summary>n bytes of the pattern, in 16 KiB writes from the static array.</summary>
    public static async Task Bytes(HttpContext ctx)
    {
        if (!long.TryParse(ctx.Request.RouteValues["n"] as string, NumberStyles.None, CultureInfo.InvariantCulture, out long n)
            || n > (1L << 32))
        {
            ctx.Response.StatusCode = 400;
            return;
        }

        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/octet-stream";
        ctx.Response.ContentLength = n;
        PipeWriter writer = ctx.Response.BodyWriter;
        for (long sent = 0; sent < n;)
        {
            int k = (int)Math.Min(Chunk, n - sent);
            FlushResult flush = await writer.WriteAsync(Pattern.AsMemory(0, k), ctx.RequestAborted);
            sent += k;
            if (flush.IsCompleted || flush.IsCanceled)
            {
                break;
            }
        }
    }

    public static void Stats(Utf8JsonWriter w, string pool, PageCoreMemoryPoolFactory? factory)
    {
        w.WriteString("pool", pool);
        w.WriteNumber("requests", Interlocked.Read(ref Requests));
        w.WriteNumber("allocated_bytes", GC.GetTotalAllocatedBytes(false));
        w.WriteNumber("gen0", GC.CollectionCount(0));
        w.WriteNumber("gen1", GC.CollectionCount(1));
        w.WriteNumber("gen2", GC.CollectionCount(2));
        w.WriteNumber("gc_heap_bytes", GC.GetTotalMemory(false));
        w.WriteNumber("rss_bytes", RssBytes());
        w.WriteNumber("rss_peak_bytes", ProcStatusBytes("VmHWM:"));
        w.WriteBoolean("server_gc", GCSettings.IsServerGC);
        if (factory is not null)
        {
            w.WriteNumber("free_pages", factory.Arena.FreePageCount);
            w.WriteNumber("page_count", factory.Arena.PageCount);
            w.WriteNumber("page_size", factory.Arena.PageSize);
            w.WriteNumber("fallback_rents", factory.FallbackRents);
            w.WriteNumber("stale_disposes", factory.StaleDisposes);
            w.WriteNumber("owners_created", factory.OwnersCreated);
            w.WriteNumber("bug_reports", PageCore.PageBugException.ReportedCount);
            w.WriteNumber("bytes_returned", factory.Arena.BytesReturned);
            w.WriteNumber("arena_resident_bytes", factory.Arena.ResidentBytes);
        }
    }

    public static Task WriteJson(HttpContext ctx, Action<Utf8JsonWriter> body)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            body(w);
            w.WriteEndObject();
        }

        ctx.Response.StatusCode = 200;
        ctx.Response.ContentType = "application/json";
        ctx.Response.ContentLength = buffer.WrittenCount;
        return ctx.Response.BodyWriter.WriteAsync(buffer.WrittenMemory).AsTask();
    }

    /// <summary>VmRSS from /proc/self/status, in bytes (0 where there is no /proc).</summary>
    public static long RssBytes() => ProcStatusBytes("VmRSS:");

    /// <summary>A "Key:  123456 kB" line of /proc/self/status, in bytes (0 where there is no /proc or no such line).</summary>
    public static long ProcStatusBytes(string key)
    {
        try
        {
            foreach (string line in File.ReadLines("/proc/self/status", Encoding.ASCII))
            {
                if (line.StartsWith(key, StringComparison.Ordinal))
                {
                    string[] parts = line.Split([' ', '\t'], StringSplitOptions.RemoveEmptyEntries);
                    return long.Parse(parts[1], CultureInfo.InvariantCulture) * 1024;
                }
            }
        }
        catch (IOException)
        {
        }

        return 0;
    }
}
