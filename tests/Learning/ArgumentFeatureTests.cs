using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Hosting;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers.Local;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;
using Xunit;

namespace TaskMesh.Tests.Learning;

/// <summary>The router learns from the numbers tasks state in their own arguments, under names it was never told.</summary>
public sealed class ArgumentFeatureTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-argfeatures-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void Collect_TakesNumbersFlagsAndLengths_TopLevelAndOneDown_NotTheWellKnownMeasures_NorBadNames()
    {
        using var doc = JsonDocument.Parse("""
            {"rows": 1200, "prompt": "hello", "files": [1, 2, 3], "precise": true, "input": {"pages": 7, "title": "ab", "deep": {"x": 1}},
             "micros": 50, "bad name": 3, "<script>": 4, "text": null}
            """);
        var list = new List<KeyValuePair<string, double>>();
        ArgumentFeatures.Collect(doc.RootElement, null, list);
        Assert.Equal(new Dictionary<string, double>
        {
            ["rows"] = 1200, ["prompt.length"] = 5, ["files.length"] = 3, ["precise"] = 1, ["input.pages"] = 7, ["input.title.length"] = 2,
        }, list.ToDictionary(kv => kv.Key, kv => kv.Value));
        // Kept and read back as the run store keeps them.
        Assert.Equal(list, ArgumentFeatures.FromJson(ArgumentFeatures.ToJson(list)));
        Assert.Empty(ArgumentFeatures.FromJson("{not json"));
    }

    [Fact]
    public void ParsedArguments_StateFeaturesOfTheirOwn_WhichWinOverTheJsonsOnAName()
    {
        using var doc = JsonDocument.Parse("""{"rows": 10}""");
        var list = new List<KeyValuePair<string, double>>();
        ArgumentFeatures.Collect(doc.RootElement, new Stated([new("rows", 99), new("pages", 3), new("no good", 1)]), list);
        Assert.Equal([new("rows", 99), new("pages", 3)], list);
    }

    private sealed record Stated(IEnumerable<KeyValuePair<string, double>> StatedFeatures) : IStatedFeatures;

    /// <summary>
    /// Database jobs sized by <c>rows</c>: on "small" a job fails past 10⁵ rows and takes rows/1000 ms;
    /// on "big" it succeeds and takes 5 + rows/100000 ms. <c>seed</c> is an argument that does not matter.
    /// </summary>
    internal static List<TrainingRow> RowsHistory(int n, int seed)
    {
        var rng = new Random(seed);
        var rows = new List<TrainingRow>();
        for (int i = 0; i < n; i++)
        {
            double count = Math.Round(Math.Pow(10, 2 + 5 * rng.NextDouble()));
            bool small = rng.Next(2) == 0;
            bool fails = small && rng.NextDouble() < 1 / (1 + Math.Exp(-(Math.Log10(count) - 5) * 6));
            double ms = small ? count / 1000 : 5 + count / 100_000;
            var args = ArgumentFeatures.ToJson([new("rows", count), new("seed", rng.Next(1_000_000))]);
            var features = new float[FeatureExtractor.Count];
            rows.Add(new TrainingRow("query", small ? "small" : "big", fails ? "big" : small ? "small" : "big", "succeeded", ms, fails ? 1 : 0, features, null)
            {
                ArgumentFeatures = args, LastAttemptMs = fails ? 5 + count / 100_000 : ms, FirstAttemptMs = fails ? null : ms,
            });
        }
        return rows;
    }

    [Fact]
    public void Training_ChoosesTheArgumentThatMatters_NotTheOneThatDoesNot_TheSameForTheSameRows_AndSavesIt()
    {
        var models = ModelTrainer.Train(RowsHistory(2000, seed: 3));
        var chosen = models.Arguments.Of("query");
        Assert.Equal("rows", chosen[0].Name);
        Assert.True(chosen[0].Log);                                   // 10² to 10⁷: log-scaled
        Assert.DoesNotContain(chosen, f => f.Name == "seed");         // does not matter: left out
        Assert.True(models.Accuracy.Single(a => a.Layer == "small").SuccessAuc >= 0.9);
        // Deterministic: the same rows, the same choice.
        var again = ModelTrainer.Train(RowsHistory(2000, seed: 3));
        Assert.Equal(chosen, again.Arguments.Of("query"));
        // Saved with the version, read back with it.
        models.Save(Path.Combine(_dir, "v1"), 1);
        var loaded = TrainedModels.Load(Path.Combine(_dir, "v1"), out var problem);
        Assert.Null(problem);
        Assert.Equal(chosen, loaded!.Arguments.Of("query"));
        Assert.Equal(chosen, ModelFiles.ArgumentsOf(Path.Combine(_dir, "v1"))!.Of("query"));
        // A limit of 0: no argument features, as before they existed.
        Assert.Equal(0, ModelTrainer.Train(RowsHistory(500, seed: 3), argumentFeatures: 0).Arguments.Slots);
    }

    [Fact]
    public void CompiledTrees_ScoreABatchAsMlNetScoresEachTask_WithArgumentSlots()
    {
        var models = ModelTrainer.Train(RowsHistory(1500, seed: 9));
        Assert.True(models.InputLength > FeatureExtractor.LayerFeatures);
        var rng = new Random(2);
        foreach (var layer in new[] { "small", "big" })
        {
            Assert.True(models.IsCompiled(layer));
            var batch = Enumerable.Range(0, 37).Select(i =>
            {
                var f = new float[models.InputLength];
                for (int k = 0; k < f.Length; k++) f[k] = (float)(rng.NextDouble() * 8);
                if (i % 5 == 0) f[^1] = float.NaN;   // NaN goes where ML.NET sends it
                return (i % 3 == 0 ? "never-seen" : "query", f);
            }).ToList();
            var (ms, confidence) = models.PredictMany(layer, batch);
            for (int i = 0; i < batch.Count; i++)
            {
                double reference = models.EngineDurationMs(layer, batch[i].Item1, batch[i].f)!.Value;
                Assert.True(Math.Abs(ms[i]!.Value - reference) <= 1e-4 * Math.Max(1, reference), $"{layer} task {i}: duration {ms[i]} vs ML.NET {reference}");
                if (models.EngineConfidence(layer, batch[i].Item1, batch[i].f) is double p) Assert.Equal(p, confidence[i]!.Value, 1e-6);
            }
            // The two evaluations of the compiled trees — scanning their bit vectors, walking them —
            // give the same numbers to the last bit, for every batch size (the walks go four tasks
            // at a time, the rest four trees at a time), and so does one task alone.
            var (durationTrees, successTrees) = models.CompiledOf(layer);
            Assert.NotNull(durationTrees);
            foreach (var trees in new[] { durationTrees, successTrees }.OfType<TaskMesh.Learning.Models.CompiledTrees>())   // a layer of one outcome has no success model
            {
                Assert.True(trees.CanScan);
                foreach (int size in new[] { 1, 3, 4, 7, batch.Count })
                {
                    var part = batch.Take(size).ToList();
                    var (scanned, walked) = (new double[size], new double[size]);
                    trees.PredictMany(part, scanned, scan: true);
                    trees.PredictMany(part, walked, scan: false);
                    Assert.Equal(walked, scanned);
                    Assert.Equal(walked[0], trees.Predict(part[0].Item1, part[0].f));
                }
                // The features split on along a task's paths (a decision's drivers): the same from the
                // scan's leaves as from a walk, and from the leaves a batch's scan kept for the task.
                var kept = new byte[batch.Count * trees.TreeCount];
                var scores = new double[batch.Count];
                trees.PredictMany(batch, scores, scan: true, kept);
                for (int i = 0; i < batch.Count; i++)
                {
                    var (fromScan, fromWalk, fromKept) = (new int[trees.FeatureLength + 1], new int[trees.FeatureLength + 1], new int[trees.FeatureLength + 1]);
                    trees.SplitsOnPath(batch[i].Item1, batch[i].f, fromScan, 20, scan: true);
                    trees.SplitsOnPath(batch[i].Item1, batch[i].f, fromWalk, 20, scan: false);
                    trees.SplitsOnLeaves(kept.AsSpan(i * trees.TreeCount, trees.TreeCount), fromKept, 20);
                    Assert.Equal(fromWalk, fromScan);
                    Assert.Equal(fromWalk, fromKept);
                    Assert.True(fromWalk.Sum() >= 20, "every tree of the first 20 has a split on the path");
                }
            }
            // A decision's drivers, as the router reads them: from the leaves the layer's batch kept, the same as by scoring the task again.
            models.PredictMany(layer, batch, out var driverLeaves);
            Assert.NotNull(driverLeaves);
            int perTask = driverLeaves!.Length / batch.Count;
            for (int i = 0; i < batch.Count; i++)
                Assert.Equal(models.DriversOf(layer, batch[i].Item1, batch[i].f), models.DriversOf(layer, batch[i].Item1, batch[i].f, driverLeaves.AsSpan(i * perTask, perTask)));
        }
    }

    /// <summary>An engine with the two layers of <see cref="RowsHistory"/> and a <c>query</c> handler that takes any arguments.</summary>
    private static TaskMeshEngine Engine()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.Register(new HandlerDescriptor("query", (ctx, a, ct) => new ValueTask<object?>((object?)null)));
        var small = new LocalLayer(4, "small");
        small.Configure(0, 5);
        var big = new LocalLayer(4, "big");
        big.Configure(1, 10);
        engine.AddLayer(small);
        engine.AddLayer(big);
        engine.Layers[0].Configure(0, 0);
        return engine;
    }

    [Fact]
    public void AfterTraining_SmallAndLargeValuesOfTheHandlersOwnArgument_GoToDifferentLayers_AndAnUnseenArgumentDoesNotBreakRouting()
    {
        var models = ModelTrainer.Train(RowsHistory(2000, seed: 5));
        var engine = Engine();
        var g = new GraphBuilder("jobs");
        g.Task("few", "query", new { rows = 300 });
        g.Task("many", "query", new { rows = 3_000_000 });
        g.Task("other", "query", new { rows = 300, never_seen_before = 12345, note = "x" });
        g.Task("none", "query");
        var prepared = engine.Prepare(g);
        var router = new LearnedRouter(models, new RoutingOptions { MinConfidence = 0.7 });
        var context = RoutingContext.For(prepared, engine.Layers.Where(l => l.Name != "local").ToList());
        var decisions = new RouteDecision[4];
        router.RouteBatch(context, [0, 1, 2, 3], decisions);
        Assert.Equal("small", decisions[0].Layer);   // free and confident enough
        Assert.Equal("big", decisions[1].Layer);     // small would fail
        Assert.Equal("small", decisions[2].Layer);   // the unseen argument changes nothing
        Assert.NotNull(decisions[3].Layer);          // stating nothing: routed on what the model knows
        Assert.Contains("rows", decisions[1].Reason);   // the decision names the features that drove it
    }

    [Fact]
    public void TheKindOfATask_DependsOnItsOwnArguments()
    {
        var models = ModelTrainer.Train(RowsHistory(2000, seed: 5));
        var engine = Engine();
        var g = new GraphBuilder("kinds");
        g.Task("a", "query", new { rows = 1000 });
        g.Task("b", "query", new { rows = 10_000 });
        g.Task("c", "query", new { rows = 1000, seed = 77 });
        g.Task("d", "query", new { rows = 1001 });
        var prepared = engine.Prepare(g);
        var features = new FeatureExtractor(prepared);
        // With the models' choice: rows by its bins; seed (not chosen) does not split kinds.
        Assert.NotEqual(features.KindOf(0, models.Arguments), features.KindOf(1, models.Arguments));
        Assert.Equal(features.KindOf(0, models.Arguments), features.KindOf(2, models.Arguments));
        Assert.Equal(features.KindOf(0, models.Arguments), features.KindOf(3, models.Arguments));
        // Without models: every stated number by quarter decades.
        Assert.NotEqual(features.KindOf(0), features.KindOf(1));
        Assert.NotEqual(features.KindOf(0), features.KindOf(2));
    }

    [Fact]
    public void ModelsTrainedBeforeArgumentFeatures_StillLoad_AndRouteOnTheFixedFeatures()
    {
        var models = ModelTrainer.Train(RowsHistory(800, seed: 8), argumentFeatures: 0);
        var folder = Path.Combine(_dir, "old");
        models.Save(folder, 1);
        // The manifest as format 1 wrote it: no arguments.
        var manifest = Path.Combine(folder, "manifest.json");
        var json = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
        json["format"] = 1;
        json.Remove("arguments");
        json["features"] = new System.Text.Json.Nodes.JsonArray(FeatureExtractor.Names.Take(FeatureExtractor.LayerFeatures).Select(n => (System.Text.Json.Nodes.JsonNode)n!).ToArray());
        File.WriteAllText(manifest, json.ToJsonString());
        var loaded = TrainedModels.Load(folder, out var problem);
        Assert.Null(problem);
        Assert.Equal(0, loaded!.Arguments.Slots);
        var engine = Engine();
        var g = new GraphBuilder("old");
        g.Task("a", "query", new { rows = 5 });
        var prepared = engine.Prepare(g);
        var decision = new LearnedRouter(loaded).Route(RoutingContext.For(prepared, engine.Layers), 0);
        Assert.NotNull(decision.Layer);
        // A manifest from a newer format is refused with a message, never a crash.
        json["format"] = 99;
        File.WriteAllText(manifest, json.ToJsonString());
        Assert.Null(TrainedModels.Load(folder, out problem));
        Assert.Contains("model format 99", problem);
    }
}

