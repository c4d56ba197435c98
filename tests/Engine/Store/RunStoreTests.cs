using Microsoft.Data.Sqlite;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Store;
using TaskMesh.Tests.Engine.Observability;
using Xunit;

namespace TaskMesh.Tests.Engine.Store;

/// <summary>
/// The run store's own test suite, run against both of its databases: an SQLite file
/// (<see cref="RunStoreTests"/>) and PostgreSQL (<see cref="PostgresRunStoreTests"/>). What only one
/// of them has (files and their damage, outputs in files beside the store; a database shared with
/// other applications) is tested in its class.
/// </summary>
public abstract class RunStoreContract
{
    /// <summary>Opens this test's store (a fresh one at the first call; the same one after).</summary>
    protected abstract RunStore OpenStore(bool readOnly = false);

    /// <summary>Moves a failed task on <c>local</c> to <c>strong</c> (an escalation to record).</summary>
    private sealed class MoveOnError : IEscalationPolicy
    {
        public EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context)
            => attempt.Outcome == AttemptOutcome.Failed && attempt.Layer == "local" && context.TaskId == "moves"
                ? EscalationDecision.EscalateTo("strong", "error", "failed on local")
                : DefaultEscalationPolicy.Instance.Decide(attempt, context);
    }


    [Fact]
    public async Task Record_SmallRunWithFailureSkipAndEscalation_RoundTrips()
    {
        var engine = new TaskMeshEngine();
        engine.AddLayer(new TestLayer("strong", 1, price: 3));
        engine.EscalationPolicy = new MoveOnError();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1 ? throw new TaskFailedException("too weak") : new ValueTask<object?>("ok"));
        var g = new GraphBuilder("round-trip");
        var a = g.Task("a", "noop");
        var bad = g.Task("bad", "fail", new { message = "boom" }).DependsOn(a);
        g.Task("after-bad", "noop").DependsOn(bad);
        g.Task("moves", "weak-first").DependsOn(a);
        using var store = OpenStore();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store, graphHash: "abc")] });
        await store.FlushAsync();

        var run = Assert.Single(store.ListRuns());
        Assert.Equal((result.RunId, "round-trip", "failed", "abc"), (run.RunId, run.Graph, run.Status, run.GraphHash));
        Assert.Equal((4, 2, 1, 1, 0), (run.Tasks.Total, run.Tasks.Succeeded, run.Tasks.Failed, run.Tasks.Skipped, run.Tasks.Cancelled));
        Assert.Equal(1, run.Escalations);
        Assert.NotNull(run.FinishedAt);
        var tasks = store.TasksOf(result.RunId).ToDictionary(t => t.Id);
        Assert.Equal(4, tasks.Count);
        Assert.All(tasks.Values, t => Assert.Equal("small-run", t.KeptBecause));
        Assert.Equal(("failed", "boom"), (tasks["bad"].Status, tasks["bad"].Error));
        Assert.Equal(("skipped", "bad"), (tasks["after-bad"].Status, tasks["after-bad"].SkippedBecause));
        Assert.Equal(("succeeded", "local", "strong", 2, 1), (tasks["moves"].Status, tasks["moves"].InitialLayer, tasks["moves"].Layer, tasks["moves"].Attempts, tasks["moves"].Escalations));
        var esc = Assert.Single(store.EscalationsOf(result.RunId));
        Assert.Equal(("moves", "local", "strong", "error"), (esc.TaskId, esc.From, esc.To, esc.Trigger));
        Assert.Equal(2, store.CompletedCount(result.RunId));
    }

    [Fact]
    public async Task TaskPage_CountsAndSkipsInTheDatabase_ByTaskIndex_WithTheStatusFilter()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("pages");
        for (int i = 0; i < 30; i++)
            if (i % 3 == 0) g.Task($"f{i}", "fail", new { message = "no" }); else g.Task($"t{i}", "noop");
        using var store = OpenStore();
        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();

        var (total, page) = store.TaskPage(result.RunId, null, 4, 5);
        Assert.Equal(30, total);
        Assert.Equal([5, 6, 7, 8], page.Select(t => t.Index));
        (total, page) = store.TaskPage(result.RunId, "failed", 3, 2);
        Assert.Equal(10, total);
        Assert.Equal(["f6", "f9", "f12"], page.Select(t => t.Id));
        Assert.All(page, t => Assert.Equal(("failed", "no"), (t.Status, t.Error)));
        // Past the end, a limit of 0, a status no row has, a run the store does not know: counted, nothing read.
        Assert.Equal((30, 0), (store.TaskPage(result.RunId, null, 10, 30).Total, store.TaskPage(result.RunId, null, 10, 30).Tasks.Count));
        Assert.Equal((30, 0), (store.TaskPage(result.RunId, null, 0, 0).Total, store.TaskPage(result.RunId, null, 0, 0).Tasks.Count));
        Assert.Equal(0, store.TaskPage(result.RunId, "cancelled", 10, 0).Total);
        Assert.Equal(0, store.TaskPage("no-such-run", null, 10, 0).Total);
        Assert.Throws<ArgumentOutOfRangeException>(() => store.TaskPage(result.RunId, null, 10, -1));
        // The slowest kept rows, longest first, sorted by the database (the same as sorting the whole list).
        var slowest = store.SlowestTasks(result.RunId, 5);
        Assert.Equal(store.TasksOf(result.RunId).Where(t => t.DurationMs is not null).OrderByDescending(t => t.DurationMs).ThenBy(t => t.Index).Take(5).Select(t => t.Index),
            slowest.Select(t => t.Index));
        Assert.Empty(store.SlowestTasks(result.RunId, 0));
        // The same rows as the whole list, a page at a time.
        var whole = store.TasksOf(result.RunId).Select(t => t.Id).ToList();
        var paged = Enumerable.Range(0, 4).SelectMany(k => store.TaskPage(result.RunId, null, 8, 8 * k).Tasks).Select(t => t.Id).ToList();
        Assert.Equal(whole, paged);
    }


    [Fact]
    public async Task TrainingRows_OfATaskThatMoved_KeepEachLayersAttempt_AndTrainingGivesEachLayerItsOwn()
    {
        var engine = new TaskMeshEngine();
        engine.AddLayer(new TestLayer("strong", 1));
        // The first attempt (on local) runs 200 ms and asks to move; the second (on strong) runs 1 ms.
        engine.Handlers.Register("unsure-first", async (ctx, a, ct) =>
        {
            await Task.Delay(ctx.Attempt == 1 ? 200 : 1, ct);
            if (ctx.Attempt == 1) ctx.RequestEscalation("low_confidence", "local", "strong", "unsure");
            return "ok";
        });
        engine.Handlers.Register("steady", async (ctx, a, ct) => { await Task.Delay(20, ct); return "ok"; });
        var g = new GraphBuilder("moved");
        g.Task("moves", "unsure-first").OnLayer("local");
        g.Task("stays", "steady").OnLayer("local");
        var prepared = engine.Prepare(g);
        var features = new TaskMesh.Learning.Features.FeatureExtractor(prepared);
        using var store = OpenStore();

        await engine.RunAsync(prepared, new RunOptions { Observers = [new RunRecorder(store, features: t => features.Extract(t))] });
        await store.FlushAsync();

        var rows = store.TrainingRows().ToDictionary(r => r.Handler);
        var moved = rows["unsure-first"];
        Assert.Equal(("local", "strong", 1), (moved.InitialLayer, moved.FinalLayer, moved.Escalations));
        Assert.True(moved.FirstAttemptMs >= 190, $"first attempt {moved.FirstAttemptMs} ms");
        Assert.True(moved.LastAttemptMs < moved.FirstAttemptMs, $"last attempt {moved.LastAttemptMs} ms");
        Assert.Equal(moved.FirstAttemptMs!.Value + moved.LastAttemptMs!.Value, moved.DurationMs!.Value, 3);
        var stays = rows["steady"];
        Assert.Equal(stays.DurationMs, stays.LastAttemptMs);
        Assert.Equal(stays.DurationMs, stays.FirstAttemptMs);

        // Training: local sees the move as a failure that took the first attempt's time; strong sees
        // a success that took the second's (not the two summed).
        var examples = TaskMesh.Learning.Models.ModelTrainer.ExamplesOf([moved]);
        var onLocal = Assert.Single(examples["local"]);
        var onStrong = Assert.Single(examples["strong"]);
        Assert.False(onLocal.Succeeded);
        Assert.True(onStrong.Succeeded);
        Assert.Equal(Math.Log10(1 + moved.FirstAttemptMs!.Value), onLocal.LogDuration, 4);
        Assert.Equal(Math.Log10(1 + moved.LastAttemptMs!.Value), onStrong.LogDuration, 4);
        // A row stored before each attempt was kept: the moved task's sum is no layer's duration.
        var old = ModelTrainerOld(moved);
        Assert.True(float.IsNaN(Assert.Single(old["strong"]).LogDuration));
        Assert.True(float.IsNaN(Assert.Single(old["local"]).LogDuration));

        static Dictionary<string, List<TaskMesh.Learning.Models.Example>> ModelTrainerOld(TrainingRow r)
            => TaskMesh.Learning.Models.ModelTrainer.ExamplesOf([r with { LastAttemptMs = null, FirstAttemptMs = null }]);
    }


    [Fact]
    public async Task Audit_RunThatFailsRetriesEscalatesAndReportsConfidence_HasEveryCategory()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(1) });
        engine.AddLayer(new TestLayer("strong", 1));
        engine.EscalationPolicy = new MoveOnError();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1 ? throw new TaskFailedException("too weak") : new ValueTask<object?>("ok"));
        engine.Handlers.RegisterInline("unsure", ctx => { ctx.ReportConfidence(0.42); return null; });
        var g = new GraphBuilder("audited");
        g.Task("flaky", "fail", new { message = "transient", attempts = 1 }).WithRetries(2);
        g.Task("moves", "weak-first");
        g.Task("unsure", "unsure").WithMinConfidence(0.9);
        g.Task("bad", "fail", new { message = "permanent" });
        g.Task("after", "noop").DependsOn("bad");
        using var store = OpenStore();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();

        var trail = store.AuditOf(result.RunId);
        // Every category a run writes itself (api rows are the service's, for callers' actions).
        Assert.Equal(AuditCategory.All.Where(c => c != AuditCategory.Api).Order(), trail.Select(r => r.Category).Distinct().Order());
        Assert.Null(trail[0].TaskId);                                                    // the run's submission first
        Assert.Equal(AuditCategory.TaskSubmission, trail[0].Category);
        var flaky = store.AuditOf(result.RunId, "flaky", AuditCategory.TaskExecution);
        Assert.Equal(2, flaky.Count);
        Assert.Contains("\"next\":\"retry\"", flaky[0].Detail);
        Assert.Contains("\"outcome\":\"succeeded\"", flaky[1].Detail);
        var esc = Assert.Single(store.AuditOf(result.RunId, "moves", AuditCategory.Escalation));
        Assert.Contains("\"to\":\"strong\"", esc.Detail);
        var conf = Assert.Single(store.AuditOf(result.RunId, "unsure", AuditCategory.ConfidenceEvaluation));
        Assert.Contains("\"confidence\":0.42", conf.Detail);
        Assert.Contains("\"min_confidence\":0.9", conf.Detail);
        Assert.Single(store.AuditOf(result.RunId, "bad", AuditCategory.Error));
        Assert.Contains("skipped", Assert.Single(store.AuditOf(result.RunId, "after", AuditCategory.TaskCompletion)).Detail);
        // Every record falls within the run; every detail is a JSON object.
        Assert.All(trail, r => Assert.InRange(r.Timestamp, result.Record.StartedAt.AddSeconds(-1), DateTimeOffset.UtcNow));
        Assert.All(trail, r => Assert.Equal(System.Text.Json.JsonValueKind.Object, System.Text.Json.JsonDocument.Parse(r.Detail).RootElement.ValueKind));
        Assert.Equal(result.RunId, store.ResolveRunId("last"));
        Assert.Equal(result.RunId, store.ResolveRunId(result.RunId[..5]));
        Assert.Throws<StoreException>(() => store.ResolveRunId("zzzz"));
    }


    [Fact]
    public async Task Record_LargeRun_KeepsOnlyTheRowsTheJournalPromises()
    {
        const int n = 20_000;
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("slow-or-not", ctx => { if (ctx.Index == 5_001) Thread.Sleep(15); return null; });
        var g = new GraphBuilder("large");
        int first = g.AddTasks(n, "slow-or-not");
        int bad = g.Task("bad", "fail", new { message = "x" }).Index;
        g.Task("skipped", "noop").DependsOn("bad");
        using var store = OpenStore();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();

        var kept = store.TasksOf(result.RunId).ToDictionary(t => t.Index);
        Assert.Equal("failed", kept[bad].KeptBecause);
        Assert.Equal("skipped", kept[bad + 1].KeptBecause);
        Assert.Equal("slow", kept[5_001].KeptBecause);
        int stride = RunRecorder.SampleStride(n);
        Assert.Equal(RunRecorder.SampleEvery, stride);
        for (int i = 0; i < n; i += stride) Assert.Equal("sampled", kept[i].KeptBecause);
        Assert.Equal(n / stride + (n % stride == 0 ? 0 : 1) + 3, kept.Count);
        Assert.Equal(n, store.CompletedCount(result.RunId));
        Assert.Equal(n, Assert.Single(store.ListRuns()).Tasks.Succeeded);
    }


    /// <summary>A write that holds <see cref="Bytes"/> of memory and, until its gate opens, the writer.</summary>
    private sealed class HeavyWrite(long bytes, ManualResetEventSlim? gate = null) : StoreWrite
    {
        public override long Bytes => bytes;
        public override void Apply(StoreBatch batch) => gate?.Wait(TimeSpan.FromSeconds(30));
    }


    [Fact]
    public async Task Writer_WhenQueuedOutputsHoldItsMemoryBudget_MakesTheRecordingThreadWait()
    {
        using var store = OpenStore();
        var writer = store.Writer!;
        using var gate = new ManualResetEventSlim();
        long half = StoreWriter.MaxQueuedBytes / 2 + 1;
        try
        {
            writer.Enqueue(new HeavyWrite(half, gate));   // the writer holds this one until the gate opens
            var second = Task.Run(() => writer.Enqueue(new HeavyWrite(half)));

            Assert.NotSame(second, await Task.WhenAny(second, Task.Delay(300)));   // a write past the budget waits
            Assert.Equal(half, writer.QueuedBytes);
            gate.Set();
            Assert.Same(second, await Task.WhenAny(second, Task.Delay(TimeSpan.FromSeconds(30))));   // and goes in once there is room
            await second;
            await store.FlushAsync();
            Assert.Equal(0, writer.QueuedBytes);

            // One write larger than the whole budget still goes, alone.
            writer.Enqueue(new HeavyWrite(StoreWriter.MaxQueuedBytes * 2));
            await store.FlushAsync();
            Assert.Equal(0, writer.QueuedBytes);
        }
        finally
        {
            gate.Set();
        }
    }


    [Fact]
    public async Task Record_TaskRowCost_IsEachAttemptsDurationTimesItsLayersPrice()
    {
        var engine = new TaskMeshEngine();
        engine.AddLayer(new TestLayer("strong", 2, price: 2.0));
        engine.EscalationPolicy = new ObserverTests.MoveOnErrorPolicy();
        engine.Handlers.Register("weak-first", async (ctx, a, ct) =>
        {
            if (ctx.Attempt == 1) throw new TaskFailedException("too weak");
            await Task.Delay(60, ct);
            return "done";
        });
        var g = new GraphBuilder("priced");
        g.Task("escalated", "weak-first");
        g.Task("free", "noop");
        using var store = OpenStore();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();

        Assert.Equal(RunStatus.Succeeded, result.Status);
        var rows = store.TasksOf(result.RunId).ToDictionary(t => t.Id);
        var escalated = rows["escalated"];
        Assert.Equal(("local", "strong"), (escalated.InitialLayer, escalated.Layer));
        // The free first attempt costs nothing; the second ran 60 ms or more at 2 per second.
        Assert.NotNull(escalated.Cost);
        Assert.InRange(escalated.Cost!.Value, 2.0 * 0.055, 2.0 * escalated.DurationMs!.Value / 1000 + 1e-9);
        Assert.Equal(0.0, rows["free"].Cost);
    }


    [Fact]
    public async Task Record_LargeChain_KeepsTheSlowTaskAndNotTheOneAfterIt()
    {
        // Back-to-back inline tasks share a clock read (one's end is the next one's start): the
        // task after a slow one must not inherit its time.
        const int n = 12_000;
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("slow-or-not", ctx => { if (ctx.Index == 6_001) Thread.Sleep(15); return null; });
        var g = new GraphBuilder("large-chain");
        int first = g.AddTasks(n, "slow-or-not");
        for (int i = first; i < first + n - 1; i++) g.AddEdge(i, i + 1);
        using var store = OpenStore();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();

        var kept = store.TasksOf(result.RunId).ToDictionary(t => t.Index);
        Assert.Equal("slow", kept[6_001].KeptBecause);
        Assert.True(kept[6_001].DurationMs >= 10, $"the slow task took {kept[6_001].DurationMs} ms");
        Assert.False(kept.ContainsKey(6_002));
        Assert.Equal(n, store.CompletedCount(result.RunId));
    }


    [Fact]
    public async Task Record_WithJournalOptions_KeepsTheRowsTheyAskFor()
    {
        const int n = 40;
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("journal");
        g.AddTasks(n, "noop");
        using var store = OpenStore();
        var journal = new JournalOptions { FullDetailTasks = 0, SampleEvery = 4, MaxSampledRows = 1_000, SlowTaskMs = 60_000 };

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store, journal: journal)] });
        await store.FlushAsync();

        var kept = store.TasksOf(result.RunId);
        Assert.Equal(Enumerable.Range(0, n / 4).Select(i => i * 4), kept.Select(t => t.Index));
        Assert.All(kept, t => Assert.Equal("sampled", t.KeptBecause));
        Assert.Equal(n, store.CompletedCount(result.RunId));
        Assert.Throws<ArgumentException>(() => new RunRecorder(store, journal: new JournalOptions { SampleEvery = 3 }));
    }


    [Fact]
    public async Task Resume_RestoresFinishedTasksAndTheirDataEdgeOutputs_AndRunsTheRest()
    {
        var engine = new TaskMeshEngine();
        var calls = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        bool failLate = true;
        engine.Handlers.RegisterInline("make", ctx => { calls.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1); return $"made by {ctx.Id}"; });
        engine.Handlers.RegisterInline("late", ctx =>
        {
            calls.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1);
            if (failLate) throw new TaskFailedException("not yet");
            return string.Join("+", ctx.Inputs.Select(kv => kv.Value));
        });
        var g = new GraphBuilder("resumable");
        var a = g.Task("a", "make");
        var b = g.Task("b", "make");
        g.Task("late", "late").DependsOn(a, EdgeKind.Data).DependsOn(b, EdgeKind.Data);
        var graph = engine.Prepare(g);
        using var store = OpenStore();

        var first = await engine.RunAsync(graph, new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();
        Assert.Equal(RunStatus.Failed, first.Status);

        failLate = false;
        var restored = store.LoadRestored(first.RunId, graph.Graph);
        Assert.Equal(2, restored.Count);
        var second = await engine.RunAsync(graph, new RunOptions { Restored = restored, KeepOutputs = true, Observers = [new RunRecorder(store, resumedFrom: first.RunId)] });
        await store.FlushAsync();

        Assert.Equal((RunStatus.Succeeded, 3, 2), (second.Status, second.Succeeded, second.Restored));
        Assert.Equal((1, 1, 2), (calls["a"], calls["b"], calls["late"]));           // a and b ran once in all
        Assert.Equal("made by a+made by b", second.OutputOf(2));                   // their outputs came from the store

        // A resume of the resume still finds the outputs (stored by the first run).
        var again = store.LoadRestored(second.RunId, graph.Graph);
        Assert.Equal(3, again.Count);
        Assert.Equal(2, store.ListRuns(status: "succeeded").Single().Tasks.Restored);
    }


    /// <summary>Counts what batches carry: listed ends and counted quick successes.</summary>
    private sealed class BatchCounter : IRunObserver
    {
        public long Listed, Quick;
        public RunObserverInterests Interests => RunObserverInterests.TaskEndedInBatches | RunObserverInterests.QuickSuccessesCounted;
        public void OnTasksEnded(TaskEndBatch ends)
        {
            Interlocked.Add(ref Listed, ends.Count);
            Interlocked.Add(ref Quick, ends.QuickSuccesses);
        }
    }


    [Fact]
    public async Task LargeRun_QuickSuccessesAreCountedNotListed_YetTheStoreKeepsEveryCompletionTheSampleAndTheSlowTask()
    {
        const int n = 300_000;
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2 });
        engine.Handlers.RegisterInline("tiny", _ => null);
        // 100 ms: a coarsely timed task is seen as slow once the clock thread ticks while it runs,
        // which a loaded machine can delay by tens of milliseconds.
        engine.Handlers.RegisterInline("slow", _ => { Thread.Sleep(100); return null; });
        var g = new GraphBuilder("large").EnsureCapacity(n, 0);
        g.AddTasks(n - 1, "tiny");
        g.AddTasks(1, "slow");
        var graph = engine.Prepare(g);
        using var store = OpenStore();
        var counter = new BatchCounter();
        var metrics = new TaskMeshMetrics();

        var result = await engine.RunAsync(graph, new RunOptions { CollectTaskDetails = false, Observers = [new RunRecorder(store), metrics, counter] });
        await store.FlushAsync();

        Assert.Equal(n, result.Succeeded);
        Assert.True(counter.Quick > n / 2, $"{counter.Quick} quick of {n}");            // most were counted, not listed
        Assert.Equal(n, counter.Quick + counter.Listed);
        Assert.Equal(n, store.CompletedCount(result.RunId));                              // from the run's outcomes
        var rows = store.TasksOf(result.RunId);
        int stride = new JournalOptions().SampleStride(n);
        // Every sampled task is kept — as "sampled", or for a stronger reason (a first task that ran
        // while its worker was being compiled or preempted is "slow") — and nothing else is "sampled".
        var sample = Enumerable.Range(0, n).Where(i => i % stride == 0).ToHashSet();
        Assert.Superset(sample, rows.Select(r => r.Index).ToHashSet());
        Assert.All(rows.Where(r => r.KeptBecause == "sampled"), r => Assert.Contains(r.Index, sample));
        // The sleeping task is slow; a tiny one may be too, when its worker was preempted (coarse timing errs long).
        Assert.Contains(rows, r => r.KeptBecause == "slow" && r.Index == n - 1 && r.DurationMs >= 25);
        var s = Exposition.Parse(await Exposition.TextOf(metrics));
        Assert.Equal(n, s["taskmesh_tasks_total{layer=\"local\",outcome=\"succeeded\"}"]);
        Assert.Equal(n, s["taskmesh_task_duration_seconds_count{layer=\"local\"}"]);
        Assert.True(s["taskmesh_task_duration_seconds_count{layer=\"local\"}"] - s["taskmesh_task_duration_seconds_bucket{layer=\"local\",le=\"0.025\"}"] >= 1);
    }


    [Fact]
    public async Task Cache_HitsExactlyWhenHandlerArgsAndInputsMatch_AndNeverForAFailure()
    {
        var engine = new TaskMeshEngine();
        var runs = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        engine.Handlers.Register(new HandlerDescriptor("square", ctx =>
        {
            runs.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1);
            var x = ctx.Args.GetProperty("x").GetInt32();
            if (x < 0) throw new TaskFailedException("negative");
            return x * x + ctx.Inputs.Sum(kv => Convert.ToInt32(kv.Value));
        }) { Cacheable = true });
        engine.Handlers.RegisterInline("side-effect", _ => null);
        TaskMesh.Engine.Graph.PreparedGraph Graph(int a, int b, int bad)
        {
            var g = new GraphBuilder("cached");
            var ta = g.Task("a", "square", new { x = a }).WithCache();
            g.Task("b", "square", new { x = b }).WithCache().DependsOn(ta, EdgeKind.Data);
            g.Task("bad", "square", new { x = bad }).WithCache();
            return engine.Prepare(g);
        }
        using var store = OpenStore();
        async Task<RunResult> Run(TaskMesh.Engine.Graph.PreparedGraph g)
        {
            var r = await engine.RunAsync(g, new RunOptions { Cache = new StoreTaskCache(store), KeepOutputs = true, Observers = [new RunRecorder(store)] });
            await store.FlushAsync();
            return r;
        }

        var first = await Run(Graph(3, 4, -1));
        Assert.Equal((0, 25), (first.Cached, (int)first.OutputOf(1)!));          // b = 16 + a's 9
        var second = await Run(Graph(3, 4, -1));
        Assert.Equal(2, second.Cached);                                           // a and b: same args, same inputs
        Assert.Equal(25L, second.OutputOf(1));                                    // the kept output (a number comes back as itself)
        Assert.Equal(TaskOutcome.Failed, second.OutcomeOf(2));                    // a failure is never kept
        Assert.Equal((1, 1, 2), (runs["a"], runs["b"], runs["bad"]));

        var third = await Run(Graph(5, 4, -1));                                   // a's args differ, so does b's input
        Assert.Equal(0, third.Cached);
        Assert.Equal((2, 2), (runs["a"], runs["b"]));
        Assert.Equal(41, third.OutputOf(1));

        Assert.Equal(4, store.CacheEntries().Count);
        Assert.Contains(store.AuditOf(second.RunId, "a", AuditCategory.TaskCompletion), r => r.Detail.Contains("\"reused_from\":\"cache\""));
        Assert.Equal(2, store.ListRuns().Single(r => r.RunId == second.RunId).Tasks.Cached);
        Assert.Equal(4, await store.ClearCacheAsync());
        Assert.Empty(store.CacheEntries());

        // A handler that is not cacheable refuses the option.
        var g2 = new GraphBuilder();
        g2.Task("s", "side-effect").WithCache();
        var ex = Assert.Throws<GraphValidationException>(() => engine.Prepare(g2));
        Assert.Contains("is not cacheable", ex.Message);
    }

}

