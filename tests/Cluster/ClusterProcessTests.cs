using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace TaskMesh.Tests.Cluster;

/// <summary>
/// The embedded cluster as real processes: <c>taskmesh run --workers N</c> starts a coordinator silo
/// and N worker processes on loopback; workers are killed, frozen and drained under it.
/// </summary>
[Collection(ClusterProcesses.Name)]
public sealed class ClusterProcessTests : IDisposable
{
    private string Dir { get; } = Directory.CreateTempSubdirectory("taskmesh-cluster-").FullName;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(150);

    public void Dispose() => Directory.Delete(Dir, recursive: true);

    /// <summary>A <c>taskmesh run</c> process, its JSON log lines (its workers' too: they share its standard error) as they come.</summary>
    private sealed class RunProcess : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly Task _stdout;
        public readonly ConcurrentQueue<JsonElement> Logs = new();
        public readonly ConcurrentQueue<string> Other = new();

        private RunProcess(Process process, Task stdout) => (_process, _stdout) = (process, stdout);

        public static RunProcess Start(string dir, params string[] args) => Command(dir, "run", args);

        /// <summary>Starts <c>taskmesh COMMAND args…</c> (<c>run</c>, <c>resume</c>).</summary>
        public static RunProcess Command(string dir, string command, params string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
            psi.Environment["TASKMESH_HOME"] = dir;
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"));
            foreach (var a in (string[])[command, .. args, "--progress", "none", "--log-format", "json"]) psi.ArgumentList.Add(a);
            var p = new Process { StartInfo = psi };
            RunProcess? run = null;
            p.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                try
                {
                    using var doc = JsonDocument.Parse(e.Data);
                    run!.Logs.Enqueue(doc.RootElement.Clone());
                }
                catch (JsonException)
                {
                    run!.Other.Enqueue(e.Data);
                }
            };
            p.Start();
            run = new RunProcess(p, p.StandardOutput.ReadToEndAsync());
            p.BeginErrorReadLine();
            return run;
        }

        public IEnumerable<JsonElement> Lines(string category, string containing)
            => Logs.Where(l => l.GetProperty("Category").GetString() == category && l.GetProperty("Message").GetString()!.Contains(containing, StringComparison.Ordinal));

        /// <summary>The workers' process ids, as they logged them when they joined.</summary>
        public List<int> WorkerPids() => Lines("TaskMesh.Worker", "joined the coordinator").Select(l => l.GetProperty("State").GetProperty("Pid").GetInt32()).ToList();

        /// <summary>Each task id a worker ran, with how many times (from the workers' debug lines).</summary>
        public Dictionary<string, int> Executions()
            => Lines("TaskMesh.Worker", "ran task").GroupBy(l => l.GetProperty("State").GetProperty("TaskId").GetString()!).ToDictionary(g => g.Key, g => g.Count());

        /// <summary>Its process id.</summary>
        public int Pid => _process.Id;

        public async Task<int> ExitCodeAsync()
        {
            using var cts = new CancellationTokenSource(Limit);
            try { await _process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException)
            {
                throw new TimeoutException($"the run did not end in {Limit.TotalSeconds} s; log: {string.Join("\n", Logs.TakeLast(30))}\n{string.Join("\n", Other)}");
            }
            // Its output to the end (the standard error reader has seen the last line) — bounded: a worker
            // left running would hold the pipes open.
            await _stdout.WaitAsync(TimeSpan.FromSeconds(30));
            _process.WaitForExit(TimeSpan.FromSeconds(30));
            return _process.ExitCode;
        }

        public string Describe() => string.Join("\n", Logs.Select(l => l.GetProperty("Message").GetString()).TakeLast(40)) + "\n" + string.Join("\n", Other);

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
            try { await _process.WaitForExitAsync(cts.Token); }
            catch (OperationCanceledException) { }
            _process.Dispose();
        }
    }

    private static async Task WaitUntil(Func<bool> condition, string what, TimeSpan? limit = null)
    {
        var until = DateTime.UtcNow + (limit ?? Limit);
        while (!condition())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"waited too long for {what}");
            await Task.Delay(20);
        }
    }

    private static void Signal(int pid, string signal)
    {
        using var kill = Process.Start("kill", [$"-{signal}", pid.ToString()])!;
        kill.WaitForExit();
    }

    private static bool Alive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    private string WriteGraph(string name, IEnumerable<JsonObject> tasks)
    {
        var path = Path.Combine(Dir, name + ".json");
        File.WriteAllText(path, new JsonObject { ["name"] = name, ["tasks"] = new JsonArray(tasks.Cast<JsonNode>().ToArray()) }.ToJsonString());
        return path;
    }

    private static JsonObject Node(string id, string handler, JsonObject? args = null, string? layer = null, params string[] dependsOn)
    {
        var t = new JsonObject { ["id"] = id, ["handler"] = handler };
        if (args is not null) t["args"] = args;
        if (layer is not null) t["layer"] = layer;
        if (dependsOn.Length > 0) t["dependsOn"] = new JsonArray(dependsOn.Select(d => (JsonNode)d).ToArray());
        return t;
    }

    private static JsonElement Summary(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.Clone();
    }

    private static Dictionary<string, JsonElement> Nodes(JsonElement summary)
        => summary.GetProperty("nodes").EnumerateArray().ToDictionary(n => n.GetProperty("id").GetString()!);

    [Fact]
    public async Task AGraphOverTwoWorkers_GivesTheResultsOfTheLocalLayer()
    {
        // Circuits (their seeds come from their ids), hashes and spins on the workers; data edges into
        // a best-of aggregation that runs on the coordinator; the outputs must be the local run's.
        // (Circuits prefer the quantum layer: the cluster's run forces them to the workers.)
        List<JsonObject> Tasks(string? circuitLayer, string report)
        {
            var tasks = new List<JsonObject>();
            var circuits = new List<string>();
            for (int i = 0; i < 6; i++)
            {
                string qasm = $"OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[5];\ncreg c[5];\nh q[0];\nry({0.3 * (i + 1)}) q[1];\ncx q[0],q[2];\nrz(0.7) q[2];\ncx q[1],q[3];\nh q[4];\nmeasure q -> c;\n";
                tasks.Add(Node($"circuit-{i}", "quantum", new JsonObject { ["qasm"] = qasm, ["shots"] = 200, ["observables"] = new JsonArray("Z0 Z1", "Z2") }, circuitLayer));
                circuits.Add($"circuit-{i}");
            }
            var best = Node("best", "best", new JsonObject { ["metric"] = "Z0 Z1" });
            best["dependsOn"] = new JsonArray(circuits.Select(c => (JsonNode)new JsonObject { ["id"] = c, ["type"] = "data" }).ToArray());
            tasks.Add(best);
            for (int i = 0; i < 20; i++) tasks.Add(Node($"hash-{i}", "hash", new JsonObject { ["bytes"] = 1000 + i }, null, "best"));
            for (int i = 0; i < 20; i++) tasks.Add(Node($"spin-{i}", "spin", new JsonObject { ["micros"] = 200 }));
            // Every output whole, in a report written on the coordinator (summaries are cut at 240 characters).
            var all = Node("report", "report", new JsonObject { ["path"] = report, ["title"] = "outputs" });
            all["dependsOn"] = new JsonArray([.. circuits.Append("best").Concat(Enumerable.Range(0, 20).Select(i => $"hash-{i}"))
                .Select(c => (JsonNode)new JsonObject { ["id"] = c, ["type"] = "data" })]);
            tasks.Add(all);
            return tasks;
        }

        var localSummary = Path.Combine(Dir, "local.json");
        await using (var local = RunProcess.Start(Dir, WriteGraph("same", Tasks(null, "local-report.json")), "--no-store", "--json", localSummary, "--nodes"))
            Assert.True(await local.ExitCodeAsync() == 0, local.Describe());
        var clusterSummary = Path.Combine(Dir, "cluster.json");
        await using var cluster = RunProcess.Start(Dir, WriteGraph("same", Tasks("cluster", "cluster-report.json")), "--no-store", "--json", clusterSummary, "--nodes", "--workers", "2", "--worker-slots", "2", "--log-level", "information");
        Assert.True(await cluster.ExitCodeAsync() == 0, cluster.Describe());

        var l = Nodes(Summary(localSummary));
        var c = Nodes(Summary(clusterSummary));
        Assert.Equal(l.Keys.Order(), c.Keys.Order());
        foreach (var (id, node) in c)
        {
            Assert.Equal("succeeded", node.GetProperty("status").GetString());
            // Everything the cluster can run went there (best-of too: its inputs shipped to a worker); the report (it writes a file here) stayed.
            Assert.Equal(id == "report" ? "local" : "cluster", node.GetProperty("layer").GetString());
        }
        // The same outputs, but for the circuits' own timings.
        static string Outputs(string path)
        {
            var inputs = JsonNode.Parse(File.ReadAllText(path))!["inputs"]!;
            void Untime(JsonNode? n)
            {
                if (n is JsonObject o)
                {
                    o.Remove("elapsed_ms");
                    foreach (var (_, v) in o) Untime(v);
                }
                else if (n is JsonArray a) foreach (var v in a) Untime(v);
            }
            Untime(inputs);
            return inputs.ToJsonString();
        }
        string expected = Outputs(Path.Combine(Dir, "local-report.json"));
        Assert.Contains("Z0 Z1", expected);
        Assert.Equal(expected, Outputs(Path.Combine(Dir, "cluster-report.json")));
        // Both workers took part, and are gone at the end (their drain on SIGTERM: ServeCoordinatorTests).
        Assert.Equal(2, cluster.WorkerPids().Count);
        Assert.All(cluster.WorkerPids(), pid => Assert.False(Alive(pid)));
    }

    [Fact]
    public async Task AWorkerKilledMidRun_LosesNoTask_AndNoneIsReportedTwice()
    {
        const int count = 3000;
        var graph = WriteGraph("kill", Enumerable.Range(0, count).Select(i => Node($"t{i:D4}", "sleep", new JsonObject { ["millis"] = 2 })));
        var summary = Path.Combine(Dir, "kill-summary.json");
        var store = Path.Combine(Dir, "runs.db");
        await using var run = RunProcess.Start(Dir, graph, "--store", store, "--json", summary, "--nodes", "--workers", "2", "--worker-slots", "2", "--log-level", "debug");
        await WaitUntil(() => run.Executions().Count >= 400, "400 tasks run");
        int victim = run.WorkerPids()[0];
        Signal(victim, "KILL");
        Assert.True(await run.ExitCodeAsync() == 0, run.Describe());

        var nodes = Nodes(Summary(summary));
        Assert.Equal(count, nodes.Count);
        Assert.All(nodes.Values, n => Assert.Equal(("succeeded", "cluster"), (n.GetProperty("status").GetString(), n.GetProperty("layer").GetString())));
        // The workers' own lines: the only tasks that ran twice were in flight on the killed worker (at
        // most its slots plus the prefetch), and the coordinator said how many it sent again. (The killed
        // worker's last lines may never have reached its standard error — those still in its logger's
        // queue die with it — so its runs are not counted: fewer lines only lower the count of twice.)
        var executions = run.Executions();
        int twice = executions.Count(e => e.Value > 1);
        Assert.True(twice <= 2 + 64, $"{twice} tasks ran twice");
        // (The workers write to the coordinator's standard error too: under load a line of theirs can
        // cut into the coordinator's, which then is not JSON — looked for as text then.)
        var lost = run.Lines("TaskMesh.Cluster", "lost").ToList();
        if (lost.Count == 1) Assert.True(lost[0].GetProperty("State").GetProperty("Requeued").GetInt32() >= twice);
        else Assert.True(lost.Count == 0 && run.Other.Count(l => l.Contains($"worker ", StringComparison.Ordinal) && l.Contains(" lost (", StringComparison.Ordinal)) == 1,
            $"the coordinator did not say once that it lost the worker: {string.Join("\n", run.Other)}");
        // The store has each task once, succeeded.
        using var s = TaskMesh.Engine.Store.RunStore.Open(store, readOnly: true);
        var rows = s.TasksOf(Summary(summary).GetProperty("run_id").GetString()!);
        Assert.Equal(count, rows.Count);
        Assert.Equal(count, rows.Select(r => r.Id).Distinct().Count());
        Assert.All(rows, r => Assert.Equal("succeeded", r.Status));
    }

    [Fact]
    public async Task ACoordinatorKilledMidRun_IsResumedOverNewWorkers_RunningNothingItsStoreHadFinished()
    {
        const int count = 2000;
        var graph = WriteGraph("resumed", Enumerable.Range(0, count).Select(i => Node($"t{i:D4}", "sleep", new JsonObject { ["millis"] = 2 })));
        var store = Path.Combine(Dir, "runs.db");
        List<int> firstWorkers;
        string runId;
        var prepared = new TaskMesh.Engine.TaskMeshEngine().Prepare(TaskMesh.Engine.Graph.GraphLoader.LoadFile(graph), graph);
        int Stored()
        {
            // What the store holds as done now (its checkpoint of completions comes every 250 ms).
            try
            {
                using var s = TaskMesh.Engine.Store.RunStore.Open(store, readOnly: true);
                var restored = s.LoadRestored(s.ResolveRunId("last"), prepared.Graph);
                return Enumerable.Range(0, count).Count(restored.Contains);
            }
            catch (Exception)
            {
                return 0;   // not created yet, or no run in it yet
            }
        }
        await using (var run = RunProcess.Start(Dir, graph, "--store", store, "--workers", "2", "--worker-slots", "2", "--log-level", "debug"))
        {
            // Killed mid-run once the store holds part of it: 400 tasks run, some of them recorded done.
            await WaitUntil(() => run.Executions().Count >= 400 && Stored() > 0, "400 tasks run, some recorded done");
            firstWorkers = run.WorkerPids();
            Signal(run.Pid, "KILL");
            await WaitUntil(() => !Alive(run.Pid), "the coordinator to die", TimeSpan.FromSeconds(30));
            // Its workers notice the coordinator is gone and leave by themselves.
            try
            {
                await WaitUntil(() => firstWorkers.All(pid => !Alive(pid)), "the orphaned workers to exit", TimeSpan.FromSeconds(60));
            }
            finally
            {
                // Orphans are no longer in the run's process tree: stopped here if they stayed.
                foreach (int pid in firstWorkers.Where(Alive)) Signal(pid, "KILL");
            }
        }
        HashSet<string> done;
        using (var s = TaskMesh.Engine.Store.RunStore.Open(store, readOnly: true))
        {
            runId = s.ResolveRunId("last");
            Assert.Equal("interrupted", s.GetRun(runId).Status);
            var restored = s.LoadRestored(runId, prepared.Graph);
            done = Enumerable.Range(0, count).Where(restored.Contains).Select(i => $"t{i:D4}").ToHashSet();
        }
        Assert.InRange(done.Count, 1, count - 1);

        var summary = Path.Combine(Dir, "resumed-summary.json");
        await using var resumed = RunProcess.Command(Dir, "resume", runId, "--store", store, "--json", summary, "--workers", "2", "--worker-slots", "2", "--log-level", "debug");
        Assert.True(await resumed.ExitCodeAsync() == 0, resumed.Describe());
        var result = Summary(summary);
        Assert.Equal(count, result.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        Assert.Equal(done.Count, result.GetProperty("tasks").GetProperty("restored").GetInt32());
        // The new workers ran the rest, and nothing whose completion the store had.
        var ran = resumed.Executions();
        Assert.DoesNotContain(ran.Keys, done.Contains);
        Assert.Equal(2, resumed.WorkerPids().Count);
        Assert.Empty(resumed.WorkerPids().Intersect(firstWorkers));
    }

    [Fact]
    public async Task AFrozenWorker_IsDeclaredDead_ItsTasksFinishElsewhere_AndItDoesNotComeBack()
    {
        const int count = 1500;
        var graph = WriteGraph("freeze", Enumerable.Range(0, count).Select(i => Node($"t{i:D4}", "sleep", new JsonObject { ["millis"] = 3 })));
        var summary = Path.Combine(Dir, "freeze-summary.json");
        await using var run = RunProcess.Start(Dir, graph, "--no-store", "--json", summary, "--nodes", "--workers", "2", "--worker-slots", "2", "--log-level", "debug");
        await WaitUntil(() => run.Executions().Count >= 300, "300 tasks run");
        int frozen = run.WorkerPids()[1];
        Signal(frozen, "STOP");
        try
        {
            Assert.True(await run.ExitCodeAsync() == 0, run.Describe());
        }
        finally
        {
            Signal(frozen, "CONT");
        }
        var nodes = Nodes(Summary(summary));
        Assert.All(nodes.Values, n => Assert.Equal("succeeded", n.GetProperty("status").GetString()));
        // What the frozen worker held (its 2 slots and the default prefetch of 64 at most) was queued
        // again and ran on the other. (Its "ran task" lines cannot be counted: those still in its
        // logger's queue when it froze never reach its standard error, and it is killed once woken.)
        var lost = Assert.Single(run.Lines("TaskMesh.Cluster", "lost"));
        Assert.InRange(lost.GetProperty("State").GetProperty("Requeued").GetInt32(), 1, 2 + 64);
        // Woken, it finds itself declared dead and stops: it does not rejoin as the same member.
        await WaitUntil(() => !Alive(frozen), "the frozen worker to exit after SIGCONT", TimeSpan.FromSeconds(60));
    }
}

