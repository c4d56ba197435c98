using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;

namespace TaskMesh.Tests.Cluster;

/// <summary>
/// The <c>taskmesh</c> processes a cluster test starts (a coordinator, workers), each run in the
/// test's folder — in a network namespace when asked — with its output lines collected as they come;
/// killed with their children when disposed.
/// </summary>
internal sealed class TestProcesses(string dir) : IDisposable
{
    public static readonly TimeSpan Limit = TimeSpan.FromSeconds(90);
    private readonly List<Process> _processes = new();

    /// <summary>Starts <c>taskmesh ARGS</c>; its standard output and error go to <paramref name="lines"/>.</summary>
    public Process Start(ConcurrentQueue<string> lines, params string[] args) => StartIn(null, lines, args);

    /// <summary>Starts <c>taskmesh ARGS</c> inside network namespace <paramref name="netns"/> (null: this one).</summary>
    public Process StartIn(string? netns, ConcurrentQueue<string> lines, params string[] args)
    {
        string[] command = ["dotnet", Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), .. args];
        if (netns is not null) command = ["ip", "netns", "exec", netns, .. command];   // ip execs the command: the pid is taskmesh's
        var psi = new ProcessStartInfo(command[0]) { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        psi.Environment["TASKMESH_HOME"] = dir;
        foreach (var a in command.Skip(1)) psi.ArgumentList.Add(a);
        var p = new Process { StartInfo = psi };
        p.OutputDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        p.ErrorDataReceived += (_, e) => { if (e.Data is not null) lines.Enqueue(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        _processes.Add(p);
        return p;
    }

    /// <summary>The first group of the first line matching <paramref name="pattern"/>, waiting for it.</summary>
    public static async Task<string> Match(ConcurrentQueue<string> lines, string pattern)
    {
        var until = DateTime.UtcNow + Limit;
        while (DateTime.UtcNow < until)
        {
            foreach (var l in lines)
                if (System.Text.RegularExpressions.Regex.Match(l, pattern) is { Success: true } m) return m.Groups[1].Value;
            await Task.Delay(20);
        }
        throw new TimeoutException($"no line matched {pattern}: {string.Join("\n", lines)}");
    }

    public static async Task<JsonElement> Get(HttpClient http, string path)
    {
        using var doc = JsonDocument.Parse(await http.GetStringAsync(path));
        return doc.RootElement.Clone();
    }

    /// <summary>Waits until <paramref name="path"/>'s JSON satisfies <paramref name="done"/>, and returns it.</summary>
    public static async Task<JsonElement> Until(HttpClient http, string path, Func<JsonElement, bool> done, string what)
    {
        var until = DateTime.UtcNow + Limit;
        while (true)
        {
            var e = await Get(http, path);
            if (done(e)) return e;
            if (DateTime.UtcNow > until) throw new TimeoutException($"waited too long for {what}: {e}");
            await Task.Delay(50);
        }
    }

    public static async Task<int> Exit(Process p)
    {
        using var cts = new CancellationTokenSource(Limit);
        await p.WaitForExitAsync(cts.Token);
        return p.ExitCode;
    }

    public void Dispose()
    {
        foreach (var p in _processes)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); }
            catch (InvalidOperationException) { }
            p.WaitForExit(TimeSpan.FromSeconds(30));   // bounded: a grandchild holding its output open must not hang the suite
            p.Dispose();
        }
        _processes.Clear();
    }
}

/// <summary>A test class that starts <c>taskmesh</c> processes in a folder of its own (both gone when it is disposed).</summary>
public abstract class ProcessTest : IDisposable
{
    protected static readonly TimeSpan Limit = TestProcesses.Limit;
    private readonly TestProcesses _processes;

    protected ProcessTest(string prefix)
    {
        Dir = Directory.CreateTempSubdirectory(prefix).FullName;
        _processes = new TestProcesses(Dir);
    }

    /// <summary>The test's folder (the processes' working directory and TASKMESH_HOME).</summary>
    protected string Dir { get; }

    protected Process Start(ConcurrentQueue<string> lines, params string[] args) => _processes.Start(lines, args);

    protected Process StartIn(string netns, ConcurrentQueue<string> lines, params string[] args) => _processes.StartIn(netns, lines, args);

    protected static Task<string> Match(ConcurrentQueue<string> lines, string pattern) => TestProcesses.Match(lines, pattern);

    protected static Task<JsonElement> Get(HttpClient http, string path) => TestProcesses.Get(http, path);

    protected static Task<JsonElement> Until(HttpClient http, string path, Func<JsonElement, bool> done, string what) => TestProcesses.Until(http, path, done, what);

    protected static Task<int> Exit(Process p) => TestProcesses.Exit(p);

    /// <summary>Stops the processes; then the folder goes.</summary>
    protected virtual void Dispose(bool disposing)
    {
        if (!disposing) return;
        _processes.Dispose();
        Directory.Delete(Dir, recursive: true);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }
}
