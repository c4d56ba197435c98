using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using Xunit;

namespace TaskMesh.Tests.Engine.Observability;

/// <summary>Parses Prometheus text exposition: each sample line as (name with labels) → value.</summary>
internal static class Exposition
{
    public static Dictionary<string, double> Parse(string text)
    {
        var samples = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var line in text.Split('\n'))
        {
            if (line.Length == 0 || line[0] == '#') continue;
            int space = line.LastIndexOf(' ');
            samples[line[..space]] = double.Parse(line[(space + 1)..], CultureInfo.InvariantCulture);
        }
        return samples;
    }

    public static async Task<string> TextOf(TaskMeshMetrics metrics)
    {
        using var ms = new MemoryStream();
        await metrics.Registry.CollectAndExportAsTextAsync(ms);
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }
}

public class MetricsTests
{
    /// <summary>Moves a task that failed as "too weak" from local to strong; everything else as by default.</summary>
    private sealed class MoveWeakPolicy : TaskMesh.Engine.Scheduling.Attempts.IEscalationPolicy
    {
        public TaskMesh.Engine.Scheduling.Attempts.EscalationDecision Decide(in TaskMesh.Engine.Scheduling.Attempts.AttemptResult attempt, in TaskMesh.Engine.Scheduling.Attempts.EscalationContext context)
            => attempt.Error?.Contains("too weak") == true && attempt.Layer == "local"
                ? TaskMesh.Engine.Scheduling.Attempts.EscalationDecision.EscalateTo("strong", "error", attempt.Error)
                : TaskMesh.Engine.Scheduling.Attempts.DefaultEscalationPolicy.Instance.Decide(attempt, context);
    }

