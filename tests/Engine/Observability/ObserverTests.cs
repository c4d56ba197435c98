using System.Collections.Concurrent;
using System.Threading.Channels;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;
using Xunit;

namespace TaskMesh.Tests.Engine.Observability;

/// <summary>Records every observer call; thread-safe.</summary>
internal sealed class RecordingObserver : IRunObserver
{
    public readonly ConcurrentQueue<AttemptStart> Started = new();
    public readonly ConcurrentQueue<AttemptResult> Ended = new();
    public readonly ConcurrentQueue<int> Released = new();
    public readonly ConcurrentQueue<(int Task, RouteDecision Decision)> Routed = new();
    public readonly ConcurrentQueue<TaskEnd> TaskEnds = new();
    public readonly ConcurrentQueue<EscalationRecord> Escalations = new();
    public readonly ConcurrentQueue<RunRecord> RunEnds = new();
    public int RunStarts;

    public void OnRunStarted(RunStart run) => Interlocked.Increment(ref RunStarts);
    public void OnTaskReleased(int task) => Released.Enqueue(task);
    public void OnTaskRouted(int task, in RouteDecision decision) => Routed.Enqueue((task, decision));
    public void OnAttemptStarted(in AttemptStart attempt) => Started.Enqueue(attempt);
    public void OnAttemptEnded(in AttemptResult result) => Ended.Enqueue(result);
    public void OnTaskEnded(in TaskEnd end) => TaskEnds.Enqueue(end);
    public void OnEscalated(EscalationRecord escalation) => Escalations.Enqueue(escalation);
    public void OnRunEnded(RunRecord record) => RunEnds.Enqueue(record);

    /// <summary>Every started attempt ended exactly once, and nothing ended that did not start.</summary>
    public void AssertPairedAttempts()
    {
        var starts = Started.Select(s => (s.Task, s.Attempt)).ToList();
        var ends = Ended.Select(e => (e.Task, e.Attempt)).ToList();
        Assert.Equal(starts.Count, starts.Distinct().Count());
        Assert.Equal(starts.Order(), ends.Order());
    }
}

/// <summary>A layer of its own for tests: runs handlers like <c>local</c>, under another name and price.</summary>
internal sealed class TestLayer(string name, int capacity, double price = 0) : ExecutionLayer(capacity)
{
    public int Executed;
    public override string Name => name;
    public override double PricePerSecond => price != 0 ? price : base.PricePerSecond;   // Configure sets the latter

    public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        Interlocked.Increment(ref Executed);
        var h = invocation.Handler;
        return h.Inline is { } inline ? new ValueTask<object?>(inline(invocation.Context)) : h.Async!(invocation.Context, invocation.Args, ct);
    }
}

public class ObserverTests
{
    private static readonly TimeSpan TestTimeout = TimeSpan.FromSeconds(60);

    private static Task<RunResult> RunWithin(TaskMeshEngine engine, TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => RunWithin(engine, engine.Prepare(graph, options?.BaseDirectory), options, ct);

    private static async Task<RunResult> RunWithin(TaskMeshEngine engine, PreparedGraph graph, RunOptions? options = null, CancellationToken ct = default)
    {
        var run = engine.RunAsync(graph, options, ct);
        Assert.True(await Task.WhenAny(run, Task.Delay(TestTimeout)) == run, "the run did not finish in time");
        return await run;
    }

    private static void AssertRecordMatches(RecordingObserver o, RunResult result)
    {
        Assert.Equal(1, o.RunStarts);
        var record = Assert.Single(o.RunEnds);
        Assert.Same(result.Record, record);
        Assert.Equal((result.Succeeded, result.Failed, result.Skipped, result.Cancelled),
            (record.Succeeded, record.Failed, record.Skipped, record.Cancelled));
        o.AssertPairedAttempts();
        // Every task that ended (not cancelled) ended once.
        Assert.Equal(result.Total - result.Cancelled, o.TaskEnds.Count);
        Assert.Equal(o.TaskEnds.Count, o.TaskEnds.Select(e => e.Task).Distinct().Count());
    }

    [Fact]
    public async Task Observer_SuccessfulMixedRun_SeesOnePairPerAttemptAndTheRecord()
    {
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 3 });
        engine.Handlers.RegisterInline("in", _ => null);
        engine.Handlers.Register("out", async (ctx, a, ct) => { await Task.Yield(); return ctx.Id; });
        var dag = new Scheduling.RandomDag(5, 2000, 3, mixedKinds: false);
        var graph = engine.Prepare(dag.Build(i => i % 5 == 0 ? "out" : "in"));
        var o = new RecordingObserver();

