using System.Collections.Concurrent;
using System.Diagnostics;
using Prometheus;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;
using TaskMesh.Engine.Store;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// TaskMesh's Prometheus metrics, in a registry of their own (<see cref="Registry"/>), fed as a run
/// observer: tasks by outcome and layer, durations, confidences, escalations, cost, runs; gauges
/// read when scraped (ready and running tasks per layer, the run store's queue); the process and
/// runtime. Names follow Prometheus's conventions: a <c>taskmesh_</c> prefix for the engine's own,
/// base units (seconds, bytes), <c>_total</c> counters, label values from bounded sets (layer
/// names, outcomes, triggers — never task ids). The process and runtime families use the names
/// Prometheus client libraries share (<c>process_*</c>) and <c>dotnet_*</c>.
/// <para>
/// On the hot path it costs one batch call per 256 task ends (<see cref="RunObserverInterests.TaskEndedInBatches"/>):
/// a batch is tallied into local counts and added to the counters once per (layer, outcome).
/// One instance serves any number of runs, one after another or at once.
/// </para>
/// </summary>
public sealed class TaskMeshMetrics : IRunObserver, IOpenRunObserver
{
    /// <summary>Outcome label values, by <see cref="TaskOutcome"/>.</summary>
    private static readonly string[] OutcomeNames = ["cancelled", "succeeded", "failed", "timed_out", "skipped"];

    /// <summary>The layer label of a task that never ran (skipped, or cancelled before it started).</summary>
    public const string NoLayer = "none";

    private readonly Counter _tasks, _reused, _retries, _escalations, _cost, _runs, _storeRecords;
    private readonly Histogram _duration, _confidence, _runDuration, _storeBatch;
    private readonly Gauge _ready, _running, _capacity, _runsActive, _storeQueue;
    private readonly Gauge _modelVersion, _modelMae, _modelR2, _modelAuc, _modelCalibration;
    private readonly Counter _trainings;
    private readonly ConcurrentDictionary<string, IRunProgress> _active = new();
    private readonly List<TaskMeshEngine> _engines = new();
    private readonly List<RunStore> _stores = new();
    private readonly ConcurrentDictionary<string, LayerSeries> _layers = new(StringComparer.Ordinal);
    private readonly Lock _gate = new();

