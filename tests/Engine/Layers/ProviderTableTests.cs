using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;
using TaskMesh.QuantumSim;
using Xunit;

namespace TaskMesh.Tests.Engine.Layers;

/// <summary>The provider table: <c>[layers.NAME]</c>, cascades of one kind, capability tags.</summary>
public class ProviderTableTests
{
    private const string Table = """
        [layers.local]
        capabilities = ["cpu"]

        [layers.quantum]
        precision = "single"
        price_per_second = 0.5

        [layers.quantum-double]
        kind = "quantum"
        precision = "double"
        price_per_second = 1.0
        rank = 20
        norm_tolerance = 1e-15

        [layers.gpu]
        kind = "local"
        capacity = 2
        price_per_second = 3
        rank = 30
        capabilities = ["gpu", "high-memory"]

        [layers.spare]
        kind = "local"
        enabled = false

        [quantum]
        norm_tolerance = 1e-15
        """;

    private static readonly string DriftyQasm = "OPENQASM 2.0; include \"qelib1.inc\"; qreg q[6]; "
        + string.Concat(Enumerable.Range(0, 60).Select(i => $"u3({0.1 * i},{0.2 * i},{0.3 * i}) q[{i % 6}]; cx q[{i % 6}],q[{(i + 1) % 6}]; "));

    [Fact]
    public void Config_LayersSections_MakeTheEnginesLayers_InOrder_WithTheirSettings()
    {
        var config = TaskMeshConfig.Parse(Table);
        Assert.Equal(["local", "quantum", "quantum-double", "gpu", "spare"], config.Layers.Select(l => l.Name));
        var engine = new TaskMeshEngine(config.ToEngineOptions());

        Assert.Equal(["local", "quantum", "quantum-double", "gpu"], engine.Layers.Select(l => l.Name));   // spare is disabled
        var byName = engine.Layers.ToDictionary(l => l.Name);
        Assert.Equal(("local", 0, 0.0), (byName["local"].Kind, byName["local"].Rank, byName["local"].PricePerSecond));
        Assert.Equal(["cpu"], byName["local"].Tags);
        var single = Assert.IsType<QuantumLayer>(byName["quantum"]);
        var dbl = Assert.IsType<QuantumLayer>(byName["quantum-double"]);
        Assert.Equal((10, 0.5, Precision.Single, "quantum-double"), (single.Rank, single.PricePerSecond, single.Precision, single.EscalatesTo));
        Assert.Equal((20, 1.0, Precision.Double, (string?)null), (dbl.Rank, dbl.PricePerSecond, dbl.Precision, dbl.EscalatesTo));
        Assert.Equal(("local", 2, 30), (byName["gpu"].Kind, byName["gpu"].Capacity, byName["gpu"].Rank));
    }

    [Fact]
    public void Config_WithoutLayers_KeepsLocalAndQuantum_AndAQuantumLayerEscalatesToNoLayer()
    {
        var engine = new TaskMeshEngine(TaskMeshConfig.Parse("[general]\nprogress = \"none\"\n").ToEngineOptions());
        Assert.Equal(["local", "quantum"], engine.Layers.Select(l => l.Name));
        Assert.Equal(10, engine.Layers[1].Rank);
        Assert.Null(Assert.IsType<QuantumLayer>(engine.Layers[1]).EscalatesTo);
    }

