using System.Diagnostics;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// TaskMesh as a .NET user gets it: the packages packed from a copy of the repository, and
/// examples/library — a program that references them by version from that local feed, not the
/// projects — built and run against them.
/// </summary>
public sealed class PackageTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-pack-").FullName;
    // A version of this test's own: the machine's package cache never hands back an older build.
    private readonly string _version = $"0.9.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Environment.ProcessId}";

    public void Dispose()
    {
        Directory.Delete(_dir, recursive: true);
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        foreach (var id in new[] { "taskmesh.quantumsim", "taskmesh.engine", "taskmesh.learning", "taskmesh.hosting", "taskmesh" })
        {
            var cached = Path.Combine(cache, id, _version);
            if (Directory.Exists(cached)) Directory.Delete(cached, recursive: true);
        }
    }

    private static string Root()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Engine.sln"))) return d.FullName;
        throw new InvalidOperationException("the tests do not run inside a clone of the repository");
    }

    private static void Copy(string from, string to)
    {
        foreach (var f in Directory.EnumerateFiles(from, "*", SearchOption.AllDirectories))
        {
            var rel = Path.GetRelativePath(from, f);
            if (rel.Split(Path.DirectorySeparatorChar).Any(p => p is "bin" or "obj")) continue;
            Directory.CreateDirectory(Path.GetDirectoryName(Path.Combine(to, rel))!);
            File.Copy(f, Path.Combine(to, rel));
        }
    }

    private static async Task<string> Dotnet(string dir, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(5));
        try { await p.WaitForExitAsync(cts.Token); }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        var output = await stdout + await stderr;
        Assert.True(p.ExitCode == 0, $"dotnet {string.Join(' ', args)}: exit {p.ExitCode}\n{output}");
        return output;
    }

    [Fact]
    public async Task LibraryExample_BuildsAndRunsAgainstThePackedPackages()
    {
        var root = Root();
        var copy = Path.Combine(_dir, "repo");
        foreach (var name in new[] { "Directory.Build.props", "Directory.Packages.props", "README.md" }) { Directory.CreateDirectory(copy); File.Copy(Path.Combine(root, name), Path.Combine(copy, name)); }
        Copy(Path.Combine(root, "src"), Path.Combine(copy, "src"));
        Copy(Path.Combine(root, "examples", "library"), Path.Combine(copy, "examples", "library"));
        var feed = Path.Combine(copy, "artifacts", "packages");
        foreach (var project in new[] { "QuantumSim", "Engine", "Learning", "Hosting", "Server", "Host" })
            await Dotnet(copy, "pack", $"src/{project}/{project}.csproj", "-c", "Release", "-o", feed, $"-p:Version={_version}");
        var packages = Directory.GetFiles(feed, "*.nupkg").Select(Path.GetFileName).Order().ToList();
        Assert.Equal(["TaskMesh.Engine", "TaskMesh.Hosting", "TaskMesh.Learning", "TaskMesh.QuantumSim", "TaskMesh.Server", "taskmesh"],
            packages.Select(p => p![..p!.IndexOf($".{_version}", StringComparison.Ordinal)]).Order(StringComparer.Ordinal));

        var output = await Dotnet(Path.Combine(copy, "examples", "library"), "run", "-c", "Release", $"-p:TaskMeshVersion={_version}");
        Assert.Contains("engine: succeeded, 11 tasks, sum of squares = 385", output);
        Assert.Contains("open run: total = 385 on local; 11/11 tasks succeeded", output);
        Assert.Matches(@"runtime: succeeded, 20/20 succeeded, recorded as run [0-9a-f]+ \(succeeded\)", output);
        // The command as a .NET tool, installed from the same feed, runs a graph.
        var tools = Path.Combine(_dir, "tools");
        await Dotnet(_dir, "tool", "install", "taskmesh", "--tool-path", tools, "--add-source", feed, "--version", _version);
        File.WriteAllText(Path.Combine(_dir, "g.json"), """{"name":"tool","tasks":[{"id":"a","handler":"noop"},{"id":"b","handler":"spin","args":{"micros":100},"dependsOn":["a"]}]}""");
        var psi = new ProcessStartInfo(Path.Combine(tools, "taskmesh")) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        foreach (var a in new[] { "run", "g.json", "--no-store", "--progress", "none" }) psi.ArgumentList.Add(a);
        using (var tool = Process.Start(psi)!)
        {
            var toolOut = tool.StandardOutput.ReadToEndAsync();
            using var cts = new CancellationTokenSource(TimeSpan.FromMinutes(1));
            await tool.WaitForExitAsync(cts.Token);
            Assert.True(tool.ExitCode == 0, await tool.StandardError.ReadToEndAsync());
            Assert.Contains("of 'tool': succeeded", await toolOut);
        }

        // It used the packages, not the projects: its assets name the packages at this version.
        var assets = File.ReadAllText(Path.Combine(copy, "examples", "library", "obj", "project.assets.json"));
        Assert.Contains($"\"TaskMesh.Hosting/{_version}\"", assets);
        Assert.Contains($"\"TaskMesh.Engine/{_version}\"", assets);
    }
}
