using System.Diagnostics;
using System.Text.Json;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>Runs the real <c>taskmesh</c> entry point as a process on the example files.</summary>
public class CliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Example(string name) => Path.Combine(AppContext.BaseDirectory, "examples", name);

    /// <summary>
    /// Runs a command in this process through <see cref="TaskMesh.Host.Cli.RunAsync"/>, with writers of
    /// the test's own: for commands whose test needs no process of their own (no signal, SIGKILL or
    /// environment under test). Paths must be absolute (the working directory is the test runner's),
    /// and the command must not rely on the default run store.
    /// </summary>
    internal static async Task<(int code, string stdout, string stderr)> InProcess(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        int code = await TaskMesh.Host.Cli.RunAsync(args, stdout, stderr, cts.Token);
        return (code, stdout.ToString(), stderr.ToString());
    }

    internal static async Task<(int code, string stdout, string stderr)> Taskmesh(string workDir, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = workDir };
        psi.Environment["TASKMESH_HOME"] = workDir;   // the default run store goes into the test's folder
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var stdout = p.StandardOutput.ReadToEndAsync();
        var stderr = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(cts.Token);
        return (p.ExitCode, await stdout, await stderr);
    }

    /// <summary>
    /// Runs <paramref name="script"/> in bash in <paramref name="workDir"/> (the default run store
    /// there too) and returns its standard output, trimmed. A script still running after a minute is
    /// killed with its children.
    /// </summary>
    internal static async Task<string> Bash(string workDir, string script)
    {
        var psi = new ProcessStartInfo("bash", ["-c", script]) { RedirectStandardOutput = true, WorkingDirectory = workDir };
        psi.Environment["TASKMESH_HOME"] = workDir;
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        try
        {
            await p.WaitForExitAsync(cts.Token);
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
        return (await output).Trim();
    }

    [Theory]
    [InlineData("--log-level", "info")]
    [InlineData("--log-format", "xml")]
    public async Task ABadLogOption_IsAUsageError_NotACrash(string option, string value)
    {
        var (code, _, stderr) = await InProcess("runs", option, value, "--store", Path.Combine(Path.GetTempPath(), "no-such-dir-" + Guid.NewGuid(), "x.db"));
        Assert.Equal(2, code);
        Assert.Contains($"'{value}' not recognized", stderr);
    }

    [Fact]
    public async Task TheWorkerCommand_RefusesAJoinAddressThatIsNotHostPort()
    {
        var (code, _, stderr) = await InProcess("worker", "--join", "nowhere");
        Assert.Equal(2, code);
        Assert.Contains("--join must be HOST:PORT of a coordinator, got 'nowhere'", stderr);
    }

    [Fact]
    public async Task Run_MainExample_SucceedsAndWritesSummary()
    {
        var summary = Path.Combine(_dir, "s.json");
        var (code, stdout, stderr) = await Taskmesh(_dir, "run", Example("etl.json"), "--json", summary);

        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("succeeded", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(summary));
        var root = doc.RootElement;
        Assert.Equal("succeeded", root.GetProperty("status").GetString());
        Assert.Equal("etl", root.GetProperty("graph").GetString());
        Assert.Equal(11, root.GetProperty("tasks").GetProperty("total").GetInt32());
        Assert.Equal(11, root.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        Assert.Equal(11, root.GetProperty("layers").GetProperty("local").GetProperty("tasks").GetInt32());
        Assert.True(root.GetProperty("wall_ms").GetDouble() > 0);
        Assert.True(root.GetProperty("critical_path_ms").GetDouble() > 40);
        var nodes = root.GetProperty("nodes").EnumerateArray().ToList();
        Assert.Equal(11, nodes.Count);
        Assert.All(nodes, n => Assert.Equal("succeeded", n.GetProperty("status").GetString()));
        // extract-orders sleeps 40 ms (examples/etl.json): its duration is at least that; the
        // summary's durations are the tasks' own, each no longer than the run.
        var extract = nodes.Single(n => n.GetProperty("id").GetString() == "extract-orders");
        Assert.InRange(extract.GetProperty("duration_ms").GetDouble(), 40, root.GetProperty("wall_ms").GetDouble());
        Assert.All(nodes, n => Assert.InRange(n.GetProperty("duration_ms").GetDouble(), 0, root.GetProperty("wall_ms").GetDouble()));
    }

    [Fact]
    public async Task Run_FailingTask_ExitsOneAndNamesTheSkipCause()
    {
        var summary = Path.Combine(_dir, "s.json");
        var (code, stdout, _) = await Taskmesh(_dir, "run", Example("behaviours/failure-skips.json"), "--json", summary);

        Assert.Equal(1, code);
        Assert.Contains("upstream service returned 503", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(summary));
        var nodes = doc.RootElement.GetProperty("nodes").EnumerateArray().ToDictionary(n => n.GetProperty("id").GetString()!);
        Assert.Equal("failed", nodes["bad"].GetProperty("status").GetString());
        Assert.Equal("skipped", nodes["deeper"].GetProperty("status").GetString());
        Assert.Equal("bad", nodes["deeper"].GetProperty("skipped_because").GetString());
        Assert.Equal("succeeded", nodes["cleanup"].GetProperty("status").GetString());
        Assert.Equal("failed", doc.RootElement.GetProperty("status").GetString());
    }

    [Fact]
    public async Task Run_BrokenGraph_ExitsTwoListsEveryProblemAndWritesNothing()
    {
        var summary = Path.Combine(_dir, "s.json");
        var (code, _, stderr) = await Taskmesh(_dir, "run", Example("behaviours/broken.json"), "--json", summary);

        Assert.Equal(2, code);
        Assert.Contains("cycle: a -> b -> c -> a", stderr);
        Assert.Contains("duplicate-id", stderr);
        Assert.Contains("unknown-handler", stderr);
        Assert.Contains("unknown-dependency", stderr);
        Assert.Contains("self-loop", stderr);
        Assert.Contains("unknown-resource", stderr);
        Assert.Contains("broken.json:8", stderr);
        Assert.False(File.Exists(summary));
    }

    [Theory]
    [InlineData("run")]
    [InlineData("run", "nosuch.json")]
    [InlineData("run", "x.json", "--max-parallel", "zero")]
    [InlineData("run", "x.json", "--bogus")]
    [InlineData("frobnicate")]
    public async Task BadUsage_ExitsTwo(params string[] args)
    {
        var (code, _, stderr) = await Taskmesh(_dir, args);
        Assert.Equal(2, code);
        Assert.False(string.IsNullOrWhiteSpace(stderr));
    }

    [Fact]
    public async Task Run_BadConfig_ExitsTwoNamingKeyAndLine()
    {
        var cfg = Path.Combine(_dir, "taskmesh.toml");
        File.WriteAllText(cfg, "[execution]\nretry_attempts = 1\nmax_parallel_tasks = \"many\"\n");
        var (code, _, stderr) = await Taskmesh(_dir, "run", Example("fanout.json"), "--config", cfg);
        Assert.Equal(2, code);
        Assert.Contains("taskmesh.toml:3: key 'execution.max_parallel_tasks' must be an integer", stderr);
    }

    [Fact]
    public async Task Validate_And_Graph_ReportTheCriticalPath()
    {
        var (code, stdout, _) = await Taskmesh(_dir, "validate", Example("etl.json"));
        Assert.Equal(0, code);
        Assert.Contains("11 tasks", stdout);

        (code, stdout, _) = await Taskmesh(_dir, "graph", Example("etl.json"), "--critical-path");
        Assert.Equal(0, code);
        Assert.Contains("extract-orders -> clean-orders -> join -> load-", stdout);

        var dot = Path.Combine(_dir, "g.dot");
        (code, _, _) = await Taskmesh(_dir, "graph", Example("etl.json"), "--dot", dot);
        Assert.Equal(0, code);
        var text = File.ReadAllText(dot);
        Assert.StartsWith("digraph \"etl\"", text);
        Assert.Contains("\"join\" [label=\"join\\nmatmul\", color=red, penwidth=2];", text);
    }

    [Fact]
    public async Task Run_Interrupted_PrintsPartialSummaryAndExits130()
    {
        var graph = Path.Combine(_dir, "long.json");
        File.WriteAllText(graph, """
            { "name": "long", "tasks": [
              { "id": "quick", "handler": "noop" },
              { "id": "wait-1", "handler": "sleep", "args": { "millis": 60000 }, "dependsOn": ["quick"] },
              { "id": "wait-2", "handler": "sleep", "args": { "millis": 60000 } },
              { "id": "after", "handler": "noop", "dependsOn": ["wait-1"] } ] }
            """);
        var summary = Path.Combine(_dir, "s.json");
        // Through `env --default-signal=INT`, which then becomes dotnet (same process): SIGINT at its
        // default even when this test process was started with it ignored (an exec keeps that).
        var psi = new ProcessStartInfo("env") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["TASKMESH_HOME"] = _dir;
        foreach (var a in new[] { "--default-signal=INT", "dotnet", Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "run", graph, "--json", summary, "--progress", "lines" })
            psi.ArgumentList.Add(a);
        using var p = new Process { StartInfo = psi };
        var output = new System.Text.StringBuilder();
        var underWay = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        p.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data.StartsWith("progress:", StringComparison.Ordinal)) underWay.TrySetResult();
        };
        p.Start();
        p.BeginOutputReadLine();
        var stderr = p.StandardError.ReadToEndAsync();
        // Once the run is under way (its first progress line), send SIGINT as Ctrl+C does.
        await underWay.Task.WaitAsync(TimeSpan.FromSeconds(30));
        using (var kill = Process.Start("kill", ["-INT", p.Id.ToString()])) await kill.WaitForExitAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await p.WaitForExitAsync(cts.Token);

        Assert.Equal(130, p.ExitCode);
        lock (output) Assert.Contains("cancelled", output.ToString());
        using var doc = JsonDocument.Parse(File.ReadAllText(summary));
        Assert.Equal("cancelled", doc.RootElement.GetProperty("status").GetString());
        Assert.Equal(1, doc.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        Assert.Equal(3, doc.RootElement.GetProperty("tasks").GetProperty("cancelled").GetInt32());
        _ = await stderr;
    }

    [Theory]
    [InlineData("run")]
    [InlineData("validate")]
    [InlineData("graph")]
    [InlineData("qsim")]
    [InlineData("gen", "qaoa")]
    [InlineData("completion")]
    public async Task Help_EveryCommand_ExitsZeroListingItsOptions(params string[] command)
    {
        var (code, stdout, _) = await Taskmesh(_dir, [.. command, "--help"]);
        Assert.Equal(0, code);
        Assert.Contains("Usage:", stdout);
        Assert.Contains($"taskmesh {string.Join(' ', command)}", stdout);
    }

    [Theory]
    [InlineData("--json")]
    [InlineData("--max-parallel")]
    [InlineData("--config")]
    [InlineData("--progress")]
    public async Task MissingOptionValue_ExitsTwoNamingTheOption(string option)
    {
        var (code, _, stderr) = await Taskmesh(_dir, "run", Example("etl.json"), option);
        Assert.Equal(2, code);
        Assert.Contains(option, stderr);
    }

    [Fact]
    public async Task UnknownOptionAndBadValues_ExitTwoNamingThem()
    {
        var (code, _, stderr) = await Taskmesh(_dir, "qsim", "x.qasm", "--shotz", "5");
        Assert.Equal(2, code);
        Assert.Contains("--shotz", stderr);
        (code, _, stderr) = await Taskmesh(_dir, "run", Example("etl.json"), "--progress", "fancy");
        Assert.Equal(2, code);
        Assert.Contains("fancy", stderr);
        (code, _, stderr) = await Taskmesh(_dir, "run", Example("etl.json"), "--max-parallel", "0");
        Assert.Equal(2, code);
        Assert.Contains("option --max-parallel must be an integer between 1 and 100000, got '0'", stderr);
    }

    [Fact]
    public async Task Completion_PrintsAScript_AndSuggestsOptions()
    {
        var (code, stdout, _) = await Taskmesh(_dir, "completion", "bash");
        Assert.Equal(0, code);
        Assert.Contains("complete -o default -F _taskmesh_complete taskmesh", stdout);
        (code, stdout, _) = await Taskmesh(_dir, "[suggest:17]", "taskmesh run --pr");
        Assert.Equal(0, code);
        Assert.Contains("--progress", stdout);
    }
}