    [Fact]
    public async Task Metrics_CountTasksByLayerAndOutcome_AsTheRunRecordDoes_WithRetriesEscalationsCostAndDurations()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(1) });
        var strong = new TestLayer("strong", 2, price: 3.0);
        engine.AddLayer(strong);
        engine.EscalationPolicy = new MoveWeakPolicy();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1
            ? throw new TaskFailedException("too weak")
            : new ValueTask<object?>(ctx.Attempt));
        engine.Handlers.RegisterInline("confident", ctx => { ctx.ReportConfidence(0.85); return 1; });
        var g = new GraphBuilder("metrics");
        for (int i = 0; i < 5_000; i++) g.Task($"n{i}", "noop");
        g.Task("weak", "weak-first");
        g.Task("conf", "confident");
        g.Task("slow", "sleep", new { millis = 30 });
        g.Task("bad", "fail", new { message = "permanent" }).WithRetries(2);
        g.Task("after-bad", "noop").DependsOn("bad");
        var metrics = new TaskMeshMetrics();
        metrics.Watch(engine);

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [metrics] });
        var s = Exposition.Parse(await Exposition.TextOf(metrics));

        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.Equal(result.Succeeded - 1, s["taskmesh_tasks_total{layer=\"local\",outcome=\"succeeded\"}"]);   // all but "weak", which ended on strong
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"strong\",outcome=\"succeeded\"}"]);
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"local\",outcome=\"failed\"}"]);
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"none\",outcome=\"skipped\"}"]);
        Assert.Equal(result.Total, s.Where(kv => kv.Key.StartsWith("taskmesh_tasks_total{", StringComparison.Ordinal)).Sum(kv => kv.Value));
        Assert.Equal(2, s["taskmesh_task_retries_total{layer=\"local\"}"]);   // "bad": 3 attempts
        Assert.Equal(1, s["taskmesh_escalations_total{trigger=\"error\",from=\"local\",to=\"strong\"}"]);
        Assert.True(s["taskmesh_cost_total{layer=\"strong\"}"] > 0);
        Assert.Equal(1, s["taskmesh_task_confidence_count{layer=\"local\"}"]);
        Assert.Equal(1, s["taskmesh_task_confidence_bucket{layer=\"local\",le=\"0.9\"}"]);
        Assert.Equal(0, s["taskmesh_task_confidence_bucket{layer=\"local\",le=\"0.8\"}"]);
        // Every task that ran has a duration; the 30 ms sleep lands above 25 ms.
        double ran = result.Total - result.Skipped;
        Assert.Equal(ran, s["taskmesh_task_duration_seconds_count{layer=\"local\"}"] + s["taskmesh_task_duration_seconds_count{layer=\"strong\"}"]);
        Assert.True(s["taskmesh_task_duration_seconds_count{layer=\"local\"}"] - s["taskmesh_task_duration_seconds_bucket{layer=\"local\",le=\"0.025\"}"] >= 1);
        Assert.Equal(1, s["taskmesh_runs_total{status=\"failed\"}"]);
        Assert.Equal(0, s["taskmesh_runs_active"]);
        Assert.Equal(2, s["taskmesh_layer_capacity{layer=\"strong\"}"]);
        Assert.True(s["process_cpu_seconds_total"] > 0);
        Assert.True(s["dotnet_gc_heap_size_bytes"] > 0);
    }

    [Fact]
    public async Task Metrics_OfAnOpenRun_CountItsTasksRetriesEscalationsAndCost_AsForAGraph()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(1) });
        engine.AddLayer(new TestLayer("strong", 2, price: 3.0));
        engine.EscalationPolicy = new MoveWeakPolicy();
        engine.Handlers.Register("weak-first", (ctx, a, ct) => ctx.Attempt == 1
            ? throw new TaskFailedException("too weak")
            : new ValueTask<object?>(ctx.Attempt));
        var metrics = new TaskMeshMetrics();
        engine.AddObserver(metrics);   // the engine's observers that hear open runs hear every one
        var run = engine.Open();
        for (int i = 0; i < 100; i++) run.Submit(new TaskRequest("noop"));
        run.Submit(new TaskRequest("weak-first") { Id = "weak" });
        var bad = run.Submit(new TaskRequest("fail") { Id = "bad", Spec = new TaskSpec { Retries = 2 } });
        run.Submit(new TaskRequest("noop") { Id = "after-bad", DependsOn = [bad] });
        var active = Exposition.Parse(await Exposition.TextOf(metrics));
        Assert.Equal(1, active["taskmesh_runs_active"]);
        run.Complete();
        var result = await run.Completion.WaitAsync(TimeSpan.FromSeconds(30));
        var s = Exposition.Parse(await Exposition.TextOf(metrics));

        Assert.Equal((RunStatus.Failed, 101L), (result.Status, result.Succeeded));
        Assert.Equal(100, s["taskmesh_tasks_total{layer=\"local\",outcome=\"succeeded\"}"]);
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"strong\",outcome=\"succeeded\"}"]);
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"local\",outcome=\"failed\"}"]);
        Assert.Equal(1, s["taskmesh_tasks_total{layer=\"none\",outcome=\"skipped\"}"]);
        Assert.Equal(2, s["taskmesh_task_retries_total{layer=\"local\"}"]);   // "bad": 3 attempts
        Assert.Equal(1, s["taskmesh_escalations_total{trigger=\"error\",from=\"local\",to=\"strong\"}"]);
        Assert.True(s["taskmesh_cost_total{layer=\"strong\"}"] > 0);
        Assert.Equal(102, s["taskmesh_task_duration_seconds_count{layer=\"local\"}"] + s["taskmesh_task_duration_seconds_count{layer=\"strong\"}"]);
        Assert.Equal(1, s["taskmesh_runs_total{status=\"failed\"}"]);
        Assert.Equal(0, s["taskmesh_runs_active"]);
    }

    [Fact]
    public async Task Metrics_WhileARunGoes_ShowItActive_AndItsReadyAndRunningTasks()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2, WorkerThreads = 2 });
        var g = new GraphBuilder("busy");
        for (int i = 0; i < 40; i++) g.Task($"s{i}", "sleep", new { millis = 50 });
        var metrics = new TaskMeshMetrics();
        metrics.Watch(engine);
        var handle = engine.Start(engine.Prepare(g), new RunOptions { Observers = [metrics] });
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        Dictionary<string, double> s;
        do
        {
            await Task.Delay(50);
            s = Exposition.Parse(await Exposition.TextOf(metrics));
        }
        while (s.GetValueOrDefault("taskmesh_running_tasks{layer=\"local\"}") < 2 && DateTime.UtcNow < deadline);
        Assert.Equal(1, s["taskmesh_runs_active"]);
        Assert.Equal(2, s["taskmesh_running_tasks{layer=\"local\"}"]);
        Assert.True(s["taskmesh_ready_tasks{layer=\"local\"}"] > 0);
        await handle.Completion;
        s = Exposition.Parse(await Exposition.TextOf(metrics));
        Assert.Equal(40, s["taskmesh_tasks_total{layer=\"local\",outcome=\"succeeded\"}"]);
        Assert.Equal(0, s["taskmesh_ready_tasks{layer=\"local\"}"]);
    }

    [Fact]
    public async Task Metrics_OfTheRunStore_CountCommittedRecordsAndBatches()
    {
        var dir = Directory.CreateTempSubdirectory("taskmesh-metrics-").FullName;
        try
        {
            using var store = RunStore.Open(Path.Combine(dir, "s.db"));
            var engine = new TaskMeshEngine();
            var metrics = new TaskMeshMetrics();
            metrics.Watch(store);
            var g = new GraphBuilder("stored");
            for (int i = 0; i < 50; i++) g.Task($"t{i}", "noop");
            await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [metrics, new RunRecorder(store)] });
            await store.FlushAsync();
            var s = Exposition.Parse(await Exposition.TextOf(metrics));
            Assert.True(s["taskmesh_store_records_total"] >= 50);
            Assert.True(s["taskmesh_store_batch_write_seconds_count"] >= 1);
            Assert.Equal(0, s["taskmesh_store_queue_depth"]);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Metrics_OfTheModels_ShowTheVersionInUse_ItsAccuracy_AndTrainings()
    {
        var metrics = new TaskMeshMetrics();
        metrics.RecordModel(3, "quantum", durationMaeMs: 250, durationR2: 0.97, successAuc: 0.91, calibrationError: 0.04);
        metrics.RecordModel(3, "local", durationMaeMs: 1.5, durationR2: null, successAuc: null, calibrationError: null);
        metrics.RecordTraining();
        var text = await Exposition.TextOf(metrics);
        var s = Exposition.Parse(text);
        Assert.Equal(3, s["taskmesh_model_version"]);
        Assert.Equal(0.25, s["taskmesh_model_duration_mae_seconds{layer=\"quantum\"}"], 9);
        Assert.Equal((0.97, 0.91, 0.04), (s["taskmesh_model_duration_r2{layer=\"quantum\"}"], s["taskmesh_model_success_auc{layer=\"quantum\"}"], s["taskmesh_model_calibration_error{layer=\"quantum\"}"]));
        Assert.False(s.ContainsKey("taskmesh_model_success_auc{layer=\"local\"}"));
        Assert.Equal(1, s["taskmesh_model_trainings_total"]);
    }

    [Fact]
    public async Task Tracing_AListenerSeesARunSpanAndOneSpanPerAttempt_TaggedWithRunAndTaskIds()
    {
        var spans = new System.Collections.Concurrent.ConcurrentQueue<Activity>();
        string? mine = null;
        using var listener = new ActivityListener
        {
            ShouldListenTo = s => s.Name == TaskMeshTracing.SourceName,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = a => { if (mine is null || (a.GetTagItem("taskmesh.run_id") as string) == mine) spans.Enqueue(a); },
        };
        ActivitySource.AddActivityListener(listener);
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(1) });
        var g = new GraphBuilder("traced");
        for (int i = 0; i < 20; i++) g.Task($"t{i}", "noop");
        g.Task("flaky", "fail", new { message = "transient", attempts = 2 }).WithRetries(3);

        var result = await engine.RunAsync(engine.Prepare(g));
        mine = result.RunId;

        var ofRun = spans.Where(a => (a.GetTagItem("taskmesh.run_id") as string) == result.RunId).ToList();
        var run = Assert.Single(ofRun, a => a.OperationName == "taskmesh.run");
        var attempts = ofRun.Where(a => a.OperationName == "taskmesh.attempt").ToList();
        Assert.Equal(23, attempts.Count);   // 20 + flaky's 3
        Assert.All(attempts, a => Assert.Equal(run.TraceId, a.TraceId));
        Assert.All(attempts, a => Assert.Equal(run.SpanId, a.ParentSpanId));
        Assert.Equal(21, attempts.Select(a => a.GetTagItem("taskmesh.task_id")).Distinct().Count());
        var flaky = attempts.Where(a => (string?)a.GetTagItem("taskmesh.task_id") == "flaky").OrderBy(a => (int)a.GetTagItem("taskmesh.attempt")!).ToList();
        Assert.Equal(["failed", "failed", "succeeded"], flaky.Select(a => (string)a.GetTagItem("taskmesh.outcome")!));
        Assert.Equal(ActivityStatusCode.Error, flaky[0].Status);
        Assert.Equal("succeeded", run.GetTagItem("taskmesh.status"));
    }
}