    /// <summary>The metrics in <paramref name="registry"/> (default: a new registry of their own).</summary>
    public TaskMeshMetrics(CollectorRegistry? registry = null)
    {
        Registry = registry ?? Metrics.NewCustomRegistry();
        var f = Metrics.WithCustomRegistry(Registry);
        _tasks = f.CreateCounter("taskmesh_tasks_total", "Tasks that reached a final outcome, by the layer of their last attempt.", "layer", "outcome");
        _reused = f.CreateCounter("taskmesh_tasks_reused_total", "Succeeded tasks that did not run: answered by the result cache, or restored by a resumed run.", "source");
        _retries = f.CreateCounter("taskmesh_task_retries_total", "Attempts that failed or timed out and were tried again on the same layer.", "layer");
        _escalations = f.CreateCounter("taskmesh_escalations_total", "Tasks moved to a more capable layer or variant.", "trigger", "from", "to");
        _cost = f.CreateCounter("taskmesh_cost_total", "Cost of the attempts run: each attempt's duration times its layer's price per slot-second.", "layer");
        _runs = f.CreateCounter("taskmesh_runs_total", "Runs that ended, by status.", "status");
        _duration = f.CreateHistogram("taskmesh_task_duration_seconds", "Task durations from first attempt to end (inline tasks timed coarsely: milliseconds).", ["layer"],
            new HistogramConfiguration { Buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300] });
        _confidence = f.CreateHistogram("taskmesh_task_confidence", "Confidence reported with an attempt's result (0 to 1).", ["layer"],
            new HistogramConfiguration { Buckets = Histogram.LinearBuckets(0.1, 0.1, 10) });
        _runDuration = f.CreateHistogram("taskmesh_run_duration_seconds", "Wall time of ended runs.", [],
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.01, 4, 10) });
        _storeBatch = f.CreateHistogram("taskmesh_store_batch_write_seconds", "Time to write and commit one batch of run-store records.", [],
            new HistogramConfiguration { Buckets = Histogram.ExponentialBuckets(0.0005, 2, 14) });
        _storeRecords = f.CreateCounter("taskmesh_store_records_total", "Records committed to the run store.");
        _ready = f.CreateGauge("taskmesh_ready_tasks", "Tasks ready to start and waiting for a slot, by layer (local: the scheduler's queues and its layer's).", "layer");
        _running = f.CreateGauge("taskmesh_running_tasks", "Tasks running in a layer's slots (tasks run inline on the scheduler's workers are not counted).", "layer");
        _capacity = f.CreateGauge("taskmesh_layer_capacity", "Slots of a layer.", "layer");
        _runsActive = f.CreateGauge("taskmesh_runs_active", "Runs in progress.");
        _storeQueue = f.CreateGauge("taskmesh_store_queue_depth", "Records waiting for the run store's writer.");
        _modelVersion = f.CreateGauge("taskmesh_model_version", "The learned models' version in use (0: none, cold-start rules).");
        _modelMae = f.CreateGauge("taskmesh_model_duration_mae_seconds", "Held-out mean absolute error of the duration model, by layer.", "layer");
        _modelR2 = f.CreateGauge("taskmesh_model_duration_r2", "Held-out R² of the duration model (log duration), by layer.", "layer");
        _modelAuc = f.CreateGauge("taskmesh_model_success_auc", "Held-out area under the ROC curve of the success (confidence) model, by layer.", "layer");
        _modelCalibration = f.CreateGauge("taskmesh_model_calibration_error", "Held-out expected calibration error of predicted confidence, by layer.", "layer");
        _trainings = f.CreateCounter("taskmesh_model_trainings_total", "Model versions trained by this process.");
        ProcessMetrics.Register(f, Registry);
        Registry.AddBeforeCollectCallback(ReadGauges);
    }

    /// <summary>The registry the metrics live in (serve it at <c>/metrics</c>).</summary>
    public CollectorRegistry Registry { get; }

    /// <inheritdoc />
    public RunObserverInterests Interests => RunObserverInterests.TaskEndedInBatches | RunObserverInterests.QuickSuccessesCounted | RunObserverInterests.AttemptEndedUnlessPlain;

    /// <summary>The model version in use and its held-out accuracy for one layer (null figures: the layer has no such model).</summary>
    public void RecordModel(int version, string layer, double? durationMaeMs, double? durationR2, double? successAuc, double? calibrationError)
    {
        _modelVersion.Set(version);
        if (durationMaeMs is double mae) _modelMae.WithLabels(layer).Set(mae / 1000);
        if (durationR2 is double r2) _modelR2.WithLabels(layer).Set(r2);
        if (successAuc is double auc) _modelAuc.WithLabels(layer).Set(auc);
        if (calibrationError is double ece) _modelCalibration.WithLabels(layer).Set(ece);
    }

    /// <summary>A model version was trained by this process.</summary>
    public void RecordTraining() => _trainings.Inc();

    /// <summary>Layer gauges (capacity, queue, running) of <paramref name="engine"/> are read at every scrape.</summary>
    public void Watch(TaskMeshEngine engine)
    {
        lock (_gate) _engines.Add(engine);
    }

    /// <summary>The queue depth and batch write latency of <paramref name="store"/>.</summary>
    public void Watch(RunStore store)
    {
        lock (_gate) _stores.Add(store);
        store.BatchCommitted += (took, writes) =>
        {
            _storeBatch.Observe(took.TotalSeconds);
            _storeRecords.Inc(writes);
        };
    }

    /// <summary>The series of one layer, looked up once per run rather than per task.</summary>
    private sealed class LayerSeries(TaskMeshMetrics m, string layer)
    {
        public readonly Counter.Child[] Tasks = Array.ConvertAll(OutcomeNames, o => m._tasks.WithLabels(layer, o));
        public readonly Histogram.Child Duration = m._duration.WithLabels(layer);
        public readonly Histogram.Child Confidence = m._confidence.WithLabels(layer);
        public readonly Counter.Child Cost = m._cost.WithLabels(layer);
        public readonly Counter.Child Retries = m._retries.WithLabels(layer);
    }

    private LayerSeries SeriesOf(string layer)
        => _layers.TryGetValue(layer, out var s) ? s : _layers.GetOrAdd(layer, static (l, m) => new LayerSeries(m, l), this);

    /// <summary>What one run needs on its hot path: its layers' series and prices, by layer index.</summary>
    private sealed class RunView(LayerSeries[] layers, double[] prices, Counter.Child[] none)
    {
        public readonly LayerSeries[] Layers = layers;
        public readonly double[] Prices = prices;
        public readonly Counter.Child[] None = none;   // tasks that never ran, by outcome
    }

    private readonly ConcurrentDictionary<string, RunView> _views = new();
    private readonly ConcurrentDictionary<string, double> _prices = new(StringComparer.Ordinal);

    /// <inheritdoc />
    public void OnRunStarted(RunStart run)
    {
        var layers = run.Layers.Select(SeriesOf).ToArray();
        var prices = run.Layers.Select(run.PriceOf).ToArray();
        for (int i = 0; i < prices.Length; i++) _prices[run.Layers[i]] = prices[i];
        _views[run.RunId] = new RunView(layers, prices, Array.ConvertAll(OutcomeNames, o => _tasks.WithLabels(NoLayer, o)));
        if (run.Progress is { } progress) _active[run.RunId] = progress;
        _runsActive.Inc();
        // Every (layer, outcome) series exists from the start, at 0: rates work from the first scrape.
        foreach (var l in layers) foreach (var c in l.Tasks) c.Inc(0);
        foreach (var c in _views[run.RunId].None) c.Inc(0);
    }

    /// <inheritdoc />
    public void OnTasksEnded(TaskEndBatch ends) => Tally(ends.Packed, ends.QuickSuccesses, _views.GetValueOrDefault(ends.RunId));

    private static void Tally(ReadOnlySpan<PackedTaskEnd> ends, int quickSuccesses, RunView? view)
    {
        if (view is null) return;
        var layers = view.Layers;
        // Counts per (layer, outcome), and the quick tasks (coarse duration 0) per layer, added once a batch.
        Span<int> counts = stackalloc int[(layers.Length + 1) * 5];
        Span<int> instant = stackalloc int[layers.Length + 1];
        Span<double> plainSeconds = stackalloc double[layers.Length];
        // Quick plain successes, counted by the engine: local (layer 0), succeeded, 0 ms, nothing to cost.
        counts[(int)TaskOutcome.Succeeded] += quickSuccesses;
        instant[0] += quickSuccesses;
        foreach (ref readonly var e in ends)
        {
            int l = e.Layer == PackedTaskEnd.NoLayer ? layers.Length : e.Layer;
            counts[l * 5 + e.Outcome]++;
            if (l == layers.Length) continue;
            if (e.Reused != 0) continue;
            if (e.DurationTicks == 0) instant[l]++;
            else layers[l].Duration.Observe(e.DurationTicks / (double)TimeSpan.TicksPerSecond);
            // An attempt no attempt-end call reported is costed here; the others were costed as they ended.
            if (e.AttemptUnreported) plainSeconds[l] += e.DurationTicks / (double)TimeSpan.TicksPerSecond;
        }
        for (int l = 0; l <= layers.Length; l++)
        {
            var tasks = l < layers.Length ? layers[l].Tasks : view.None;
            for (int o = 0; o < 5; o++)
                if (counts[l * 5 + o] is int n and > 0) tasks[o].Inc(n);
            if (l == layers.Length) break;
            var series = layers[l];
            if (instant[l] > 0) series.Duration.Observe(0, instant[l]);
            if (plainSeconds[l] > 0 && view.Prices[l] > 0) series.Cost.Inc(plainSeconds[l] * view.Prices[l]);
        }
    }

    /// <inheritdoc />
    public void OnTaskEnded(in TaskEnd end)
    {
        // Only through OnTasksEnded; a TaskEnd without its run cannot be placed.
    }

    /// <inheritdoc />
    public void OnAttemptEnded(in AttemptResult result)
    {
        // Most such calls are successes of tasks whose output feeds a data edge: nothing to record.
        bool priced = _prices.TryGetValue(result.Layer, out var price) && price > 0;
        if (result.Confidence is null && result.Next != AttemptNext.Retry && !priced) return;
        var series = SeriesOf(result.Layer);
        if (result.Confidence is double c) series.Confidence.Observe(Math.Clamp(c, 0, 1));
        if (result.Next == AttemptNext.Retry) series.Retries.Inc();
        if (priced) series.Cost.Inc(price * result.Duration.TotalSeconds);
    }

    /// <inheritdoc />
    public void OnEscalated(EscalationRecord e) => _escalations.WithLabels(e.Trigger, e.From, e.To).Inc();

    /// <inheritdoc />
    public void OnRunEnded(RunRecord record)
    {
        _runs.WithLabels(record.StatusName).Inc();
        _runDuration.Observe(record.Wall.TotalSeconds);
        if (record.Restored > 0) _reused.WithLabels("restored").Inc(record.Restored);
        if (record.Cached > 0) _reused.WithLabels("cache").Inc(record.Cached);
        _active.TryRemove(record.RunId, out _);
        _views.TryRemove(record.RunId, out _);
        _runsActive.Dec();
    }

    // ---------------------------------------------------------------- open runs

    /// <inheritdoc />
    public void OnOpenRunStarted(string runId, string name, IReadOnlyList<string> layers)
    {
        foreach (var l in layers) foreach (var c in SeriesOf(l).Tasks) c.Inc(0);
        _runsActive.Inc();
    }

    /// <inheritdoc />
    public void OnOpenTaskEnded(string runId, int sequence, TaskResult task, double cost, int retries)
    {
        if (task.Layer is null)
        {
            _tasks.WithLabels(NoLayer, OutcomeNames[(int)task.Outcome]).Inc();
            return;
        }
        var series = SeriesOf(task.Layer);
        series.Tasks[(int)task.Outcome].Inc();
        series.Duration.Observe(task.Duration.TotalSeconds);
        if (task.Confidence is double c) series.Confidence.Observe(Math.Clamp(c, 0, 1));
        if (cost > 0) series.Cost.Inc(cost);
        if (retries > 0) series.Retries.Inc(retries);
    }

    /// <inheritdoc />
    public void OnOpenRunEscalated(string runId, EscalationRecord escalation) => OnEscalated(escalation);

    /// <inheritdoc />
    public void OnOpenRunEnded(OpenRunResult result)
    {
        _runs.WithLabels(result.Status switch { RunStatus.Succeeded => "succeeded", RunStatus.Failed => "failed", _ => "cancelled" }).Inc();
        _runDuration.Observe(result.Duration.TotalSeconds);
        _runsActive.Dec();
    }

    private void ReadGauges()
    {
        TaskMeshEngine[] engines;
        RunStore[] stores;
        lock (_gate)
        {
            engines = _engines.ToArray();
            stores = _stores.ToArray();
        }
        var ready = new Dictionary<string, double>(StringComparer.Ordinal);
        foreach (var engine in engines)
            foreach (var layer in engine.Layers)
            {
                _capacity.WithLabels(layer.Name).Set(layer.Capacity);
                _running.WithLabels(layer.Name).Set(layer.Running);
                ready[layer.Name] = ready.GetValueOrDefault(layer.Name) + layer.QueueDepth;
            }
        long onWorkers = 0;
        foreach (var run in _active.Values) onWorkers += run.ReadyOnWorkers();
        ready[Layers.Local.LocalLayer.LayerName] = ready.GetValueOrDefault(Layers.Local.LocalLayer.LayerName) + onWorkers;
        foreach (var (layer, n) in ready) _ready.WithLabels(layer).Set(n);
        _storeQueue.Set(stores.Sum(s => (double)s.QueueDepth));
    }
}
