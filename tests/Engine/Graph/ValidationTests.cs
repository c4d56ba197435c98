using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using Xunit;

namespace TaskMesh.Tests.Engine.Graph;

public class ValidationTests
{
    private static GraphValidationException Fail(string json)
    {
        var engine = new TaskMeshEngine();
        return Assert.Throws<GraphValidationException>(() => engine.Prepare(GraphLoader.LoadText(json, "g.json"), "g.json"));
    }

    [Fact]
    public void Prepare_EveryPlantedError_IsReportedAtOnce()
    {
        var json = """
            {
              "name": "broken",
              "resources": { "db": 1 },
              "tasks": [
                { "id": "a", "handler": "noop", "dependsOn": ["c"] },
                { "id": "b", "handler": "noop", "dependsOn": ["a"] },
                { "id": "c", "handler": "noop", "dependsOn": ["b"] },
                { "id": "a", "handler": "noop" },
                { "id": "d", "handler": "nosuch" },
                { "id": "e", "handler": "spin", "args": { "micros": -1, "extra": 1 } },
                { "id": "f", "handler": "noop", "dependsOn": ["ghost", "f"] },
                { "id": "g", "handler": "noop", "uses": ["gpu"] },
                { "id": "h", "handler": "noop", "retries": -1, "minConfidence": 2, "timeoutSeconds": 0, "layer": "moon" },
                { "id": "i", "handler": "sleep" },
                { "handler": "noop" },
                { "id": "j", "handler": "shell", "args": { "command": "ls" } }
              ]
            }
            """;
        var ex = Fail(json);
        var codes = ex.Errors.Select(e => (e.Code, e.TaskId)).ToList();

        Assert.Contains(("cycle", "a"), codes);
        Assert.Contains(ex.Errors, e => e.Message == "cycle: a -> b -> c -> a");
        Assert.Contains(("duplicate-id", "a"), codes);
        Assert.Contains(("unknown-handler", "d"), codes);
        Assert.Equal(2, ex.Errors.Count(e => e is { Code: "bad-args", TaskId: "e" }));   // range and unknown argument
        Assert.Contains(("unknown-dependency", "f"), codes);
        Assert.Contains(("self-loop", "f"), codes);
        Assert.Contains(("unknown-resource", "g"), codes);
        Assert.Equal(4, ex.Errors.Count(e => e is { Code: "bad-value", TaskId: "h" }));
        Assert.Contains(("bad-args", "i"), codes);                                          // missing 'millis'
        Assert.Contains(ex.Errors, e => e.Code == "missing-id" && e.Line == 15);
        Assert.Contains(ex.Errors, e => e is { Code: "bad-args", TaskId: "j" } && e.Message.Contains("shell_enabled"));
        // Lines point into the file.
        Assert.Equal(9, ex.Errors.First(e => e.Code == "unknown-handler").Line);
        Assert.Contains("g.json:9", ex.Message);
    }

    [Fact]
    public void Load_MalformedJson_ReportsLineAndColumn()
    {
        var ex = Assert.Throws<GraphValidationException>(() => GraphLoader.LoadText("{\n  \"tasks\": [\n    { \"id\": \"a\" \"handler\": \"noop\" }\n  ]\n}", "bad.json"));
        var e = Assert.Single(ex.Errors);
        Assert.Equal("malformed-json", e.Code);
        Assert.Equal(3, e.Line);
        Assert.True(e.Column > 1);
        Assert.StartsWith("bad.json:3:", e.Format("bad.json"));
    }