        var result = await RunWithin(engine, graph, new RunOptions { Observers = [o] });

        Assert.Equal(RunStatus.Succeeded, result.Status);
        AssertRecordMatches(o, result);
        Assert.Equal(2000, o.Started.Count);
        Assert.Equal(2000, o.Released.Distinct().Count());
        Assert.All(o.Ended, e => Assert.Equal(AttemptNext.Complete, e.Next));
        // Layer tasks are routed; inline ones are not.
        Assert.Equal(400, o.Routed.Count);
    }

    /// <summary>Takes task ends in batches only; notes whether any arrived after the run's end.</summary>
    private sealed class BatchObserver : IRunObserver
    {
        public readonly ConcurrentQueue<TaskEnd> Ends = new();
        public int Batches, SingleCalls, LateEnds;
        private volatile bool _runEnded;
        public RunObserverInterests Interests => RunObserverInterests.TaskEndedInBatches;
        public void OnTasksEnded(TaskEndBatch ends)
        {
            Interlocked.Increment(ref Batches);
            if (_runEnded) Interlocked.Add(ref LateEnds, ends.Count);
            for (int i = 0; i < ends.Count; i++) Ends.Enqueue(ends[i]);
        }
        public void OnTaskEnded(in TaskEnd end) => Interlocked.Increment(ref SingleCalls);
        public void OnRunEnded(RunRecord record) => _runEnded = true;
    }

    [Fact]
    public async Task Observer_TaskEndsInBatches_EveryTaskOnceBeforeTheRunEnds_WithItsOutcomeAndLayer()
    {
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 3 });
        engine.Handlers.RegisterInline("in", _ => null);
        engine.Handlers.RegisterInline("bad", _ => throw new TaskFailedException("no"));
        engine.Handlers.Register("out", async (ctx, a, ct) => { await Task.Yield(); return ctx.Id; });
        engine.Handlers.RegisterInline("slowish", _ => { Thread.Sleep(3); return null; });
        var dag = new Scheduling.RandomDag(9, 20_000, 3, mixedKinds: false);
        var graph = engine.Prepare(dag.Build(i => i == 7 ? "bad" : i % 97 == 0 ? "out" : i % 1000 == 1 ? "slowish" : "in"));
        var batched = new BatchObserver();
        var single = new RecordingObserver();

        var result = await RunWithin(engine, graph, new RunOptions { Observers = [batched, single] });

        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.Equal(0, batched.SingleCalls);
        Assert.Equal(0, batched.LateEnds);
        // Fewer calls than tasks: ends came in batches, yet each task exactly once, as the one-by-one observer saw it.
        Assert.InRange(batched.Batches, 1, 20_000 / 2);
        var byTask = batched.Ends.ToDictionary(e => e.Task);
        Assert.Equal(result.Total - result.Cancelled, byTask.Count);
        Assert.Equal(single.TaskEnds.Select(e => (e.Task, e.Outcome, e.Layer, e.Attempts, e.SkippedBecause)).Order(),
            batched.Ends.Select(e => (e.Task, e.Outcome, e.Layer, e.Attempts, e.SkippedBecause)).Order());
        Assert.Equal(TaskOutcome.Failed, byTask[7].Outcome);
        Assert.Contains(byTask.Values, e => e.Outcome == TaskOutcome.Skipped && e.SkippedBecause == 7);
        Assert.All(byTask.Values.Where(e => e.Task % 97 == 0 && e.Outcome == TaskOutcome.Succeeded), e => Assert.Equal("local", e.Layer));
        Assert.All(byTask.Values.Where(e => e.Task % 1000 == 1 && e.Outcome == TaskOutcome.Succeeded), e => Assert.True(e.Duration >= TimeSpan.FromMilliseconds(1), $"{e.Duration}"));
    }

    [Fact]
    public async Task Observer_FailuresRetriesAndTimeouts_AreEachAnAttemptPair()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(5), CancelGracePeriod = TimeSpan.FromMilliseconds(100) });
        engine.Handlers.RegisterInline("boom-inline", _ => throw new TaskFailedException("inline boom"));
        var g = new GraphBuilder();
        var flaky = g.Task("flaky", "fail", new { message = "transient", attempts = 2 }).WithRetries(3);
        g.Task("bad", "fail", new { message = "permanent" }).WithRetries(1);
        g.Task("inline-bad", "boom-inline").WithRetries(1);
        g.Task("slow", "sleep", new { millis = 10_000 }).WithTimeout(TimeSpan.FromMilliseconds(50));
        g.Task("after", "noop").DependsOn(flaky);
        g.Task("skipped", "noop").DependsOn("bad");
        var o1 = new RecordingObserver();
        var o2 = new RecordingObserver();
        engine.AddObserver(o1);

        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { Observers = [o2] });

        Assert.Equal(RunStatus.Failed, result.Status);
        foreach (var o in new[] { o1, o2 }) AssertRecordMatches(o, result);
        var ends = o1.Ended.ToLookup(e => result.Graph.IdOf(e.Task));
        Assert.Equal([AttemptNext.Retry, AttemptNext.Retry, AttemptNext.Complete], ends["flaky"].OrderBy(e => e.Attempt).Select(e => e.Next));
        Assert.Equal([AttemptOutcome.Failed, AttemptOutcome.Failed], ends["bad"].Select(e => e.Outcome));
        Assert.Equal([AttemptOutcome.Failed, AttemptOutcome.Failed], ends["inline-bad"].Select(e => e.Outcome));
        Assert.Equal(AttemptOutcome.TimedOut, Assert.Single(ends["slow"]).Outcome);
        Assert.Contains(o1.TaskEnds, e => result.Graph.IdOf(e.Task) == "skipped" && e.Outcome == TaskOutcome.Skipped && result.Graph.IdOf(e.SkippedBecause) == "bad");
        // Two observers see the same stream.
        Assert.Equal(o1.Started.Select(s => (s.Task, s.Attempt, s.Layer)).Order(), o2.Started.Select(s => (s.Task, s.Attempt, s.Layer)).Order());
        Assert.Equal(o1.Ended.Select(s => (s.Task, s.Attempt, s.Outcome, s.Next)).Order(), o2.Ended.Select(s => (s.Task, s.Attempt, s.Outcome, s.Next)).Order());
        Assert.Equal(2, result.TaskResultOf(2).Attempts);
    }

    [Fact]
    public async Task Observer_CancelledRun_EndsEveryStartedAttempt()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 3 });
        engine.Handlers.Register("long", async (ctx, a, ct) => { await Task.Delay(TimeSpan.FromSeconds(30), ct); return null; });
        var g = new GraphBuilder();
        for (int i = 0; i < 20; i++) g.Task($"t{i}", "long");
        var o = new RecordingObserver();
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(200));

        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { Observers = [o] }, cts.Token);

        Assert.Equal(RunStatus.Cancelled, result.Status);
        AssertRecordMatches(o, result);
        Assert.Equal(3, o.Started.Count);
        Assert.All(o.Ended, e => Assert.Equal(AttemptOutcome.Cancelled, e.Outcome));
        Assert.Equal(RunStatus.Cancelled, Assert.Single(o.RunEnds).Status);
    }

    /// <summary>Moves a task that failed on <c>local</c> to the <c>strong</c> layer.</summary>
    internal sealed class MoveOnErrorPolicy : IEscalationPolicy
    {
        public EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context)
            => attempt.Outcome == AttemptOutcome.Failed && attempt.Layer == "local"
                ? EscalationDecision.EscalateTo("strong", "error", $"failed on local: {attempt.Error}")
                : DefaultEscalationPolicy.Instance.Decide(attempt, context);
    }

    private sealed class ProgressReader : IRunObserver
    {
        public IRunProgress? Progress;
        public int SucceededAtEnd = -1;
        public void OnRunStarted(RunStart run) => Progress = run.Progress;
        public void OnRunEnded(RunRecord record) => SucceededAtEnd = Progress!.Outcomes.Count((byte)TaskOutcome.Succeeded);
    }

    [Fact]
    public async Task Observers_ReadTheRunsProgress_ThroughThePublicContract()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        int first = g.AddTasks(1000, "noop");
        for (int i = 1; i < 1000; i++) g.AddEdge(first + i - 1, first + i);
        var reader = new ProgressReader();
        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { Observers = [reader] });
        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(1000, reader.Progress!.Outcomes.Length);
        Assert.Equal(1000, reader.SucceededAtEnd);
        Assert.Equal(0, reader.Progress.ReadyOnWorkers());
    }

    [Fact]
    public async Task EscalationPolicy_ToALayerThatCannotRunTheTask_IsRefusedByTheOneRule()
    {
        // "strong" lacks the tag the task requires: the policy's move is refused (the attempt
        // stands), as a router's and a rule's would be — one rule, ExecutionLayer.CanRun, for all.
        var engine = new TaskMeshEngine();
        var strong = new TestLayer("strong", 2);
        engine.AddLayer(strong);
        var gpu = new TestLayer("gpu-box", 2);
        engine.AddLayer(gpu);
        gpu.Configure(0, 20, ["gpu"]);
        engine.Layers[0].Configure(0, 0, ["gpu"]);
        engine.EscalationPolicy = new MoveOnErrorPolicy();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1 ? throw new TaskFailedException("too weak") : new ValueTask<object?>("done"));
        var g = new GraphBuilder();
        g.Task("t", "weak-first").Requires("gpu");
        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { CollectTaskDetails = true });
        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.Equal(0, strong.Executed);
        Assert.Empty(result.Escalations);
        Assert.Equal(("local", 1), (result.TaskResultOf(0).Layer, result.TaskResultOf(0).Attempts));
    }

    [Fact]
    public async Task EscalationPolicy_MovesAFailedTaskToAnotherLayer_AndTheRecordShowsBothAttempts()
    {
        var engine = new TaskMeshEngine();
        var strong = new TestLayer("strong", 2, price: 2.0);
        engine.AddLayer(strong);
        engine.EscalationPolicy = new MoveOnErrorPolicy();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1
            ? throw new TaskFailedException("too weak")
            : new ValueTask<object?>("done on attempt " + ctx.Attempt));
        engine.Handlers.RegisterInline("inline-weak", ctx => ctx.Attempt == 1 ? throw new TaskFailedException("inline too weak") : "ok");
        var g = new GraphBuilder();
        var t = g.Task("t", "weak-first");
        g.Task("u", "inline-weak");
        g.Task("next", "noop").DependsOn(t, EdgeKind.Data);
        var o = new RecordingObserver();

        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { Observers = [o], CollectTaskDetails = true });

        Assert.Equal(RunStatus.Succeeded, result.Status);
        AssertRecordMatches(o, result);
        foreach (var id in new[] { "t", "u" })
        {
            Assert.True(result.Graph.TryGetIndex(id, out int i));
            var rec = result.TaskResultOf(i);
            Assert.Equal((2, "local", "strong", 1), (rec.Attempts, rec.InitialLayer, rec.Layer, rec.Escalations));
            var attempts = o.Started.Where(s => s.Task == i).OrderBy(s => s.Attempt).Select(s => s.Layer).ToList();
            Assert.Equal(["local", "strong"], attempts);
            var esc = Assert.Single(result.Escalations, e => e.TaskId == id);
            Assert.Equal(("local", "strong", "error", i), (esc.From, esc.To, esc.Trigger, esc.TaskIndex));
        }
        Assert.Equal("done on attempt 2", result.OutputOf(0));
        Assert.Equal(2, strong.Executed);
        Assert.Equal(2, o.Escalations.Count);
        Assert.Equal(2, result.TasksByLayer["strong"]);
        // Cost is time on a layer times its price: strong's (2 per second) is twice the time the two
        // tasks spent there — some, and no more than the run — and local is free.
        var strongLayer = result.Record.Layers.Single(l => l.Name == "strong");
        Assert.InRange(strongLayer.DurationMs, 1e-6, result.Wall.TotalMilliseconds * 2);
        Assert.Equal(2.0 * strongLayer.DurationMs / 1000, result.CostByLayer["strong"], 12);
        Assert.Equal(0, result.CostByLayer.GetValueOrDefault("local"));
    }

    [Fact]
    public async Task NoObserver_InlineChain_AllocatesNothingPerTask()
    {
        const int n = 100_000;
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2 });
        long before = -1, after = -1;
        // A chain runs inline on one worker: the worker's own allocation counter sees the whole hot path.
        engine.Handlers.RegisterInline("probe", ctx =>
        {
            if (ctx.Index == 1_000) before = GC.GetAllocatedBytesForCurrentThread();
            else if (ctx.Index == n - 1_000) after = GC.GetAllocatedBytesForCurrentThread();
            return null;
        });
        var g = new GraphBuilder();
        var prev = g.Task("probe");
        for (int i = 1; i < n; i++) prev = g.Task("probe").DependsOn(prev);
        var graph = engine.Prepare(g);

        var result = await RunWithin(engine, graph, new RunOptions { CollectTaskDetails = false });

        Assert.Equal(n, result.Succeeded);
        Assert.True(before >= 0 && after >= 0);
        // 98,000 tasks: a per-task allocation of even one object would show as megabytes. The
        // bound leaves room for a garbage collection run by other tests meanwhile, which settles
        // this thread's allocation chunk (one 8 KiB step) without it allocating anything.
        Assert.True(after - before < 32 * 1024, $"{after - before} bytes allocated over 98,000 tasks");
    }

    [Fact]
    public async Task EventStream_SlowReader_DropsNewestAndCounts_OrWaitsAndLosesNothing()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        for (int i = 0; i < 2000; i++) g.Task("noop");
        var graph = engine.Prepare(g);

        var dropping = engine.Start(graph, new RunOptions { EmitEvents = true, EventCapacity = 16 });
        var r1 = await dropping.Completion;   // nobody reads during the run
        int read = 0;
        await foreach (var _ in dropping.Events.ReadAllAsync()) read++;
        Assert.Equal(2000, r1.Succeeded);
        Assert.Equal(16, read);
        Assert.Equal(3 * 2000 - 16, dropping.DroppedEvents);   // released, started, succeeded per task

        var waiting = engine.Start(graph, new RunOptions { EmitEvents = true, EventCapacity = 16, EventOverflow = EventOverflow.Wait });
        var all = new List<RunEvent>();
        await foreach (var e in waiting.Events.ReadAllAsync()) all.Add(e);
        await waiting.Completion;
        Assert.Equal(3 * 2000, all.Count);
        Assert.Equal(0, waiting.DroppedEvents);
    }

    [Fact]
    public async Task EventStream_WaitWithAReaderThatNeverReads_StillEndsOnCancellation()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        for (int i = 0; i < 1000; i++) g.Task("noop");
        using var cts = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        var handle = engine.Start(engine.Prepare(g), new RunOptions { EmitEvents = true, EventCapacity = 4, EventOverflow = EventOverflow.Wait }, cts.Token);

        var done = await Task.WhenAny(handle.Completion, Task.Delay(TimeSpan.FromSeconds(30)));

        Assert.Same(handle.Completion, done);
        Assert.Equal(RunStatus.Cancelled, (await handle.Completion).Status);
        Assert.True(handle.DroppedEvents > 0);
    }

    private sealed class ThrowingObserver : IRunObserver
    {
        public void OnAttemptEnded(in AttemptResult result) => throw new InvalidOperationException("observer bug");
    }

    [Fact]
    public async Task Observer_ThatThrows_IsDetachedAndTheRunGoesOn()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        for (int i = 0; i < 100; i++) g.Task("noop");
        var o = new RecordingObserver();

        var result = await RunWithin(engine, engine.Prepare(g), new RunOptions { Observers = [new ThrowingObserver(), o] });

        Assert.Equal(100, result.Succeeded);
        Assert.Equal(100, o.Ended.Count);
        Assert.Contains("ThrowingObserver was detached: InvalidOperationException: observer bug", Assert.Single(result.Record.ObserverFaults));
    }
}
