using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Hosting;
using Xunit;

namespace TaskMesh.Tests.Hosting;

/// <summary>The composition root: one runtime, resolved from the container, makes every run the same way.</summary>
public sealed class CompositionTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-hosting-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static TaskMeshConfig Config(string toml) => TaskMeshConfig.Parse(toml);

    private const string PaidLayer = "[layers.paid]\nkind = \"local\"\nrank = 5\nprice_per_second = 10\ncapabilities = [\"gpu\"]\ncapacity = 8\n";

    private static PreparedGraph GpuTasks(TaskMeshRuntime runtime, int n, string name = "gpu")
    {
        var json = System.Text.Json.JsonSerializer.Serialize(new
        {
            name,
            tasks = Enumerable.Range(0, n).Select(i => new { id = $"t{i}", handler = "sleep", args = new { millis = 100 }, requires = new[] { "gpu" } }).ToArray(),
        });
        return runtime.Engine.Prepare(GraphLoader.Load(System.Text.Encoding.UTF8.GetBytes(json), "g.json"));
    }

    [Fact]
    public void AddTaskMesh_ResolvesOneRuntimeAndEngine_WithTheStoreAndItsRules()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer)).AddSqliteStore(Path.Combine(_dir, "s.db")).AddLearnedRouter("cheapest");
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        Assert.Same(runtime, provider.GetRequiredService<TaskMeshRuntime>());
        Assert.Same(runtime.Engine, provider.GetRequiredService<TaskMeshEngine>());
        Assert.Same(runtime.Store, provider.GetRequiredService<TaskMesh.Engine.Store.RunStore>());
        Assert.Equal(["local", "quantum", "paid"], runtime.Engine.Layers.Select(l => l.Name));
        Assert.Equal("defaults", runtime.RulesSource);
        var setup = runtime.Prepare(GpuTasks(runtime, 2), new RunRequest());
        Assert.NotNull(setup.Router);                    // AddLearnedRouter: always
        Assert.Same(setup.Router, setup.Options.Router); // the run's own, not the engine's
        Assert.NotNull(setup.Recorder);
    }

    [Fact]
    public async Task Open_TakesTheConfigsBound_AndRoutesEachTaskToALayerThatCanRunIt()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer + "[open_runs]\nmax_pending = 2\n")).AddSqliteStore(Path.Combine(_dir, "s.db"));
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        await using var run = runtime.Open("service");
        var spec = new TaskSpec { Requires = ["gpu"], Args = System.Text.Json.JsonSerializer.SerializeToElement(new { millis = 200 }) };
        var a = run.Submit(new TaskRequest("sleep") { Id = "a", Spec = spec });
        var b = run.Submit(new TaskRequest("sleep") { Id = "b", Spec = spec });
        Assert.False(run.TrySubmit(new TaskRequest("noop"), out _));   // max_pending = 2
        var ra = await a.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal((TaskOutcome.Succeeded, "paid"), (ra.Outcome, ra.Layer));
        Assert.Equal("paid", (await b.Completion.WaitAsync(TimeSpan.FromSeconds(30))).Layer);
        Assert.True(run.TrySubmit(new TaskRequest("noop"), out var c));
        Assert.Equal("local", (await c.Completion.WaitAsync(TimeSpan.FromSeconds(30))).Layer);
    }

    [Fact]
    public void Options_AreValidatedOnce_WithEveryProblemTogether()
    {
        var services = new ServiceCollection();
        var config = new TaskMeshConfig { MaxParallelTasks = 0, RoutingObjective = "quickest" };
        services.AddTaskMesh(config).AddLearnedRouter("soonest").Configure(o => o.StorePath = " ");
        using var provider = services.BuildServiceProvider();
        var ex = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<TaskMeshRuntime>());
        var all = string.Join("\n", ex.Failures);
        Assert.Contains("store path is empty", all);
        Assert.Contains("Objective 'soonest'", all);
        Assert.Contains("RoutingObjective 'quickest'", all);
        Assert.Contains("MaxParallelTasks is 0", all);
    }

    [Fact]
    public async Task Plan_IsWhatTheRunDoes_ForEveryTask()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer + "\n[[routing.bands]]\nup_to = 30\nlayer = \"local\"\n\n[[routing.bands]]\nup_to = 100\nlayer = \"paid\"\n"));
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        var json = """
            {"name":"mixed","tasks":[
              {"id":"small","handler":"spin","args":{"micros":10}},
              {"id":"long","handler":"sleep","args":{"millis":150}},
              {"id":"gpu","handler":"sleep","args":{"millis":5},"requires":["gpu"]},
              {"id":"pinned","handler":"sleep","args":{"millis":150},"layer":"local"},
              {"id":"c","handler":"quantum","args":{"qasm":"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[2]; h q[0];"}}]}
            """;
        var graph = runtime.Engine.Prepare(GraphLoader.Load(System.Text.Encoding.UTF8.GetBytes(json), "g.json"));
        var setup = runtime.Prepare(graph, new RunRequest { CollectTaskDetails = true });
        var plan = setup.Plan();
        var result = await setup.Start().Completion;   // runs this plan
        Assert.Equal(plan.ReadyOrder, result.ReadyOrder);
        Assert.Equal(RunStatus.Succeeded, result.Status);
        for (int i = 0; i < graph.Count; i++)
            Assert.Equal(plan.LayerOf(i), result.TaskResultOf(i).Layer);
        Assert.Equal(["local", "paid", "paid", "local", "local"], Enumerable.Range(0, graph.Count).Select(plan.LayerOf));   // a small circuit: local runs it in place
        Assert.Contains("forced by the graph", plan.ReasonOf(3));
        Assert.Contains("cold start", plan.ReasonOf(1));
    }

    [Fact]
    public async Task AnOpenRun_PlacesEachTaskWhereAStaticRunOfItWould()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer + "\n[[routing.bands]]\nup_to = 30\nlayer = \"local\"\n\n[[routing.bands]]\nup_to = 100\nlayer = \"paid\"\n"));
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        var tasks = """
            [{"id":"small","handler":"spin","args":{"micros":10}},
             {"id":"long","handler":"sleep","args":{"millis":150}},
             {"id":"gpu","handler":"sleep","args":{"millis":5},"requires":["gpu"]},
             {"id":"pinned","handler":"sleep","args":{"millis":150},"layer":"local"}]
            """;
        var graph = runtime.Engine.Prepare(GraphLoader.Load(System.Text.Encoding.UTF8.GetBytes($"{{\"name\":\"g\",\"tasks\":{tasks}}}"), "g.json"));
        var plan = runtime.Prepare(graph, new RunRequest()).Plan();
        await using var run = runtime.Open();
        using var doc = System.Text.Json.JsonDocument.Parse(tasks);
        var submitted = doc.RootElement.EnumerateArray().Select(t => run.Submit(TaskRequestJson.Read(t))).ToList();
        var layers = new List<string?>();
        foreach (var t in submitted) layers.Add((await t.Completion.WaitAsync(TimeSpan.FromSeconds(30))).Layer);
        Assert.Equal(Enumerable.Range(0, graph.Count).Select(plan.LayerOf), layers);
        Assert.Equal(["local", "paid", "paid", "local"], layers);
    }

    [Fact]
    public async Task PredictAndRun_OnTheCommandLine_PlaceEveryTaskAlike()
    {
        var config = Path.Combine(_dir, "route.toml");
        File.WriteAllText(config, PaidLayer + "\n[[routing.bands]]\nup_to = 30\nlayer = \"local\"\n\n[[routing.bands]]\nup_to = 100\nlayer = \"paid\"\n");
        var graph = Path.Combine(_dir, "g.json");
        File.WriteAllText(graph, """
            {"name":"alike","tasks":[
              {"id":"small","handler":"spin","args":{"micros":10}},
              {"id":"long","handler":"sleep","args":{"millis":150}},
              {"id":"gpu","handler":"sleep","args":{"millis":5},"requires":["gpu"]},
              {"id":"pinned","handler":"sleep","args":{"millis":20},"layer":"local"}]}
            """);
        var predicted = Path.Combine(_dir, "p.json");
        var (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.Taskmesh(_dir, "predict", graph, "--config", config, "--json", predicted);
        Assert.True(code == 0, stderr);
        var summary = Path.Combine(_dir, "s.json");
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.Taskmesh(_dir, "run", graph, "--config", config, "--json", summary, "--progress", "none");
        Assert.True(code == 0, stderr);
        using var p = System.Text.Json.JsonDocument.Parse(File.ReadAllText(predicted));
        using var r = System.Text.Json.JsonDocument.Parse(File.ReadAllText(summary));
        var planned = p.RootElement.EnumerateArray().Select(t => t.GetProperty("layer").GetString()).ToList();
        Assert.Equal(["local", "paid", "paid", "local"], planned);
        Assert.Equal(planned, r.RootElement.GetProperty("nodes").EnumerateArray().Select(n => n.GetProperty("layer").GetString()));
    }

    [Fact]
    public async Task ConcurrentRuns_OfOneRuntime_KeepTheirBudgetsApart()
    {
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer)).AddLearnedRouter("cheapest");
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        // Each task needs the paid layer: about 1 (10 per second × 100 ms) a task, predicted.
        var a = runtime.Prepare(GpuTasks(runtime, 6, "a"), new RunRequest { Budget = 2.5, CollectTaskDetails = true });
        var b = runtime.Prepare(GpuTasks(runtime, 6, "b"), new RunRequest { Budget = 4.5, CollectTaskDetails = true });
        Assert.Equal(2, Enumerable.Range(0, 6).Count(i => a.Plan().RefusalOf(i) is null));   // planned once: the run follows it
        var results = await Task.WhenAll(a.Start().Completion, b.Start().Completion);
        Assert.Equal((2, 4), (results[0].Succeeded, results[1].Succeeded));
        Assert.Equal((4, 2), (results[0].Failed, results[1].Failed));
        Assert.All(results.SelectMany(r => r.Failures), f => Assert.Contains("over budget", f.Error));
        Assert.Equal((2.0, 4.0), (a.Router!.PredictedSpend, b.Router!.PredictedSpend), (x, y) => Math.Abs(x.Item1 - y.Item1) < 0.05 && Math.Abs(x.Item2 - y.Item2) < 0.05);
    }

    [Fact]
    public async Task ConcurrentRuns_OfOneEngineAndOneLearnedRouter_EachPlaceWithinTheirOwnBudget()
    {
        var engine = new TaskMeshEngine(Config(PaidLayer).ToEngineOptions());
        engine.Router = new TaskMesh.Learning.Routing.LearnedRouter(null, new TaskMesh.Learning.Routing.RoutingOptions { Objective = "cheapest" });
        var services = new ServiceCollection();
        services.AddTaskMesh(Config(PaidLayer));
        using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();   // only to load the graphs
        PreparedGraph Graph(string name) => engine.Prepare(GpuTasks(runtime, 6, name).Graph);
        var runs = new[] { (Budget: 2.5, Placed: 2), (Budget: 4.5, Placed: 4), (Budget: 0.5, Placed: 0) }
            .Select(r => (r.Placed, Run: engine.RunAsync(Graph($"b{r.Budget}"), new RunOptions { Budget = r.Budget, CollectTaskDetails = true }))).ToList();
        await Task.WhenAll(runs.Select(r => r.Run));
        foreach (var (placed, run) in runs)
        {
            var result = await run;
            Assert.Equal((placed, 6 - placed), (result.Succeeded, result.Failed));
        }
    }

    [Fact]
    public async Task BackgroundTraining_InAGenericHost_PublishesAVersionWhenOneIsDue_AndRunsRouteWithIt()
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder(new Microsoft.Extensions.Hosting.HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddTaskMesh(Config("[learning]\nretrain_after_rows = 50\n"))
            .AddSqliteStore(Path.Combine(_dir, "s.db"))
            .AddBackgroundTraining(TimeSpan.FromMilliseconds(100));
        using var host = builder.Build();
        var runtime = host.Services.GetRequiredService<TaskMeshRuntime>();
        var g = new GraphBuilder("history");
        for (int i = 0; i < 80; i++) g.Task($"s{i}", "spin", new { micros = 20 + 10 * i });
        var setup = runtime.Prepare(runtime.Engine.Prepare(g), new RunRequest());
        Assert.Null(setup.Router);   // no models yet, nothing asks for the learned router
        var result = await setup.Start().Completion;
        Assert.Null(await runtime.AfterRunAsync(result));   // a host that trains in the background: runs do not
        // The trainer starts with the host, once the run's 80 rows are in (started earlier, it may
        // rightly train on the first 50-odd rows committed).
        await runtime.Store!.FlushAsync();
        await host.StartAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        while (runtime.Store!.Models().Count == 0) await Task.Delay(50, cts.Token);
        Assert.Equal(80, runtime.Store.Models()[0].Rows);
        // The next run is routed by the version the trainer published.
        var next = runtime.Prepare(runtime.Engine.Prepare(g), new RunRequest());
        Assert.NotNull(next.Router);
        Assert.Equal("model version 1", next.ModelNote);
        await host.StopAsync();
    }

    [Fact]
    public async Task NewTaskMeshEngine_StillWorksAlone()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        g.Task("a", "noop");
        var result = await engine.RunAsync(g);
        Assert.Equal(RunStatus.Succeeded, result.Status);
    }
}
