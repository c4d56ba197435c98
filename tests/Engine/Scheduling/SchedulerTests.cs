using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

public class SchedulerTests
{
    private static readonly TimeSpan TestTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Start and end stamps from one global sequence: "a ended before b started" is end[a] &lt; start[b].</summary>
    private sealed class Recorder(int n)
    {
        private long _seq;
        public readonly long[] Start = new long[n];
        public readonly long[] End = new long[n];
        public readonly int[] Runs = new int[n];

        public void Begin(int i)
        {
            Interlocked.Increment(ref Runs[i]);
            Start[i] = Interlocked.Increment(ref _seq);
        }

        public void Finish(int i) => End[i] = Interlocked.Increment(ref _seq);
    }

    private static Task<RunResult> RunWithin(TaskMeshEngine engine, TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => RunWithin(engine, engine.Prepare(graph, options?.BaseDirectory), options, ct);

    private static async Task<RunResult> RunWithin(TaskMeshEngine engine, PreparedGraph graph, RunOptions? options = null, CancellationToken ct = default)
    {
        var run = engine.RunAsync(graph, options, ct);
        var done = await Task.WhenAny(run, Task.Delay(TestTimeout));
        Assert.True(done == run, "the run did not finish in time");
        return await run;
    }

    [Theory]
    [InlineData(1, 1)]
    [InlineData(2, 2)]
    [InlineData(3, 4)]
    [InlineData(4, 1)]
    public async Task RunAsync_RandomDag_EveryTaskRunsOnceAfterItsPredecessors(int seed, int workers)
    {
        var dag = new RandomDag(seed, 3000, 4, mixedKinds: true);
        var rec = new Recorder(dag.Count);
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = workers, MaxParallelTasks = 4 });
        engine.Handlers.RegisterInline("inline", ctx => { rec.Begin(ctx.Index); rec.Finish(ctx.Index); return null; });
        engine.Handlers.Register("async", async (ctx, args, ct) => { rec.Begin(ctx.Index); await Task.Yield(); rec.Finish(ctx.Index); return null; });
        // Mostly inline tasks with some asynchronous ones, so both paths interleave.
        var graph = engine.Prepare(dag.Build(i => i % 7 == 0 ? "async" : "inline"));