    [Theory]
    [InlineData("[layers.x]\ncapacity = 2\n", "t.toml:1: [layers.x] needs kind = \"local\" or \"quantum\"")]
    [InlineData("[layers.x]\nkind = \"gpu\"\n", "t.toml:2: key 'layers.x.kind' must be one of local, quantum")]
    [InlineData("[layers.local]\nkind = \"quantum\"\n", "t.toml:1: [layers.local]: the layer named local must be of kind local")]
    [InlineData("[layers.local]\nenabled = false\n", "t.toml:1: [layers.local]: the local layer cannot be disabled")]
    [InlineData("[layers.x]\nkind = \"local\"\nprecision = \"double\"\n", "t.toml:1: [layers.x]: precision is a quantum setting; this layer is of kind local")]
    [InlineData("[layers.x]\nkind = \"local\"\ncapabilities = [\"a b\"]\n", "t.toml:3: key 'layers.x.capabilities' has 'a b', which is not a tag")]
    [InlineData("[layers.x]\nkind = \"local\"\nprice_per_second = -1\n", "t.toml:3: key 'layers.x.price_per_second' is -1; it must be between 0")]
    [InlineData("[layers.x]\nkind = \"local\"\ncolour = 1\n", "t.toml:3: key 'layers.x.colour' is not a layer setting")]
    [InlineData("[layers.auto]\nkind = \"local\"\n", "t.toml:1: [layers.auto]: 'auto' is not a valid layer name")]
    public void Config_BadLayerSections_AreRefused_NamingTheKeyAndLine(string toml, string expected)
    {
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse(toml, "t.toml"));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public async Task Cascade_ADriftingSinglePrecisionCircuit_EscalatesToTheDoubleLayer_AsAnOrdinaryEscalation()
    {
        var engine = new TaskMeshEngine(TaskMeshConfig.Parse(Table).ToEngineOptions());
        var g = new GraphBuilder("cascade");
        g.Task("drifty", "quantum", new { qasm = DriftyQasm });
        var r = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true, KeepOutputs = true });

        Assert.Equal(RunStatus.Succeeded, r.Status);
        var esc = Assert.Single(r.Escalations);
        Assert.Equal(("drifty", "quantum", "quantum-double", "low_confidence"), (esc.TaskId, esc.From, esc.To, esc.Trigger));
        var t = r.TaskResultOf(0);
        Assert.Equal((2, "quantum", "quantum-double"), (t.Attempts, t.InitialLayer, t.Layer));
        Assert.Equal(Precision.Double, Assert.IsType<QuantumOutput>(r.OutputOf(0)).Result.Precision);
        // Each attempt is charged at its own layer's price: the single-precision attempt to quantum, the rest to quantum-double.
        Assert.True(r.CostByLayer["quantum"] > 0, "the first attempt's layer is charged");
        Assert.True(r.CostByLayer["quantum-double"] > 0);
        double seconds = r.TaskResultOf(0).DurationMs!.Value / 1000;
        Assert.InRange(r.CostByLayer["quantum"] / 0.5 + r.CostByLayer["quantum-double"] / 1.0, seconds * 0.999, seconds * 1.001);   // the whole duration, split by price
    }

    [Fact]
    public async Task Requires_RoutesATaskToTheLayerWithItsCapabilities_AndRefusesWhatNoLayerHas()
    {
        var engine = new TaskMeshEngine(TaskMeshConfig.Parse(Table).ToEngineOptions());
        var g = new GraphBuilder("needs");
        g.Task("plain", "sleep", new { millis = 1 });
        g.Task("on-gpu", "sleep", new { millis = 1 }).Requires("gpu");
        g.Task("cpu", "sleep", new { millis = 1 }).Requires("cpu");
        var r = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true });
        Assert.Equal(RunStatus.Succeeded, r.Status);
        Assert.Equal(["local", "gpu", "local"], Enumerable.Range(0, 3).Select(i => r.TaskResultOf(i).Layer));

        var bad = new GraphBuilder("bad");
        bad.Task("tpu", "noop").Requires("tpu");
        bad.Task("forced", "noop").OnLayer("local").Requires("gpu");
        var ex = Assert.Throws<GraphValidationException>(() => engine.Prepare(bad));
        Assert.Contains(ex.Errors, e => e.TaskId == "tpu" && e.Message.Contains("requires tpu: no layer that runs handler 'noop' has them all") && e.Message.Contains("gpu: gpu, high-memory"));
        Assert.Contains(ex.Errors, e => e.TaskId == "forced" && e.Message.Contains("requires gpu, which layer 'local' does not have (it has: cpu)"));
    }

    [Fact]
    public void Requires_InAGraphFile_IsReadAsTheTasksCapabilities()
    {
        var engine = new TaskMeshEngine(TaskMeshConfig.Parse(Table).ToEngineOptions());
        var bad = """{"tasks":[{"id":"b","handler":"noop","requires":"gpu"}]}""";
        var ex = Assert.Throws<GraphValidationException>(() => engine.Prepare(GraphLoader.LoadText(bad, "g.json"), "."));
        Assert.Contains(ex.Errors, e => e.TaskId == "b" && e.Message.Contains("'requires'"));
        var ok = engine.Prepare(GraphLoader.LoadText("""{"tasks":[{"id":"a","handler":"noop","requires":["gpu","high-memory"]}]}""", "g.json"), ".");
        Assert.Equal(["gpu", "high-memory"], ok.Graph.Spec(0)!.Requires!);
    }
}