/// <summary>The run store's suite on an SQLite file, and what only a file has.</summary>
public sealed class RunStoreTests : RunStoreContract, IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-store-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, recursive: true);
    }

    private string StorePath => Path.Combine(_dir, "runs.db");

    protected override RunStore OpenStore(bool readOnly = false) => RunStore.Open(StorePath, readOnly);

    [Theory]
    [InlineData(10_001, 1024)]
    [InlineData(131_072, 1024)]
    [InlineData(131_073, 2048)]
    [InlineData(1_000_000, 8192)]
    [InlineData(16_777_216, 131_072)]
    public void SampleStride_KeepsEveryThousandthTaskUntilTheSampleWouldPassItsCap(int tasks, int stride)
    {
        Assert.Equal(stride, RunRecorder.SampleStride(tasks));
        int rows = (tasks + stride - 1) / stride;
        Assert.InRange(rows, 1, RunRecorder.MaxSampledRows);
    }


    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(63)]
    [InlineData(64)]
    [InlineData(65)]
    [InlineData(320)]
    [InlineData(1_000)]
    public void PackBitmap_SetsBitIOfWordIOver64ForEveryFlaggedTask(int tasks)
    {
        var rng = new Random(tasks);
        var flags = new byte[tasks];
        for (int i = 0; i < tasks; i++) flags[i] = (byte)rng.Next(0, 5);   // task outcomes: 1 is succeeded

        var bytes = RunRecorder.PackBitmap(flags, 1, out int count);

        Assert.Equal((tasks + 63) / 64 * 8, bytes.Length);
        Assert.Equal(flags.Count(f => f == 1), count);
        for (int i = 0; i < tasks; i++)
            Assert.Equal(flags[i] == 1, (bytes[i / 8] & (1 << (i % 8))) != 0);
        for (int i = tasks; i < bytes.Length * 8; i++)
            Assert.Equal(0, bytes[i / 8] & (1 << (i % 8)));
    }


    private string Write(string name, byte[] bytes)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllBytes(path, bytes);
        return path;
    }


    private static void AssertRefusedAndUnchanged(string path, string expected)
    {
        var before = File.ReadAllBytes(path);
        var ex = Assert.Throws<StoreException>(() => RunStore.Open(path));
        Assert.Contains(expected, ex.Message);
        Assert.Contains("left as it is", ex.Message);
        Assert.Equal(before, File.ReadAllBytes(path));
        Assert.False(File.Exists(path + "-wal") && new FileInfo(path + "-wal").Length > 0);
    }


    [Fact]
    public void Open_ForeignCorruptAndNewerFiles_AreRefusedAndLeftUnchanged()
    {
        AssertRefusedAndUnchanged(Write("notes.txt", "just some notes\n"u8.ToArray()), "not an SQLite database");

        var other = Path.Combine(_dir, "other.db");
        using (var c = new SqliteConnection($"Data Source={other};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "CREATE TABLE mine (x INTEGER); INSERT INTO mine VALUES (42);";
            cmd.ExecuteNonQuery();
        }
        AssertRefusedAndUnchanged(other, "of another application");

        var newer = Path.Combine(_dir, "newer.db");
        using (var s = RunStore.Open(newer)) { }
        using (var c = new SqliteConnection($"Data Source={newer};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = "PRAGMA user_version = 99;";
            cmd.ExecuteNonQuery();
        }
        AssertRefusedAndUnchanged(newer, "written by a newer TaskMesh (schema version 99");

        // A real store with a page of its b-trees overwritten.
        var corrupt = Path.Combine(_dir, "corrupt.db");
        using (var s = RunStore.Open(corrupt)) { }
        var bytes = File.ReadAllBytes(corrupt);
        Assert.True(bytes.Length >= 8192);
        for (int i = 4096; i < 8192; i++) bytes[i] = 0xA5;
        File.WriteAllBytes(corrupt, bytes);
        var ex = Assert.Throws<StoreException>(() => RunStore.Open(corrupt));
        Assert.Contains("corrupt", ex.Message);
        Assert.Equal(bytes, File.ReadAllBytes(corrupt));
    }


    [Fact]
    public void Open_AStoreOfThePreviousSchema_IsMigratedKeepingItsRuns()
    {
        var path = Path.Combine(_dir, "v1.db");
        using (var c = new SqliteConnection($"Data Source={path};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = StoreSchema.Migrations[0] + $"""
                PRAGMA application_id = {StoreSchema.ApplicationId};
                PRAGMA user_version = 1;
                INSERT INTO runs (run_id, graph_name, status, started_at, total, succeeded) VALUES ('old1', 'g', 'succeeded', '2026-11-01T00:00:00+00:00', 3, 3);
                """;
            cmd.ExecuteNonQuery();
        }
        using var store = RunStore.Open(path);
        var run = Assert.Single(store.ListRuns());
        Assert.Equal(("old1", 3), (run.RunId, run.Tasks.Succeeded));
        using var check = new SqliteConnection($"Data Source={path};Pooling=false;Mode=ReadOnly");
        check.Open();
        using var q = check.CreateCommand();
        q.CommandText = "PRAGMA user_version;";
        Assert.Equal((long)StoreSchema.CurrentVersion, (long)q.ExecuteScalar()!);
        q.CommandText = "SELECT count(*) FROM pragma_table_info('runs') WHERE name = 'resumed_from';";
        Assert.Equal(1L, (long)q.ExecuteScalar()!);
    }


    [Fact]
    public async Task Open_AStoreOfSchemaVersion8_KeepsItsAuditTrail_AndTakesTheServicesRows()
    {
        var path = Path.Combine(_dir, "v8.db");
        using (var c = new SqliteConnection($"Data Source={path};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = string.Concat(StoreSchema.Migrations.Take(8)) + $$"""
                PRAGMA application_id = {{StoreSchema.ApplicationId}};
                PRAGMA user_version = 8;
                INSERT INTO runs (run_id, graph_name, status, started_at, total, succeeded) VALUES ('old8', 'g', 'succeeded', '2026-12-01T00:00:00+00:00', 1, 1);
                INSERT INTO audit_log (run_id, task_id, category, at, detail) VALUES ('old8', NULL, 'task_submission', '2026-12-01T00:00:00+00:00', '{"graph":"g"}');
                INSERT INTO audit_log (run_id, task_id, category, at, detail) VALUES ('old8', 'a', 'task_completion', '2026-12-01T00:00:01+00:00', '{"status":"succeeded"}');
                """;
            cmd.ExecuteNonQuery();
        }
        using (var store = RunStore.Open(path))
        {
            Assert.Equal([AuditCategory.TaskSubmission, AuditCategory.TaskCompletion], store.AuditOf("old8").Select(a => a.Category));
            Assert.Equal("a", store.AuditOf("old8")[1].TaskId);
            store.RecordAudit("old8", null, AuditCategory.Api, """{"action":"cancel_run","caller":"ops"}""");
            store.RecordAudit(null, null, AuditCategory.Api, """{"action":"train","caller":"ops"}""");
            await store.FlushAsync();
            Assert.Equal(3, store.AuditOf("old8").Count);
            var service = Assert.Single(store.ServiceAudit());
            Assert.Equal(("api", ""), (service.Category, service.RunId));
            Assert.Throws<ArgumentException>(() => store.RecordAudit(null, null, "gossip", "{}"));
        }
    }


    [Fact]
    public void Open_AStoreOfSchemaVersion2_IsMigratedKeepingItsOutputsAndCache()
    {
        var path = Path.Combine(_dir, "v2.db");
        using (var c = new SqliteConnection($"Data Source={path};Pooling=false"))
        {
            c.Open();
            using var cmd = c.CreateCommand();
            cmd.CommandText = StoreSchema.Migrations[0] + StoreSchema.Migrations[1] + $"""
                PRAGMA application_id = {StoreSchema.ApplicationId};
                PRAGMA user_version = 2;
                INSERT INTO runs (run_id, graph_name, status, started_at, total, succeeded) VALUES ('old2', 'g', 'failed', '2026-11-01T00:00:00+00:00', 2, 1);
                INSERT INTO run_checkpoints (run_id, completed, bitmap, updated_at) VALUES ('old2', 1, x'01', '2026-11-01T00:00:01+00:00');
                INSERT INTO task_outputs (run_id, task_index, json) VALUES ('old2', 0, '"kept"');
                INSERT INTO task_cache (key, handler, json, run_id, task_id, created_at) VALUES ('k', 'h', '42', 'old2', 'a', '2026-11-01T00:00:00+00:00');
                """;
            cmd.ExecuteNonQuery();
        }
        using var store = RunStore.Open(path);
        var g = new GraphBuilder("g");
        var a = g.Task("a", "noop");
        g.Task("b", "noop").DependsOn(a, EdgeKind.Data);
        var restored = store.LoadRestored("old2", g.Build());
        Assert.Equal(1, restored.Count);
        Assert.Equal("kept", restored.OutputOf(0)?.ToString());
        Assert.Equal(("k", 2), (store.CacheEntries().Single().Key, store.CacheEntries().Single().Bytes));
        Assert.Equal("42", store.CachedJson("k"));
    }


    [Fact]
    public async Task Resume_AnOutputOverOneMiB_IsKeptInAFileBesideTheStore_AndAMissingFileMeansTheTaskRunsAgain()
    {
        var engine = new TaskMeshEngine();
        var calls = new System.Collections.Concurrent.ConcurrentDictionary<string, int>();
        bool failLate = true;
        string big = new string('x', (3 << 20) / 2);   // 1.5 MiB of JSON string
        engine.Handlers.RegisterInline("big", ctx => { calls.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1); return big; });
        engine.Handlers.RegisterInline("small", ctx => { calls.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1); return "s"; });
        engine.Handlers.RegisterInline("late", ctx =>
        {
            calls.AddOrUpdate(ctx.Id, 1, (_, n) => n + 1);
            if (failLate) throw new TaskFailedException("not yet");
            return ctx.Inputs.Sum(kv => ((string)kv.Value!).Length);
        });
        var g = new GraphBuilder("large-outputs");
        var a = g.Task("a", "big");
        var b = g.Task("b", "small");
        g.Task("late", "late").DependsOn(a, EdgeKind.Data).DependsOn(b, EdgeKind.Data);
        var graph = engine.Prepare(g);
        using var store = RunStore.Open(StorePath);

        var first = await engine.RunAsync(graph, new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();
        var file = Path.Combine(StorePath + ".files", "outputs", first.RunId, "0.json");
        Assert.True(File.Exists(file), "a's output is kept in a file");
        Assert.Equal(big.Length + 2, new FileInfo(file).Length);   // the JSON string, quotes included
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(file)!, "*.tmp", SearchOption.AllDirectories));

        failLate = false;
        var second = await engine.RunAsync(graph, new RunOptions { Restored = store.LoadRestored(first.RunId, graph.Graph), KeepOutputs = true });
        Assert.Equal((RunStatus.Succeeded, 2), (second.Status, second.Restored));
        Assert.Equal(big.Length + 1, second.OutputOf(2));
        Assert.Equal((1, 1, 2), (calls["a"], calls["b"], calls["late"]));

        // Without its file, a is not taken as done: it runs again (b still does not).
        File.Delete(file);
        var restored = store.LoadRestored(first.RunId, graph.Graph);
        Assert.Equal(1, restored.Count);
        var third = await engine.RunAsync(graph, new RunOptions { Restored = restored, KeepOutputs = true });
        Assert.Equal((RunStatus.Succeeded, 1, big.Length + 1), (third.Status, third.Restored, (int)third.OutputOf(2)!));
        Assert.Equal((2, 1), (calls["a"], calls["b"]));
    }


    [Fact]
    public async Task Cache_AnOutputOverOneMiB_HitsFromItsFile_AndClearingTheCacheDeletesIt()
    {
        var engine = new TaskMeshEngine();
        int runs = 0;
        string big = new string('y', (3 << 20) / 2);
        engine.Handlers.Register(new HandlerDescriptor("big", _ => { Interlocked.Increment(ref runs); return big; }) { Cacheable = true });
        var g = new GraphBuilder("cached-big");
        g.Task("a", "big").WithCache();
        var graph = engine.Prepare(g);
        using var store = RunStore.Open(StorePath);

        for (int i = 0; i < 2; i++)
        {
            var r = await engine.RunAsync(graph, new RunOptions { Cache = new StoreTaskCache(store), KeepOutputs = true });
            await store.FlushAsync();
            Assert.Equal(big, r.OutputOf(0)?.ToString());
            Assert.Equal(i, r.Cached);
        }
        Assert.Equal(1, runs);
        var entry = Assert.Single(store.CacheEntries());
        Assert.Equal(big.Length + 2, entry.Bytes);
        var folder = Path.Combine(StorePath + ".files", "cache");
        Assert.Single(Directory.GetFiles(folder));
        Assert.Equal(1, await store.ClearCacheAsync());
        Assert.False(Directory.Exists(folder));
    }


    [Fact]
    public async Task FullStore_StopsTheRunWithAClearError_AndKeepsWhatWasCommitted()
    {
        // A first run commits; then the file may not grow any more (SQLITE_FULL, as a full disk).
        var engine = new TaskMeshEngine();
        var small = new GraphBuilder("first");
        small.Task("a", "noop");
        var g = new GraphBuilder("big");
        for (int i = 0; i < 5000; i++) g.Task($"task-with-a-long-id-{i:00000}", "sleep", new { millis = 0 });
        string firstRun;
        using (var store = RunStore.Open(StorePath))
        {
            firstRun = (await engine.RunAsync(engine.Prepare(small), new RunOptions { Observers = [new RunRecorder(store)] })).RunId;
            await store.FlushAsync();
        }
        long pages = new FileInfo(StorePath).Length / 4096 + 8;
        using (var store = RunStore.Open(StorePath, readOnly: false, maxPages: pages))
        {
            var recorder = new RunRecorder(store);
            using var stop = new CancellationTokenSource();
            StoreException? reported = null;
            recorder.Faulted += e => { reported = e; stop.Cancel(); };
            var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [recorder] }, stop.Token);
            var ex = await Assert.ThrowsAsync<StoreException>(() => store.FlushAsync());
            Assert.Contains("disk holding store", ex.Message);
            Assert.Contains("full", ex.Message);
            Assert.NotNull(reported);
            Assert.Equal(RunStatus.Cancelled, result.Status);   // the failing store stopped the run
        }
        using (var store = RunStore.Open(StorePath, readOnly: true))
        {
            var first = store.ListRuns().Single(r => r.RunId == firstRun);   // nothing already written was lost
            Assert.Equal(("succeeded", 1), (first.Status, first.Tasks.Succeeded));
            Assert.Single(store.TasksOf(firstRun));
        }
    }


    [Fact]
    public void Open_EmptyFileOrNewPath_CreatesAStoreAtTheCurrentSchema()
    {
        var empty = Write("empty.db", []);
        using (var s = RunStore.Open(empty)) Assert.Empty(s.ListRuns());
        using var c = new SqliteConnection($"Data Source={empty};Pooling=false;Mode=ReadOnly");
        c.Open();
        using var cmd = c.CreateCommand();
        cmd.CommandText = "PRAGMA application_id;";
        Assert.Equal(0x544D5348L, (long)cmd.ExecuteScalar()!);
        cmd.CommandText = "PRAGMA user_version;";
        Assert.Equal((long)StoreSchema.CurrentVersion, (long)cmd.ExecuteScalar()!);
        cmd.CommandText = "SELECT count(*) FROM sqlite_schema WHERE type = 'table';";
        Assert.Equal(13L, (long)cmd.ExecuteScalar()!);   // and sqlite_sequence (escalation_rules' AUTOINCREMENT)

        Assert.Throws<StoreException>(() => RunStore.Open(Path.Combine(_dir, "missing.db"), readOnly: true));
        using (var fresh = RunStore.Open(Path.Combine(_dir, "sub", "dir", "new.db"))) Assert.Empty(fresh.ListRuns());
    }
}