        var result = await RunWithin(engine, graph);

        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(dag.Count, result.Succeeded);
        Assert.All(rec.Runs, r => Assert.Equal(1, r));
        foreach (var (s, d, _) in dag.Edges)
            Assert.True(rec.End[s] < rec.Start[d], $"t{d} started before its predecessor t{s} ended");
    }

    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    public async Task RunAsync_FailuresInRandomDag_SkipExactlyTheHardDescendants(int seed)
    {
        var dag = new RandomDag(seed, 1500, 3, mixedKinds: true);
        var rnd = new Random(seed * 31);
        var failing = Enumerable.Range(0, dag.Count).Where(_ => rnd.NextDouble() < 0.03).ToHashSet();
        var rec = new Recorder(dag.Count);
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 3 });
        engine.Handlers.RegisterInline("ok", ctx => { rec.Begin(ctx.Index); rec.Finish(ctx.Index); return null; });
        engine.Handlers.Register("boom", (ctx, args, ct) => { rec.Begin(ctx.Index); rec.Finish(ctx.Index); throw new TaskFailedException("boom " + ctx.Id); });
        var graph = engine.Prepare(dag.Build(i => failing.Contains(i) ? "boom" : "ok"));

        var result = await RunWithin(engine, graph);

        // Reference semantics, computed in index order (every edge points forward).
        var expected = new TaskOutcome[dag.Count];
        var preds = dag.Edges.ToLookup(e => e.dst);
        for (int i = 0; i < dag.Count; i++)
        {
            bool skip = preds[i].Any(e => e.kind != EdgeKind.Soft && expected[e.src] != TaskOutcome.Succeeded);
            expected[i] = skip ? TaskOutcome.Skipped : failing.Contains(i) ? TaskOutcome.Failed : TaskOutcome.Succeeded;
        }
        for (int i = 0; i < dag.Count; i++)
        {
            Assert.Equal(expected[i], result.OutcomeOf(i));
            Assert.Equal(expected[i] == TaskOutcome.Skipped ? 0 : 1, rec.Runs[i]);
            if (expected[i] == TaskOutcome.Skipped)
            {
                // The named cause is a failed ancestor reached over hard/data edges.
                var cause = result.TaskResultOf(i).SkippedBecause;
                Assert.NotNull(cause);
                Assert.True(graph.TryGetIndex(cause!, out int c));
                Assert.Equal(TaskOutcome.Failed, result.OutcomeOf(c));
            }
        }
        // Soft edges order without propagating: the target started after the source ended.
        foreach (var (s, d, k) in dag.Edges)
            if (rec.Runs[s] == 1 && rec.Runs[d] == 1)
                Assert.True(rec.End[s] < rec.Start[d]);
        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.Equal(failing.Count(i => expected[i] == TaskOutcome.Failed), result.Failed);
    }

    [Fact]
    public async Task RunAsync_ResourcePools_NeverExceedCapacity()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 8 });
        int db = 0, dbPeak = 0, gpu = 0, gpuPeak = 0;
        engine.Handlers.Register("work", async (ctx, args, ct) =>
        {
            bool usesDb = ctx.Graph.SpecOf(ctx.Index)!.Uses!.Contains("db");
            bool usesGpu = ctx.Graph.SpecOf(ctx.Index)!.Uses!.Contains("gpu");
            if (usesDb) Max(ref dbPeak, Interlocked.Increment(ref db));
            if (usesGpu) Max(ref gpuPeak, Interlocked.Increment(ref gpu));
            await Task.Delay(5, ct);
            if (usesDb) Interlocked.Decrement(ref db);
            if (usesGpu) Interlocked.Decrement(ref gpu);
            return null;
        });
        var g = new GraphBuilder();
        g.Resources["db"] = 2;
        g.Resources["gpu"] = 1;
        for (int i = 0; i < 60; i++)
            g.Task($"t{i}", "work").Uses(i % 3 == 0 ? ["db", "gpu"] : i % 3 == 1 ? ["db"] : ["gpu"]);

        var result = await RunWithin(engine, engine.Prepare(g));

        Assert.Equal(60, result.Succeeded);
        Assert.Equal(2, dbPeak);
        Assert.Equal(1, gpuPeak);

        static void Max(ref int peak, int value)
        {
            int seen;
            while (value > (seen = Volatile.Read(ref peak)) && Interlocked.CompareExchange(ref peak, value, seen) != seen) { }
        }
    }

    [Fact]
    public async Task RunAsync_ScarceSlots_StartsTasksInPriorityOrder()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 1, WorkerThreads = 1 });
        var order = new ConcurrentQueue<string>();
        engine.Handlers.Register("record", async (ctx, args, ct) => { order.Enqueue(ctx.Id); await Task.Delay(2, ct); return null; });
        var g = new GraphBuilder();
        var prios = new[] { TaskPriority.Low, TaskPriority.Normal, TaskPriority.Critical, TaskPriority.High };
        for (int i = 0; i < 40; i++)
            g.Task($"{prios[i % 4].ToName()}-{i}", "record").WithPriority(prios[i % 4]);

        var result = await RunWithin(engine, engine.Prepare(g));

        Assert.Equal(40, result.Succeeded);
        var ranks = order.Select(id => (int)Enum.Parse<TaskPriority>(id.Split('-')[0], ignoreCase: true)).ToList();
        Assert.Equal(ranks.OrderByDescending(r => r).ToList(), ranks);
    }

    [Fact]
    public async Task RunAsync_FlakyTask_RetriesWithExponentialBackoff()
    {
        // The engine's clock is the test's: back-offs pass when the test moves time on, not when the machine gets round to it.
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider(new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(60), RandomSeed = 1, TimeProvider = time });
        var g = new GraphBuilder();
        g.Task("flaky", "fail", new { message = "transient", attempts = 2 }).WithRetries(3);
        g.Task("never-ok", "fail", new { message = "permanent" }).WithRetries(2);
        var graph = engine.Prepare(g);
        var handle = engine.Start(graph, new RunOptions { EmitEvents = true });
        var events = new List<RunEvent>();
        var reading = Task.Run(async () => { await foreach (var e in handle.Events.ReadAllAsync()) events.Add(e); });
        // Fake milliseconds, a step at a time, until the run ends (bounded: the back-offs sum to well under a fake minute).
        for (int step = 0; step < 60_000 && !handle.Completion.IsCompleted; step++)
        {
            time.Advance(TimeSpan.FromMilliseconds(1));
            await Task.Delay(step % 50 == 0 ? 1 : 0);   // let the attempts the step released run
        }
        var result = await handle.Completion.WaitAsync(TestTimeout);
        await reading.WaitAsync(TestTimeout);

        var flaky = result.TaskResultOf(0);
        Assert.Equal(TaskOutcome.Succeeded, flaky.Outcome);
        Assert.Equal(3, flaky.Attempts);
        var permanent = result.TaskResultOf(1);
        Assert.Equal(TaskOutcome.Failed, permanent.Outcome);
        Assert.Equal(3, permanent.Attempts);
        Assert.Equal("permanent", permanent.Error);

        // Two retries of 'flaky': delays of at least 0.5 x 60 ms and 0.5 x 120 ms (equal jitter).
        var starts = events.Where(e => e.TaskId == "flaky" && e.Kind == RunEventKind.Started).Select(e => e.Timestamp).ToList();
        Assert.Equal(3, starts.Count);
        Assert.True((starts[1] - starts[0]).TotalMilliseconds >= 29, $"first back-off {(starts[1] - starts[0]).TotalMilliseconds} ms");
        Assert.True((starts[2] - starts[1]).TotalMilliseconds >= 59, $"second back-off {(starts[2] - starts[1]).TotalMilliseconds} ms");
        Assert.Equal(2, events.Count(e => e.TaskId == "flaky" && e.Kind == RunEventKind.Retried));
    }

    [Fact]
    public async Task RunAsync_SlowTask_TimesOutAndSkipsItsDependents()
    {
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        var engine = new TaskMeshEngine(new EngineOptions { TimeProvider = time });
        var g = new GraphBuilder();
        var slow = g.Task("slow", "sleep", new { millis = 20_000 }).WithTimeout(TimeSpan.FromMilliseconds(200));
        g.Task("after", "noop").DependsOn(slow);

        var handle = engine.Start(engine.Prepare(g));
        // The timeout is the engine's clock's: it passes when the test moves that clock 200 ms on.
        for (int step = 0; step < 10_000 && !handle.Completion.IsCompleted; step++)
        {
            time.Advance(TimeSpan.FromMilliseconds(10));
            await Task.Delay(1);
        }
        var result = await handle.Completion.WaitAsync(TestTimeout);

        Assert.Equal(TaskOutcome.TimedOut, result.OutcomeOf(0));
        Assert.Contains("timed out", result.TaskResultOf(0).Error);
        Assert.Equal(TaskOutcome.Skipped, result.OutcomeOf(1));
        Assert.Equal("slow", result.TaskResultOf(1).SkippedBecause);
        Assert.Equal(1, result.TimedOut);
    }

    [Fact]
    public async Task RunAsync_HandlerIgnoringCancellation_IsAbandonedAfterGrace()
    {
        var engine = new TaskMeshEngine(new EngineOptions { CancelGracePeriod = TimeSpan.FromMilliseconds(200) });
        engine.Handlers.Register("stubborn", async (ctx, args, ct) =>
        {
            await Task.Delay(TimeSpan.FromSeconds(20), CancellationToken.None); // ignores ct on purpose
            return null;
        });
        var g = new GraphBuilder();
        g.Task("hung", "stubborn").WithTimeout(TimeSpan.FromMilliseconds(200));
        g.Task("fine", "noop");
        var sw = Stopwatch.StartNew();

        var result = await RunWithin(engine, engine.Prepare(g));

        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(10), $"took {sw.Elapsed}");
        Assert.Equal(TaskOutcome.TimedOut, result.OutcomeOf(0));
        Assert.Contains("abandoned", result.TaskResultOf(0).Error);
        Assert.Equal(TaskOutcome.Succeeded, result.OutcomeOf(1));
    }

    [Fact]
    public async Task RunAsync_Cancelled_StopsDispatchAndLeavesNoHandlerRunning()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 4 });
        int running = 0, started = 0;
        engine.Handlers.Register("long", async (ctx, args, ct) =>
        {
            Interlocked.Increment(ref started);
            Interlocked.Increment(ref running);
            try { await Task.Delay(TimeSpan.FromSeconds(30), ct); }
            finally { Interlocked.Decrement(ref running); }
            return null;
        });
        var g = new GraphBuilder();
        for (int i = 0; i < 50; i++) g.Task($"t{i}", "long");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));

        var result = await RunWithin(engine, engine.Prepare(g), ct: cts.Token);

        Assert.Equal(RunStatus.Cancelled, result.Status);
        Assert.Equal(0, Volatile.Read(ref running));
        Assert.Equal(4, started);                 // only the first four slots ever started
        Assert.Equal(50, result.Cancelled);
        // The 46 that never started leave the layer's queue: the next run (and its router, and the
        // ready-tasks gauge) sees an idle layer.
        var local = engine.Layers.Single(l => l.Name == "local");
        Assert.Equal((0, 0), (local.QueueDepth, local.Running));
    }

    [Fact]
    public async Task RunAsync_DataEdges_HandOutputsToTheTarget()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("const", ctx => ctx.Id.Length * 10);
        engine.Handlers.RegisterInline("sum", ctx => ctx.Inputs.Sum(kv => (int)kv.Value!));
        var g = new GraphBuilder();
        var a = g.Task("a", "const");     // 10
        var bb = g.Task("bb", "const");   // 20
        var c = g.Task("ccc", "const");   // 30, soft: not an input
        g.Task("total", "sum").DependsOn(a, EdgeKind.Data).DependsOn(bb, EdgeKind.Data).DependsOn(c, EdgeKind.Soft);
        g.Task("digest", "hash", new { bytes = 1000 });
        g.Task("show", "sum").DependsOn("total", EdgeKind.Data);

        var result = await RunWithin(engine, engine.Prepare(g));

        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(30, result.OutputOf(3));
    }

    [Fact]
    public async Task Start_WithEvents_PublishesEachTransition()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        var a = g.Task("a", "noop");
        var b = g.Task("b", "fail", new { message = "x" }).DependsOn(a);
        g.Task("c", "noop").DependsOn(b);
        g.Task("d", "sleep", new { millis = 1 }).DependsOn(a);
        var handle = engine.Start(engine.Prepare(g), new RunOptions { EmitEvents = true });
        var events = new List<RunEvent>();
        await foreach (var e in handle.Events.ReadAllAsync()) events.Add(e);
        await handle.Completion;

        Assert.Contains(events, e => e is { TaskId: "a", Kind: RunEventKind.Succeeded });
        Assert.Contains(events, e => e is { TaskId: "b", Kind: RunEventKind.Routed, Layer: "local" });
        Assert.Contains(events, e => e is { TaskId: "b", Kind: RunEventKind.Failed, Message: "x" });
        Assert.Contains(events, e => e is { TaskId: "c", Kind: RunEventKind.Skipped });
        Assert.Contains(events, e => e is { TaskId: "d", Kind: RunEventKind.Started });
        Assert.Equal(4, events.Count(e => e.Kind == RunEventKind.Released));
    }

    [Fact]
    public async Task RunAsync_LargeChainAndFanOut_CompletesWithEveryTask()
    {
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2 });
        long counter = 0;
        engine.Handlers.RegisterInline("inc", _ => { Interlocked.Increment(ref counter); return null; });
        var g = new GraphBuilder();
        var prev = g.Task("inc");
        for (int i = 1; i < 100_000; i++) prev = g.Task("inc").DependsOn(prev);
        var hub = g.Task("inc").DependsOn(prev);
        for (int i = 0; i < 100_000; i++) g.Task("inc").DependsOn(hub);

        var result = await RunWithin(engine, engine.Prepare(g));

        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(200_001, Interlocked.Read(ref counter));
    }

    [Fact]
    public async Task RunAsync_GraphBuiltWithoutPrepare_IsValidatedFirst()
    {
        var engine = new TaskMeshEngine();
        var ok = new GraphBuilder();
        ok.Task("nap", "sleep", new { millis = 1 });
        var result = await RunWithin(engine, ok.Build());
        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Null(result.OutputOf(0)); // no data successors: outputs are not kept

        var bad = new GraphBuilder();
        bad.Task("nap", "sleep", new { millis = -3 });
        var ex = Assert.Throws<GraphValidationException>(() => engine.Start(bad.Build()));
        Assert.Contains(ex.Errors, e => e is { Code: "bad-args", TaskId: "nap" });
    }

    private static readonly AsyncLocal<string?> s_caller = new();

    [Fact]
    public async Task RunAsync_InlineHandlers_SeeTheirOwnCallersContext_OnReusedThreads()
    {
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2 });
        var seen = new ConcurrentBag<string?>();
        engine.Handlers.RegisterInline("look", _ => { seen.Add(s_caller.Value); return null; });
        var g = new GraphBuilder();
        for (int i = 0; i < 50; i++) g.Task("look");
        var graph = engine.Prepare(g);
        foreach (var caller in new[] { "first", "second", "third" })
        {
            seen.Clear();
            s_caller.Value = caller;
            await RunWithin(engine, graph);
            Assert.All(seen, v => Assert.Equal(caller, v));
            Assert.Equal(50, seen.Count);
        }
    }
}
