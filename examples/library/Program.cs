// A program that embeds TaskMesh: a graph built in code and run, an open run fed while it goes,
// then a run through the composition root with a run store. Build it against the packed packages:
//   dotnet pack Engine.sln -c Release -o artifacts/packages   (from the repository's root)
//   dotnet run --project examples/library
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Hosting;

// 1. The simple case: an engine, a handler of our own, a graph built in code.
var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 4 });
engine.Handlers.Register("square", (ctx, args, ct) => new ValueTask<object?>(args.GetProperty("x").GetInt64() * args.GetProperty("x").GetInt64()));
engine.Handlers.RegisterInline("sum", ctx => ctx.Inputs.Sum(i => Convert.ToInt64(i.Value)));
var g = new GraphBuilder("squares");
var sum = g.Task("sum", "sum");
for (int x = 1; x <= 10; x++) sum.DependsOn(g.Task($"sq{x}", "square", new { x }), EdgeKind.Data);
RunResult result = await engine.RunAsync(engine.Prepare(g), new RunOptions { KeepOutputs = true });
Console.WriteLine($"engine: {result.StatusName}, {result.Total} tasks, sum of squares = {result.OutputOf(sum.Index)}");

// 2. An open run: tasks submitted while it goes, each after the tasks it names.
await using (var open = engine.Open())
{
    var squares = Enumerable.Range(1, 10).Select(x => open.Submit(new TaskRequest("square")
    {
        Spec = new TaskSpec { Args = System.Text.Json.JsonSerializer.SerializeToElement(new { x }) },
    })).ToList();
    var total = open.Submit(new TaskRequest("sum") { Id = "total", DependsOn = squares.Select(t => new TaskDependency(t, EdgeKind.Data)).ToList() });
    TaskResult answer = await total.Completion;
    open.Complete();
    OpenRunResult ended = await open.Completion;
    Console.WriteLine($"open run: {answer.Id} = {answer.Output} on {answer.Layer}; {ended.Succeeded}/{ended.Submitted} tasks succeeded");
}

// 3. Through the composition root: the config's engine, a run store, the learned router.
string store = Path.Combine(Path.GetTempPath(), $"taskmesh-library-{Environment.ProcessId}.db");
var services = new ServiceCollection();
services.AddTaskMesh(new TaskMeshConfig()).AddSqliteStore(store).AddLearnedRouter();
await using (var provider = services.BuildServiceProvider())
{
    var runtime = provider.GetRequiredService<TaskMeshRuntime>();
    var chain = new GraphBuilder("chain");
    var previous = chain.Task("t0", "spin", new { micros = 100 });
    for (int i = 1; i < 20; i++) previous = chain.Task($"t{i}", "spin", new { micros = 100 }).DependsOn(previous);
    RunSetup setup = runtime.Prepare(runtime.Engine.Prepare(chain), new RunRequest());
    RunResult stored = await setup.Start().Completion;
    await runtime.AfterRunAsync(stored);
    Console.WriteLine($"runtime: {stored.StatusName}, {stored.Succeeded}/{stored.Total} succeeded, recorded as run {stored.RunId} ({runtime.Store!.ListRuns(1)[0].Status})");
}
foreach (var f in Directory.GetFiles(Path.GetTempPath(), Path.GetFileName(store) + "*")) File.Delete(f);