/// <summary><c>taskmesh serve --cluster-port</c> as a coordinator that workers join and leave while it serves.</summary>
[Collection(ClusterProcesses.Name)]
public sealed class ServeCoordinatorTests() : ProcessTest("taskmesh-coord-")
{
    [Fact]
    public async Task WorkersJoinMidRun_GetWork_DrainOnSigterm_AndAreShownWithTheirCounts()
    {
        var serveLines = new ConcurrentQueue<string>();
        var serve = Start(serveLines, "serve", "--no-store", "--http-port", "0", "--port", "0", "--cluster-port", "0");
        var address = await Match(serveLines, @"serving the HTTP API at (\S+)");
        var join = await Match(serveLines, @"cluster coordinator at (\S+):");
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = Limit };
        // No worker yet: the cluster layer is down.
        var layers = await Get(http, "api/layers");
        Assert.Equal("down", layers.GetProperty("layers").EnumerateArray().Single(l => l.GetProperty("name").GetString() == "cluster").GetProperty("status").GetString());

        var first = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2");
        await Until(http, "api/workers", w => w.GetProperty("workers").GetArrayLength() == 1, "the first worker");
        // 400 tasks of 20 ms on the cluster: 4 s on the first worker's two slots alone.
        var graph = new JsonObject
        {
            ["name"] = "midrun",
            ["tasks"] = new JsonArray([.. Enumerable.Range(0, 400).Select(i => (JsonNode)new JsonObject
            {
                ["id"] = $"t{i:D3}", ["handler"] = "sleep", ["args"] = new JsonObject { ["millis"] = 20 }, ["layer"] = "cluster",
            })]),
        };
        using var submitted = await http.PostAsync("api/runs", new StringContent(graph.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.Created, submitted.StatusCode);
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
        await Until(http, $"api/runs/{runId}", r => r.GetProperty("status").GetString() == "running" && r.GetProperty("tasks").GetProperty("ended").GetInt32() >= 40, "the run under way");

        var second = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2");
        var run = await Until(http, $"api/runs/{runId}", r => r.GetProperty("status").GetString() != "running", "the run's end");
        Assert.Equal("succeeded", run.GetProperty("status").GetString());
        var workers = (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray().ToList();
        Assert.Equal(2, workers.Count);
        Assert.Equal(400, workers.Sum(w => w.GetProperty("succeeded").GetInt64()));
        Assert.All(workers, w => Assert.True(w.GetProperty("succeeded").GetInt64() > 0, $"{w} got no work"));   // the one that joined mid-run too

        // Shown on the dashboard's overview (no tokens: straight to it), by taskmesh workers and in the metrics.
        var profile = Directory.CreateTempSubdirectory("taskmesh-chromium-").FullName;
        try
        {
            using var browser = TaskMesh.Tests.Dashboard.HeadlessChromium.Start(profile);
            browser.Navigate().GoToUrl(address);
            new OpenQA.Selenium.Support.UI.WebDriverWait(browser, TimeSpan.FromSeconds(20))
                .Until(d => d.FindElements(OpenQA.Selenium.By.CssSelector("#workers tbody tr")).Count == 2);
            var rows = browser.FindElements(OpenQA.Selenium.By.CssSelector("#workers tbody tr")).Select(r => r.GetAttribute("data-worker")).Order().ToList();
            Assert.Equal(workers.Select(w => w.GetProperty("endpoint").GetString()).Order().ToList(), rows);
            Directory.CreateDirectory(TaskMesh.Tests.Dashboard.DashboardFixture.Screenshots);
            browser.GetScreenshot().SaveAsFile(Path.Combine(TaskMesh.Tests.Dashboard.DashboardFixture.Screenshots, "overview-workers.png"));
            browser.Quit();
        }
        finally
        {
            try { Directory.Delete(profile, recursive: true); } catch (IOException) { }
        }
        var (code, stdout, _) = await TaskMesh.Tests.Host.CliTests.InProcess("workers", "--server", address);
        Assert.Equal(0, code);
        Assert.Contains("2 workers", stdout);
        Assert.All(workers, w => Assert.Contains(w.GetProperty("endpoint").GetString()!, stdout));
        var metrics = await http.GetStringAsync("metrics");
        Assert.Contains("taskmesh_cluster_workers{status=\"active\"} 2", metrics);
        Assert.Contains("taskmesh_cluster_worker_in_flight{worker=", metrics);

        // SIGTERM while it holds work: the first drains — its tasks finish there, none is sent again — and exits 0.
        using (var more = await http.PostAsync("api/runs", new StringContent(graph.ToJsonString().Replace("midrun", "drain"), System.Text.Encoding.UTF8, "application/json")))
        {
            string drainRun = JsonDocument.Parse(await more.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
            await Until(http, "api/workers", w => w.GetProperty("workers").EnumerateArray().Any(x => x.GetProperty("pid").GetInt32() == first.Id && x.GetProperty("in_flight").GetInt32() > 0), "work on the first worker");
            using (var kill = Process.Start("kill", ["-TERM", first.Id.ToString()])!) await kill.WaitForExitAsync();
            Assert.Equal(0, await Exit(first));
            var drained = await Until(http, $"api/runs/{drainRun}", r => r.GetProperty("status").GetString() != "running", "the second run's end");
            Assert.Equal("succeeded", drained.GetProperty("status").GetString());
        }
        var after = await Get(http, "api/workers");
        Assert.Equal(second.Id, Assert.Single(after.GetProperty("workers").EnumerateArray()).GetProperty("pid").GetInt32());
        Assert.All(after.GetProperty("lost").EnumerateArray(), l => Assert.Equal(0, l.GetProperty("requeued").GetInt32()));

        using (var kill = Process.Start("kill", ["-TERM", second.Id.ToString()])!) await kill.WaitForExitAsync();
        Assert.Equal(0, await Exit(second));
        await Until(http, "api/layers", l => l.GetProperty("layers").EnumerateArray().Single(x => x.GetProperty("name").GetString() == "cluster").GetProperty("status").GetString() == "down", "the layer down");
        using (var kill = Process.Start("kill", ["-TERM", serve.Id.ToString()])!) await kill.WaitForExitAsync();
        Assert.Equal(0, await Exit(serve));
    }
}

/// <summary>Placement by memory and credit flow control, with real worker processes of different sizes.</summary>
[Collection(ClusterProcesses.Name)]
public sealed class PlacementProcessTests() : ProcessTest("taskmesh-place-")
{
    private static string Circuit(int qubits)
        => $"OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[{qubits}];\nh q[0];\ncx q[0],q[{qubits - 1}];\n";

    [Fact]
    public async Task ACircuit_GoesToTheWorkerThatHoldsIt_NoWorkerIsOverCredit_AndTheSlowOneGetsLess()
    {
        File.WriteAllText(Path.Combine(Dir, "coordinator.toml"), "[cluster]\nprefetch = 2\nstrategy = \"resource_aware\"\n");
        File.WriteAllText(Path.Combine(Dir, "small.toml"), "[quantum]\nmemory_cap_mb = 1\n");
        File.WriteAllText(Path.Combine(Dir, "big.toml"), "[quantum]\nmemory_cap_mb = 64\n");
        var lines = new ConcurrentQueue<string>();
        Start(lines, "serve", "--no-store", "--http-port", "0", "--port", "0", "--cluster-port", "0", "--config", "coordinator.toml");
        var address = await Match(lines, @"serving the HTTP API at (\S+)");
        var join = await Match(lines, @"cluster coordinator at (\S+):");
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = Limit };
        var small = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "1", "--config", "small.toml");
        var big = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2", "--config", "big.toml");
        var until = DateTime.UtcNow + Limit;
        while ((await Get(http, "api/workers")).GetProperty("workers").GetArrayLength() < 2)
        {
            Assert.True(DateTime.UtcNow < until, "the workers did not join");
            await Task.Delay(50);
        }

        var tasks = new JsonArray
        {
            new JsonObject { ["id"] = "wide", ["handler"] = "quantum", ["layer"] = "cluster", ["args"] = new JsonObject { ["qasm"] = Circuit(20) } },   // 8 MB: the big worker only
            new JsonObject { ["id"] = "huge", ["handler"] = "quantum", ["layer"] = "cluster", ["args"] = new JsonObject { ["qasm"] = Circuit(26) } },   // 512 MB: neither
        };
        for (int i = 0; i < 60; i++)
            tasks.Add(new JsonObject { ["id"] = $"s{i:D2}", ["handler"] = "sleep", ["layer"] = "cluster", ["args"] = new JsonObject { ["millis"] = 60 } });
        using var submitted = await http.PostAsync("api/runs", new StringContent(new JsonObject { ["name"] = "place", ["tasks"] = tasks }.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.Created, submitted.StatusCode);
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;

        // While it goes: no worker ever holds more than its slots plus the prefetch (2).
        JsonElement run;
        while (true)
        {
            foreach (var w in (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray())
                Assert.True(w.GetProperty("in_flight").GetInt32() <= w.GetProperty("slots").GetInt32() + 2, $"over credit: {w}");
            run = await Get(http, $"api/runs/{runId}");
            if (run.GetProperty("status").GetString() != "running") break;
            Assert.True(DateTime.UtcNow < until, "the run did not end");
            await Task.Delay(10);
        }
        var wide = await Get(http, "api/runs/" + runId + "/tasks/wide");
        Assert.Equal(("succeeded", "cluster"), (wide.GetProperty("status").GetString(), wide.GetProperty("layer").GetString()));
        var huge = await Get(http, "api/runs/" + runId + "/tasks/huge");
        Assert.True(huge.ToString().Contains("no worker can hold a 26-qubit state vector", StringComparison.Ordinal), huge.ToString());
        var workers = (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray().ToDictionary(w => w.GetProperty("pid").GetInt32());
        // The wide circuit and most sleeps on the big worker (two slots); the one-slot worker got fewer.
        long onSmall = workers[small.Id].GetProperty("succeeded").GetInt64(), onBig = workers[big.Id].GetProperty("succeeded").GetInt64();
        Assert.Equal(61, onSmall + onBig);
        Assert.True(onSmall > 0 && onSmall < onBig, $"small {onSmall}, big {onBig}");
        Assert.Equal(17, workers[small.Id].GetProperty("max_qubits").GetInt32());
    }
}

/// <summary>Membership in a real PostgreSQL or Redis server: the coordinator and workers find each other through it.</summary>
[Collection(ClusterProcesses.Name)]
public sealed class SharedMembershipTests() : ProcessTest("taskmesh-pgm-")
{
    [Fact]
    public void AMembershipUrl_BecomesAConnectionString_AndABadOneIsRefused()
    {
        var cs = new Npgsql.NpgsqlConnectionStringBuilder(TaskMesh.Cluster.PostgresMembership.ConnectionString("postgresql://tm:p%40ss@db.example:6543/mesh?sslmode=require"));
        Assert.Equal(("db.example", 6543, "mesh", "tm", "p@ss", Npgsql.SslMode.Require), (cs.Host, cs.Port, cs.Database, cs.Username, cs.Password, cs.SslMode));
        Assert.Throws<FormatException>(() => TaskMesh.Cluster.PostgresMembership.ConnectionString("postgresql://h/db?nonsense=1"));
        var ex = Assert.Throws<TaskMesh.Engine.Configuration.ConfigException>(() => TaskMesh.Engine.Configuration.TaskMeshConfig.Parse("[cluster]\nmembership = \"mysql://h/db\"\n", "c.toml"));
        Assert.Contains("c.toml:2: key 'cluster.membership' must be a postgresql://user:password@host:port/database or redis://", ex.Message);
        var redis = TaskMesh.Cluster.RedisMembership.Options("redis://:s%40cret@cache.example:6380/2");
        var endpoint = Assert.IsType<System.Net.DnsEndPoint>(redis.EndPoints.Single());
        Assert.Equal(("cache.example", 6380, "s@cret", 2), (endpoint.Host, endpoint.Port, redis.Password, redis.DefaultDatabase));
        Assert.Throws<FormatException>(() => TaskMesh.Cluster.RedisMembership.Options("redis://h:6379/zero"));
    }

    [Fact]
    public async Task TheCoordinatorAndWorkers_FindEachOtherThroughRedis_AndAKilledWorkersTasksFinishElsewhere()
    {
        await using var redis = await RedisServer.StartAsync();
        File.WriteAllText(Path.Combine(Dir, "pg.toml"), $"[cluster]\nmembership = \"{redis.Url}\"\n");
        await RunAcrossAndKillOneAsync(async () =>
        {
            // The three silos are in the server's membership hash.
            var db = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync($"127.0.0.1:{redis.Port}");
            await using (db)
            {
                var keys = db.GetServer("127.0.0.1", redis.Port).Keys().ToList();
                var members = keys.Sum(k => db.GetDatabase().HashGetAll(k).Count(e => e.Value.ToString().Contains("\"Status\":3", StringComparison.Ordinal)));
                Assert.True(members == 3, $"{members} active members in {string.Join(", ", keys)}");
            }
        });
    }

    [Fact]
    public async Task TheCoordinatorAndWorkers_FindEachOtherThroughPostgreSql_AndAKilledWorkersTasksFinishElsewhere()
    {
        await using var pg = await PostgresServer.StartAsync();
        File.WriteAllText(Path.Combine(Dir, "pg.toml"), $"[cluster]\nmembership = \"{pg.Url}\"\n");
        await RunAcrossAndKillOneAsync(async () =>
        {
            // The three silos are rows of the database's membership table, active.
            await using var db = new Npgsql.NpgsqlConnection(TaskMesh.Cluster.PostgresMembership.ConnectionString(pg.Url));
            await db.OpenAsync();
            await using var cmd = new Npgsql.NpgsqlCommand("SELECT count(*) FROM orleansmembershiptable WHERE status = 3", db);
            Assert.Equal(3L, (long)(await cmd.ExecuteScalarAsync())!);
        });
    }

    /// <summary>A coordinator and two workers on the membership of pg.toml; checks it, runs 600 tasks, kills a worker mid-run.</summary>
    private async Task RunAcrossAndKillOneAsync(Func<Task> checkMembership)
    {
        var lines = new ConcurrentQueue<string>();
        Start(lines, "serve", "--no-store", "--http-port", "0", "--port", "0", "--cluster-port", "0", "--config", "pg.toml");
        var address = await Match(lines, @"serving the HTTP API at (\S+)");
        var join = await Match(lines, @"cluster coordinator at (\S+):");
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = Limit };
        var first = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2", "--config", "pg.toml");
        Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2", "--config", "pg.toml");
        var until = DateTime.UtcNow + Limit;
        while ((await Get(http, "api/workers")).GetProperty("workers").GetArrayLength() < 2)
        {
            Assert.True(DateTime.UtcNow < until, "the workers did not join: " + string.Join("\n", lines));
            await Task.Delay(50);
        }
        await checkMembership();

        var graph = new JsonObject
        {
            ["name"] = "pg",
            ["tasks"] = new JsonArray([.. Enumerable.Range(0, 600).Select(i => (JsonNode)new JsonObject
            {
                ["id"] = $"t{i:D3}", ["handler"] = "sleep", ["args"] = new JsonObject { ["millis"] = 5 }, ["layer"] = "cluster",
            })]),
        };
        using var submitted = await http.PostAsync("api/runs", new StringContent(graph.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        string answer = await submitted.Content.ReadAsStringAsync();
        Assert.True(submitted.IsSuccessStatusCode, $"the graph was refused ({(int)submitted.StatusCode}): {answer}\n" + string.Join("\n", lines));
        string runId = JsonDocument.Parse(answer).RootElement.GetProperty("run_id").GetString()!;
        while ((await Get(http, $"api/runs/{runId}")).GetProperty("tasks").GetProperty("ended").GetInt32() < 100) await Task.Delay(10);
        first.Kill();
        JsonElement run;
        do
        {
            await Task.Delay(50);
            run = await Get(http, $"api/runs/{runId}");
            Assert.True(DateTime.UtcNow < until + Limit, "the run did not end");
        }
        while (run.GetProperty("status").GetString() == "running");
        Assert.Equal("succeeded", run.GetProperty("status").GetString());
        Assert.Equal(600, run.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        var lost = Assert.Single((await Get(http, "api/workers")).GetProperty("lost").EnumerateArray());
        // Whichever saw the death first: the membership's declaration, or a call to the dead silo failing.
        Assert.Contains(lost.GetProperty("why").GetString(), new[] { "declared dead by the cluster", "unavailable" });
    }
}

/// <summary>A task that every worker holding it dies with: after the poison limit it fails, and is not sent again.</summary>
[Collection(ClusterProcesses.Name)]
public sealed class PoisonProcessTests() : ProcessTest("taskmesh-poison-")
{
    [Fact]
    public async Task ATaskInFlightOnAsManyDeadWorkersAsThePoisonLimit_FailsAsPoison()
    {
        File.WriteAllText(Path.Combine(Dir, "coordinator.toml"), "[cluster]\npoison_limit = 2\nfallback_to_local = false\n");
        var lines = new ConcurrentQueue<string>();
        Start(lines, "serve", "--no-store", "--http-port", "0", "--port", "0", "--cluster-port", "0", "--config", "coordinator.toml");
        var address = await Match(lines, @"serving the HTTP API at (\S+)");
        var join = await Match(lines, @"cluster coordinator at (\S+):");
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = Limit };
        var workers = new[]
        {
            Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "1"),
            Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "1"),
            Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "1"),
        };
        await Until(http, "api/workers", w => w.GetProperty("workers").GetArrayLength() == 3, "three workers");
        using var submitted = await http.PostAsync("api/runs", new StringContent(
            """{ "name": "poison", "tasks": [ { "id": "deadly", "handler": "sleep", "args": { "millis": 60000 }, "layer": "cluster", "retries": 0 } ] }""",
            System.Text.Encoding.UTF8, "application/json"));
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
        // Whichever worker holds it is killed, until it fails (a batch that could not be sent to a worker counts too).
        for (int round = 1; round <= 2; round++)
        {
            var now = await Until(http, "api/workers", w => w.GetProperty("workers").EnumerateArray().Any(x => x.GetProperty("in_flight").GetInt32() > 0)
                || Get(http, $"api/runs/{runId}").GetAwaiter().GetResult().GetProperty("status").GetString() != "running", $"the task held ({round})");
            var holder = now.GetProperty("workers").EnumerateArray().FirstOrDefault(x => x.GetProperty("in_flight").GetInt32() > 0);
            if (holder.ValueKind == JsonValueKind.Undefined) break;   // it already failed as poison
            int pid = holder.GetProperty("pid").GetInt32();
            workers.Single(p => p.Id == pid).Kill();
            await Until(http, "api/workers", w => w.GetProperty("lost").GetArrayLength() == round, $"worker {pid} declared dead");
        }
        var run = await Until(http, $"api/runs/{runId}", r => r.GetProperty("status").GetString() != "running", "the run's end");
        Assert.Equal("failed", run.GetProperty("status").GetString());
        var task = await Get(http, $"api/runs/{runId}/tasks/deadly");
        // (Killed while it held the task, or while the task was on its way to it: both count.)
        Assert.Matches("^poison: (in flight on 2 workers that died|2 workers failed to take it)", task.GetProperty("error").GetString());
        // Not sent again once poison: no worker left ran it, and none holds it.
        Assert.All((await Get(http, "api/workers")).GetProperty("workers").EnumerateArray(),
            w => Assert.Equal((0L, 0), (w.GetProperty("succeeded").GetInt64(), w.GetProperty("in_flight").GetInt32())));
    }
}

/// <summary>
/// Mutual TLS between silos (<c>[cluster] tls_certificate</c>, <c>tls_key</c>; a worker's
/// <c>--tls-cert</c>, <c>--tls-key</c>): a worker with the cluster's certificate joins and runs tasks; a
/// worker with another certificate, or with none, cannot join.
/// </summary>
[Collection(ClusterProcesses.Name)]
public sealed class ClusterTlsProcessTests() : ProcessTest("taskmesh-ctls-")
{
    private void WriteCertificate(string name)
    {
        using var rsa = System.Security.Cryptography.RSA.Create(2048);
        var request = new System.Security.Cryptography.X509Certificates.CertificateRequest($"CN={name}", rsa,
            System.Security.Cryptography.HashAlgorithmName.SHA256, System.Security.Cryptography.RSASignaturePadding.Pkcs1);
        using var certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddMinutes(-5), DateTimeOffset.UtcNow.AddDays(1));
        File.WriteAllText(Path.Combine(Dir, name + ".pem"), certificate.ExportCertificatePem());
        File.WriteAllText(Path.Combine(Dir, name + ".key"), rsa.ExportPkcs8PrivateKeyPem());
    }

