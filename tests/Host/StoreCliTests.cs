using System.Diagnostics;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using TaskMesh.Engine.Store;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>The run store through the real <c>taskmesh</c> command.</summary>
public sealed class StoreCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-storecli-").FullName;

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, recursive: true);
    }

    private static string Example(string name) => Path.Combine(AppContext.BaseDirectory, "examples", name);

    [Fact]
    public async Task Run_RecordsIntoTheDefaultStore_AndRunsListsIt()
    {
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.Contains($"recorded in {Path.Combine(_dir, "taskmesh.db")}", stdout);
        (code, _, _) = await CliTests.Taskmesh(_dir, "run", Example("behaviours/failure-skips.json"), "--progress", "none");
        Assert.Equal(1, code);

        var json = Path.Combine(_dir, "runs.json");
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "runs", "--json", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("failure-skips", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var runs = doc.RootElement.EnumerateArray().ToList();
        Assert.Equal(2, runs.Count);
        Assert.Equal("failure-skips", runs[0].GetProperty("graph").GetString());   // newest first
        Assert.Equal("failed", runs[0].GetProperty("status").GetString());
        var etl = runs[1];
        Assert.Equal("succeeded", etl.GetProperty("status").GetString());
        Assert.Equal(11, etl.GetProperty("tasks").GetProperty("total").GetInt32());
        Assert.Equal(11, etl.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        foreach (var field in new[] { "run_id", "started_at", "finished_at", "cost" }) Assert.True(etl.TryGetProperty(field, out _), field);

        (code, stdout, _) = await CliTests.Taskmesh(_dir, "runs", "--status", "failed");
        Assert.Equal(0, code);
        Assert.DoesNotContain(" etl ", stdout);
    }

    [Fact]
    public async Task Audit_PrintsTheTrailOfARun_AndWritesTheDocumentedJson()
    {
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("behaviours/retries.json"), "--progress", "none");
        Assert.True(code == 0, stderr);
        var json = Path.Combine(_dir, "audit.json");
        (code, var stdout, stderr) = await CliTests.Taskmesh(_dir, "audit", "last", "flaky", "--json", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("task_execution", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var records = doc.RootElement.EnumerateArray().ToList();
        Assert.All(records, r =>
        {
            foreach (var f in new[] { "category", "timestamp", "run_id", "task_id", "detail" }) Assert.True(r.TryGetProperty(f, out _), f);
            Assert.Equal("flaky", r.GetProperty("task_id").GetString());
            Assert.Equal(JsonValueKind.Object, r.GetProperty("detail").ValueKind);
        });
        Assert.Equal(2, records.Count(r => r.GetProperty("category").GetString() == "error"));

        (code, _, stderr) = await CliTests.Taskmesh(_dir, "audit", "nosuchrun");
        Assert.Equal(2, code);
        Assert.Contains("holds no run 'nosuchrun'", stderr);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "audit", "last", "--category", "gossip");
        Assert.Equal(2, code);
        Assert.Contains("gossip", stderr);
    }

    [Fact]
    public async Task Run_WithAForeignStore_ExitsTwoBeforeRunning_AndLeavesItUnchanged()
    {
        var foreign = Path.Combine(_dir, "notes.txt");
        File.WriteAllText(foreign, "my notes\n");
        var summary = Path.Combine(_dir, "s.json");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--store", foreign, "--json", summary);
        Assert.Equal(2, code);
        Assert.Contains("is not a TaskMesh store", stderr);
        Assert.Equal("my notes\n", File.ReadAllText(foreign));
        Assert.False(File.Exists(summary));

        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--store", foreign, "--no-store");
        Assert.Equal(2, code);
        Assert.Contains("exclude each other", stderr);

        (code, _, _) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--no-store", "--progress", "none");
        Assert.Equal(0, code);
        Assert.False(File.Exists(Path.Combine(_dir, "taskmesh.db")));
    }

    [Fact]
    public async Task Run_KilledWithSigkill_LeavesAReadableStoreWithItsCommittedCompletions()
    {
        var graph = Path.Combine(_dir, "slow.json");
        var tasks = Enumerable.Range(0, 100).Select(i => new { id = $"t{i:000}", handler = "sleep", args = new { millis = 40 } }).ToArray();
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "slow", tasks }));
        var store = Path.Combine(_dir, "kill.db");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "run", graph, "--store", store, "--max-parallel", "1", "--progress", "lines" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        try
        {
            // Two progress lines: the run is a couple of seconds in, with completions checkpointed.
            int lines = 0;
            while (lines < 2 && await p.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(30)) is string line)
                if (line.StartsWith("progress:", StringComparison.Ordinal)) lines++;
            p.Kill();   // SIGKILL: no flush, no clean-up
            await p.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }

        using var s = RunStore.Open(store, readOnly: true);   // opens: not corrupt
        var run = Assert.Single(s.ListRuns());
        Assert.Equal("running", run.Status);                  // it never ended
        int completed = s.CompletedCount(run.RunId);
        Assert.InRange(completed, 1, 99);
        var rows = s.TasksOf(run.RunId);
        Assert.All(rows, r => Assert.Equal("succeeded", r.Status));
        Assert.True(rows.Count <= 100);
    }
}
