using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Layers;

public sealed class QuantumLayerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-quantum-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Bell = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;";

    private async Task<RunResult> RunJson(string json, TaskMeshEngine? engine = null)
    {
        var path = Path.Combine(_dir, "g.json");
        File.WriteAllText(path, json);
        engine ??= new TaskMeshEngine();
        var graph = engine.Prepare(GraphLoader.LoadFile(path), path);
        return await engine.RunAsync(graph, new RunOptions { BaseDirectory = _dir, CollectTaskDetails = true, KeepOutputs = true });
    }

    [Fact]
    public async Task QuantumTask_RunsOnTheQuantumLayer_AndItsOutputFlowsAlongDataEdges()
    {
        var json = JsonSerializer.Serialize(new
        {
            name = "bell",
            tasks = new object[]
            {
                new { id = "c", handler = "quantum", args = new { qasm = Bell, shots = 4000, seed = 3, observables = new[] { "Z0 Z1", "X0 X1" }, marginal = new[] { 1 } } },
                new { id = "pick", handler = "best", args = new { metric = "Z0 Z1" }, dependsOn = new[] { new { id = "c", type = "data" } } },
            },
        });
        var r = await RunJson(json);
        Assert.Equal(RunStatus.Succeeded, r.Status);
        Assert.Equal("quantum", r.TaskResultOf(0).Layer);
        Assert.Equal("local", r.TaskResultOf(1).Layer);
        var q = Assert.IsType<QuantumOutput>(r.OutputOf(0));
        Assert.Equal(2, q.Result.Qubits);
        Assert.Equal(4000, q.Result.Counts!.Values.Sum());
        Assert.Equal(["00", "11"], q.Result.Counts.Keys.Select(k => q.Result.Bits(k)).Order());
        Assert.Equal([0.5, 0.5], q.Result.Marginal!.Select(p => Math.Round(p, 12)));
        Assert.True(q.TryGetMetric("X0 X1", out double xx));
        Assert.Equal(1.0, xx, 12);
        var best = Assert.IsType<BestOutput>(r.OutputOf(1));
        Assert.Equal("c", best.Task);
        Assert.Equal(1.0, best.Value, 12);
    }

    [Fact]
    public async Task QasmFile_ResolvesAgainstTheGraphFolder()
    {
        Directory.CreateDirectory(Path.Combine(_dir, "circuits"));
        File.WriteAllText(Path.Combine(_dir, "circuits", "ghz.qasm"), "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[3];\nh q[0];\ncx q[0],q[1];\ncx q[1],q[2];\n");
        var r = await RunJson("""{"tasks":[{"id":"ghz","handler":"quantum","args":{"qasm":"circuits/ghz.qasm"}}]}""");
        var q = Assert.IsType<QuantumOutput>(r.OutputOf(0));
        Assert.Equal([("111", 0.5), ("000", 0.5)], q.Top.Select(t => (t.Bits, Math.Round(t.Probability, 12))).OrderByDescending(t => t.Bits));
    }

    [Fact]
    public void InvalidCircuit_FailsValidation_WithTaskIdLineAndColumn()
    {
        var path = Path.Combine(_dir, "bad.json");
        File.WriteAllText(path, """
            {"tasks":[
              {"id":"ok","handler":"quantum","args":{"qasm":"OPENQASM 2.0; qreg q[1]; h q[0];"}},
              {"id":"broken","handler":"quantum","args":{"qasm":"OPENQASM 2.0;\nqreg q[1];\nfoo q[0];"}},
              {"id":"missing","handler":"quantum","args":{"qasm":"nowhere.qasm"}},
              {"id":"badobs","handler":"quantum","args":{"qasm":"OPENQASM 2.0; qreg q[1];","observables":["Z4"],"precision":"half","fusion":9}}
            ]}
            """);
        var engine = new TaskMeshEngine();
        var e = Assert.Throws<GraphValidationException>(() => engine.Prepare(GraphLoader.LoadFile(path), path));
        Assert.Contains(e.Errors, x => x.TaskId == "broken" && x.Message.Contains("inline qasm:3:1: unknown gate 'foo'"));
        Assert.Contains(e.Errors, x => x.TaskId == "missing" && x.Message.Contains("does not exist"));
        Assert.Contains(e.Errors, x => x.TaskId == "badobs" && x.Message.Contains("names qubit 4"));
        Assert.Contains(e.Errors, x => x.TaskId == "badobs" && x.Message.Contains("'precision'"));
        Assert.Contains(e.Errors, x => x.TaskId == "badobs" && x.Message.Contains("'fusion' is 9"));
        Assert.DoesNotContain(e.Errors, x => x.TaskId == "ok");
    }

    [Fact]
    public void NonQuantumHandler_ForcedOntoTheQuantumLayer_IsRefused()
    {
        var b = new GraphBuilder();
        b.Task("s", "spin", new { micros = 1 }).OnLayer("quantum");
        var e = Assert.Throws<GraphValidationException>(() => new TaskMeshEngine().Prepare(b));
        Assert.Contains("runs only quantum", e.Message);
    }

    [Fact]
    public async Task CircuitAboveTheMemoryCap_FailsWithTheAdmissionError()
    {
        var engine = new TaskMeshEngine(new EngineOptions { Quantum = new QuantumOptions { MemoryCapBytes = 1 << 20 } });
        var qasm = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[20]; h q[0];";
        var r = await RunJson(JsonSerializer.Serialize(new { tasks = new[] { new { id = "big", handler = "quantum", args = new { qasm } } } }), engine);
        Assert.Equal(RunStatus.Failed, r.Status);
        var t = r.TaskResultOf(0);
        Assert.Contains("not admitted to the quantum layer", t.Error);
        Assert.Contains("16.0 MiB", t.Error);
    }

    [Fact]
    public async Task SinglePrecisionDrift_IsEscalatedToDouble_AndAudited()
    {
        var engine = new TaskMeshEngine(new EngineOptions { Quantum = new QuantumOptions { NormTolerance = 1e-15 } });
        var qasm = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[6]; " + string.Concat(Enumerable.Range(0, 60).Select(i => $"u3({0.1 * i},{0.2 * i},{0.3 * i}) q[{i % 6}]; cx q[{i % 6}],q[{(i + 1) % 6}]; "));
        var r = await RunJson(JsonSerializer.Serialize(new { tasks = new[] { new { id = "drifty", handler = "quantum", args = new { qasm, precision = "single" } } } }), engine);
        Assert.Equal(RunStatus.Succeeded, r.Status);
        var esc = Assert.Single(r.Escalations);
        Assert.Equal(("drifty", "single", "double", "low_confidence"), (esc.TaskId, esc.From, esc.To, esc.Trigger));
        Assert.Equal("double", Assert.IsType<QuantumOutput>(r.OutputOf(0)).Result.Precision.ToString().ToLowerInvariant());
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms)) r.WriteJson(w);
        using var doc = JsonDocument.Parse(ms.ToArray());
        Assert.Equal(1, doc.RootElement.GetProperty("escalations").GetInt32());
        Assert.Equal("low_confidence", doc.RootElement.GetProperty("escalation_log")[0].GetProperty("trigger").GetString());
    }

    [Fact]
    public async Task SinglePrecisionDrift_GoesThroughTheEscalationHook_AsASecondAttempt()
    {
        var engine = new TaskMeshEngine(new EngineOptions { Quantum = new QuantumOptions { NormTolerance = 1e-15 } });
        var observer = new Observability.RecordingObserver();
        engine.AddObserver(observer);
        var qasm = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[6]; " + string.Concat(Enumerable.Range(0, 60).Select(i => $"u3({0.1 * i},{0.2 * i},{0.3 * i}) q[{i % 6}]; cx q[{i % 6}],q[{(i + 1) % 6}]; "));
        var r = await RunJson(JsonSerializer.Serialize(new { tasks = new[] { new { id = "drifty", handler = "quantum", args = new { qasm, precision = "single" } } } }), engine);

        var task = r.TaskResultOf(0);
        Assert.Equal((TaskOutcome.Succeeded, 2, 1, "quantum"), (task.Outcome, task.Attempts, task.Escalations, task.Layer));
        var ends = observer.Ended.OrderBy(e => e.Attempt).ToList();
        Assert.Equal([TaskMesh.Engine.Scheduling.Attempts.AttemptNext.Escalate, TaskMesh.Engine.Scheduling.Attempts.AttemptNext.Complete], ends.Select(e => e.Next));
        Assert.Equal("double", ends[0].Request!.To);
        Assert.Single(observer.Escalations);
        observer.AssertPairedAttempts();
    }

    [Fact]
    public async Task Report_WritesEveryInputBesideTheGraph_AndRefusesEscapingPaths()
    {
        var json = JsonSerializer.Serialize(new
        {
            tasks = new object[]
            {
                new { id = "a", handler = "quantum", args = new { qasm = Bell, meta = new { label = "bell" } } },
                new { id = "r", handler = "report", args = new { path = "out/r.json", title = "t" }, dependsOn = new[] { new { id = "a", type = "data" } } },
            },
        });
        var r = await RunJson(json);
        Assert.Equal(RunStatus.Succeeded, r.Status);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "out", "r.json")));
        var input = doc.RootElement.GetProperty("inputs")[0];
        Assert.Equal("a", input.GetProperty("task").GetString());
        Assert.Equal("bell", input.GetProperty("output").GetProperty("meta").GetProperty("label").GetString());

        var bad = new GraphBuilder();
        bad.Task("r", "report", new { path = "../escape.json" });
        Assert.Contains("must stay inside", Assert.Throws<GraphValidationException>(() => new TaskMeshEngine().Prepare(bad)).Message);
    }

    [Fact]
    public async Task Best_WithoutTheMetric_FailsNamingIt()
    {
        var json = JsonSerializer.Serialize(new
        {
            tasks = new object[]
            {
                new { id = "a", handler = "quantum", args = new { qasm = Bell } },
                new { id = "b", handler = "best", args = new { metric = "objective" }, dependsOn = new[] { new { id = "a", type = "data" } } },
            },
        });
        var r = await RunJson(json);
        Assert.Equal(RunStatus.Failed, r.Status);
        Assert.Contains("metric 'objective'", r.TaskResultOf(1).Error);
    }
}