    [Fact]
    public async Task OnlyWorkersWithTheClustersCertificate_Join_AndRunTheTasks()
    {
        WriteCertificate("cluster");
        WriteCertificate("impostor");
        Directory.CreateDirectory(Path.Combine(Dir, "conf"));
        // Relative to the config file's folder.
        File.WriteAllText(Path.Combine(Dir, "conf", "coordinator.toml"), "[cluster]\ntls_certificate = \"../cluster.pem\"\ntls_key = \"../cluster.key\"\n");

        // Files that cannot be read: a clear error, exit 2, before any silo starts.
        var broken = Start(new ConcurrentQueue<string>(), "worker", "--join", "127.0.0.1:1", "--tls-cert", "missing.pem", "--tls-key", "cluster.key");
        Assert.Equal(2, await Exit(broken));

        var lines = new ConcurrentQueue<string>();
        Start(lines, "serve", "--no-store", "--http-port", "0", "--port", "0", "--cluster-port", "0", "--config", Path.Combine("conf", "coordinator.toml"));
        var address = await Match(lines, @"serving the HTTP API at (\S+)");
        var join = await Match(lines, @"cluster coordinator at (\S+):");
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = Limit };

        var member = Start(new ConcurrentQueue<string>(), "worker", "--join", join, "--slots", "2", "--tls-cert", "cluster.pem", "--tls-key", "cluster.key");
        var impostorLines = new ConcurrentQueue<string>();
        var impostor = Start(impostorLines, "worker", "--join", join, "--slots", "2", "--tls-cert", "impostor.pem", "--tls-key", "impostor.key");
        var plainLines = new ConcurrentQueue<string>();
        var plain = Start(plainLines, "worker", "--join", join, "--slots", "2");
        await Until(http, "api/workers", w => w.GetProperty("workers").GetArrayLength() >= 1, "the worker with the certificate");

