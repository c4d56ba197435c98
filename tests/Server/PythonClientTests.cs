using System.Diagnostics;
using System.Text.Json;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>The Python client of examples/clients/python (written from docs/protocol.md) against a real service.</summary>
public sealed class PythonClientTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-python-").FullName;
    private TestService _service = null!;
    private TaskMeshServer _server = null!;

    private static string Client => Path.Combine(AppContext.BaseDirectory, "examples", "clients", "python", "taskmesh_client.py");

    public async Task InitializeAsync()
    {
        _service = await TestService.StartAsync(
            new ServerOptions { HttpPort = 0, SocketPort = 0, GraphDirectory = Path.Combine(AppContext.BaseDirectory, "examples"), LeaseTimeout = TimeSpan.FromSeconds(2) },
            store: Path.Combine(_dir, "runs.db"));
        _server = _service.Server;
    }

    public async Task DisposeAsync()
    {
        await _service.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private Task<(int Code, string Stdout, string Stderr)> Python(params string[] args) => RunClientAsync(_dir, args);

    /// <summary>The client run by Debian's python3 (it has python3-msgpack, which scripts/test.sh installs) in <paramref name="dir"/>, stopped after a minute.</summary>
    internal static async Task<(int Code, string Stdout, string Stderr)> RunClientAsync(string dir, params string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
        psi.ArgumentList.Add(Client);
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try { await p.WaitForExitAsync(cts.Token); }
        finally { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        return (p.ExitCode, await stdout, await stderr);
    }

    private string Server => $"127.0.0.1:{_server.SocketEndpoint!.Port}";

    /// <summary>A Python worker process, killed with its children when disposed.</summary>
    private sealed class Worker : IDisposable
    {
        private readonly Process _p;
        public Worker(string server, string dir, string handler, string log, int slots)
        {
            var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
            foreach (var a in new[] { Client, "worker", "--handler", handler, "--server", server, "--slots", slots.ToString(), "--log", log }) psi.ArgumentList.Add(a);
            _p = Process.Start(psi)!;
            _p.StandardError.ReadToEndAsync();
        }

        public int Pid => _p.Id;

        public async Task ReadyAsync()
        {
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            var line = await _p.StandardOutput.ReadLineAsync(cts.Token);
            Assert.Contains("\"worker\"", line);
        }

        public void Kill() => _p.Kill(entireProcessTree: true);

        public void Dispose()
        {
            if (!_p.HasExited) _p.Kill(entireProcessTree: true);
            _p.WaitForExit();
            _p.Dispose();
        }
    }

    [Fact]
    public async Task APythonWorkerServesAHandler_AndWhenItIsKilledMidRun_ASecondFinishesItsTasks_NoneReportedTwice()
    {
        var log = Path.Combine(_dir, "results.log");
        using var first = new Worker(Server, _dir, "py.sleep", log, slots: 4);
        await first.ReadyAsync();
        var graph = Path.Combine(_dir, "external.json");
        var tasks = Enumerable.Range(0, 16).Select(i => $$"""{ "id": "t{{i}}", "handler": "py.sleep", "args": { "millis": 250 } }""");
        File.WriteAllText(graph, $$"""{ "name": "external", "tasks": [ {{string.Join(", ", tasks)}}, { "id": "all", "handler": "noop", "dependsOn": [{{string.Join(", ", Enumerable.Range(0, 16).Select(i => $"\"t{i}\""))}}] } ] }""");
        var runtime = _service.Runtime;
        var submitting = Python("submit", graph, "--server", Server, "--wait");

        // Kill the first worker once it has sent a few results, with leases out.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while ((!File.Exists(log) || File.ReadAllLines(log).Length < 4) && DateTime.UtcNow < deadline) await Task.Delay(20);
        first.Kill();
        using var second = new Worker(Server, _dir, "py.sleep", log, slots: 8);
        await second.ReadyAsync();

        var (code, stdout, stderr) = await submitting;
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        Assert.Equal(17, doc.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());

        // Each task's result was taken once, from the worker that held its lease then.
        string runId = doc.RootElement.GetProperty("run_id").GetString()!;
        await runtime.Store!.FlushAsync();
        var rows = runtime.Store.TasksOf(runId).Where(t => t.Handler == "py.sleep").ToList();
        Assert.Equal(16, rows.Count);
        Assert.All(rows, r => Assert.Equal("succeeded", r.Status));
        Assert.All(rows, r => Assert.Equal("external", r.Layer));
        var lines = File.ReadAllLines(log).Select(l => l.Split(' ')).ToList();
        var bySecond = lines.Where(l => l[1] == second.Pid.ToString()).Select(l => l[0]).ToList();
        Assert.NotEmpty(bySecond);                                   // the second worker finished what was left
        Assert.Equal(bySecond.Count, bySecond.Distinct().Count());   // none twice by it
        Assert.Equal(16, lines.Select(l => l[0]).Distinct().Count()); // every task was run by one worker or the other
        // A task the first worker ran again elsewhere is one whose lease was out when it was killed: at most its slots.
        Assert.True(lines.GroupBy(l => l[0]).Count(g => g.Count() > 1) <= 4);
    }


    [Fact]
    public async Task SubmitWait_PrintsTheRunsFinalState_AsTaskmeshRunGetsIt()
    {
        var graph = Path.Combine(AppContext.BaseDirectory, "examples", "etl.json");
        var (code, stdout, stderr) = await Python("submit", graph, "--server", Server, "--wait");
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        var run = doc.RootElement;
        Assert.Equal("succeeded", run.GetProperty("status").GetString());

        var local = await _service.Runtime.Engine.RunAsync(TaskMesh.Engine.Graph.GraphLoader.LoadFile(graph));
        var tasks = run.GetProperty("tasks");
        Assert.Equal((local.Total, local.Succeeded, local.Failed), (tasks.GetProperty("total").GetInt32(), tasks.GetProperty("succeeded").GetInt32(), tasks.GetProperty("failed").GetInt32()));
        Assert.Equal("succeeded", _service.Runtime.Store!.GetRun(run.GetProperty("run_id").GetString()!).Status);
    }

    [Fact]
    public async Task Get_ReadsWhatHttpReads_OverTheSocket()
    {
        var graph = Path.Combine(AppContext.BaseDirectory, "examples", "etl.json");
        var (code, stdout, stderr) = await Python("submit", graph, "--server", Server, "--wait");
        Assert.True(code == 0, stderr + stdout);
        string runId = JsonDocument.Parse(stdout).RootElement.GetProperty("run_id").GetString()!;
        await _service.Runtime.Store!.FlushAsync();
        using var http = new HttpClient { BaseAddress = _server.HttpAddress };
        foreach (var (path, query) in new[] { ($"runs/{runId}/graph", ""), ($"runs/{runId}/tasks", "limit=3"), ("metrics/escalations", "days=7"), ("rules", ""), ("learning/models", "") })
        {
            var args = new List<string> { "get", path, "--server", Server };
            if (query.Length > 0) args.AddRange(["--query", query]);
            (code, stdout, stderr) = await Python([.. args]);
            Assert.True(code == 0, path + ": " + stderr + stdout);
            using var socket = JsonDocument.Parse(stdout);
            using var viaHttp = JsonDocument.Parse(await http.GetStringAsync($"api/{path}?{query}"));
            Assert.Equal(Canonical(viaHttp.RootElement), Canonical(socket.RootElement));
        }
        (code, stdout, _) = await Python("get", $"runs/{runId}/tasks", "--query", "limit=3", "--server", Server);
        Assert.Equal(3, JsonDocument.Parse(stdout).RootElement.GetProperty("tasks").GetArrayLength());
        (code, _, stderr) = await Python("get", "nothing/here", "--server", Server);
        Assert.Equal(2, code);
        Assert.Contains("not found", stderr);
        Assert.Contains("layers", stderr);   // the error lists the paths
        (code, _, stderr) = await Python("get", "runs/no-such-run/graph", "--server", Server);
        Assert.Equal(2, code);
        (code, _, stderr) = await Python("get", "metrics", "--query", "days=-1", "--server", Server);
        Assert.Equal(2, code);
        Assert.Contains("days", stderr);
    }

    /// <summary>A JSON value with its numbers as doubles (MessagePack keeps 1.0 as 1; JSON may write either).</summary>
    private static string Canonical(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Object => "{" + string.Join(",", e.EnumerateObject().Select(p => JsonSerializer.Serialize(p.Name) + ":" + Canonical(p.Value))) + "}",
        JsonValueKind.Array => "[" + string.Join(",", e.EnumerateArray().Select(Canonical)) + "]",
        JsonValueKind.Number => e.GetDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        _ => e.GetRawText(),
    };

    [Fact]
    public async Task ARefusedGraph_ExitsTwo_NamingTheFilesLineAndTask_AndAFailingOneExitsOne()
    {
        var bad = Path.Combine(_dir, "bad.json");
        File.WriteAllText(bad, "{ \"name\": \"bad\", \"tasks\": [\n  { \"id\": \"ok\", \"handler\": \"noop\" },\n  { \"id\": \"x\", \"handler\": \"nope\" }\n] }\n");
        var (code, _, stderr) = await Python("submit", bad, "--server", Server, "--wait");
        Assert.Equal(2, code);
        Assert.Contains($"{bad}:3: task 'x':", stderr);
        Assert.Contains("[unknown-handler]", stderr);

        var failing = Path.Combine(_dir, "failing.json");
        File.WriteAllText(failing, """{ "name": "failing", "tasks": [ { "id": "f", "handler": "fail", "retries": 0 } ] }""");
        (code, var stdout, _) = await Python("submit", failing, "--server", Server, "--wait");
        Assert.Equal(1, code);
        Assert.Equal("failed", JsonDocument.Parse(stdout).RootElement.GetProperty("status").GetString());
    }
}