    [Fact]
    public void Load_EstimateMs_IsReadAndABadOneNamesTheTask()
    {
        var g = GraphLoader.LoadText("""{ "tasks": [ { "id": "a", "handler": "noop", "estimateMs": 12.5 } ] }""", "ok.json");
        Assert.Equal(12.5, g.Build().Spec(0)!.EstimateMs);
        var ex = Assert.Throws<GraphValidationException>(() => GraphLoader.LoadText(
            """{ "tasks": [ { "id": "a", "handler": "noop" }, { "id": "slow", "handler": "noop", "estimateMs": -1 } ] }""", "bad.json").Build());
        var e = Assert.Single(ex.Errors);
        Assert.Equal("slow", e.TaskId);
        Assert.Contains("estimateMs is -1; it must be between 0", e.Message);
        Assert.Contains("schema", Fail("""{ "tasks": [ { "id": "a", "handler": "noop", "estimateMs": "soon" } ] }""").Errors.Select(x => x.Code));
    }

    [Fact]
    public void Load_WrongTypesAndUnknownFields_AreSchemaErrors()
    {
        var ex = Fail("""{ "tasks": [ { "id": "a", "handler": "noop", "priority": 3, "colour": "red", "dependsOn": "b" } ] }""");
        Assert.Equal(3, ex.Errors.Count(e => e.Code == "schema"));
    }

    [Fact]
    public void Build_CycleAmongMany_NamesOneClosedCycle()
    {
        var g = new GraphBuilder();
        var t = Enumerable.Range(0, 100).Select(i => g.Task($"n{i}", "noop")).ToArray();
        for (int i = 1; i < 100; i++) t[i].DependsOn(t[i - 1]);
        t[40].DependsOn(t[60]);
        var ex = Assert.Throws<GraphValidationException>(() => g.Build());
        var msg = Assert.Single(ex.Errors).Message;
        var ids = msg["cycle: ".Length..].Split(" -> ");
        Assert.Equal(ids[0], ids[^1]);
        Assert.Equal(22, ids.Length);     // n40 .. n60 and back to n40
    }

    [Fact]
    public void Analyze_KnownGraph_GivesLevelsWidthsAndCriticalPath()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        var a = g.Task("a", "spin", new { micros = 100 });
        var b = g.Task("b", "spin", new { micros = 1000 }).DependsOn(a);
        var c = g.Task("c", "spin", new { micros = 10 }).DependsOn(a);
        g.Task("d", "spin", new { micros = 100 }).DependsOn(b).DependsOn(c, EdgeKind.Hard, weight: 5); // 5 ms transfer
        var graph = engine.Prepare(g);

        var analysis = engine.Analyze(graph);

        Assert.Equal([0, 1, 1, 2], analysis.Levels);
        Assert.Equal([1, 2, 1], analysis.Widths);
        Assert.Equal(["a", "c", "d"], analysis.CriticalPath.Select(graph.IdOf));
        Assert.Equal(0.1 + 0.01 + 5 + 0.1, analysis.CriticalPathMs, 6);
        var dot = analysis.ToDot(graph.Graph);
        Assert.Contains("\"c\" -> \"d\" [label=\"5\", color=red, penwidth=2];", dot);
    }

    [Fact]
    public void TryBuild_CalledTwice_ReportsTheSameProblems()
    {
        var g = new GraphBuilder();
        g.Task("a", "noop").DependsOn("missing");
        g.Task("b", "noop").DependsOn("b");
        g.TryBuild(out var first);
        g.TryBuild(out var second);
        Assert.Equal(first, second);
        Assert.Equal(["self-loop", "unknown-dependency"], first.Select(e => e.Code).Order());
    }
}