        using var submitted = await http.PostAsync("api/runs", new StringContent(
            new System.Text.Json.Nodes.JsonObject
            {
                ["name"] = "over-tls",
                ["tasks"] = new System.Text.Json.Nodes.JsonArray([.. Enumerable.Range(0, 40).Select(i => (System.Text.Json.Nodes.JsonNode)new System.Text.Json.Nodes.JsonObject
                {
                    ["id"] = $"h{i:D2}", ["handler"] = "hash", ["args"] = new System.Text.Json.Nodes.JsonObject { ["bytes"] = 1000 + i }, ["layer"] = "cluster",
                })]),
            }.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        Assert.Equal(System.Net.HttpStatusCode.Created, submitted.StatusCode);
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
        var run = await Until(http, $"api/runs/{runId}", r => r.GetProperty("status").GetString() != "running", "the run's end");
        Assert.Equal("succeeded", run.GetProperty("status").GetString());

        // The other two give up joining (exit 1) and were never members.
        Assert.Equal(1, await Exit(impostor));
        Assert.Equal(1, await Exit(plain));
        Assert.Contains(impostorLines, l => l.Contains("could not join the coordinator", StringComparison.Ordinal));
        var workers = (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray().ToList();
        Assert.Equal(member.Id, Assert.Single(workers).GetProperty("pid").GetInt32());
        Assert.Equal(40, workers[0].GetProperty("succeeded").GetInt64());
    }

    [Fact]
    public async Task TheEmbeddedCluster_SpeaksTls_WithTheConfigsCertificate()
    {
        WriteCertificate("cluster");
        File.WriteAllText(Path.Combine(Dir, "tls.toml"), "[cluster]\ntls_certificate = \"cluster.pem\"\ntls_key = \"cluster.key\"\n");
        File.WriteAllText(Path.Combine(Dir, "g.json"), """{"name": "g", "tasks": [{"id": "a", "handler": "hash", "args": {"bytes": 100}, "layer": "cluster"}, {"id": "b", "handler": "hash", "args": {"bytes": 200}, "layer": "cluster", "dependsOn": ["a"]}]}""");
        var lines = new ConcurrentQueue<string>();
        var run = Start(lines, "run", "g.json", "--workers", "1", "--config", "tls.toml", "--no-store", "--progress", "none");
        Assert.True(await Exit(run) == 0, string.Join("\n", lines));
        Assert.Contains(lines, l => l.Contains("1 workers", StringComparison.Ordinal) && l.EndsWith("mutual TLS", StringComparison.Ordinal));
    }
}

/// <summary>The cluster's process tests run one at a time: each starts three processes on a two-core machine.</summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ClusterProcesses
{
    public const string Name = "cluster processes";
}