/// <summary>The whole loop with a handler of the user's own: real runs recorded in a real store, trained, listed and predicted from.</summary>
public sealed class ArgumentFeatureLoopTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-argloop-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private const string Config = """
        [layers.big]
        kind = "local"
        rank = 10
        price_per_second = 1

        [[escalation.rules]]
        from = "local"
        to = "big"
        trigger = "error"

        [learning]
        enabled = false
        """;

    /// <summary>A handler in its own words: a query of <c>rows</c> rows fails its first attempt past 10⁵ rows (on local, where the cold-start router sends it), and succeeds on the layer the failure escalates it to.</summary>
    private static void AddQuery(TaskMeshRuntime runtime)
        => runtime.Engine.Handlers.Register(new HandlerDescriptor("query", (ctx, a, ct) =>
        {
            double rows = a.TryGetProperty("rows", out var r) ? r.GetDouble() : 0;
            if (ctx.Attempt == 1 && rows > 100_000) throw new TaskFailedException($"{rows} rows is too many here");
            return new ValueTask<object?>(rows);
        }));

    private static PreparedGraph Graph(TaskMeshRuntime runtime, string name, IEnumerable<double> rows)
    {
        var json = JsonSerializer.Serialize(new { name, tasks = rows.Select((r, i) => new { id = $"q{i}", handler = "query", args = new { rows = r, client = "batch" } }).ToArray() });
        return runtime.Engine.Prepare(GraphLoader.Load(System.Text.Encoding.UTF8.GetBytes(json), "g.json"));
    }

    [Fact]
    public async Task AHandlersOwnArgument_IsRecorded_Learned_ListedByModels_AndNamedByPredict()
    {
        var store = Path.Combine(_dir, "runs.db");
        var services = new ServiceCollection();
        services.AddTaskMesh(TaskMesh.Engine.Configuration.TaskMeshConfig.Parse(Config)).AddSqliteStore(store);
        using (var provider = services.BuildServiceProvider())
        {
            var runtime = provider.GetRequiredService<TaskMeshRuntime>();
            AddQuery(runtime);
            var rng = new Random(4);
            var graph = Graph(runtime, "history", Enumerable.Range(0, 400).Select(_ => Math.Round(Math.Pow(10, 2 + 5 * rng.NextDouble()))));
            var result = await runtime.Prepare(graph, new RunRequest()).Start().Completion;
            Assert.Equal(400, result.Succeeded);
            await runtime.Store!.FlushAsync();
            var rows = runtime.Store.TrainingRows();
            Assert.Equal(400, rows.Count);
            Assert.All(rows, r => Assert.Contains("\"rows\": ", r.ArgumentFeatures));
            var published = await ModelPublisher.TrainAsync(runtime.Store);
            Assert.Equal("rows", published!.Models.Arguments.Of("query")[0].Name);
        }

        // taskmesh models lists the features in use (a real process reading the store).
        var (code, stdout, stderr) = await TaskMesh.Tests.Host.CliTests.Taskmesh(_dir, "models", "--store", store);
        Assert.True(code == 0, stderr);
        Assert.Contains("argument features", stdout);
        Assert.Matches(@"query: rows \(log, [\d.]+\)", stdout);

        // A new run's plan: few rows stay on the free layer, many go to big, and each decision names what drove it.
        var again = new ServiceCollection();
        again.AddTaskMesh(TaskMesh.Engine.Configuration.TaskMeshConfig.Parse(Config)).AddSqliteStore(store);
        using (var provider = again.BuildServiceProvider())
        {
            var runtime = provider.GetRequiredService<TaskMeshRuntime>();
            AddQuery(runtime);
            var plan = runtime.Prepare(Graph(runtime, "now", [300, 3_000_000]), new RunRequest()).Plan();
            Assert.Equal(("local", "big"), (plan.LayerOf(0), plan.LayerOf(1)));
            Assert.Contains("features", plan.ReasonOf(1));
            Assert.Contains("rows", plan.ReasonOf(1));
        }
    }
}

public sealed class ReasonNumberTests
{
    [Theory]
    [InlineData(0.0, 3)]
    [InlineData(1.5, 3)]
    [InlineData(0.0005, 3)]
    [InlineData(0.00049, 3)]
    [InlineData(12.3456789, 3)]
    [InlineData(999.9999, 3)]
    [InlineData(1234567.25, 3)]
    [InlineData(0.1234564, 6)]
    [InlineData(0.000001, 6)]
    [InlineData(42.0, 6)]
    [InlineData(-3.25, 3)]
    [InlineData(0.7, 3)]
    public void TheDecisionsNumbers_ReadAsTheFormatZeroPointHashesWritesThem(double x, int decimals)
    {
        var text = TaskMesh.Learning.Routing.LearnedRouter.Decimal(new System.Text.StringBuilder(), x, decimals).ToString();
        Assert.Equal(x.ToString("0." + new string('#', decimals), System.Globalization.CultureInfo.InvariantCulture), text);
    }
}
