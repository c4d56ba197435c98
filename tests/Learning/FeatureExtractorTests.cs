using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using Xunit;

namespace TaskMesh.Tests.Learning;

public sealed class FeatureExtractorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-features-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, recursive: true);
    }

    private const string Bell = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[2]; creg c[2]; h q[0]; cx q[0],q[1]; measure q -> c;";

    /// <summary>a → (long, short) → join, plus a circuit and a hash task off to the side.</summary>
    private static PreparedGraph Diamond(TaskMeshEngine engine)
    {
        var g = new GraphBuilder("diamond");
        var a = g.Task("a", "spin", new { micros = 1000 });
        var lng = g.Task("long", "sleep", new { millis = 50 }).DependsOn(a);
        var shrt = g.Task("short", "sleep", new { millis = 10 }).DependsOn(a);
        g.Task("join", "noop").DependsOn(lng).DependsOn(shrt);
        g.Task("bell", "quantum", new { qasm = Bell, shots = 1000, precision = "single" });
        g.Task("hash", "hash", new { bytes = 1_000_000 });
        return engine.Prepare(g);
    }

    [Fact]
    public void Features_AreTheKnownValues_AndTheSameEveryTime()
    {
        var engine = new TaskMeshEngine();
        var graph = Diamond(engine);
        var f = new FeatureExtractor(graph);
        int Col(string name) => FeatureExtractor.Names.ToList().IndexOf(name);

        var spin = f.Extract(0);
        Assert.Equal(FeatureExtractor.Count, spin.Length);
        Assert.Equal(Math.Log10(1001), spin[Col("log_estimate_us")], 5);
        Assert.Equal(Math.Log10(1001), spin[Col("log_micros")], 5);
        Assert.Equal((0f, 0f, 2f), (spin[Col("level")], spin[Col("fan_in")], spin[Col("fan_out")]));

        var lng = f.Extract(1);
        var shrt = f.Extract(2);
        var join = f.Extract(3);
        Assert.Equal(Math.Log10(1 + 50), lng[Col("log_millis")], 5);
        Assert.Equal((1f, 1f), (lng[Col("level")], shrt[Col("level")]));
        Assert.Equal((2f, 2f, 0f), (join[Col("level")], join[Col("fan_in")], join[Col("fan_out")]));
        // The short branch can wait 40 ms without delaying the end; the long one cannot.
        Assert.Equal(0, lng[Col("slack_ms")], 3);
        Assert.Equal(40, shrt[Col("slack_ms")], 3);

        var bell = f.Extract(4, new LayerState(QueueDepth: 3, FreeSlots: 1));
        Assert.Equal((2f, 2f, 1f, 2f), (bell[Col("qubits")], bell[Col("gates")], bell[Col("two_qubit_gates")], bell[Col("depth")]));
        Assert.Equal(Math.Log10(1001), bell[Col("log_shots")], 5);
        Assert.Equal((0f, 0f), (bell[Col("double_precision")], bell[Col("noise")]));
        Assert.Equal((3f, 1f), (bell[Col("queue_depth")], bell[Col("free_slots")]));
        Assert.Equal(Math.Log10(1_000_001), f.Extract(5)[Col("log_bytes")], 5);

        // Deterministic: a second extractor over a second preparation gives the same vectors.
        var again = new FeatureExtractor(Diamond(new TaskMeshEngine()));
        for (int i = 0; i < graph.Count; i++) Assert.Equal(f.Extract(i), again.Extract(i));
    }

    [Fact]
    public void Kinds_GroupTasksOfOneQuantizedSize_AndMeasuresFromParsedArgsEqualThoseReadFromJson()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.Register(new TaskMesh.Engine.Handlers.HandlerDescriptor("free-form", (ctx, a, ct) => new ValueTask<object?>((object?)null)));
        var g = new GraphBuilder("kinds");
        g.Task("a", "spin", new { micros = 1000 });
        g.Task("b", "spin", new { micros = 1010 });           // within a quarter of a decade of a
        g.Task("c", "spin", new { micros = 5000 });
        g.Task("d", "free-form", new { micros = 1000 });       // no validator: read from the JSON
        g.Task("e", "quantum", new { qasm = Bell, shots = 1000, precision = "single" });
        g.Task("f", "quantum", new { qasm = Bell, shots = 1000, precision = "double" });
        var f = new FeatureExtractor(engine.Prepare(g));
        Assert.Equal(f.KindOf(0), f.KindOf(1));
        Assert.NotEqual(f.KindOf(0), f.KindOf(2));
        Assert.NotEqual(f.KindOf(4), f.KindOf(5));             // precision is part of a circuit's kind
        Assert.Equal(f.MeasuresOf(0), f.MeasuresOf(3));        // spin states its measures; free-form's come from JSON
        Assert.Equal(1000, f.MeasuresOf(0).Micros);
        Span<float> fromParsed = stackalloc float[FeatureExtractor.Count], fromJson = stackalloc float[FeatureExtractor.Count];
        f.ExtractTask(0, fromParsed);
        f.ExtractTask(3, fromJson);
        Assert.Equal(fromParsed[1..].ToArray(), fromJson[1..].ToArray());   // all but the estimate (free-form gives none)
        Assert.Equal(f.KindOf(0), f.KindOf(0));
    }

    [Fact]
    public void Complexity_IsTheDocumentedScore()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("c");
        g.Task("us", "spin", new { micros = 1 });
        g.Task("ms", "spin", new { micros = 1000 });
        g.Task("s", "sleep", new { millis = 1000 });
        g.Task("nothing", "noop");
        var qasm20 = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[21]; h q[0];";
        g.Task("wide", "quantum", new { qasm = qasm20 });
        var f = new FeatureExtractor(engine.Prepare(g));
        Assert.Equal(Math.Round(12.5 * Math.Log10(2), 1), f.Complexity(0));
        Assert.Equal(Math.Round(12.5 * Math.Log10(1001), 1), f.Complexity(1));
        Assert.Equal(75.0, f.Complexity(2));
        Assert.Equal(0.0, f.Complexity(3));   // noop gives no estimate
        // 21 qubits: the larger of the memory score, 100 × 11 / 22 = 50, and the time score of the quantum handler's estimate.
        Assert.True(f.EstimateMicros(4) > 0);
        Assert.Equal(Math.Round(Math.Max(50, 12.5 * Math.Log10(1 + f.EstimateMicros(4))), 1), f.Complexity(4));
        Assert.All(Enumerable.Range(0, 5), i => Assert.InRange(f.Complexity(i), 0, 100));
    }

    [Fact]
    public async Task Complexity_IsStoredWithEachTasksRow()
    {
        var engine = new TaskMeshEngine();
        var graph = Diamond(engine);
        var f = new FeatureExtractor(graph);
        using var store = RunStore.Open(Path.Combine(_dir, "s.db"));
        var r = await engine.RunAsync(graph, new RunOptions { Observers = [new RunRecorder(store, complexity: t => f.Complexity(t))] });
        await store.FlushAsync();
        var rows = store.TasksOf(r.RunId);
        Assert.Equal(graph.Count, rows.Count);
        Assert.All(rows, row => Assert.Equal(f.Complexity(row.Index), row.Complexity));
    }
}
