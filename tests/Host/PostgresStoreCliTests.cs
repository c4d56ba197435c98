using System.Text.Json;
using TaskMesh.Engine.Store;
using TaskMesh.Tests.Engine.Store;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>The run store in PostgreSQL through the real <c>taskmesh</c> command: <c>[store] url</c>, <c>--store URL</c>, a SIGKILL and a resume.</summary>
public sealed class PostgresStoreCliTests(PostgresFixture pg) : IClassFixture<PostgresFixture>, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-pgcli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Example(string name) => Path.Combine(AppContext.BaseDirectory, "examples", name);

    [Fact]
    public async Task Run_WithStoreUrlInTheConfig_RecordsInTheDatabase_AndTheReportsReadIt()
    {
        var url = await pg.NewDatabaseAsync();
        var config = Path.Combine(_dir, "taskmesh.toml");
        File.WriteAllText(config, $"[store]\nurl = \"{url}\"\n");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config, "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.Contains($"recorded in {url}", stdout);
        Assert.False(File.Exists(Path.Combine(_dir, "taskmesh.db")), "nothing went to the default file");

        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "runs", "--store", url);
        Assert.True(code == 0, stderr);
        Assert.Contains("etl", stdout);
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "runs", "show", "last", "--config", config);
        Assert.True(code == 0, stderr);
        Assert.Contains("tasks: 11 total, 11 succeeded", stdout);
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "metrics", "--store", url);
        Assert.True(code == 0, stderr);
        Assert.Contains("local", stdout);
    }

    [Fact]
    public async Task BadStoreUrls_AreExit2NamingTheKeyOrTheProblem_AndNothingRuns()
    {
        var config = Path.Combine(_dir, "bad.toml");
        File.WriteAllText(config, "[store]\nurl = \"http://example/x\"\n");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("url", stderr);
        Assert.Contains("postgresql://", stderr);

        File.WriteAllText(config, $"[store]\npath = \"runs.db\"\nurl = \"{pg.UrlOf("postgres")}\"\n");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("both 'path' and 'url'", stderr);

        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--store", pg.UrlOf("no_such_db"));
        Assert.Equal(2, code);
        Assert.Contains("does not exist", stderr);
        Assert.False(File.Exists(Path.Combine(_dir, "taskmesh.db")));
    }

    [Fact]
    public async Task Resume_AfterSigkill_RunsNothingWhoseCompletionTheDatabaseHas()
    {
        var url = await pg.NewDatabaseAsync();
        // 60 tasks with a side effect each (a line in effects.log), one slot: killed part-way.
        var tasks = new List<object>();
        for (int i = 0; i < 60; i++)
            tasks.Add(new { id = $"t{i:00}", handler = "shell", args = new { command = "sh", args = new[] { "-c", $"echo t{i:00} >> effects.log; sleep 0.04" } } });
        var graph = Path.Combine(_dir, "effects.json");
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "effects", tasks }));
        var config = Path.Combine(_dir, "taskmesh.toml");
        File.WriteAllText(config, "[handlers]\nshell_enabled = true\n[execution]\nmax_parallel_tasks = 1\nready_order = \"fifo\"\n");

        Assert.Equal("killed rc=137",
            await StoreCliTests.SigkillWhen(_dir, $"run '{graph}' --config '{config}' --store '{url}' --progress lines >run-out.txt 2>run-err.txt", "wc -l < effects.log", 25));
        string killedRun;
        HashSet<string> durable;
        using (var s = RunStore.Open(url, readOnly: true))
        {
            killedRun = s.ResolveRunId("last");
            Assert.Equal("interrupted", s.ListRuns().Single().Status);   // its process is gone
            var engine = new TaskMesh.Engine.TaskMeshEngine(new TaskMesh.Engine.EngineOptions { ShellEnabled = true });
            var prepared = engine.Prepare(TaskMesh.Engine.Graph.GraphLoader.LoadFile(graph), graph);
            var restored = s.LoadRestored(killedRun, prepared.Graph);
            durable = Enumerable.Range(0, 60).Where(restored.Contains).Select(i => $"t{i:00}").ToHashSet();
        }
        Assert.InRange(durable.Count, 1, 59);

        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "resume", killedRun, "--config", config, "--store", url, "--progress", "none");
        Assert.True(code == 0, stderr + stdout);
        var counts = File.ReadAllLines(Path.Combine(_dir, "effects.log")).GroupBy(l => l).ToDictionary(x => x.Key, x => x.Count());
        Assert.Equal(60, counts.Count);                                  // every task's effect happened
        foreach (var id in durable) Assert.Equal(1, counts[id]);         // completions the database had never ran again
        using var store = RunStore.Open(url, readOnly: true);
        Assert.Equal("succeeded", store.ListRuns().First().Status);
    }
}
