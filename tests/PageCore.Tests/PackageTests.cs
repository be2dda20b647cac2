using System.IO.Compression;
using System.Text.RegularExpressions;
using Xunit;

namespace PageCore.Tests;

/// <summary>
/// The NuGet package as a consumer gets it: the library is packed from a copy of the sources (so the running tests'
/// own build is never touched), the package is checked (README, license expression, XML docs, repository commit, a
/// symbols package), and a fresh console project outside the solution restores it from a local folder feed and runs an
/// alloc/free through it; the Kestrel package (PageCore.AspNetCore) is packed beside it, and a fresh web application
/// on it echoes 64 KiB through Kestrel renting from the arena; then the C# snippets of the README and of docs/*.md are
/// compiled and run against the PageCore package.
/// </summary>
[Collection(StressCollection.Name)] // alone: it runs two builds
public sealed class PackageTests(ITestOutputHelper output)
{
    [Fact(Timeout = 600_000)]
    public async Task APackedPackageRestoresAndRunsInAFreshProject()
    {
        string root = TestSupport.RepoRoot();
        string work = Path.Combine(Path.GetTempPath(), "pagecore-pack-" + Guid.NewGuid().ToString("N")[..8]);
        try
        {
            // A copy of what the package is built from, as its own git repository (the version comes from git).
            string src = Path.Combine(work, "repo");
            foreach (string f in new[] { "Directory.Build.props", "Directory.Build.targets", "Directory.Packages.props", "version.json", "global.json", "README.md", "LICENSE" })
            {
                if (File.Exists(Path.Combine(root, f)))
                {
                    Directory.CreateDirectory(src);
                    File.Copy(Path.Combine(root, f), Path.Combine(src, f));
                }
            }

            CopyTree(Path.Combine(root, "src", "PageCore"), Path.Combine(src, "src", "PageCore"));
            CopyTree(Path.Combine(root, "src", "PageCore.AspNetCore"), Path.Combine(src, "src", "PageCore.AspNetCore"));
            await Run("git", "init -q", src);
            await Run("git", "add -A", src);
            await Run("git", "-c user.email=test@pagecore -c user.name=test commit -q -m package", src);
            // A clone of a clone: its origin is a local path, which must not become the package's repository URL.
            await Run("git", $"remote add origin \"{root}\"", src);

            string feed = Path.Combine(work, "feed");
            await Run("dotnet", $"pack src/PageCore -c Release -o \"{feed}\"", src);
            await Run("dotnet", $"pack src/PageCore.AspNetCore -c Release -o \"{feed}\"", src);
            string nupkg = Directory.GetFiles(feed, "PageCore.*.nupkg").Single(f => !f.EndsWith(".snupkg", StringComparison.Ordinal) && !f.Contains("AspNetCore", StringComparison.Ordinal));
            Assert.Single(Directory.GetFiles(feed, "PageCore.*.snupkg"), f => !f.Contains("AspNetCore", StringComparison.Ordinal));
            string version = Regex.Match(Path.GetFileName(nupkg), @"^PageCore\.(.+)\.nupkg$").Groups[1].Value;
            output.WriteLine($"packed {Path.GetFileName(nupkg)}");
            Assert.Matches(@"^0\.1\.1-alpha(-g[0-9a-f]{10})?$", version); // version.json's 0.1-alpha, git height 1

            using (ZipArchive zip = ZipFile.OpenRead(nupkg))
            {
                string[] entries = zip.Entries.Select(e => e.FullName).ToArray();
                Assert.Contains("README.md", entries);
                Assert.Contains("lib/net10.0/PageCore.dll", entries);
                Assert.Contains("lib/net10.0/PageCore.xml", entries);
                using var reader = new StreamReader(zip.GetEntry("PageCore.nuspec")!.Open());
                string nuspec = reader.ReadToEnd();
                Assert.Contains("<license type=\"expression\">MIT</license>", nuspec);
                Assert.Contains("<readme>README.md</readme>", nuspec);
                Assert.Matches("<repository type=\"git\" commit=\"[0-9a-f]{40}\"", nuspec);
                Assert.DoesNotContain("url=", nuspec); // the origin is a local path: no repository URL at all
                Assert.DoesNotContain("<projectUrl>", nuspec);
            }

            // The Kestrel package: the same version, depending on PageCore and on ASP.NET Core's shared framework.
            string webNupkg = Path.Combine(feed, $"PageCore.AspNetCore.{version}.nupkg");
            Assert.True(File.Exists(webNupkg), $"no {Path.GetFileName(webNupkg)} in the feed");
            using (ZipArchive zip = ZipFile.OpenRead(webNupkg))
            {
                Assert.Contains("lib/net10.0/PageCore.AspNetCore.dll", zip.Entries.Select(e => e.FullName));
                using var reader = new StreamReader(zip.GetEntry("PageCore.AspNetCore.nuspec")!.Open());
                string nuspec = reader.ReadToEnd();
                Assert.Contains($"<dependency id=\"PageCore\" version=\"{version}\"", nuspec);
                Assert.Contains("<frameworkReference name=\"Microsoft.AspNetCore.App\"", nuspec);
            }

            // The consumer: outside the solution, only the local feed.
            string app = Path.Combine(work, "consumer");
            Directory.CreateDirectory(app);
            File.WriteAllText(Path.Combine(app, "nuget.config"), $"""
                <?xml version="1.0" encoding="utf-8"?>
                <configuration>
                  <packageSources>
                    <clear />
                    <add key="local" value="{feed}" />
                  </packageSources>
                </configuration>
                """);
            File.WriteAllText(Path.Combine(app, "consumer.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk">
                  <PropertyGroup>
                    <OutputType>Exe</OutputType>
                    <TargetFramework>net10.0</TargetFramework>
                    <Nullable>enable</Nullable>
                    <ImplicitUsings>enable</ImplicitUsings>
                  </PropertyGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(app, "Program.cs"), """
                using System.Buffers;
                using PageCore;
                using PageCore.Buffers;

                using PageArena arena = PageArena.Create(new PageArenaOptions { Pages = 1024 });
                Pfn page = arena.AllocPages(0);
                arena.GetSpan(page).Fill(42);
                int sum = arena.GetSpan(page)[..4].ToArray().Sum(b => b);
                arena.FreePages(page, 0);
                using (var pool = new PageMemoryPool(arena))
                using (IMemoryOwner<byte> owner = pool.Rent(10000))
                {
                    owner.Memory.Span.Fill(1);
                    sum += owner.Memory.Length;
                }

                arena.Drain();
                Console.WriteLine($"consumer ok {sum} free {arena.FreePageCount}");
                """);
            // The README's command: the package is a prerelease, so it needs --prerelease.
            await Run("dotnet", $"add package PageCore --prerelease --source \"{feed}\"", app);
            Assert.Contains($"<PackageReference Include=\"PageCore\" Version=\"{version}\" />", File.ReadAllText(Path.Combine(app, "consumer.csproj")));
            string printed = await Run("dotnet", "run -c Release", app);
            Assert.Contains("consumer ok 16552 free 1024", printed);

            // A web application on the Kestrel package: Kestrel rents from the arena and echoes 64 KiB intact.
            string web = Path.Combine(work, "web");
            Directory.CreateDirectory(web);
            File.Copy(Path.Combine(app, "nuget.config"), Path.Combine(web, "nuget.config"));
            File.WriteAllText(Path.Combine(web, "web.csproj"), $"""
                <Project Sdk="Microsoft.NET.Sdk.Web">
                  <PropertyGroup>
                    <TargetFramework>net10.0</TargetFramework>
                    <Nullable>enable</Nullable>
                    <ImplicitUsings>enable</ImplicitUsings>
                  </PropertyGroup>
                  <ItemGroup>
                    <PackageReference Include="PageCore.AspNetCore" Version="{version}" />
                  </ItemGroup>
                </Project>
                """);
            File.WriteAllText(Path.Combine(web, "Program.cs"), """
                using System.Net;
                using Microsoft.AspNetCore.Hosting.Server;
                using Microsoft.AspNetCore.Hosting.Server.Features;
                using PageCore.AspNetCore;

                WebApplicationBuilder builder = WebApplication.CreateBuilder(args);
                builder.Logging.ClearProviders();
                builder.WebHost.UseKestrel(k => k.Listen(IPAddress.Loopback, 0));
                builder.WebHost.UsePageCoreMemoryPool(o => o.Arena.Pages = 4096);
                WebApplication app = builder.Build();
                app.MapPost("/echo", (HttpContext ctx) => ctx.Request.BodyReader.CopyToAsync(ctx.Response.BodyWriter));
                await app.StartAsync();
                string address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
                using var client = new HttpClient { BaseAddress = new Uri(address) };
                byte[] body = new byte[65536];
                new Random(1).NextBytes(body);
                byte[] back = await (await client.PostAsync("/echo", new ByteArrayContent(body))).Content.ReadAsByteArrayAsync();
                PageCoreMemoryPoolFactory pools = app.Services.GetRequiredService<PageCoreMemoryPoolFactory>();
                Console.WriteLine($"kestrel ok {back.AsSpan().SequenceEqual(body)} rented {pools.OwnersCreated > 0}");
                await app.StopAsync();
                """);
            Assert.Contains("kestrel ok True rented True", await Run("dotnet", "run -c Release", web));

            // The C# snippets of the README and docs/, compiled and run against the package (so they cannot drift from the API).
            string snippets = Path.Combine(work, "snippets");
            Directory.CreateDirectory(snippets);
            File.Copy(Path.Combine(app, "nuget.config"), Path.Combine(snippets, "nuget.config"));
            File.Copy(Path.Combine(app, "consumer.csproj"), Path.Combine(snippets, "snippets.csproj"));
            // The README's blocks first, then those of docs/*.md in name order (docs/api.md holds the longer examples).
            string[] documents = new[] { Path.Combine(root, "README.md") }
                .Concat(Directory.GetFiles(Path.Combine(root, "docs"), "*.md").Order(StringComparer.Ordinal)).ToArray();
            string[] SnippetsOf(string file) => Regex.Matches(File.ReadAllText(file), "```csharp\n(.*?)```", RegexOptions.Singleline)
                .Select(m => m.Groups[1].Value).ToArray();
            Assert.NotEmpty(SnippetsOf(documents[0])); // the README's quick start
            string[] blocks = documents.SelectMany(SnippetsOf).ToArray();
            Assert.True(blocks.Length >= 3, "the README and docs/ have fewer C# snippets than expected");
            output.WriteLine($"{blocks.Length} C# snippets from {string.Join(", ", documents.Where(d => SnippetsOf(d).Length > 0).Select(d => Path.GetRelativePath(root, d)))}");
            var main = new System.Text.StringBuilder("using PageCore;\nusing var shared = PageArena.Create(new PageArenaOptions { Pages = 1 << 14 });\n");
            for (int i = 0; i < blocks.Length; i++)
            {
                string[] lines = blocks[i].Split('\n');
                string[] usings = lines.Where(l => Regex.IsMatch(l, @"^using [A-Za-z.]+;\s*$")).ToArray();
                string body = string.Join('\n', lines.Where(l => !usings.Contains(l)));
                string prelude = body.Contains("PageArena arena", StringComparison.Ordinal) ? "" : "PageArena arena = shared;\n";
                File.WriteAllText(Path.Combine(snippets, $"Snippet{i}.cs"),
                    string.Join('\n', usings.Append("using System.Buffers;").Append("using PageCore;").Append("using PageCore.Buffers;").Distinct()) +
                    $"\n#pragma warning disable CS0168, CS0219\npublic static class Snippet{i}\n{{\n    public static void Run(PageArena shared)\n    {{\n{prelude}{body}\n    }}\n}}\n");
                main.Append($"Snippet{i}.Run(shared);\n");
            }

            main.Append("Console.WriteLine(\"snippets ok\");\n");
            File.WriteAllText(Path.Combine(snippets, "Program.cs"), main.ToString());
            Assert.Contains("snippets ok", await Run("dotnet", "run -c Release", snippets));
        }
        finally
        {
            try
            {
                Directory.Delete(work, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }

    private static void CopyTree(string from, string to)
    {
        foreach (string dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(from, dir);
            if (!IsBuildOutput(rel))
            {
                Directory.CreateDirectory(Path.Combine(to, rel));
            }
        }

        Directory.CreateDirectory(to);
        foreach (string file in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            string rel = Path.GetRelativePath(from, file);
            if (!IsBuildOutput(rel))
            {
                File.Copy(file, Path.Combine(to, rel));
            }
        }
    }

    private static bool IsBuildOutput(string rel) =>
        rel.StartsWith("bin", StringComparison.Ordinal) || rel.StartsWith("obj", StringComparison.Ordinal);

    private Task<string> Run(string exe, string args, string dir) => TestSupport.RunProcess(output, exe, args, dir);
}
