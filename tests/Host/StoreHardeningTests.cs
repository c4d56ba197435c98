using System.Diagnostics;
using System.Text.Json;
using Microsoft.Data.Sqlite;
using TaskMesh.Engine.Store;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// The run store, the result cache, resume and training under what a long-lived service meets:
/// rule changes, edited input files, a second process on the same run, concurrent trainings, an
/// external lock, hostile files where models belong. Real <c>taskmesh</c> processes on private
/// stores, every one bounded in time.
/// </summary>
public sealed class StoreHardeningTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-hardening-").FullName;
    private readonly List<Process> _started = new();

    public void Dispose()
    {
        foreach (var p in _started)
        {
            try { if (!p.HasExited) p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            p.Dispose();
        }
        Directory.Delete(_dir, recursive: true);
    }

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    private static string Graph(string name, params object[] tasks) => JsonSerializer.Serialize(new { name, tasks });

    private Task<(int code, string stdout, string stderr)> Tm(params string[] args) => CliTests.Taskmesh(_dir, args);

    private async Task<(string stdout, string stderr)> Ok(params string[] args)
    {
        var (code, stdout, stderr) = await Tm(args);
        Assert.True(code == 0, $"taskmesh {string.Join(' ', args)}: exit {code}\n{stderr}\n{stdout}");
        return (stdout, stderr);
    }

    private async Task<string> Refused(params string[] args)
    {
        var (code, stdout, stderr) = await Tm(args);
        Assert.True(code == 2, $"taskmesh {string.Join(' ', args)}: exit {code}\n{stderr}\n{stdout}");
        Assert.DoesNotContain("   at ", stderr);   // a message, not a stack trace
        return stderr;
    }

    /// <summary>Starts <c>taskmesh</c> in the background (stopped by <see cref="Dispose"/> if the test does not).</summary>
    private Process Start(params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        psi.Environment["TASKMESH_HOME"] = _dir;
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"));
        foreach (var a in args) psi.ArgumentList.Add(a);
        var p = Process.Start(psi)!;
        _started.Add(p);
        return p;
    }

    private static async Task WaitUntil(Func<bool> condition, string what, int seconds = 30)
    {
        var sw = Stopwatch.StartNew();
        while (!Holds(condition))
        {
            if (sw.Elapsed > TimeSpan.FromSeconds(seconds)) throw new TimeoutException($"waited {seconds} s for {what}");
            await Task.Delay(50);
        }
    }

    // A store being created by another process may not be readable yet: not yet is false.
    private static bool Holds(Func<bool> condition)
    {
        try { return condition(); }
        catch (Exception e) when (e is StoreException or SqliteException) { return false; }
    }

    private static string Qasm(string gates) => $"OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\n{gates}\n";

    // ------------------------------------------------------------------ 1. rules and history

    [Fact]
    public async Task Run_RuleEscalationUnderTheSameConfigTwice_RecordsBothRunsAndTheRuleText()
    {
        var config = Write("c.toml", "[layers.big]\nkind = \"local\"\nrank = 5\n\n[[escalation.rules]]\nfrom = \"local\"\nto = \"big\"\ntrigger = \"error\"\n");
        var graph = Write("g.json", Graph("f", new { id = "x", handler = "fail", args = new { attempts = 1 } }));
        var store = Path.Combine(_dir, "s.db");
        for (int i = 0; i < 3; i++) await Ok("run", graph, "--config", config, "--store", store, "--progress", "none");
        // The rules change: the history of the runs under the old rule stays, and a new run records.
        File.AppendAllText(config, "priority = 3\n\n[[escalation.rules]]\nfrom = \"big\"\nto = \"local\"\ntrigger = \"timeout\"\n");
        await Ok("run", graph, "--config", config, "--store", store, "--progress", "none");

        using var s = RunStore.Open(store, readOnly: true);
        var runs = s.ListRuns();
        Assert.Equal(4, runs.Count);
        Assert.All(runs, r => Assert.Equal("succeeded", r.Status));
        foreach (var r in runs)
        {
            var e = Assert.Single(s.EscalationHistoryOf(r.RunId));
            Assert.Equal("local → big on error", e.Rule);
        }
        var (stdout, _) = await Ok("runs", "show", runs[^1].RunId, "--store", store);
        Assert.Contains("local → big on error", stdout);
    }

    // ------------------------------------------------------------------ 2. file content in the cache key and resume

    [Fact]
    public async Task Cache_SameRelativeCircuitFileWithOtherContent_RunsAgain()
    {
        var store = Path.Combine(_dir, "s.db");
        var task = new { id = "c", handler = "quantum", cache = true, args = new { qasm = "c.qasm", shots = 64, seed = 1 } };
        Write("a/c.qasm", Qasm("x q[0];"));
        Write("b/c.qasm", Qasm("x q[1];"));
        var a = Write("a/g.json", Graph("q", task));
        var b = Write("b/g.json", Graph("q", task));
        await Ok("run", a, "--store", store, "--progress", "none");
        var (stdout, _) = await Ok("run", b, "--store", store, "--progress", "none", "--json", Path.Combine(_dir, "b.json"));
        Assert.DoesNotContain("from the result cache", stdout);
        // The same file as before: a hit; edited: a miss.
        (stdout, _) = await Ok("run", a, "--store", store, "--progress", "none");
        Assert.Contains("1 from the result cache", stdout);
        Write("a/c.qasm", Qasm("h q[0];"));
        (stdout, _) = await Ok("run", a, "--store", store, "--progress", "none");
        Assert.DoesNotContain("from the result cache", stdout);

        // The counts each run reported are its own circuit's: |01> (x q[0]) and |10> (x q[1]) as q1q0.
        using var s = RunStore.Open(store, readOnly: true);
        var summaries = s.ListRuns(10).SelectMany(r => s.TasksOf(r.RunId)).Select(t => t.OutputSummary ?? "").ToList();   // (a cache hit keeps no row)
        Assert.Equal(3, summaries.Count);
        Assert.Contains(summaries, x => x.Contains("\"top\":{\"10\":1}"));
        Assert.Contains(summaries, x => x.Contains("\"top\":{\"01\":1}"));
    }

    [Fact]
    public async Task Resume_AfterTheCircuitFileWasEdited_IsRefusedNamingTheFileAndTask()
    {
        var store = Path.Combine(_dir, "s.db");
        Write("c.qasm", Qasm("x q[0];"));
        var graph = Write("g.json", Graph("q",
            new { id = "c", handler = "quantum", args = new { qasm = "c.qasm", shots = 16 } },
            new { id = "bad", handler = "fail", dependsOn = new[] { "c" } }));
        var (code, _, _) = await Tm("run", graph, "--store", store, "--progress", "none");
        Assert.Equal(1, code);
        Write("c.qasm", Qasm("h q[0];"));
        var stderr = await Refused("resume", "last", "--store", store);
        Assert.Contains("'c.qasm' (read by task 'c') changed since run", stderr);
        // Put back, it resumes.
        Write("c.qasm", Qasm("x q[0];"));
        (code, var stdout, stderr) = await Tm("resume", "last", "--store", store, "--progress", "none");
        Assert.True(code == 1, stderr);
        Assert.Contains("1 of 2 tasks finished there", stdout);
    }

    // ------------------------------------------------------------------ 3. escalation of a cached task

    [Fact]
    public async Task Escalate_TaskAnsweredFromTheCache_RunsItOnTheNewLayer()
    {
        var store = Path.Combine(_dir, "s.db");
        var config = Write("c.toml", "[layers.quantum]\nkind = \"quantum\"\nprecision = \"single\"\n\n[layers.quantum-double]\nkind = \"quantum\"\nprecision = \"double\"\nrank = 20\n");
        Write("c.qasm", Qasm("h q[0];\ncx q[0],q[1];"));
        var graph = Write("g.json", Graph("q", new { id = "c", handler = "quantum", cache = true, args = new { qasm = "c.qasm" } }));
        await Ok("run", graph, "--config", config, "--store", store, "--progress", "none");
        var (stdout, _) = await Ok("run", graph, "--config", config, "--store", store, "--progress", "none");
        Assert.Contains("1 from the result cache", stdout);

        (stdout, _) = await Ok("escalate", "last", "c", "--to", "quantum-double", "--config", config, "--store", store, "--progress", "none");
        Assert.Contains("from quantum to quantum-double", stdout);
        Assert.DoesNotContain("from the result cache", stdout);
        var audit = Path.Combine(_dir, "audit.json");
        await Ok("audit", "last", "c", "--store", store, "--json", audit);
        using var doc = JsonDocument.Parse(File.ReadAllText(audit));
        var records = doc.RootElement.EnumerateArray().ToList();
        Assert.Contains(records, r => r.GetProperty("category").GetString() == "task_execution"
            && r.GetProperty("detail").GetProperty("layer").GetString() == "quantum-double");
        Assert.DoesNotContain(records, r => r.GetProperty("detail").ToString().Contains("reused_from"));

        // Escalating it to the layer it ran on is refused.
        var stderr = await Refused("escalate", "last", "c", "--to", "quantum-double", "--config", config, "--store", store);
        Assert.Contains("already ran on quantum-double", stderr);
    }

    [Fact]
    public async Task Cache_ResultMadeInSinglePrecision_IsNotServedWhereTheTaskRunsInDouble()
    {
        var store = Path.Combine(_dir, "s.db");
        var single = Write("single.toml", "[layers.quantum]\nkind = \"quantum\"\nprecision = \"single\"\n");
        Write("c.qasm", Qasm("h q[0];\ncx q[0],q[1];"));
        var graph = Write("g.json", Graph("q", new { id = "c", handler = "quantum", cache = true, args = new { qasm = "c.qasm" } }));
        await Ok("run", graph, "--config", single, "--store", store, "--progress", "none");
        var (stdout, _) = await Ok("run", graph, "--config", single, "--store", store, "--progress", "none");
        Assert.Contains("1 from the result cache", stdout);
        // The default quantum layer runs a task that sets no precision in double: another result.
        (stdout, _) = await Ok("run", graph, "--store", store, "--progress", "none");
        Assert.DoesNotContain("from the result cache", stdout);
        (stdout, _) = await Ok("run", graph, "--store", store, "--progress", "none");
        Assert.Contains("1 from the result cache", stdout);
        using var s = RunStore.Open(store, readOnly: true);
        Assert.Equal(2, s.CacheEntries().Count);
    }

    // ------------------------------------------------------------------ 4. outputs over the store

    [Fact]
    public async Task Outputs_OverTheRunStore_AreRefusedByEveryCommandThatWrites()
    {
        var store = Path.Combine(_dir, "s.db");
        var graph = Write("g.json", Graph("g", new { id = "a", handler = "noop" }));
        await Ok("run", graph, "--store", store, "--progress", "none");
        var before = File.ReadAllBytes(store);
        var instance = Write("wf.json", JsonSerializer.Serialize(new
        {
            name = "w", schemaVersion = "1.5",
            workflow = new { specification = new { tasks = new[] { new { id = "a", parents = Array.Empty<string>(), children = Array.Empty<string>() } } },
                execution = new { tasks = new[] { new { id = "a", runtimeInSeconds = 1 } } } },
        }));
        Write("c.qasm", Qasm("x q[0];"));
        string[][] commands =
        [
            ["predict", graph, "--json", store, "--store", store],
            ["graph", graph, "--dot", store, "--run", "last", "--store", store],
            ["import", "wfformat", instance, "--out", store],
            ["gen", "qaoa", "--out", store],
            ["qsim", Path.Combine(_dir, "c.qasm"), "--json", store],
            ["runs", "--json", store, "--store", store],
            ["metrics", "--json", store, "--store", store],
        ];
        foreach (var c in commands)
        {
            var stderr = await Refused(c);
            Assert.Contains("s.db", stderr);
        }
        Assert.Equal(before, File.ReadAllBytes(store));
        using var s = RunStore.Open(store, readOnly: true);
        Assert.Single(s.ListRuns());
    }

    // ------------------------------------------------------------------ 5. a run that is still going

    [Fact]
    public async Task ResumeAndEscalate_RunStillGoing_AreRefusedWithItsProcess_ThenResumableOnceItsProcessDied()
    {
        var store = Path.Combine(_dir, "s.db");
        var tasks = Enumerable.Range(0, 30).Select(i => (object)new { id = $"t{i}", handler = "sleep", args = new { millis = 250 }, dependsOn = i == 0 ? Array.Empty<string>() : [$"t{i - 1}"] }).ToArray();
        var graph = Write("chain.json", Graph("chain", tasks));
        var running = Start("run", graph, "--store", store, "--progress", "none");
        string runId = "";
        await WaitUntil(() =>
        {
            if (!File.Exists(store)) return false;
            using var s = RunStore.Open(store, readOnly: true);
            var r = s.ListRuns(1);
            if (r.Count == 0 || s.CompletedCount(r[0].RunId) < 3) return false;
            runId = r[0].RunId;
            return true;
        }, "three tasks of the run to complete");

        var stderr = await Refused("resume", runId, "--store", store);
        Assert.Contains($"run {runId} is still going (pid {running.Id} on host", stderr);
        stderr = await Refused("escalate", runId, "t29", "--to", "local", "--store", store);
        Assert.Contains("still going", stderr);
        var (stdout, _) = await Ok("runs", "--store", store);
        Assert.Contains("running", stdout);

        running.Kill();
        await running.WaitForExitAsync();
        (stdout, _) = await Ok("runs", "--store", store, "--status", "interrupted");
        Assert.Contains(runId, stdout);
        Assert.Contains("interrupted", stdout);
        (stdout, _) = await Ok("resume", runId, "--store", store, "--progress", "none");
        Assert.Contains("succeeded", stdout);
        using (var s = RunStore.Open(store, readOnly: true))
            Assert.Equal(["succeeded", "interrupted"], s.ListRuns().Select(r => r.Status));
    }

    // ------------------------------------------------------------------ open runs: SIGKILL, resume, resubmit

    [Fact]
    public async Task OpenRun_KilledAndResumed_TasksItCompletedAreAnsweredFromTheStore_NoneRunsTwice()
    {
        var store = Path.Combine(_dir, "s.db");
        var config = Write("c.toml", "[handlers]\nshell_enabled = true\n");
        // A chain of 40 tasks, each leaving a line in effects.log when it runs.
        var lines = Enumerable.Range(0, 40).Select(i => JsonSerializer.Serialize(new
        {
            id = $"t{i:00}",
            handler = "shell",
            args = new { command = "sh", args = new[] { "-c", $"echo t{i:00} >> effects.log; sleep 0.15" } },
            dependsOn = i == 0 ? Array.Empty<string>() : [$"t{i - 1:00}"],
        }));
        var tasks = Write("tasks.jsonl", string.Join('\n', lines) + "\n");
        var first = Start("open", tasks, "--store", store, "--config", config);
        string runId = "";
        await WaitUntil(() =>
        {
            if (!File.Exists(store)) return false;
            using var s = RunStore.Open(store, readOnly: true);
            var r = s.ListRuns(1);
            if (r.Count == 0 || s.TasksOf(r[0].RunId).Count(t => t.Status == "succeeded") < 8) return false;
            runId = r[0].RunId;
            return true;
        }, "eight tasks of the open run to complete");
        var (listed, _) = await Ok("runs", "--store", store, "--status", "open");
        Assert.Contains(runId, listed);

        first.Kill();   // SIGKILL
        await first.WaitForExitAsync();
        HashSet<string> done;
        using (var s = RunStore.Open(store, readOnly: true))
        {
            Assert.Equal("interrupted", s.GetRun(runId).Status);
            done = s.TasksOf(runId).Where(t => t.Status == "succeeded").Select(t => t.Id).ToHashSet();
        }
        Assert.True(done.Count is >= 8 and < 40, $"{done.Count} tasks done at the kill");

        // Resumed, and fed the same tasks again: the completed ones are answered, the rest run.
        var (stdout, stderr) = await Ok("open", tasks, "--store", store, "--config", config, "--resume", runId);
        Assert.Contains($"open run {runId}: succeeded, 40 submitted, 40 succeeded", stderr);
        var ends = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement).ToList();
        Assert.Equal(40, ends.Count);
        foreach (var e in ends)
        {
            string id = e.GetProperty("id").GetString()!;
            Assert.Equal("succeeded", e.GetProperty("outcome").GetString());
            Assert.Equal(done.Contains(id) ? 0 : 1, e.GetProperty("attempts").GetInt32());
        }
        var ran = File.ReadAllLines(Path.Combine(_dir, "effects.log")).GroupBy(l => l).ToDictionary(g => g.Key, g => g.Count());
        foreach (var id in done) Assert.True(ran[id] == 1, $"{id}, completed before the kill, ran {ran[id]} times");
        Assert.Equal(40, ran.Count);   // and every task ran
        using (var s = RunStore.Open(store, readOnly: true))
            Assert.Equal("succeeded", s.GetRun(runId).Status);

        // Sent again with other options under a completed id: refused, with the reason.
        var changed = Write("changed.jsonl", JsonSerializer.Serialize(new { id = "t00", handler = "noop" }) + "\n");
        var (code, _, refusal) = await Tm("open", changed, "--store", store, "--resume", runId);
        Assert.Equal(2, code);
        Assert.Contains("t00", refusal);
        Assert.Contains("other options", refusal);
    }

    // ------------------------------------------------------------------ 6, 7, 9 and 13. models

    private async Task<string> StoreWithHistory(string store, bool failures)
    {
        var tasks = Enumerable.Range(0, 160).Select(i => (object)(failures && i % 2 == 1
            ? new { id = $"f{i}", handler = "fail", retries = 0 }
            : new { id = $"s{i}", handler = "spin", args = new { micros = 50 + 5 * i } })).ToArray();
        var graph = Write("history.json", Graph("history", tasks));
        var (code, _, stderr) = await Tm("run", graph, "--store", store, "--progress", "none");
        Assert.True(code == (failures ? 1 : 0), stderr);
        return graph;
    }

    [Fact]
    public async Task Train_ThreeAtOnce_EachGetsItsOwnVersion_KeptRelativeToTheStore()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "ml"));
        var store = Path.Combine(_dir, "ml", "m.db");
        var graph = await StoreWithHistory(store, failures: false);
        // What a training killed part-way left (its process is gone) is cleared by the next.
        var stale = Directory.CreateDirectory(Path.Combine(store + ".models", ".staging-99999999-0123")).FullName;
        File.WriteAllText(Path.Combine(stale, "local.duration.zip"), "half");
        // Three processes train at once, from the store's own folder, with a relative path.
        var outputs = await CliTests.Bash(_dir, $"""
            cd ml
            for i in 1 2 3; do dotnet '{Path.Combine(AppContext.BaseDirectory, "taskmesh.dll")}' train --store m.db > t$i.out 2>&1 & done
            wait
            cat t1.out t2.out t3.out
            """);
        Assert.DoesNotContain("Exception", outputs);
        var versions = outputs.Split('\n').Where(l => l.StartsWith("model version ")).Select(l => l.Split(' ')[2].TrimEnd(':')).Order().ToList();
        Assert.Equal(["1", "2", "3"], versions);
        using (var s = RunStore.Open(store, readOnly: true))
        {
            var models = s.Models();
            Assert.Equal([3, 2, 1], models.Select(m => m.Version));
            Assert.All(models, m => Assert.True(File.Exists(Path.Combine(m.Folder, "manifest.json")), m.Folder));
        }
        Assert.Empty(Directory.GetDirectories(store + ".models", ".staging-*"));

        // From another folder, with the store's full path: the newest version is found.
        Directory.CreateDirectory(Path.Combine(_dir, "elsewhere"));
        var (code, stdout, stderr) = await CliTests.Taskmesh(Path.Combine(_dir, "elsewhere"), "predict", graph, "--store", store, "--limit", "0");
        Assert.True(code == 0, stderr);
        Assert.Contains("model version 3", stdout);
        Assert.DoesNotContain("cannot be read", stdout);
    }

    [Theory]
    [InlineData("dev-zero")]
    [InlineData("fifo")]
    [InlineData("swapped")]
    public async Task Models_ManifestOrModelFileNotWhatItShouldBe_IsReportedAndTheRouterStartsCold(string damage)
    {
        var store = Path.Combine(_dir, "m.db");
        var graph = await StoreWithHistory(store, failures: true);
        await Ok("train", "--store", store);
        var folder = Path.Combine(_dir, "m.db.models", "v1");
        Assert.True(File.Exists(Path.Combine(folder, "local.success.zip")), "the history trains a success model");
        var manifest = Path.Combine(folder, "manifest.json");
        switch (damage)
        {
            case "dev-zero":
                File.Delete(manifest);
                File.CreateSymbolicLink(manifest, "/dev/zero");
                break;
            case "fifo":
                File.Delete(manifest);
                using (var p = Process.Start("mkfifo", [manifest])!) p.WaitForExit();
                break;
            default:
                var d = Path.Combine(folder, "local.duration.zip");
                var s = Path.Combine(folder, "local.success.zip");
                File.Move(d, d + ".tmp");
                File.Move(s, d);
                File.Move(d + ".tmp", s);
                break;
        }
        var sw = Stopwatch.StartNew();
        var (stdout, _) = await Ok("predict", graph, "--store", store, "--limit", "0");
        Assert.Contains("model version 1 cannot be read", stdout);
        Assert.Contains(damage == "swapped" ? "SHA-256 differs" : "not a regular file", stdout);
        var (code, _, stderr) = await Tm("run", graph, "--store", store, "--progress", "none");
        Assert.Equal(1, code);   // the history's fail tasks
        Assert.Contains("model version 1 not used", stderr);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
    }

    // ------------------------------------------------------------------ 8. crashes that must be messages

    [Fact]
    public async Task EmptyRunIdsAndStorePaths_AndLinksToNothing_AreMessages()
    {
        var store = Path.Combine(_dir, "s.db");
        var graph = Write("g.json", Graph("g", new { id = "a", handler = "noop" }));
        await Ok("run", graph, "--store", store, "--progress", "none");
        string[][] empty =
        [
            ["runs", "show", "", "--store", store],
            ["audit", "", "--store", store],
            ["resume", "", "--store", store],
            ["escalate", "", "a", "--to", "local", "--store", store],
            ["runs", "timeline", "", "--out", Path.Combine(_dir, "t.html"), "--store", store],
            ["graph", graph, "--dot", "--run", "", "--store", store],
        ];
        foreach (var c in empty) Assert.Contains("the run is empty", await Refused(c));
        Assert.Contains("store path is empty", await Refused("runs", "--store", ""));
        Assert.Contains("store path is empty", await Refused("run", graph, "--store", ""));
        // Siblings: every command that takes --store, with an output beside it where it has one.
        var output = Path.Combine(_dir, "out.json");
        string[][] siblings =
        [
            ["run", graph, "--store", "", "--json", output],
            ["runs", "--store", "", "--json", output],
            ["runs", "timeline", "last", "--out", Path.Combine(_dir, "t.html"), "--store", ""],
            ["predict", graph, "--store", "", "--json", output],
            ["audit", "last", "--store", "", "--json", output],
            ["metrics", "--store", "", "--json", output],
            ["graph", graph, "--dot", Path.Combine(_dir, "g.dot"), "--run", "last", "--store", ""],
            ["train", "--store", ""],
            ["models", "--store", ""],
            ["cache", "list", "--store", ""],
            ["rules", "list", "--store", ""],
            ["layers", "--store", ""],
        ];
        foreach (var c in siblings) Assert.Contains("store path is empty", await Refused(c));
        Assert.False(File.Exists(output));

        var dangling = Path.Combine(_dir, "dangling.db");
        File.CreateSymbolicLink(dangling, Path.Combine(_dir, "nothere", "x.db"));
        Assert.Contains("symbolic link", await Refused("runs", "--store", dangling));
        Assert.Contains("symbolic link", await Refused("run", graph, "--store", dangling));
        Assert.False(Directory.Exists(Path.Combine(_dir, "nothere")));
    }

    [Fact]
    public async Task Config_TooManyOrReservedOrMiskindedLayers_AndRulesNamingNoLayer_AreRefusedWithTheLine()
    {
        var graph = Write("g.json", Graph("g", new { id = "a", handler = "noop" }));
        var many = Write("many.toml", string.Concat(Enumerable.Range(0, 253).Select(i => $"[layers.l{i}]\nkind = \"local\"\n")));
        Assert.Contains("at most 254 can be registered", await Refused("validate", graph, "--config", many));
        foreach (var name in new[] { "next", "none" })
        {
            var c = Write($"{name}.toml", $"[layers.{name}]\nkind = \"local\"\n");
            Assert.Contains($"'{name}' is a reserved word", await Refused("run", graph, "--config", c, "--no-store"));
        }
        var q = Write("q.toml", "[layers.quantum]\nkind = \"local\"\n");
        Assert.Contains("the layer named quantum must be of kind quantum", await Refused("validate", graph, "--config", q));
        var rule = Write("rule.toml", "[[escalation.rules]]\nfrom = \"local\"\nto = \"gpu\"\ntrigger = \"error\"\n");
        var stderr = await Refused("run", graph, "--config", rule, "--no-store");
        Assert.Contains("rule.toml:1:", stderr);
        Assert.Contains("to = \"gpu\" names no layer", stderr);

        // The store's rules serve every config: a layer no config here has is added with a warning
        // naming the option; a threshold that is not a number names its option.
        var store = Path.Combine(_dir, "s.db");
        var (_, warned) = await Ok("rules", "add", "--trigger", "error", "--to", "gpu", "--store", store);
        Assert.Contains("warning: --to: no layer 'gpu'", warned);
        stderr = await Refused("rules", "add", "--trigger", "low_confidence", "--threshold", "NaN", "--store", store);
        Assert.Contains("option --threshold must be a finite number", stderr);
        Assert.Contains("run 'taskmesh rules add --help'", stderr);
    }

    // ------------------------------------------------------------------ 10. an external lock

    private Process HoldLock(string store, double seconds)
    {
        // Another process holds the store's write lock (BEGIN IMMEDIATE), as a backup or a sqlite3 shell would.
        var psi = new ProcessStartInfo("python3") { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.ArgumentList.Add("-c");
        psi.ArgumentList.Add($"import sqlite3, time, sys\nc = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=10)\nc.execute('BEGIN IMMEDIATE')\nprint('locked', flush=True)\ntime.sleep({seconds.ToString(System.Globalization.CultureInfo.InvariantCulture)})\nc.execute('COMMIT')\n");
        psi.ArgumentList.Add(store);
        var p = Process.Start(psi)!;
        _started.Add(p);
        return p;
    }

    [Fact]
    public async Task Run_StoreLockedByAnotherProcessForSeconds_IsRecordedAsItFinished()
    {
        var store = Path.Combine(_dir, "s.db");
        var tasks = Enumerable.Range(0, 12).Select(i => (object)new { id = $"t{i}", handler = "sleep", args = new { millis = 250 }, dependsOn = i == 0 ? Array.Empty<string>() : [$"t{i - 1}"] }).ToArray();
        var graph = Write("g.json", Graph("locked", tasks));
        await Ok("run", Write("warm.json", Graph("warm", new { id = "a", handler = "noop" })), "--store", store, "--progress", "none");
        var run = Start("run", graph, "--store", store, "--progress", "none");
        await WaitUntil(() =>
        {
            using var s = RunStore.Open(store, readOnly: true);
            var r = s.ListRuns(1);
            return r.Count == 1 && r[0].Graph == "locked" && s.CompletedCount(r[0].RunId) >= 1;
        }, "the run's first completion");
        // Held across the run's end (about 3 s in): its writes meanwhile wait, then go in.
        using var locker = HoldLock(store, 5);
        Assert.Equal("locked", (await locker.StandardOutput.ReadLineAsync())?.Trim());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await run.WaitForExitAsync(cts.Token);
        string stdout = await run.StandardOutput.ReadToEndAsync(), stderr = await run.StandardError.ReadToEndAsync();
        Assert.True(run.ExitCode == 0, stderr + stdout);
        Assert.Contains("recorded in", stdout);
        using var s = RunStore.Open(store, readOnly: true);
        var r = s.ListRuns(1)[0];
        Assert.Equal(("locked", "succeeded", 12), (r.Graph, r.Status, r.Tasks.Succeeded));
        Assert.Equal(12, s.CompletedCount(r.RunId));
    }

    [Fact]
    public async Task TwoOpenRuns_OnOneStore_WithAnExternalLockMidway_RecordEveryTaskAsItFinished()
    {
        var store = Path.Combine(_dir, "s.db");
        await Ok("run", Write("warm.json", Graph("warm", new { id = "a", handler = "noop" })), "--store", store, "--progress", "none");
        string Tasks(string name, string prefix) => Write(name, string.Join('\n', Enumerable.Range(0, 15).Select(i => JsonSerializer.Serialize(new
        {
            id = $"{prefix}{i:00}",
            handler = "sleep",
            args = new { millis = 200 },
            dependsOn = i == 0 ? Array.Empty<string>() : [$"{prefix}{i - 1:00}"],
        }))) + "\n");
        var one = Start("open", Tasks("one.jsonl", "a"), "--store", store, "--name", "one");
        var two = Start("open", Tasks("two.jsonl", "b"), "--store", store, "--name", "two");
        await WaitUntil(() =>
        {
            using var s = RunStore.Open(store, readOnly: true);
            return s.ListRuns(10, "open").Count == 2;
        }, "both open runs in the store");
        // Held while both go (each about 3 s long): their writes wait, then go in.
        using var locker = HoldLock(store, 3);
        Assert.Equal("locked", (await locker.StandardOutput.ReadLineAsync())?.Trim());
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        foreach (var p in new[] { one, two })
        {
            await p.WaitForExitAsync(cts.Token);
            Assert.True(p.ExitCode == 0, await p.StandardError.ReadToEndAsync());
            Assert.Equal(15, (await p.StandardOutput.ReadToEndAsync()).Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        }
        using var s = RunStore.Open(store, readOnly: true);
        Assert.Empty(s.ListRuns(10, "open"));         // nothing stale: both read as ended
        Assert.Empty(s.ListRuns(10, "interrupted"));
        foreach (var (name, prefix) in new[] { ("one", "a"), ("two", "b") })
        {
            var run = s.ListRuns(10).Single(r => r.Graph == name);
            Assert.Equal(("succeeded", 15, 15), (run.Status, run.Tasks.Total, run.Tasks.Succeeded));
            var rows = s.TasksOf(run.RunId);
            Assert.Equal(Enumerable.Range(0, 15).Select(i => $"{prefix}{i:00}"), rows.Select(t => t.Id).Order());
            Assert.All(rows, t => Assert.Equal("succeeded", t.Status));
        }
    }

    [Fact]
    public async Task Run_StoreLockedPastTheLockTimeout_FailsNamingTheKey_AndReadsInterrupted_AndResumes()
    {
        var store = Path.Combine(_dir, "s.db");
        var config = Write("c.toml", "[store]\nlock_timeout_seconds = 1\n");
        var tasks = Enumerable.Range(0, 10).Select(i => (object)new { id = $"t{i}", handler = "sleep", args = new { millis = 300 }, dependsOn = i == 0 ? Array.Empty<string>() : [$"t{i - 1}"] }).ToArray();
        var graph = Write("g.json", Graph("g", tasks));
        await Ok("run", Write("warm.json", Graph("warm", new { id = "a", handler = "noop" })), "--store", store, "--progress", "none");
        var run = Start("run", graph, "--store", store, "--config", config, "--progress", "none");
        // Locked once the run is under way (its store open, a task done), for longer than the timeout.
        await WaitUntil(() =>
        {
            using var s = RunStore.Open(store, readOnly: true);
            var r = s.ListRuns(1);
            return r.Count == 1 && r[0].Graph == "g" && s.CompletedCount(r[0].RunId) >= 1;
        }, "the run's first completion");
        using var locker = HoldLock(store, 4);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await run.WaitForExitAsync(cts.Token);
        string stderr = await run.StandardError.ReadToEndAsync();
        Assert.Equal(1, run.ExitCode);
        Assert.Contains("lock_timeout_seconds", stderr);
        await locker.WaitForExitAsync(cts.Token);

        var (stdout, _) = await Ok("runs", "--store", store, "--limit", "1");
        Assert.Contains("interrupted", stdout);
        (stdout, _) = await Ok("resume", "last", "--store", store, "--progress", "none");
        Assert.Contains("succeeded", stdout);
    }

    // ------------------------------------------------------------------ 11. terminal escapes

    [Fact]
    public async Task UserData_WithEscapeSequencesAndLineBreaks_NeverReachesTheTerminalRaw()
    {
        var store = Path.Combine(_dir, "s.db");
        const string evil = "\u001b[2J\u001b[31mEVIL\r\nforged line\u0007";
        var graph = Write("g.json", JsonSerializer.Serialize(new
        {
            name = evil,
            tasks = new object[]
            {
                new { id = "ok", handler = "noop" },
                new { id = "bad", handler = "fail", args = new { message = evil }, retries = 0 },
            },
        }));
        var outputs = new List<string>();
        var (code, stdout, stderr) = await Tm("--log-level", "information", "run", graph, "--store", store, "--progress", "none");
        Assert.Equal(1, code);
        outputs.Add(stdout + stderr);
        Assert.Contains("\\u001b[2J", stdout);
        foreach (var args in new[] { new[] { "runs", "--store", store }, ["runs", "show", "last", "--store", store], ["graph", graph, "--dot"], ["audit", "last", "--store", store] })
        {
            (code, stdout, stderr) = await Tm(args);
            Assert.True(code == 0, stderr);
            outputs.Add(stdout + stderr);
        }
        var instance = Write("wf.json", JsonSerializer.Serialize(new
        {
            name = evil, schemaVersion = "1.5",
            workflow = new { specification = new { tasks = new[] { new { id = "a", parents = Array.Empty<string>(), children = Array.Empty<string>() } } },
                execution = new { tasks = new[] { new { id = "a", runtimeInSeconds = 1 } } } },
        }));
        (code, stdout, stderr) = await Tm("import", "wfformat", instance, "--out", Path.Combine(_dir, "wf-graph.json"));
        Assert.True(code == 0, stderr);
        outputs.Add(stdout + stderr);
        foreach (var o in outputs)
        {
            Assert.DoesNotContain('\u001b', o);
            Assert.DoesNotContain('\u0007', o);
            Assert.DoesNotContain('\r', o);
            Assert.DoesNotContain("\nforged line", o);
        }
    }

    // ------------------------------------------------------------------ 12. WfFormat

    [Fact]
    public async Task Import_OneFileOfThousandsOfWritersAndReaders_StaysLinear_AndUnreplayableRuntimesAreRefused()
    {
        const int n = 3000;
        var spec = Enumerable.Range(0, n).Select(i => (object)new { id = $"w{i}", parents = Array.Empty<string>(), children = Array.Empty<string>(), inputFiles = Array.Empty<string>(), outputFiles = new[] { "f" } })
            .Concat(Enumerable.Range(0, n).Select(i => (object)new { id = $"r{i}", parents = Array.Empty<string>(), children = Array.Empty<string>(), inputFiles = new[] { "f" }, outputFiles = Array.Empty<string>() }))
            .ToArray();
        var exec = Enumerable.Range(0, n).SelectMany(i => new[] { new { id = $"w{i}", runtimeInSeconds = 1.0 }, new { id = $"r{i}", runtimeInSeconds = 1.0 } }).ToArray();
        var instance = Write("big.json", JsonSerializer.Serialize(new { name = "big", schemaVersion = "1.5", workflow = new { specification = new { tasks = spec }, execution = new { tasks = exec } } }));
        var output = Path.Combine(_dir, "big-graph.json");
        var sw = Stopwatch.StartNew();
        var (stdout, _) = await Ok("import", "wfformat", instance, "--out", output);
        Assert.Contains($"{2 * n + 1} tasks (1 of them file barriers", stdout);
        Assert.Contains($"{2 * n} edges", stdout);
        Assert.True(new FileInfo(output).Length < 4 * new FileInfo(instance).Length, $"{new FileInfo(output).Length} bytes");
        (stdout, _) = await Ok("validate", output);
        Assert.Contains("3 levels", stdout);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(60), $"took {sw.Elapsed}");

        foreach (var runtime in new[] { 1e300, 1e7 })
        {
            var huge = Write("huge.json", JsonSerializer.Serialize(new
            {
                name = "huge", schemaVersion = "1.5",
                workflow = new { specification = new { tasks = new[] { new { id = "a", parents = Array.Empty<string>(), children = Array.Empty<string>() } } },
                    execution = new { tasks = new[] { new { id = "a", runtimeInSeconds = runtime } } } },
            }));
            var stderr = await Refused("import", "wfformat", huge, "--out", Path.Combine(_dir, "huge-graph.json"));
            Assert.Contains("task 'a'", stderr);
            Assert.Contains("workflow.execution.tasks[0].runtimeInSeconds", stderr);
            Assert.False(File.Exists(Path.Combine(_dir, "huge-graph.json")));
        }
    }

    // ------------------------------------------------------------------ 13. messages

    [Fact]
    public async Task Messages_PortInUseHasNoStackTrace_AndATinyCriticalPathNoRatio()
    {
        using var listener = new System.Net.Sockets.TcpListener(System.Net.IPAddress.Loopback, 0);
        listener.Start();
        int port = ((System.Net.IPEndPoint)listener.LocalEndpoint).Port;
        var graph = Write("g.json", Graph("g", new { id = "a", handler = "fail", args = new { attempts = 1 }, retries = 1 }));
        var stderr = await Refused("run", graph, "--no-store", "--metrics-port", port.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Contains("address already in use", stderr);
        Assert.DoesNotContain("Hosting failed", stderr);

        var store = Path.Combine(_dir, "s.db");
        await Ok("run", graph, "--store", store, "--progress", "none");
        var (stdout, _) = await Ok("runs", "show", "last", "--store", store);
        Assert.Contains("no ratio: the critical path is under 1 ms", stdout);
    }

    // ------------------------------------------------------------------ all at once on one store

    [Fact]
    public async Task OneStore_RunsTrainingsAndEscalationsAtOnce_KeepsEveryRowAndVersion()
    {
        var store = Path.Combine(_dir, "s.db");
        var config = Write("c.toml", "[layers.big]\nkind = \"local\"\nrank = 5\n\n[[escalation.rules]]\nfrom = \"local\"\nto = \"big\"\ntrigger = \"error\"\n\n[learning]\nretrain_after_rows = 1\n");
        var history = await StoreWithHistory(store, failures: false);
        var graph = Write("g.json", Graph("mix",
            new { id = "x", handler = "fail", args = new { attempts = 1 } },
            new { id = "s", handler = "spin", args = new { micros = 500 } },
            new { id = "t", handler = "noop", dependsOn = new[] { "x", "s" } }));
        await Ok("run", graph, "--config", config, "--store", store, "--progress", "none");
        string first;
        using (var s0 = RunStore.Open(store, readOnly: true)) first = s0.ListRuns(1)[0].RunId;

        var work = new List<Task<(int code, string stdout, string stderr)>>();
        for (int i = 0; i < 4; i++) work.Add(Tm("run", graph, "--config", config, "--store", store, "--progress", "none"));
        for (int i = 0; i < 2; i++) work.Add(Tm("train", "--store", store));
        work.Add(Tm("escalate", first, "s", "--to", "big", "--config", config, "--store", store, "--progress", "none"));
        var results = await Task.WhenAll(work);
        foreach (var (code, stdout, stderr) in results) Assert.True(code == 0, stderr + stdout);

        using var s = RunStore.Open(store, readOnly: true);
        var runs = s.ListRuns(100);
        Assert.Equal(7, runs.Count);   // history, first, four runs, the escalation
        Assert.All(runs, r => Assert.Equal("succeeded", r.Status));
        foreach (var r in runs.Where(r => r.Graph == "mix"))
        {
            Assert.Equal(3, s.CompletedCount(r.RunId));
            // Each escalation is the rule's (the router may also send x to big at once) or the operator's.
            Assert.All(s.EscalationHistoryOf(r.RunId), e => Assert.True(e.Rule == "local → big on error" || e.TaskId == "s" && e.Trigger == "manual", $"{e.TaskId}: {e.Rule} {e.Trigger}"));
        }
        Assert.Contains(runs, r => s.EscalationHistoryOf(r.RunId).Any(e => e.TaskId == "s" && e.Trigger == "manual" && e.To == "big"));
        // Every training, on demand or after a run, has a version of its own, with its files.
        var models = s.Models();
        Assert.Equal(Enumerable.Range(1, models.Count).Reverse(), models.Select(m => m.Version));
        Assert.True(models.Count >= 2 + 1, $"{models.Count} versions");
        Assert.All(models, m => Assert.True(File.Exists(Path.Combine(m.Folder, "manifest.json")), m.Folder));
        Assert.Equal(models.Count, Directory.GetDirectories(store + ".models", "v*").Length);
        _ = history;
    }
}