public class PreparedGraphTests
{
    [Fact]
    public async Task Prepare_TwoEnginesOnOneGraphConcurrently_EachKeepsItsOwnParse()
    {
        // One graph, two engines whose 'scale' handlers parse the same args differently.
        var g = new GraphBuilder();
        for (int i = 0; i < 2000; i++) g.Task($"t{i}", "scale", new { x = i });
        var graph = g.Build();
        TaskMeshEngine Engine(int factor)
        {
            var e = new TaskMeshEngine();
            e.Handlers.Register(new TaskMesh.Engine.Handlers.HandlerDescriptor("scale", (ctx, a, ct) => new ValueTask<object?>(ctx.ParsedArgs<int[]>()![0]))
            {
                Validate = a => (new[] { a.GetProperty("x").GetInt32() * factor }, []),
            });
            return e;
        }
        var engines = new[] { Engine(1), Engine(-1) };
        for (int round = 0; round < 20; round++)
        {
            var prepared = await Task.WhenAll(engines.Select(e => Task.Run(() => e.Prepare(graph))));
            for (int k = 0; k < 2; k++)
            {
                int sign = k == 0 ? 1 : -1;
                for (int i = 0; i < graph.Count; i += 97)
                    Assert.Equal(sign * i, ((int[])prepared[k].ParsedArgsOf(i)!)[0]);
            }
            var results = await Task.WhenAll(engines.Select((e, k) => e.RunAsync(prepared[k], new RunOptions { KeepOutputs = true })));
            Assert.Equal(-1999, results[1].OutputOf(1999));
            Assert.Equal(1999, results[0].OutputOf(1999));
        }
        // The graph itself was never written by validation: a third engine without the handler refuses it.
        Assert.Throws<GraphValidationException>(() => new TaskMeshEngine().Prepare(graph));
    }
}

public class GraphBuilderTests
{
    [Fact]
    public void Build_ThenChangeTheBuilder_LeavesTheBuiltGraphAsItWas()
    {
        var g = new GraphBuilder("g");
        var a = g.Task("a", "noop").WithRetries(1);
        g.Task("b", "noop").DependsOn(a);
        g.Defaults.Retries = 2;
        var first = g.Build();

        a.WithRetries(5).WithPriority(TaskPriority.High);
        g.Defaults.Retries = 7;
        int more = g.AddTasks(3, "spin");
        g.AddEdge(1, more, EdgeKind.Data, 2.5);
        var second = g.Build();

        Assert.Equal((2, 1), (first.Count, first.EdgeCount));
        Assert.Equal(1, first.SpecOf(0)!.Retries);
        Assert.Equal(TaskPriority.Normal, first.PriorityOf(0));
        Assert.Equal(2, first.Defaults.Retries);
        Assert.False(first.HasDataEdges);
        Assert.Equal((5, 2), (second.Count, second.EdgeCount));
        Assert.Equal(5, second.SpecOf(0)!.Retries);
        Assert.Equal(TaskPriority.High, second.PriorityOf(0));
        Assert.Equal("spin", second.HandlerOfTask(more));
        Assert.True(second.HasDataEdges);
        Assert.Equal([more], second.SuccessorsOf(1).ToArray());
    }

    [Fact]
    public void AddTasksAndAddEdge_IndexBasedGraph_MatchesTheTaskRefBuiltOne()
    {
        var byIndex = new GraphBuilder();
        int first = byIndex.AddTasks(1000, "noop");
        for (int i = 1; i < 1000; i++) byIndex.AddEdge(first + (i - 1) / 2, first + i);
        var byRef = new GraphBuilder();
        var refs = Enumerable.Range(0, 1000).Select(_ => byRef.Task("noop")).ToArray();
        for (int i = 1; i < 1000; i++) refs[i].DependsOn(refs[(i - 1) / 2]);
        var x = byIndex.Build();
        var y = byRef.Build();
        for (int i = 0; i < 1000; i++)
        {
            Assert.Equal(y.SuccessorsOf(i).ToArray(), x.SuccessorsOf(i).ToArray());
            Assert.Equal(y.PredecessorsOf(i).ToArray(), x.PredecessorsOf(i).ToArray());
            Assert.Equal(y.IdOf(i), x.IdOf(i));
        }
        Assert.Throws<ArgumentOutOfRangeException>(() => byIndex.AddEdge(0, 1000));
        Assert.Throws<ArgumentOutOfRangeException>(() => byIndex.AddEdge(-1, 3));
    }
}
