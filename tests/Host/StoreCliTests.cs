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
        foreach (var field in new[] { "run_id", "started_at", "finished_at", "cost", "ready_order" }) Assert.True(etl.TryGetProperty(field, out _), field);

        (code, stdout, _) = await CliTests.Taskmesh(_dir, "runs", "--status", "failed");
        Assert.Equal(0, code);
        Assert.DoesNotContain(" etl ", stdout);

        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "runs", "show", etl.GetProperty("run_id").GetString()!, "--slowest", "3");
        Assert.True(code == 0, stderr);
        Assert.Contains("of 'etl': succeeded", stdout);
        Assert.Contains("tasks: 11 total, 11 succeeded", stdout);
        Assert.Matches(@"critical path [\d.]+ ms vs makespan [\d.]+ ms .*; ready order (critical_path|fifo)", stdout);
        string readyOrder = System.Text.RegularExpressions.Regex.Match(stdout, "ready order (critical_path|fifo)").Groups[1].Value;
        Assert.Matches(@"local\s+11 tasks\s+11 ok\s+0 failed", stdout);
        Assert.Contains("slowest tasks", stdout);
        Assert.Equal(3, stdout.Split('\n').SkipWhile(l => !l.Contains("slowest tasks")).Skip(1).Count(l => l.Contains(" ms ")));

        // The timeline: one HTML file whose SVG is well-formed and draws every task, the critical path outlined.
        var html = Path.Combine(_dir, "run.html");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "runs", "timeline", etl.GetProperty("run_id").GetString()!, "--out", html);
        Assert.True(code == 0, stderr);
        var text = File.ReadAllText(html);
        Assert.Contains($"ready order {readyOrder}.", text);   // the order the run's layers gave free slots in
        var svg = System.Xml.Linq.XDocument.Parse(text[text.IndexOf("<svg", StringComparison.Ordinal)..(text.IndexOf("</svg>", StringComparison.Ordinal) + 6)]);
        var rects = svg.Descendants().Where(e => e.Name.LocalName == "rect").ToList();
        using (var g = JsonDocument.Parse(File.ReadAllText(Example("etl.json"))))
            Assert.Equal(g.RootElement.GetProperty("tasks").EnumerateArray().Select(t => t.GetProperty("id").GetString()).Order(),
                rects.Select(r => (string?)r.Attribute("data-task")).Order());
        Assert.Equal(["clean-orders", "extract-orders", "join", "load-warehouse", "report"],
            rects.Where(r => ((string?)r.Attribute("class"))!.Contains("crit")).Select(r => (string)r.Attribute("data-task")!).Order());
        Assert.All(rects, r => Assert.Contains(" ms", r.Descendants().First(e => e.Name.LocalName == "title").Value));

        // The graph coloured by the outcomes of a stored run.
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "graph", Example("behaviours/failure-skips.json"), "--dot", "--run", runs[0].GetProperty("run_id").GetString()!);
        Assert.True(code == 0, stderr);
        Assert.Contains("\"bad\" [label=\"bad\\nfail\", color=red, penwidth=2, style=\"rounded,filled\", fillcolor=\"#ffcdd2\", tooltip=\"failed\"]", stdout);
        Assert.Contains("tooltip=\"skipped\"", stdout);
    }

    [Fact]
    public async Task Run_OnAStoreOnAReadOnlyMount_IsRefusedBeforeItStarts_AndTheStoreStillReadsAsItWas()
    {
        // A real read-only file system: the store's folder bind-mounted read-only in a mount
        // namespace of its own (root ignores file modes, not a read-only mount).
        var db = Path.Combine(_dir, "db");
        Directory.CreateDirectory(db);
        var store = Path.Combine(db, "s.db");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        var before = Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(store)));
        var dll = Path.Combine(AppContext.BaseDirectory, "taskmesh.dll");
        var script = $"""
            mount --bind '{db}' '{db}' && mount -o remount,bind,ro '{db}' || exit 99
            dotnet '{dll}' run '{Example("etl.json")}' --store '{store}' --progress none; echo "run rc=$?"
            dotnet '{dll}' runs --store '{store}' --json '{Path.Combine(_dir, "runs.json")}'; echo "runs rc=$?"
            """;
        // Twice: without, then with the WAL index SQLite leaves beside a store a reader opened.
        for (int round = 0; round < 2; round++)
        {
            var psi = new ProcessStartInfo("unshare", ["-m", "--propagation", "private", "bash", "-c", script])
            { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
            psi.Environment["TASKMESH_HOME"] = _dir;
            using var p = Process.Start(psi)!;
            var output = p.StandardOutput.ReadToEndAsync();
            var errors = p.StandardError.ReadToEndAsync();
            Assert.True(p.WaitForExit(60_000), "the read-only run did not end");
            var (stdout, err) = (await output, await errors);
            Assert.True(p.ExitCode == 0, $"{stdout}\n{err}");
            Assert.Contains("run rc=2", stdout);
            Assert.Contains($"store '{store}' cannot be written (the file or its folder is read-only", err);
            Assert.Contains("runs rc=0", stdout);   // reading still works, on the read-only mount
            using (var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "runs.json"))))
                Assert.Equal("succeeded", Assert.Single(doc.RootElement.EnumerateArray()).GetProperty("status").GetString());
            Assert.Equal(before, Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(store))));
            if (round == 0) Assert.Equal(0, (await CliTests.Taskmesh(_dir, "runs", "--store", store)).code);   // leaves s.db-shm
        }
    }

    [Fact]
    public async Task Run_WithStoreJournalKeys_KeepsTheRowsTheConfigAsksFor()
    {
        var config = Path.Combine(_dir, "journal.toml");
        File.WriteAllText(config, "[store]\nfull_detail_tasks = 0\nsample_every = 1\nslow_task_ms = 86400000\n");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config, "--progress", "none");
        Assert.True(code == 0, stderr);

        using (var store = RunStore.Open(Path.Combine(_dir, "taskmesh.db"), readOnly: true))
        {
            var run = Assert.Single(store.ListRuns());
            var kept = store.TasksOf(run.RunId);
            Assert.Equal(run.Tasks.Total, kept.Count);   // sample_every = 1: every task, though not as a small run
            Assert.All(kept, t => Assert.Contains(t.KeptBecause, new[] { "sampled", "layer" }));
            Assert.Contains(kept, t => t.KeptBecause == "sampled");
        }

        File.WriteAllText(config, "[store]\nsample_every = 3\n");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config, "--progress", "none");
        Assert.Equal(2, code);
        Assert.Contains("journal.toml:2: key 'store.sample_every' must be a power of two", stderr);
    }

    [Fact]
    public async Task Layers_WithAProviderTable_ListsKindRankPriceCapabilitiesTheCascadeAndTheDisabledOnes()
    {
        var config = Path.Combine(_dir, "layers.toml");
        File.WriteAllText(config, """
            [layers.quantum]
            precision = "single"
            price_per_second = 0.5

            [layers.quantum-double]
            kind = "quantum"
            precision = "double"
            price_per_second = 1
            rank = 20

            [layers.gpu]
            kind = "local"
            capacity = 2
            price_per_second = 3
            rank = 30
            capabilities = ["gpu"]

            [layers.spare]
            kind = "local"
            enabled = false
            """);
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "layers", "--config", config);
        Assert.True(code == 0, stderr);
        var rows = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Skip(1).Select(l => l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[0]).ToList();
        Assert.Equal(["local", "quantum", "quantum-double", "gpu", "spare"], rows);   // by rank, the disabled last
        Assert.Matches(@"quantum\s+quantum\s+active\s+10\s+1\s+0\.5\s+quantum\s+single,escalates:quantum-double", stdout);
        Assert.Matches(@"gpu\s+local\s+active\s+30\s+2\s+3\s+any handler\s+gpu", stdout);
        Assert.Matches(@"spare\s+local\s+disabled", stdout);
    }

    [Fact]
    public async Task Rules_ListsTheRulesInForce_AndARunMirrorsThemIntoTheStore()
    {
        var config = Path.Combine(_dir, "rules.toml");
        File.WriteAllText(config, """
            [escalation]
            max_per_task = 2

            [layers.quantum-double]
            kind = "quantum"
            rank = 20

            [[escalation.rules]]
            trigger = "error"

            [[escalation.rules]]
            from = "quantum"
            to = "quantum-double"
            trigger = "low_confidence"
            threshold = 0.9
            priority = 3
            """);
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "rules", "list", "--config", config);
        Assert.True(code == 0, stderr);
        Assert.Contains("at most 2 escalation(s) per task", stdout);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Matches(@"^\s+2\s+3\s+low_confidence\s+0\.9\s+quantum\s+quantum-double\s+yes", lines[2]);   // highest priority first
        Assert.Matches(@"^\s+1\s+0\s+error\s+-\s+\*\s+next\s+yes", lines[3]);
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "rules", "list");
        Assert.Contains("the defaults", stdout);

        var store = Path.Combine(_dir, "s.db");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--config", config, "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        using var s = RunStore.Open(store, readOnly: true);
        Assert.Equal(TaskMesh.Engine.Configuration.TaskMeshConfig.Parse(File.ReadAllText(config)).EscalationRules, s.RulesOf());
    }

    [Fact]
    public async Task Escalate_RunsExactlyTheTaskAndItsDataEdgeDescendantsAgain_OnTheNewLayer_AndRecordsAManualEscalation()
    {
        // a → b → c over data edges; d after a over a hard edge; e alone. Each appends its id to effects.log.
        object Shell(string id, params object[] deps) => new
        {
            id, handler = "shell", args = (object)new { command = "sh", args = new[] { "-c", $"echo {id} >> effects.log; echo {id}-out" } }, dependsOn = deps,
        };
        var graph = Path.Combine(_dir, "chain.json");
        File.WriteAllText(graph, JsonSerializer.Serialize(new
        {
            name = "chain",
            tasks = new[]
            {
                // a computes (a handler that may move between layers); the others leave a line each.
                new { id = "a", handler = "hash", args = (object)new { bytes = 1000 }, dependsOn = Array.Empty<object>() },
                Shell("b", new { id = "a", type = "data" }), Shell("c", new { id = "b", type = "data" }), Shell("d", "a"), Shell("e"),
            },
        }));
        var config = Path.Combine(_dir, "taskmesh.toml");
        File.WriteAllText(config, "[handlers]\nshell_enabled = true\n[layers.big]\nkind = \"local\"\nrank = 10\nprice_per_second = 1\n");
        var effects = Path.Combine(_dir, "effects.log");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", graph, "--config", config, "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.Equal(["b", "c", "d", "e"], File.ReadAllLines(effects).Order());

        var summary = Path.Combine(_dir, "escalated.json");
        (code, var stdout, stderr) = await CliTests.Taskmesh(_dir, "escalate", "last", "a", "--to", "big", "--reason", "check on the big layer",
            "--config", config, "--json", summary, "--progress", "none");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("escalating task a of run", stdout);
        Assert.Contains("from local to big: it and 2 task(s) reading its output run again; 2 of 5 are reused", stdout);
        Assert.Equal(["b", "b", "c", "c", "d", "e"], File.ReadAllLines(effects).Order());   // d and e did not run again
        using (var doc = JsonDocument.Parse(File.ReadAllText(summary)))
        {
            Assert.Equal(2, doc.RootElement.GetProperty("tasks").GetProperty("restored").GetInt32());
            Assert.Equal(5, doc.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        }
        using (var s = RunStore.Open(Path.Combine(_dir, "taskmesh.db"), readOnly: true))
        {
            var newRun = s.ResolveRunId("last");
            var esc = Assert.Single(s.EscalationsOf(newRun));
            Assert.Equal(("a", "local", "big", "manual", "check on the big layer"), (esc.TaskId, esc.From, esc.To, esc.Trigger, esc.Reason));
            Assert.Equal("big", s.TasksOf(newRun).Single(t => t.Id == "a").Layer);
            Assert.Equal("local", s.TasksOf(newRun).Single(t => t.Id == "b").Layer);
        }

        (code, _, stderr) = await CliTests.Taskmesh(_dir, "escalate", "last", "zz", "--to", "big", "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("has no task 'zz'", stderr);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "escalate", "last", "a", "--to", "moon", "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("--to: no layer 'moon'", stderr);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "escalate", "last", "b", "--to", "big", "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("--to: handler 'shell' of task 'b' runs only in the local layer", stderr);
    }

    [Fact]
    public async Task Train_MakesAModelVersionFromTheStoresHistory_AndModelsListsIt()
    {
        var store = Path.Combine(_dir, "s.db");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "train", "--store", store);
        Assert.Equal(2, code);
        Assert.Contains("no task rows with features yet", stderr);
        for (int i = 0; i < 2; i++)
            Assert.Equal(0, (await CliTests.Taskmesh(_dir, "run", Example("fanout.json"), "--store", store, "--progress", "none")).code);
        using (var s = RunStore.Open(store, readOnly: true))
        {
            var rows = s.TrainingRows();
            Assert.Equal(2 * 66, rows.Count);   // every task of both runs, with its features
            Assert.All(rows, r => Assert.Equal(TaskMesh.Learning.Features.FeatureExtractor.Count, r.Features.Length));
        }

        (code, var stdout, stderr) = await CliTests.Taskmesh(_dir, "train", "--store", store);
        Assert.True(code == 0, stderr);
        Assert.Contains("model version 1: 132 examples from 132 task rows", stdout);
        Assert.Matches(@"local\s+132\s+[\d.]+", stdout);
        Assert.True(File.Exists(Path.Combine(store + ".models", "v1", "manifest.json")));
        Assert.True(File.Exists(Path.Combine(store + ".models", "v1", "local.duration.zip")));
        Assert.Equal(0, (await CliTests.Taskmesh(_dir, "train", "--store", store)).code);
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "models", "--store", store);
        Assert.Equal(0, code);
        Assert.True(stdout.IndexOf("version 2", StringComparison.Ordinal) < stdout.IndexOf("version 1", StringComparison.Ordinal), stdout);   // newest first
    }

    [Fact]
    public async Task Run_WithRoutingBands_SendsEachTaskToItsBand_AuditsTheCandidates_AndACorruptModelFallsBackWithAWarning()
    {
        var config = Path.Combine(_dir, "route.toml");
        File.WriteAllText(config, """
            [layers.big]
            kind = "local"
            rank = 10

            [[routing.bands]]
            up_to = 20
            layer = "local"

            [[routing.bands]]
            up_to = 100
            layer = "big"
            """);
        var graph = Path.Combine(_dir, "route.json");
        File.WriteAllText(graph, """{"name":"routed","tasks":[{"id":"small","handler":"spin","args":{"micros":10}},{"id":"long","handler":"sleep","args":{"millis":200}}]}""");
        var store = Path.Combine(_dir, "r.db");
        var summary = Path.Combine(_dir, "rs.json");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", graph, "--config", config, "--store", store, "--json", summary, "--progress", "none");
        Assert.True(code == 0, stderr);
        using (var doc = JsonDocument.Parse(File.ReadAllText(summary)))
            Assert.Equal(["local", "big"], doc.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("layer").GetString()));
        using (var s = RunStore.Open(store, readOnly: true))
        {
            var selection = Assert.Single(s.AuditOf(s.ResolveRunId("last"), "long", AuditCategory.LayerSelection));
            Assert.Contains("cold start: complexity 66.3", selection.Detail);
            Assert.Contains("candidates big:", selection.Detail);
        }

        // A model version that cannot be read: the run warns and routes by the bands.
        Assert.Equal(0, (await CliTests.Taskmesh(_dir, "train", "--store", store)).code);
        var manifest = Path.Combine(store + ".models", "v1", "manifest.json");
        File.WriteAllText(manifest, "{ not json");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", graph, "--config", config, "--store", store, "--json", summary, "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.Contains("warning: model version 1 not used, the router falls back to its cold-start rules", stderr);
        using (var doc = JsonDocument.Parse(File.ReadAllText(summary)))
            Assert.Equal(["local", "big"], doc.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("layer").GetString()));
    }

    [Fact]
    public async Task Predict_ExplainsEachTasksLayer_AndRunsNothing()
    {
        var config = Path.Combine(_dir, "route.toml");
        File.WriteAllText(config, "[layers.big]\nkind = \"local\"\nrank = 10\n\n[[routing.bands]]\nup_to = 20\nlayer = \"local\"\n\n[[routing.bands]]\nup_to = 100\nlayer = \"big\"\n");
        var graph = Path.Combine(_dir, "p.json");
        File.WriteAllText(graph, """
            {"name":"explained","tasks":[
              {"id":"small","handler":"spin","args":{"micros":10}},
              {"id":"long","handler":"sleep","args":{"millis":200}},
              {"id":"pinned","handler":"sleep","args":{"millis":200},"layer":"local"},
              {"id":"boom","handler":"fail","args":{"message":"would fail"}}]}
            """);
        var json = Path.Combine(_dir, "pred.json");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "predict", graph, "--config", config, "--json", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("nothing ran", stdout);
        Assert.Contains("long [sleep, complexity 66.3] → big: cold start: complexity 66.3 ≤ 100 → big; candidates big:", stdout);
        Assert.Contains("pinned [sleep, complexity 66.3] → local: forced by the graph", stdout);
        using (var doc = JsonDocument.Parse(File.ReadAllText(json)))
            Assert.Equal(["local", "big", "local", "local"], doc.RootElement.EnumerateArray().Select(t => t.GetProperty("layer").GetString()));
        Assert.False(File.Exists(Path.Combine(_dir, "taskmesh.db")) && RunsIn(Path.Combine(_dir, "taskmesh.db")) > 0);   // no run recorded anywhere
    }

    private static int RunsIn(string store)
    {
        using var s = RunStore.Open(store, readOnly: true);
        return s.ListRuns().Count;
    }

    [Fact]
    public async Task Run_TrainsANewModelVersionAfterwards_WhenEnoughNewRowsWereStored()
    {
        var config = Path.Combine(_dir, "learn.toml");
        File.WriteAllText(config, "[learning]\nretrain_after_rows = 100\n");
        var store = Path.Combine(_dir, "s.db");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", Example("fanout.json"), "--config", config, "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.DoesNotContain("trained model version", stdout);   // 66 rows: not yet
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", Example("fanout.json"), "--config", config, "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        Assert.Contains("trained model version 1 from 132 task rows (132 new since the last version)", stdout);
        File.WriteAllText(config, "[learning]\nretrain_after_rows = 100\nenabled = false\n");
        for (int i = 0; i < 2; i++)
            (code, stdout, _) = await CliTests.Taskmesh(_dir, "run", Example("fanout.json"), "--config", config, "--store", store, "--progress", "none");
        Assert.DoesNotContain("trained model version", stdout);
        using var s = RunStore.Open(store, readOnly: true);
        Assert.Equal(132, Assert.Single(s.Models()).Rows);
    }

    [Fact]
    public async Task RulesAddSetDisable_ManageTheStoresRules_WhichRunsFollowWhenTheConfigDeclaresNone()
    {
        var store = Path.Combine(_dir, "s.db");
        var config = Path.Combine(_dir, "big.toml");
        File.WriteAllText(config, "[layers.big]\nkind = \"local\"\nrank = 10\n");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "rules", "add", "--trigger", "error", "--to", "big", "--priority", "2", "--store", store);
        Assert.True(code == 0, stderr);
        Assert.Contains("rule 1 added: * → big on error", stdout);
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "rules", "add", "--trigger", "low_confidence", "--threshold", "0.9", "--store", store);
        Assert.Contains("rule 2 added", stdout);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "rules", "set", "1", "--threshold", "0.5", "--store", store);
        Assert.Equal(2, code);
        Assert.Contains("a rule on error takes no threshold", stderr);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "rules", "set", "7", "--priority", "1", "--store", store);
        Assert.Equal(2, code);
        Assert.Contains("has no escalation rule 7", stderr);
        Assert.Equal(0, (await CliTests.Taskmesh(_dir, "rules", "disable", "2", "--store", store)).code);
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "rules", "list", "--store", store);
        Assert.Contains("escalation rules from the run store", stdout);
        Assert.Matches(@"\s1\s+2\s+error\s+-\s+\*\s+big\s+yes", stdout);
        Assert.Matches(@"\s2\s+0\s+low_confidence\s+0\.9\s+\*\s+next\s+no", stdout);

        // A run follows the store's rules: a task failing on local moves to big, and succeeds there.
        var graph = Path.Combine(_dir, "f.json");
        File.WriteAllText(graph, """{"name":"once","tasks":[{"id":"f","handler":"fail","args":{"attempts":1}}]}""");
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", graph, "--config", config, "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("f: local → big (error)", stdout);
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "rules", "list", "--store", store);
        Assert.Contains("from the run store", stdout);   // the run did not overwrite them
        using (var s = RunStore.Open(store, readOnly: true))
        {
            var esc = Assert.Single(s.EscalationsOf(s.ResolveRunId("last")));
            Assert.Equal(("f", "error", 1), (esc.TaskId, esc.Trigger, esc.RuleId));   // the escalation names the rule that fired
        }
        (code, stdout, _) = await CliTests.Taskmesh(_dir, "runs", "show", "last", "--store", store);
        Assert.Contains("f: local -> big (error, rule 1 * → big on error)", stdout);
    }

    [Fact]
    public async Task Metrics_OnAKnownStore_PrintTheKnownFigures()
    {
        Assert.Equal(0, (await CliTests.Taskmesh(_dir, "run", Example("etl.json"), "--progress", "none", "--nodes")).code);
        Assert.Equal(1, (await CliTests.Taskmesh(_dir, "run", Example("behaviours/failure-skips.json"), "--progress", "none")).code);
        var json = Path.Combine(_dir, "m.json");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "metrics", "--days", "7", "--json", json);
        Assert.True(code == 0, stderr);
        Assert.Contains("92.9 %", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var total = doc.RootElement.GetProperty("total");
        // etl: 11 tasks on local; failure-skips: 2 succeeded, 1 failed, 2 skipped (skipped tasks never ran).
        Assert.Equal((14, 13, 1), (total.GetProperty("tasks").GetInt32(), total.GetProperty("succeeded").GetInt32(), total.GetProperty("failed").GetInt32()));
        Assert.Equal(13.0 / 14, total.GetProperty("success_rate").GetDouble(), 5);
        Assert.True(total.GetProperty("average_duration_ms").GetDouble() > 0);
        Assert.Equal(14, doc.RootElement.GetProperty("layers").GetProperty("local").GetProperty("tasks").GetInt32());
        Assert.Single(doc.RootElement.GetProperty("per_day").EnumerateObject());
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "layers");
        Assert.True(code == 0, stderr);
        Assert.Matches(@"local\s+local\s+active\s+0\s+\d+\s+0\s+any handler\s+-\s+14\s+92\.9 %", stdout);
        Assert.Matches(@"quantum\s+quantum\s+active\s+10\s+1\s+0\s+quantum\s+-\s+0\s+-", stdout);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "metrics", "--days", "12");
        Assert.Equal(2, code);
        Assert.Contains("12", stderr);
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
    public async Task Resume_AfterSigkill_RunsNothingWhoseCompletionWasStored_AndRestoresDataEdgeOutputs()
    {
        // 60 tasks with a side effect each (a line in effects.log), one slot: killed part-way.
        var tasks = new List<object> { new { id = "seed", handler = "hash", args = new { bytes = 1000 } } };
        for (int i = 0; i < 60; i++)
            tasks.Add(new { id = $"t{i:00}", handler = "shell", args = new { command = "sh", args = new[] { "-c", $"echo t{i:00} >> effects.log; sleep 0.04" } }, dependsOn = new[] { "seed" } });
        tasks.Add(new { id = "report", handler = "report", args = new { path = "out/r.json" }, dependsOn = new object[] { new { id = "seed", type = "data" }, "t59" } });
        var graph = Path.Combine(_dir, "effects.json");
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "effects", tasks }));
        var config = Path.Combine(_dir, "taskmesh.toml");
        // Arrival order: the report (behind t59) must run after the kill, in the resumed run, to
        // show the seed's output restored; by critical path it would run right after t59, first.
        File.WriteAllText(config, "[handlers]\nshell_enabled = true\n[execution]\nmax_parallel_tasks = 1\nready_order = \"fifo\"\n");
        var effects = Path.Combine(_dir, "effects.log");

        // A shell watches the effects and sends the SIGKILL: this test process's own timers can lag
        // behind a busy machine, and the run would end before a late kill.
        Assert.Equal("killed rc=137",   // 128 + SIGKILL: the run did not end on its own
            await SigkillWhen($"run '{graph}' --config '{config}' --progress lines >run-out.txt 2>run-err.txt", "wc -l < effects.log", 25));
        var before = File.ReadAllLines(effects);
        string killedRun;
        HashSet<string> durable;
        using (var s = RunStore.Open(Path.Combine(_dir, "taskmesh.db"), readOnly: true))
        {
            killedRun = s.ResolveRunId("last");
            Assert.Equal("interrupted", s.ListRuns().Single().Status);   // its process was killed
            using var graphDoc = JsonDocument.Parse(File.ReadAllText(graph));
            var ids = graphDoc.RootElement.GetProperty("tasks").EnumerateArray().Select(t => t.GetProperty("id").GetString()!).ToArray();
            var engine = new TaskMesh.Engine.TaskMeshEngine(new TaskMesh.Engine.EngineOptions { ShellEnabled = true });
            var prepared = engine.Prepare(TaskMesh.Engine.Graph.GraphLoader.LoadFile(graph), graph);
            var restored = s.LoadRestored(killedRun, prepared.Graph);
            durable = ids.Where((_, i) => restored.Contains(i)).ToHashSet();
        }
        Assert.Contains("seed", durable);
        Assert.InRange(durable.Count, 2, 60);

        var summary = Path.Combine(_dir, "s.json");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "resume", killedRun[..6], "--config", config, "--json", summary, "--progress", "none");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains($"resuming run {killedRun}", stdout);

        var counts = File.ReadAllLines(effects).GroupBy(l => l).ToDictionary(x => x.Key, x => x.Count());
        Assert.Equal(60, counts.Count);                                             // every task's effect happened
        foreach (var id in durable.Where(d => d != "seed"))
            Assert.Equal(1, counts[id]);                                            // stored completions never ran again
        // At least once for the rest: a task ran twice only if its completion was not yet stored.
        Assert.All(counts.Where(kv => kv.Value > 1), kv => Assert.DoesNotContain(kv.Key, durable));
        using var doc = JsonDocument.Parse(File.ReadAllText(summary));
        Assert.Equal(durable.Count, doc.RootElement.GetProperty("tasks").GetProperty("restored").GetInt32());
        Assert.Equal(62, doc.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        using var report = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "out", "r.json")));
        Assert.Matches("^[0-9a-f]{64}$", report.RootElement.GetProperty("inputs")[0].GetProperty("output").GetString());   // the seed's digest, restored

        // A changed graph file is refused.
        File.AppendAllText(graph, " ");
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "resume", killedRun, "--config", config);
        Assert.Equal(2, code);
        Assert.Contains("changed since run", stderr);
        Assert.True(before.Length <= File.ReadAllLines(effects).Length);
    }

    [Fact]
    public async Task Run_KilledWithSigkill_LeavesAReadableStoreWithItsCommittedCompletions()
    {
        var graph = Path.Combine(_dir, "slow.json");
        var tasks = Enumerable.Range(0, 100).Select(i => new { id = $"t{i:000}", handler = "sleep", args = new { millis = 40 } }).ToArray();
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "slow", tasks }));
        var store = Path.Combine(_dir, "kill.db");
        // Two progress lines: the run is a couple of seconds in, with completions checkpointed. A
        // shell watches for them and sends the SIGKILL (no flush, no clean-up), on time even when
        // this test process's own timers lag.
        Assert.Equal("killed rc=137",
            await SigkillWhen($"run '{graph}' --store '{store}' --max-parallel 1 --progress lines >kill-out.txt 2>kill-err.txt", "grep -c '^progress:' kill-out.txt", 2));

        using var s = RunStore.Open(store, readOnly: true);   // opens: not corrupt
        var run = Assert.Single(s.ListRuns());
        Assert.Equal("interrupted", run.Status);              // it never ended, and its process is gone
        int completed = s.CompletedCount(run.RunId);
        Assert.InRange(completed, 1, 99);
        var rows = s.TasksOf(run.RunId);
        Assert.All(rows, r => Assert.Equal("succeeded", r.Status));
        Assert.True(rows.Count <= 100);
    }

    /// <summary>
    /// Starts <c>taskmesh <paramref name="runArgs"/></c> (shell words, redirections included) and
    /// sends it a SIGKILL once <paramref name="count"/> prints at least <paramref name="atLeast"/>
    /// (polled for up to 30 s). A shell watches and kills, on time even when this test process's
    /// own timers lag. Returns <c>killed rc=137</c>, or <c>ended-early rc=N</c> when the run ended first.
    /// </summary>
    private Task<string> SigkillWhen(string runArgs, string count, int atLeast) => SigkillWhen(_dir, runArgs, count, atLeast);

    /// <summary>As above, in folder <paramref name="dir"/>.</summary>
    internal static Task<string> SigkillWhen(string dir, string runArgs, string count, int atLeast)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "taskmesh.dll");
        return CliTests.Bash(dir, $"""
            dotnet '{dll}' {runArgs} &
            pid=$!
            for i in $(seq 1 1500); do
                n=$({count} 2>/dev/null); if [ "0$n" -ge {atLeast} ]; then break; fi
                if ! kill -0 $pid 2>/dev/null; then break; fi
                sleep 0.02
            done
            if ! kill -0 $pid 2>/dev/null; then wait $pid; echo "ended-early rc=$?"; exit 0; fi
            kill -9 $pid
            wait $pid
            echo "killed rc=$?"
            """);
    }
}
