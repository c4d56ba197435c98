using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Engine.Configuration;
using TaskMesh.Hosting;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>The Python client of examples/clients/python (written from docs/protocol.md) against a real service.</summary>
public sealed class PythonClientTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-python-").FullName;
    private ServiceProvider _provider = null!;
    private TaskMeshServer _server = null!;

    private static string Client => Path.Combine(AppContext.BaseDirectory, "examples", "clients", "python", "taskmesh_client.py");

    public async Task InitializeAsync()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(TaskMeshConfig.Parse("")).AddSqliteStore(Path.Combine(_dir, "runs.db"));
        _provider = services.BuildServiceProvider();
        _server = await TaskMeshServer.StartAsync(_provider.GetRequiredService<TaskMeshRuntime>(),
            new ServerOptions { HttpPort = 0, SocketPort = 0, GraphDirectory = Path.Combine(AppContext.BaseDirectory, "examples") });
    }

    public async Task DisposeAsync()
    {
        await _server.DisposeAsync();
        await _provider.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>Debian's python3 (it has python3-msgpack, which scripts/test.sh installs), stopped after a minute.</summary>
    private async Task<(int Code, string Stdout, string Stderr)> Python(params string[] args)
    {
        var psi = new ProcessStartInfo("/usr/bin/python3") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
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

    [Fact]
    public async Task SubmitWait_PrintsTheRunsFinalState_AsTaskmeshRunGetsIt()
    {
        var graph = Path.Combine(AppContext.BaseDirectory, "examples", "etl.json");
        var (code, stdout, stderr) = await Python("submit", graph, "--server", Server, "--wait");
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(stdout);
        var run = doc.RootElement;
        Assert.Equal("succeeded", run.GetProperty("status").GetString());

        var local = await _provider.GetRequiredService<TaskMeshRuntime>().Engine.RunAsync(TaskMesh.Engine.Graph.GraphLoader.LoadFile(graph));
        var tasks = run.GetProperty("tasks");
        Assert.Equal((local.Total, local.Succeeded, local.Failed), (tasks.GetProperty("total").GetInt32(), tasks.GetProperty("succeeded").GetInt32(), tasks.GetProperty("failed").GetInt32()));
        Assert.Equal("succeeded", _provider.GetRequiredService<TaskMeshRuntime>().Store!.GetRun(run.GetProperty("run_id").GetString()!).Status);
    }

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
