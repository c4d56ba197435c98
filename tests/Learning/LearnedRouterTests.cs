using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers.Local;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;
using Xunit;

namespace TaskMesh.Tests.Learning;

public class LearnedRouterTests
{
    private static int Col(string name) => FeatureExtractor.Names.ToList().IndexOf(name);

    /// <summary>Two layers beside local: cheap (rank 10, price 0.1) and strong (rank 20, price 1), both with <paramref name="tags"/>.</summary>
    private static TaskMeshEngine Engine(IReadOnlyList<string>? tags = null)
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        var cheap = new LocalLayer(2, "cheap");
        cheap.Configure(0.1, 10, tags);
        var strong = new LocalLayer(2, "strong");
        strong.Configure(1.0, 20, tags);
        engine.AddLayer(cheap);
        engine.AddLayer(strong);
        return engine;
    }

    /// <summary>
    /// A known history of spin tasks: on cheap a task fails when it is long (log_estimate_us &gt; 3,
    /// more than 1 ms) and takes its estimate; on strong it always succeeds, 4× as fast; local is
    /// as cheap as can be but fails everything over 10 µs.
    /// </summary>
    private static TrainedModels Models() => s_models.Value;

    private static readonly Lazy<TrainedModels> s_models = new(TrainModels);

    private static TrainedModels TrainModels()
    {
        var rng = new Random(5);
        var rows = new List<TrainingRow>();
        for (int i = 0; i < 2400; i++)
        {
            var f = new float[FeatureExtractor.Count];
            double us = Math.Pow(10, rng.NextDouble() * 6);
            f[Col("log_estimate_us")] = (float)Math.Log10(1 + us);
            f[Col("log_micros")] = f[Col("log_estimate_us")];
            string layer = (i % 3) switch { 0 => "cheap", 1 => "strong", _ => "local" };
            bool ok = layer switch { "cheap" => us <= 1000, "local" => us <= 10, _ => true };
            double ms = us / 1000 / (layer == "strong" ? 4 : 1);
            rows.Add(new TrainingRow("spin", layer, layer, ok ? "succeeded" : "failed", ms, 0, f, null));
        }
        return ModelTrainer.Train(rows);
    }

    private static PreparedGraph Spins(TaskMeshEngine engine, params int[] micros)
    {
        var g = new GraphBuilder("spins");
        for (int i = 0; i < micros.Length; i++) g.Task($"s{i}", "spin", new { micros = micros[i] });
        return engine.Prepare(g);
    }

    private static async Task<string[]> LayersChosen(TaskMeshEngine engine, PreparedGraph graph)
    {
        var r = await engine.RunAsync(graph, new RunOptions { CollectTaskDetails = true });
        Assert.Equal(RunStatus.Succeeded, r.Status);
        return Enumerable.Range(0, graph.Count).Select(i => r.TaskResultOf(i).Layer!).ToArray();
    }

    [Fact]
    public async Task Auto_ChoosesTheCheapestConfidentLayer_Cheapest_TheCheapest_Fastest_TheQuickest()
    {
        var models = Models();
        var engine = Engine();
        var graph = Spins(engine, 5, 100, 50_000);   // tiny, small, long

        engine.Router = new LearnedRouter(models, new RoutingOptions { Objective = Objectives.Auto });
        Assert.Equal(["local", "cheap", "strong"], await LayersChosen(engine, graph));

        // Least expected cost: local is free, but the long task fails there and on cheap (a chain of
        // escalations that ends on strong): strong at once is cheaper. The small one almost surely
        // fails on local: starting there saves local's confidence's share of cheap's cost in
        // expectation, under LearnedRouter.CheapTie — so the more confident cheap goes first.
        double smallOnLocal = models.PredictConfidence("local", "spin", new FeatureExtractor(graph).ModelInput(1, models.Arguments))!.Value;
        Assert.True(smallOnLocal < LearnedRouter.CheapTie, $"local's confidence for a task it always failed: {smallOnLocal}");
        engine.Router = new LearnedRouter(models, new RoutingOptions { Objective = Objectives.Cheapest });
        Assert.Equal(["local", "cheap", "strong"], await LayersChosen(engine, graph));
        // Told that failures cost nothing, cheapest keeps everything on the free layer.
        engine.Router = new LearnedRouter(models, new RoutingOptions { Objective = Objectives.Cheapest, FailurePenalty = 0 });
        Assert.Equal(["local", "local", "local"], await LayersChosen(engine, graph));

        engine.Router = new LearnedRouter(models, new RoutingOptions { Objective = Objectives.Fastest });
        Assert.Equal(["strong", "strong", "strong"], await LayersChosen(engine, graph));   // 4× as fast there
    }

    [Fact]
    public async Task Fastest_LeavesALayerWhoseQueueIsLong_AndComesBackWhenItDrains_OnTheSamePreparedGraph()
    {
        var engine = Engine();
        var router = new LearnedRouter(Models(), new RoutingOptions { Objective = Objectives.Fastest });
        var graph = Spins(engine, 50_000);   // predicted 50 ms on cheap and local, 12.5 ms on strong
        var context = TaskMesh.Engine.Routing.RoutingContext.For(graph, engine.Layers);
        Assert.Equal("strong", router.Route(context, 0).Layer);

        // Another run fills strong's two slots and queues ten more behind them.
        var strong = engine.Layers.Single(l => l.Name == "strong");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        var blocker = new GraphBuilder("blocker");
        for (int i = 0; i < 12; i++) blocker.Task($"b{i}", "sleep", new { millis = 60_000 }).OnLayer("strong");
        var blocking = engine.RunAsync(engine.Prepare(blocker), ct: cts.Token);
        // Settled: two running, ten queued (while the run starts, the queue may briefly hold more).
        for (int i = 0; i < 500 && !(strong.Running == 2 && strong.QueueDepth == 10); i++) await Task.Delay(10);
        Assert.Equal(10, strong.QueueDepth);
        var busy = router.Route(context, 0);
        Assert.NotEqual("strong", busy.Layer);   // 8 queued (rounded) ÷ 2 slots × 12.5 ms of wait, + 12.5 ms: 62.5 ms
        Assert.Contains("strong", busy.Reason);

        cts.Cancel();
        await blocking;
        Assert.Equal(0, strong.QueueDepth);
        Assert.Equal("strong", router.Route(context, 0).Layer);   // the same graph, decided again for the empty queue
    }

    /// <summary>The learned router seen only as an <see cref="TaskMesh.Engine.Routing.ILayerRouter"/>: the engine asks task by task (RouteBatch).</summary>
    private sealed class PerTask(LearnedRouter inner) : TaskMesh.Engine.Routing.ILayerRouter
    {
        public bool RoutesPreferredHandlers => inner.RoutesPreferredHandlers;
        public TaskMesh.Engine.Routing.RouteDecision Route(in TaskMesh.Engine.Routing.RoutingContext context, int task) => inner.Route(context, task);
        public void RouteBatch(in TaskMesh.Engine.Routing.RoutingContext context, ReadOnlySpan<int> tasks, Span<TaskMesh.Engine.Routing.RouteDecision> decisions)
            => inner.RouteBatch(context, tasks, decisions);
    }

    /// <summary>Arguments that say how long a task would spin, without spinning.</summary>
    private sealed record EstimateOnly(long Micros) : TaskMesh.Engine.Handlers.IMeasuredArgs
    {
        public TaskMesh.Engine.Handlers.TaskMeasures Measures => new(Micros: Micros);
    }

    /// <summary>Every task's routing decision as observers hear it.</summary>
    private sealed class Routed : TaskMesh.Engine.Observability.IRunObserver
    {
        public readonly System.Collections.Concurrent.ConcurrentDictionary<int, TaskMesh.Engine.Routing.RouteDecision> Decisions = new();
        public TaskMesh.Engine.Observability.RunObserverInterests Interests => TaskMesh.Engine.Observability.RunObserverInterests.TaskRouted;
        public void OnTaskRouted(int task, in TaskMesh.Engine.Routing.RouteDecision decision) => Decisions[task] = decision;
    }

    [Fact]
    public async Task RoutingByKind_GivesEveryTaskTheLayerItsOwnDecisionGives()
    {
        var engine = Engine();
        // "spin" as the models know it (its estimate and its micros), but returning at once.
        engine.Handlers.Register(new TaskMesh.Engine.Handlers.HandlerDescriptor("spin", static (ctx, a, ct) => new ValueTask<object?>((object?)null))
        {
            Validate = static a => (new EstimateOnly(a.GetProperty("micros").GetInt64()), []),
            EstimateMicros = static p => ((EstimateOnly)p!).Micros,
        });
        var micros = Enumerable.Range(0, 3000).Select(i => (int)Math.Pow(10, (i * 7919 % 6000) / 1000.0)).ToArray();   // 1 µs to 1 s, shuffled
        var graph = Spins(engine, micros);
        var router = new LearnedRouter(Models());
        Assert.True(router.RoutesByKind);
        engine.Router = router;
        var byKind = await LayersChosen(engine, graph);
        engine.Router = new PerTask(new LearnedRouter(Models()));
        var perTask = await LayersChosen(engine, graph);
        Assert.Equal(perTask, byKind);
        Assert.Equal(3, byKind.Distinct().Count());   // local, cheap and strong all chosen

        // Observers hear each task's decision — its kind's, kept once per kind — as when asked task by task.
        var heard = new Routed[2];
        for (int pass = 0; pass < 2; pass++)
        {
            engine.Router = pass == 0 ? new LearnedRouter(Models()) : new PerTask(new LearnedRouter(Models()));
            heard[pass] = new Routed();
            await engine.RunAsync(graph, new RunOptions { Observers = [heard[pass]] });
        }
        Assert.Equal(graph.Count, heard[0].Decisions.Count);
        Assert.All(heard[0].Decisions, kv => Assert.Equal(heard[1].Decisions[kv.Key], kv.Value));
        Assert.All(heard[0].Decisions.Values, d => Assert.StartsWith("auto (min confidence 0.7); candidates", d.Reason));
        Assert.False(new LearnedRouter(Models(), new RoutingOptions { Exploration = 0.1 }).RoutesByKind);
        Assert.False(new LearnedRouter(Models(), new RoutingOptions { Budget = 5 }).RoutesByKind);
    }

    [Fact]
    public void ExpectedCost_PricesAFailureAsTheEscalationItLeadsTo()
    {
        // A cheap layer (cost 1, confidence 0.75) under a dear one (cost 2, sure): a failure on the
        // cheap one costs the dear run as well, so the cheap one is worth 1 + 0.25 × 2 = 1.5 — still
        // the better bet. (A fixed penalty of 1 per unit of failure made it 1.25 against 2 in these
        // units, but 251 against 2 in units a thousand times smaller.)
        Assert.Equal([1.5, 2.0], LearnedRouter.ChainExpected([1, 2], [0.75, 1.0]));
        Assert.Equal([1.5 * 1e-3, 2e-3], LearnedRouter.ChainExpected([1e-3, 2e-3], [0.75, 1.0]).Select(x => Math.Round(x, 9)));
        // Three rungs: the top's failures rerun it; an unknown confidence counts as sure.
        var e = LearnedRouter.ChainExpected([1, 4, 10], [0.5, 0.9, 0.8]);
        Assert.Equal(12, e[2], 9);                    // 10 + 0.2 × 10
        Assert.Equal(4 + 0.1 * 12, e[1], 9);
        Assert.Equal(1 + 0.5 * (4 + 0.1 * 12), e[0], 9);
        Assert.Equal([3.0], LearnedRouter.ChainExpected([3], [null]));
    }

    [Fact]
    public async Task Cheapest_PricesALikelyFailureWithItsEscalation()
    {
        // Only cheap and strong have the tag the tasks require (local, free, would take the short one).
        var engine = Engine(tags: ["fast-disk"]);
        var g = new GraphBuilder("spins");
        g.Task("short", "spin", new { micros = 100 }).Requires("fast-disk");
        g.Task("long", "spin", new { micros = 50_000 }).Requires("fast-disk");
        // The long one: 50 ms of cheap's time at 0.1 is 0.005, 12.5 ms of strong's at 1 is 0.0125 — but
        // on cheap it fails, and strong's run is then paid as well: 0.0175 against 0.0125.
        engine.Router = new LearnedRouter(Models(), new RoutingOptions { Objective = Objectives.Cheapest });
        Assert.Equal(["cheap", "strong"], await LayersChosen(engine, engine.Prepare(g)));
    }

    [Fact]
    public async Task ColdStart_ComplexityBandsMapTasksToLayers_AndWithoutBandsTheLeastCapableTakesThem()
    {
        var engine = Engine();
        var graph = Spins(engine, 10, 5_000_000);   // complexity 13 and 84
        engine.Router = new LearnedRouter(null, new RoutingOptions { Bands = [new(40, "cheap"), new(100, "strong")] });
        Assert.Equal(["cheap", "strong"], await LayersChosen(engine, graph));
        engine.Router = new LearnedRouter(null);
        Assert.Equal(["local", "local"], await LayersChosen(engine, graph));
    }

    [Fact]
    public void Decisions_AreMadeOncePerKindOfTask_AndExplorationSendsTheConfiguredShareElsewhere()
    {
        var engine = Engine();
        var models = Models();
        var micros = Enumerable.Repeat(100, 2000).ToArray();
        var graph = Spins(engine, micros);
        var router = new LearnedRouter(models, new RoutingOptions { Exploration = 0.2, Seed = 3 });
        var context = RoutingContextOf(engine, graph);
        var decisions = new TaskMesh.Engine.Routing.RouteDecision[graph.Count];
        router.RouteBatch(context, Enumerable.Range(0, graph.Count).ToArray(), decisions);

        Assert.Equal(1, router.DecisionsMade);
        int explored = decisions.Count(d => d.Layer != "cheap");
        Assert.InRange(explored, 300, 500);   // 20 % of 2,000, give or take
        Assert.All(decisions.Where(d => d.Layer != "cheap"), d => Assert.StartsWith("exploration", d.Reason));
        var chosen = decisions.First(d => d.Layer == "cheap");
        Assert.Contains("auto (min confidence 0.7); candidates cheap:", chosen.Reason);
        Assert.Contains("strong:", chosen.Reason);
        Assert.True(chosen.Confidence > 0.7);
    }

    [Fact]
    public async Task TasksWithoutOptions_AreRoutedOncePerHandler()
    {
        var engine = Engine();
        engine.Handlers.RegisterInline("tiny", _ => null);
        var g = new GraphBuilder("plain").EnsureCapacity(20_000, 0);
        g.AddTasks(10_000, "tiny");
        g.AddTasks(10_000, "noop");
        var router = new LearnedRouter(null);
        engine.Router = router;
        var r = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = false });
        Assert.Equal(20_000, r.Succeeded);
        Assert.Equal(2, router.DecisionsMade);
    }

    [Fact]
    public async Task LowConfidenceRule_MovesATaskWhosePredictedConfidenceIsTooLow_AsItIsRouted()
    {
        var engine = Engine();
        engine.Router = new LearnedRouter(Models(), new RoutingOptions
        {
            Objective = Objectives.Cheapest, FailurePenalty = 0,   // would keep everything on the free local layer
            Rules = [new TaskMesh.Engine.Escalation.EscalationRule("local", "strong", "low_confidence", 0.7)],
        });
        var r = await engine.RunAsync(Spins(engine, 5, 50_000), new RunOptions { CollectTaskDetails = true });
        Assert.Equal(["local", "strong"], Enumerable.Range(0, 2).Select(i => r.TaskResultOf(i).Layer));
        var e = Assert.Single(r.Escalations);
        Assert.Equal(("s1", "local", "strong", "low_confidence"), (e.TaskId, e.From, e.To, e.Trigger));
        Assert.Matches(@"^predicted confidence 0(\.\d+)? < 0\.7 on local \(rule local → strong on low_confidence\)", e.Reason);
    }

    [Fact]
    public async Task ComplexityRule_MovesAComplexTaskUpAsItIsRouted_RecordedStoredAndAuditedAsAnEscalation()
    {
        var engine = Engine();
        var rules = new[] { new TaskMesh.Engine.Escalation.EscalationRule("*", "next", "complexity", 50) };
        engine.Router = new LearnedRouter(null, new RoutingOptions { Rules = rules });
        var g = new GraphBuilder("complex");
        g.Task("simple", "spin", new { micros = 10 });         // complexity 13
        g.Task("complex", "sleep", new { millis = 200 });      // complexity 66.3
        var dir = Directory.CreateTempSubdirectory("taskmesh-complexity-").FullName;
        try
        {
            using var store = RunStore.Open(Path.Combine(dir, "s.db"));
            var r = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true, Observers = [new RunRecorder(store)] });
            await store.FlushAsync();
            Assert.Equal(["local", "cheap"], Enumerable.Range(0, 2).Select(i => r.TaskResultOf(i).Layer));   // cheap: the next rank above local
            var e = Assert.Single(r.Escalations);
            Assert.Equal(("complex", "local", "cheap", "complexity"), (e.TaskId, e.From, e.To, e.Trigger));
            Assert.StartsWith("complexity 66.3 ≥ 50 on local (rule * → next on complexity)", e.Reason);
            Assert.Equal(("complex", "complexity"), (store.EscalationsOf(r.RunId).Single().TaskId, store.EscalationsOf(r.RunId).Single().Trigger));
            Assert.Contains(store.AuditOf(r.RunId, "complex", AuditCategory.Escalation), a => a.Detail.Contains("\"trigger\":\"complexity\""));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Budget_TasksGoWhereTheyStillFit_AndATaskThatFitsNowhereFailsWithoutRunning()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        var cheap = new LocalLayer(2, "cheap");
        cheap.Configure(1, 10, ["x"]);
        var dear = new LocalLayer(2, "dear");
        dear.Configure(10, 20, ["x"]);
        engine.AddLayer(cheap);
        engine.AddLayer(dear);
        var g = new GraphBuilder("budget");
        for (int i = 0; i < 5; i++) g.Task($"t{i}", "sleep", new { millis = 100 }).Requires("x");   // 0.1 on cheap, 1.0 on dear
        g.Task("after", "noop").DependsOn("t4");
        var router = new LearnedRouter(null, new RoutingOptions { Budget = 0.35 });
        engine.Router = router;

        var r = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true });

        Assert.Equal(["cheap", "cheap", "cheap"], Enumerable.Range(0, 3).Select(i => r.TaskResultOf(i).Layer));
        Assert.Equal(0.3, router.PredictedSpend, 6);
        foreach (int i in new[] { 3, 4 })
        {
            var t = r.TaskResultOf(i);
            Assert.Equal(TaskOutcome.Failed, t.Outcome);
            Assert.Contains("over budget: the cheapest layer that can run it (cheap) is predicted to cost 0.1, and 0.05 of the budget of 0.35 is left", t.Error);
            Assert.True(t.DurationMs < 50, "it did not run");
        }
        Assert.Equal(TaskOutcome.Skipped, r.TaskResultOf(5).Outcome);
    }

    private static TaskMesh.Engine.Routing.RoutingContext RoutingContextOf(TaskMeshEngine engine, PreparedGraph graph)
        => TaskMesh.Engine.Routing.RoutingContext.For(graph, engine.Layers);
}
