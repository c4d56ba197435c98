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

/// <summary>
/// The router decides once per kind of task. Under <c>auto</c> a kind whose tasks lie on both sides
/// of where a layer's confidence crosses the floor is cut where the model cuts it, so that every
/// task gets the layer its own confidence calls for.
/// </summary>
public sealed class KindSplitTests
{
    /// <summary>An engine with a handler that takes any arguments and two layers: "small" (free) and "big" (price 1).</summary>
    private static TaskMeshEngine Engine(string handler = "query")
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.Register(new HandlerDescriptor(handler, (ctx, a, ct) => new ValueTask<object?>((object?)null)));
        var small = new LocalLayer(4, "small");
        small.Configure(0, 5);
        var big = new LocalLayer(4, "big");
        big.Configure(1, 10);
        engine.AddLayer(small);
        engine.AddLayer(big);
        return engine;
    }

    [Fact]
    public void UnderAuto_EveryTaskOfAKind_GetsTheLayerItsOwnConfidenceCallsFor_EvenWhereTheKindStraddlesTheFloor()
    {
        // "small" fails past ~10⁵ rows; "big" never fails. Rows drawn around that edge, so that kinds
        // (bins of the rows' training range) straddle it.
        var models = ModelTrainer.Train(ArgumentFeatureTests.RowsHistory(2000, seed: 5));
        var engine = Engine();
        var rng = new Random(11);
        var g = new GraphBuilder("edge");
        const int n = 400;
        for (int i = 0; i < n; i++) g.Task($"t{i}", "query", new { rows = Math.Round(Math.Pow(10, 4.3 + rng.NextDouble())) });
        var prepared = engine.Prepare(g);
        var features = new FeatureExtractor(prepared);
        const double floor = 0.7;
        var router = new LearnedRouter(models, new RoutingOptions { MinConfidence = floor });
        var context = RoutingContext.For(prepared, engine.Layers.Where(l => l.Name != "local").ToList());
        var decisions = new RouteDecision[n];
        router.RouteBatch(context, Enumerable.Range(0, n).ToArray(), decisions);

        // What each task's own confidence on "small" calls for: small is free, so it is taken whenever it meets the floor.
        var own = Enumerable.Range(0, n).Select(t => models.PredictConfidence("small", "query", features.ModelInput(t, models.Arguments)) >= floor ? "small" : "big").ToArray();
        Assert.Contains("small", own);
        Assert.Contains("big", own);
        // The test means something: some kind holds tasks on both sides (one decision per kind would send one of them wrong).
        var byKind = Enumerable.Range(0, n).GroupBy(t => features.KindOf(t, models.Arguments));
        Assert.Contains(byKind, kind => kind.Select(t => own[t]).Distinct().Count() > 1);
        for (int t = 0; t < n; t++) Assert.True(own[t] == decisions[t].Layer, $"task {t} ({prepared.Graph.Spec(t)?.Args}): {decisions[t].Layer}, its own confidence calls for {own[t]}");

        // Routed again (the hot path: each task's kind looked up), and by kinds as the engine routes: the same layers.
        var again = new RouteDecision[n];
        router.RouteBatch(context, Enumerable.Range(0, n).ToArray(), again);
        Assert.Equal(decisions.Select(d => d.Layer), again.Select(d => d.Layer));
        var fresh = new LearnedRouter(models, new RoutingOptions { MinConfidence = floor });
        var kinds = new int[n];
        fresh.KindsOf(context, Enumerable.Range(0, n).ToArray(), kinds);
        Assert.Equal(own, kinds.Select(k => fresh.DecisionOfKind(context, k).Layer));
    }

    [Fact]
    public void TheBoundsOfAModelOverABox_HoldEveryPredictionInIt_AndAreThePredictionForAPoint()
    {
        var models = ModelTrainer.Train(ArgumentFeatureTests.RowsHistory(1500, seed: 9));
        var trees = models.CompiledOf("small").Success!;
        int length = models.InputLength;
        var rng = new Random(4);
        for (int box = 0; box < 40; box++)
        {
            var (low, high) = (new float[length], new float[length]);
            for (int k = 0; k < length; k++)
            {
                float a = (float)(rng.NextDouble() * 8), b = (float)(rng.NextDouble() * 8);
                (low[k], high[k]) = box % 4 == 0 ? (a, a) : (Math.Min(a, b), Math.Max(a, b));   // every fourth a point
            }
            var (least, most) = trees.Bounds("query", low, high)!.Value;
            Assert.True(least <= most);
            var x = new float[length];
            for (int sample = 0; sample < 50; sample++)
            {
                for (int k = 0; k < length; k++) x[k] = sample == 0 ? low[k] : sample == 1 ? high[k] : low[k] + (float)rng.NextDouble() * (high[k] - low[k]);
                double p = trees.Predict("query", x);
                Assert.True(p >= least - 1e-12 && p <= most + 1e-12, $"box {box}: {p} outside [{least}, {most}]");
            }
            if (box % 4 == 0) Assert.Equal(trees.Predict("query", low), least, 12);
        }
        // Where a box holds no threshold of a feature, the thresholds inside it are none; over the whole line, all of them.
        var all = new List<float>();
        trees.ThresholdsInside(FeatureExtractor.LayerFeatures, float.NegativeInfinity, float.PositiveInfinity, all);
        Assert.NotEmpty(all);
        var none = new List<float>();
        trees.ThresholdsInside(FeatureExtractor.LayerFeatures, all.Max() + 1, all.Max() + 2, none);
        Assert.Empty(none);
    }

    [Fact]
    public void TheCellOfAKind_HoldsTheModelInputOfEveryTaskOfThatKind()
    {
        var models = ModelTrainer.Train(ArgumentFeatureTests.RowsHistory(1500, seed: 9));
        var engine = Engine();
        var rng = new Random(5);
        var g = new GraphBuilder("cells");
        const int n = 600;
        // Few values of each, so that many tasks share a kind: the well-known measures and the handler's own rows.
        for (int i = 0; i < n; i++)
            g.Task($"t{i}", "query", new
            {
                rows = Math.Round(Math.Pow(10, 4 + 0.4 * rng.NextDouble())),
                size = Math.Pow(10, 2 + 0.3 * rng.NextDouble()),
                micros = Math.Pow(10, 3 + 0.3 * rng.NextDouble()),
                gates = rng.Next(20, 40),
                qubits = rng.Next(1, 3),
            });
        var prepared = engine.Prepare(g);
        var features = new FeatureExtractor(prepared);
        var inputs = Enumerable.Range(0, n).Select(t => features.ModelInput(t, models.Arguments)).ToArray();
        int pairs = 0;
        foreach (var kind in Enumerable.Range(0, n).GroupBy(t => features.KindOf(t, models.Arguments)))
        {
            var tasks = kind.ToArray();
            foreach (int a in tasks)
            {
                var (low, high) = (new float[inputs[a].Length], new float[inputs[a].Length]);
                features.KindCell(a, models.Arguments, inputs[a], low, high);
                foreach (int b in tasks)
                {
                    pairs += a != b ? 1 : 0;
                    for (int k = 0; k < low.Length; k++)
                        Assert.True(inputs[b][k] >= low[k] && inputs[b][k] <= high[k], $"feature {k} of task {b} ({inputs[b][k]}) outside the cell of task {a}'s kind [{low[k]}, {high[k]}]");
                }
            }
        }
        Assert.True(pairs > 1000, $"only {pairs} pairs of tasks shared a kind");
    }

    /// <summary>
    /// Image jobs stating <c>width</c> and <c>height</c>: on "small" a job fails once its area passes
    /// 10⁶ pixels (and takes area/10⁵ ms); on "big" it succeeds (1 + area/10⁷ ms); on "big" a job
    /// fails with <paramref name="bigFails"/>.
    /// </summary>
    private static List<TrainingRow> ImagesHistory(int n, int seed, double bigFails = 0)
    {
        var rng = new Random(seed);
        var rows = new List<TrainingRow>();
        for (int i = 0; i < n; i++)
        {
            double width = Math.Round(Math.Pow(10, 1.5 + 2.5 * rng.NextDouble())), height = Math.Round(Math.Pow(10, 1.5 + 2.5 * rng.NextDouble()));
            double area = width * height;
            bool small = rng.Next(2) == 0;
            bool fails = small ? rng.NextDouble() < 1 / (1 + Math.Exp(-(Math.Log10(area) - 6) * 8)) : rng.NextDouble() < bigFails;
            double ms = small ? area / 1e5 : 1 + area / 1e7;
            var args = ArgumentFeatures.ToJson([new("width", width), new("height", height)]);
            rows.Add(new TrainingRow("image", small ? "small" : "big", small && fails ? "big" : small ? "small" : "big", fails && !small ? "failed" : "succeeded", ms, small && fails ? 1 : 0,
                new float[FeatureExtractor.Count], null)
            {
                ArgumentFeatures = args, LastAttemptMs = ms, FirstAttemptMs = fails ? null : ms,
            });
        }
        return rows;
    }

    [Fact]
    public void TwoSizesThatMatterTogether_AreReadAsTheirProduct_WhichIsSavedAndRoutesByTheArea()
    {
        var models = ModelTrainer.Train(ImagesHistory(3000, seed: 7));
        var chosen = models.Arguments.Of("image");
        // The product is a candidate like any stated name, and here it explains most.
        Assert.Equal("height*width", chosen[0].Name);
        Assert.True(chosen[0].Log);
        Assert.Equal(4_000_000, ArgumentSchema.ValueOf("height*width", [new("width", 2000), new("height", 2000)]));
        Assert.Equal(0, ArgumentSchema.ValueOf("height*width", [new("width", 2000)]));   // a task that states one of them: 0, as the model reads a name not stated

        var engine = Engine("image");
        var g = new GraphBuilder("images");
        g.Task("wide", "image", new { width = 5000, height = 60 });      // 3·10⁵ pixels
        g.Task("tall", "image", new { width = 60, height = 5000 });      // the same area
        g.Task("large", "image", new { width = 5000, height = 2000 });   // 10⁷
        g.Task("square", "image", new { width = 6000, height = 6000 });  // 3.6·10⁷
        var prepared = engine.Prepare(g);
        var router = new LearnedRouter(models, new RoutingOptions { MinConfidence = 0.7 });
        var decisions = new RouteDecision[4];
        router.RouteBatch(RoutingContext.For(prepared, engine.Layers.Where(l => l.Name != "local").ToList()), [0, 1, 2, 3], decisions);
        Assert.Equal(["small", "small", "big", "big"], decisions.Select(d => d.Layer));

        // Saved with the version and read back; a name that is not one name or the product of two is refused.
        string dir = Directory.CreateTempSubdirectory("taskmesh-products-").FullName;
        try
        {
            models.Save(Path.Combine(dir, "v1"), 1);
            Assert.Equal(chosen, TrainedModels.Load(Path.Combine(dir, "v1"), out var problem)!.Arguments.Of("image"));
            Assert.Null(problem);
        }
        finally { Directory.Delete(dir, recursive: true); }
        using var bad = System.Text.Json.JsonDocument.Parse("""{"image": [{"name": "a*b*c", "log": true, "score": 1, "share": 1, "min": 0, "max": 1}]}""");
        Assert.Throws<FormatException>(() => ArgumentSchema.Read(bad.RootElement));
    }

    [Fact]
    public void ASuccessModel_IsCalibratedOnTheHeldOutExamples_UnlessTheyHoldTooFewOfAnOutcome()
    {
        var models = ModelTrainer.Train(ImagesHistory(3000, seed: 7, bigFails: 0.01));
        Assert.True(models.CalibratedOnHeldOut("small"));    // fails on a third of its examples
        Assert.NotNull(models.CompiledOf("big").Success);    // both outcomes: a success model…
        Assert.False(models.CalibratedOnHeldOut("big"));     // …but a handful of failures held out: the trainer's calibration
        // The compiled trees apply the calibration the model ends with: ML.NET's numbers.
        var rng = new Random(3);
        foreach (var layer in new[] { "small", "big" })
            for (int i = 0; i < 50; i++)
            {
                var f = new float[models.InputLength];
                for (int k = FeatureExtractor.LayerFeatures; k < f.Length; k++) f[k] = (float)(1.5 + 6 * rng.NextDouble());
                Assert.Equal(models.EngineConfidence(layer, "image", f)!.Value, models.PredictConfidence(layer, "image", f)!.Value, 1e-6);
            }
    }
}
