using System.Buffers.Binary;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Numerics;
using System.Runtime.Intrinsics;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Store;

/// <summary>
/// Records one run into a <see cref="RunStore"/>: an observer (attach it with
/// <see cref="RunOptions.Observers"/>, one recorder per run). It never touches SQLite itself: it
/// queues records for the store's writer.
/// <para>
/// What is kept (the journal), so that a million 100-ns tasks cost little and nothing that matters
/// is lost:
/// <list type="bullet">
/// <item>the run: a row when it starts (status <c>running</c>) and its figures when it ends;</item>
/// <item>completion: a bitmap of the tasks that succeeded, checkpointed every
/// <see cref="CheckpointInterval"/> and when the run ends (what resuming relies on);</item>
/// <item>a task row (<c>task_executions</c>) for every task of a run of at most
/// <see cref="JournalOptions.FullDetailTasks"/> tasks; in larger runs, for every task that failed,
/// timed out, was skipped, ran on a layer other than <c>local</c>, took
/// <see cref="JournalOptions.SlowTaskMs"/> ms or more, needed more than one attempt, escalated or
/// reported a confidence, and for a sample by index (every <see cref="JournalOptions.SampleStride"/>th
/// task); each row says why it was kept (<c>kept_because</c>);</item>
/// <item>every escalation (<c>escalation_history</c>);</item>
/// <item>the audit trail (<c>audit_log</c>): the run's submission; for every task that keeps a row,
/// its submission (small runs), every attempt (<c>task_execution</c>), every reported confidence
/// (<c>confidence_evaluation</c>), every failure (<c>error</c>) and its completion
/// (<c>task_completion</c>); every routing decision of a task queued for a layer
/// (<c>layer_selection</c>) and every escalation (<c>escalation</c>).</item>
/// </list>
/// </para>
/// </summary>
public sealed class RunRecorder : IRunObserver
{
    /// <summary>
    /// Largest output kept for a data edge (bytes of JSON); a task with a larger one runs again when
    /// its run is resumed. Outputs over 1 MiB are kept in files beside the store (<see cref="OutputFiles"/>).
    /// </summary>
    public const int MaxStoredOutputBytes = OutputFiles.MaxBytes;

    /// <summary>Runs up to this many tasks keep a row for every task (by default: see <see cref="JournalOptions"/>).</summary>
    public const int FullDetailTasks = JournalOptions.DefaultFullDetailTasks;

    /// <summary>In larger runs, tasks this slow (ms) or slower keep a row (by default).</summary>
    public const double SlowTaskMs = JournalOptions.DefaultSlowTaskMs;

    /// <summary>In larger runs, one task in this many at least keeps a row anyway, by index (by default).</summary>
    public const int SampleEvery = JournalOptions.DefaultSampleEvery;

    /// <summary>Most sampled rows a run keeps (by default).</summary>
    public const int MaxSampledRows = JournalOptions.DefaultMaxSampledRows;

    /// <summary>The default sampling stride of a run of <paramref name="tasks"/> tasks (<see cref="JournalOptions.SampleStride"/>).</summary>
    public static int SampleStride(int tasks) => JournalOptions.Default.SampleStride(tasks);

    /// <summary>How often the completion bitmap is checkpointed while the run goes on.</summary>
    public static readonly TimeSpan CheckpointInterval = TimeSpan.FromMilliseconds(250);

    private readonly StoreWriter _writer;
    private readonly string? _graphPath;
    private readonly string? _graphHash;
    private readonly string? _config;
    private readonly string? _inputs;   // the files the tasks read, as JSON (RunInputs)
    private readonly string? _resumedFrom;
    private TaskGraph _graph = null!;
    private RunStart _run = null!;
    private readonly JournalOptions _journal;
    private readonly Func<int, double?>? _complexity;
    private readonly Func<int, float[]?>? _features;
    private readonly double _slowMs;
    private int _sampleMask = SampleEvery - 1;
    private string _runId = "";
    private bool _keepAll;
    private long _startTimestamp;
    // Which tasks succeeded, packed into the checkpoint's bitmap every CheckpointInterval: the run's
    // own outcome column (one byte per task, written by the engine as each task ends, before its end
    // is reported) — so quick plain successes need not be reported one by one — or, for a run that
    // does not hand its state over, a byte per task this recorder sets from the ends it hears of.
    private IRunProgress? _progress;        // the run's outcome column, when it offers one (RunStart.Progress)
    private byte[]? _marks;
    private bool _quick;   // quick plain successes are counted, not listed, in the batches
    private ulong[] _rowWritten = [];   // tasks whose row came from their last attempt (richer than their end)
    private int _noteCount;   // entries in _notes: checked on every task instead of the map (whose IsEmpty takes every lock)
    private Timer? _checkpoints;
    private readonly ConcurrentDictionary<int, TaskNotes> _notes = new();
    private readonly Dictionary<string, (double Sum, int Count)> _confidence = new(StringComparer.Ordinal);

    /// <summary>A recorder for one run into <paramref name="store"/>.</summary>
    /// <param name="store">An open, writable store.</param>
    /// <param name="graphPath">The graph file, when the graph came from one (kept to find it again).</param>
    /// <param name="graphHash">The SHA-256 of the graph file's bytes (see <see cref="RunStore.HashOf"/>).</param>
    /// <param name="config">The configuration the run used, as text.</param>
    /// <exception cref="ArgumentException">The store was opened read-only.</exception>
    /// <param name="resumedFrom">The run this one resumes, if it does.</param>
    /// <param name="journal">Which task rows to keep (default: <see cref="JournalOptions.Default"/>).</param>
    /// <exception cref="ArgumentException"><paramref name="journal"/> has a value out of range.</exception>
    /// <param name="complexity">Each task's complexity score 0–100 (the learning library's feature extractor), kept in its row; null: not kept.</param>
    /// <param name="features">Each task's feature vector (the learning library's extractor), kept in its row for training; null: not kept.</param>
    public RunRecorder(RunStore store, string? graphPath = null, string? graphHash = null, string? config = null, string? resumedFrom = null, JournalOptions? journal = null,
        Func<int, double?>? complexity = null, Func<int, float[]?>? features = null)
        : this(store, graphPath, graphHash, config, resumedFrom, journal, complexity, features, inputs: null)
    {
    }

    /// <summary>Each task's argument features (<see cref="Handlers.ArgumentFeatures.ToJson"/>), kept in its row for training beside its feature vector; null: not kept.</summary>
    public Func<int, string?>? ArgumentFeatures { get; init; }

    /// <summary>A recorder that also keeps the files the run's tasks read (<see cref="PreparedGraph.InputFiles"/>), for resume's check.</summary>
    /// <param name="inputs">Task id, path relative to the graph's folder and SHA-256 of each file the tasks read.</param>
    public RunRecorder(RunStore store, string? graphPath, string? graphHash, string? config, string? resumedFrom, JournalOptions? journal,
        Func<int, double?>? complexity, Func<int, float[]?>? features, IReadOnlyList<(string TaskId, string Path, string Sha256)>? inputs)
    {
        _inputs = inputs is { Count: > 0 } ? RunInputs.ToJson(inputs) : null;
        _complexity = complexity;
        _features = features;
        _journal = journal ?? JournalOptions.Default;
        if (_journal.Problem() is { } problem) throw new ArgumentException(problem, nameof(journal));
        _slowMs = _journal.SlowTaskMs;
        _resumedFrom = resumedFrom;
        ArgumentNullException.ThrowIfNull(store);
        _writer = store.Writer ?? throw new ArgumentException("the store is open read-only", nameof(store));
        _graphPath = graphPath is null ? null : Path.GetFullPath(graphPath);
        _graphHash = graphHash;
        _config = config;
    }

    /// <summary>
    /// Task ends, and attempt ends but for plain inline successes (their task end says enough): one
    /// call per tiny task; no release, start or route calls; inline attempts timed coarsely (the
    /// slow-task rule needs milliseconds, not nanoseconds).
    /// </summary>
    /// <remarks>
    /// Quick plain successes are counted rather than listed (<see cref="RunObserverInterests.QuickSuccessesCounted"/>)
    /// when the run hands its outcome column over, keeps no row for every task (a large run), and
    /// neither the slow-task rule (0 ms) nor the sample (every task listed by the engine, every
    /// 1,024th, is a multiple of the stride) needs them.
    /// </remarks>
    public RunObserverInterests Interests => RunObserverInterests.AttemptEndedUnlessPlain | RunObserverInterests.TaskEndedInBatches | RunObserverInterests.TaskRouted
        | (_quick ? RunObserverInterests.QuickSuccessesCounted : RunObserverInterests.None);

    /// <summary>Raised (on the store's writer thread) when the store fails; the run should stop.</summary>
    public event Action<StoreException>? Faulted
    {
        add => _writer.Faulted += value;
        remove => _writer.Faulted -= value;
    }

    /// <summary>The first store failure, if any.</summary>
    public StoreException? Fault => _writer.Fault;

    /// <summary>Rare per-task facts: several attempts, escalations, the first layer.</summary>
    private sealed class TaskNotes
    {
        public double DurationMs;
        public double Cost;
        public string? FirstLayer;
        public double? FirstMs;   // the first attempt's duration, when it ran to its end
        public int Escalations;
    }

    private static string Now() => DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture);

    public void OnRunStarted(RunStart run)
    {
        _graph = run.Graph;
        _run = run;
        _runId = run.RunId;
        _keepAll = run.Graph.Count <= _journal.FullDetailTasks;
        _sampleMask = _journal.SampleStride(run.Graph.Count) - 1;
        _progress = run.Progress;
        _marks = _progress is null ? new byte[run.Graph.Count] : null;
        _quick = _progress is not null && !_keepAll && _slowMs > 0 && (_sampleMask + 1) % TaskEndBatch.ListedEvery == 0;
        _rowWritten = new ulong[(run.Graph.Count + 63) / 64];
        _startTimestamp = Stopwatch.GetTimestamp();
        _writer.Enqueue(new RunStarted(run.RunId, run.Graph.Name, _graphHash, _graphPath, run.StartedAt, run.Graph.Count, _config, _resumedFrom, _inputs));
        Audit(null, AuditCategory.TaskSubmission, w =>
        {
            w.WriteString("graph", run.Graph.Name);
            w.WriteNumber("tasks", run.Graph.Count);
            w.WriteNumber("edges", run.Graph.EdgeCount);
            if (_graphPath is not null) w.WriteString("path", _graphPath);
            if (_graphHash is not null) w.WriteString("sha256", _graphHash);
            w.WriteStartArray("layers");
            foreach (var l in run.Layers) w.WriteStringValue(l);
            w.WriteEndArray();
        });
        // Small runs: a submission record per task, written out by the writer's thread (the run
        // does not wait for ten thousand JSON objects to be made).
        if (_keepAll) _writer.Enqueue(new TaskSubmissions(run.RunId, run.Graph, DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture)));
        _checkpoints = new Timer(static s => ((RunRecorder)s!).Checkpoint(), this, CheckpointInterval, CheckpointInterval);
    }

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void OnAttemptEnded(in AttemptResult r)
    {
        if (r.Next != AttemptNext.Complete)
        {
            AuditAttempt(r);
            var n = Notes(r.Task);
            lock (n)
            {
                n.DurationMs += r.Duration.TotalMilliseconds;
                n.Cost += _run.PriceOf(r.Layer) * r.Duration.TotalSeconds;
                if (n.FirstLayer is null) n.FirstMs = r.Outcome == AttemptOutcome.Succeeded ? r.Duration.TotalMilliseconds : null;
                n.FirstLayer ??= r.Layer;
            }
            return;
        }
        // An output that feeds a data edge is kept before the task's completion can be
        // checkpointed (the writer commits in order), so a resumed run finds it.
        if (r.Succeeded && (_graph.FlagsOf(r.Task) & NodeFlags.HasDataSuccessor) != 0 && StoredOutput.Serialize(r.Output, MaxStoredOutputBytes) is string json)
            _writer.Enqueue(new OutputRow(_runId, r.Task, json));
        double ms = r.Duration.TotalMilliseconds;
        TaskNotes? notes = null;
        if (r.Attempt > 1 || Volatile.Read(ref _noteCount) != 0) _notes.TryGetValue(r.Task, out notes);
        if (notes is not null) lock (notes) ms += notes.DurationMs;
        string? why = Why(r, ms, notes);
        if (why is null) return;   // a plain success (its output kept above when a data edge needs it): no row, no audit
        AuditAttempt(r);
        Interlocked.Or(ref _rowWritten[r.Task >> 6], 1UL << (r.Task & 63));
        AuditCompletion(r.Task, Status(r.TaskOutcome), r.Layer, r.Attempt, ms, why);
        double started = Stopwatch.GetElapsedTime(_startTimestamp).TotalMilliseconds - ms;
        double cost = _run.PriceOf(r.Layer) * r.Duration.TotalSeconds;
        if (notes is not null) lock (notes) cost += notes.Cost;
        _writer.Enqueue(new TaskRow(_runId, r.Task, _graph.IdOf(r.Task), _graph.HandlerOfTask(r.Task), notes?.FirstLayer ?? r.Layer, r.Layer,
            Status(r.TaskOutcome), r.Attempt, r.Confidence, notes?.Escalations ?? 0, Math.Max(0, started), ms, cost, r.Error,
            r.Succeeded ? OutputSummary.Of(r.Output) : null, null, why, Now())
        {
            Complexity = _complexity, Features = _features, ArgumentFeatures = ArgumentFeatures,
            LastAttemptMs = r.Duration.TotalMilliseconds,
            FirstAttemptMs = notes is null ? (r.Outcome == AttemptOutcome.Succeeded ? r.Duration.TotalMilliseconds : null) : notes.FirstMs,
        });
    }

    private string? Why(in AttemptResult r, double ms, TaskNotes? notes)
    {
        if (_keepAll) return "small-run";
        if (!r.Succeeded) return r.Outcome == AttemptOutcome.TimedOut ? "timed-out" : r.Outcome == AttemptOutcome.Cancelled ? "cancelled" : "failed";
        if (notes is { Escalations: > 0 }) return "escalated";
        if (r.Attempt > 1) return "retried";
        if (r.Layer != Layers.Local.LocalLayer.LayerName) return "layer";
        if (r.Confidence is not null) return "confidence";
        if (ms >= _slowMs) return "slow";
        if ((r.Task & _sampleMask) == 0) return "sampled";
        return null;
    }

    /// <summary>Ends come in batches (see <see cref="RunObserverInterests.TaskEndedInBatches"/>): the loop below, not a call per task.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void OnTasksEnded(TaskEndBatch ends)
    {
        var marks = _marks;
        long slowTicks = _keepAll ? 0 : (long)(_slowMs * TimeSpan.TicksPerMillisecond);
        int sampleMask = _sampleMask;
        var packed = ends.Packed;
        for (int i = 0; i < packed.Length; i++)
        {
            ref readonly var end = ref packed[i];
            int task = end.Task;
            // A plain success on the local layer (no attempt end reached this recorder), quick and
            // not sampled: its byte is all it leaves. Anything else takes the full path.
            if (end.Outcome == (byte)TaskOutcome.Succeeded && end.Reused == 0 && end.Layer == Scheduling.RouteTable.Local
                && end.DurationTicks < slowTicks && (task & sampleMask) != 0)
            {
                if (marks is not null) marks[task] = 1;
            }
            else
                OnTaskEnded(ends[i]);
        }
    }

    public void OnTaskEnded(in TaskEnd end)
    {
        switch (end.Outcome)
        {
            case TaskOutcome.Succeeded:
                // The count is the checkpoint bitmap's population, taken at each checkpoint.
                if (_marks is { } marks) marks[end.Task] = 1;
                if (end.ReusedFrom == "cache")
                {
                    AuditCacheHit(end.Task);
                    break;
                }
                if ((Volatile.Read(ref _rowWritten[end.Task >> 6]) & (1UL << (end.Task & 63))) != 0) break;
                // A plain success (no attempt end reached this recorder): its end decides.
                double ms = end.Duration.TotalMilliseconds;
                string? why = _keepAll ? "small-run" : ms >= _slowMs ? "slow" : end.Layer != Layers.Local.LocalLayer.LayerName ? "layer" : (end.Task & _sampleMask) == 0 ? "sampled" : null;
                if (why is not null) KeepPlainSuccess(end, ms, why);
                break;
            case TaskOutcome.Skipped:
                AuditSkip(end.Task, end.SkippedBecause);
                // Skipped tasks never ran: their row is written here (always: a skip follows a failure).
                _writer.Enqueue(new TaskRow(_runId, end.Task, _graph.IdOf(end.Task), _graph.HandlerOfTask(end.Task), null, null,
                    "skipped", 0, null, 0, null, null, null, null, null, end.SkippedBecause >= 0 ? _graph.IdOf(end.SkippedBecause) : null,
                    _keepAll ? "small-run" : "skipped", Now()) { Complexity = _complexity, Features = _features, ArgumentFeatures = ArgumentFeatures });
                break;
        }
    }

    // Out of OnTaskEnded on purpose: a lambda that captures locals makes the compiler allocate its
    // closure on entry to the scope that declares them — on every task, if that scope were the
    // hot method's.
    private void KeepPlainSuccess(TaskEnd end, double ms, string why)
    {
        var layer = end.Layer;
        int attempts = end.Attempts;
        Audit(end.Task, AuditCategory.TaskExecution, w =>
        {
            w.WriteString("layer", layer);
            w.WriteNumber("attempt", attempts);
            w.WriteString("outcome", "succeeded");
            w.WriteNumber("duration_ms", Math.Round(ms, 3));
        });
        AuditCompletion(end.Task, "succeeded", end.Layer, end.Attempts, ms, why);
        double started = Stopwatch.GetElapsedTime(_startTimestamp).TotalMilliseconds - ms;
        _writer.Enqueue(new TaskRow(_runId, end.Task, _graph.IdOf(end.Task), _graph.HandlerOfTask(end.Task), end.Layer, end.Layer,
            "succeeded", end.Attempts, null, 0, Math.Max(0, started), ms, _run.PriceOf(end.Layer) * ms / 1000, null, null, null, why, Now())
        {
            Complexity = _complexity, Features = _features, ArgumentFeatures = ArgumentFeatures, LastAttemptMs = ms, FirstAttemptMs = ms,
        });
    }

    private void AuditCacheHit(int task)
        => Audit(task, AuditCategory.TaskCompletion, static w =>
        {
            w.WriteString("status", "succeeded");
            w.WriteString("reused_from", "cache");
        });

    private void AuditSkip(int task, int cause)
        => Audit(task, AuditCategory.TaskCompletion, w =>
        {
            w.WriteString("status", "skipped");
            if (cause >= 0) w.WriteString("skipped_because", _graph.IdOf(cause));
        });

    public void OnEscalated(EscalationRecord e)
    {
        if (e.TaskIndex >= 0)
        {
            var n = Notes(e.TaskIndex);
            lock (n) n.Escalations++;
        }
        _writer.Enqueue(new EscalationRow(_runId, e));
        Audit(e.TaskIndex >= 0 ? e.TaskIndex : null, AuditCategory.Escalation, w =>
        {
            w.WriteString("from", e.From);
            w.WriteString("to", e.To);
            w.WriteString("trigger", e.Trigger);
            w.WriteString("reason", e.Reason);
            if (e.PreviousConfidence is double c) w.WriteNumber("previous_confidence", c);
        });
    }

    public void OnTaskRouted(int task, in Routing.RouteDecision decision)
    {
        var d = decision;
        Audit(task, AuditCategory.LayerSelection, w =>
        {
            w.WriteString("layer", d.Layer);
            if (d.Confidence is double c) w.WriteNumber("predicted_confidence", c);
            if (d.PredictedCost is double cost) w.WriteNumber("predicted_cost", cost);
            if (d.Reason is not null) w.WriteString("reason", d.Reason);
        });
    }

    private void AuditAttempt(in AttemptResult r)
    {
        var (task, layer, attempt, outcome, ms, next, error, confidence) = (r.Task, r.Layer, r.Attempt, Status(r.TaskOutcome), r.Duration.TotalMilliseconds, r.Next, r.Error, r.Confidence);
        Audit(r.Task, AuditCategory.TaskExecution, w =>
        {
            w.WriteString("layer", layer);
            w.WriteNumber("attempt", attempt);
            w.WriteString("outcome", outcome);
            w.WriteNumber("duration_ms", Math.Round(ms, 3));
            w.WriteString("next", next switch { AttemptNext.Retry => "retry", AttemptNext.Escalate => "escalate", _ => "complete" });
        });
        if (confidence is double cf)
            lock (_confidence)
            {
                var (sum, n) = _confidence.GetValueOrDefault(layer);
                _confidence[layer] = (sum + cf, n + 1);
            }
        if (confidence is double c)
            Audit(r.Task, AuditCategory.ConfidenceEvaluation, w =>
            {
                w.WriteString("layer", layer);
                w.WriteNumber("attempt", attempt);
                w.WriteNumber("confidence", c);
                if (_graph.SpecOf(task)?.MinConfidence is double min) w.WriteNumber("min_confidence", min);
            });
        if (error is not null && outcome != "succeeded")
            Audit(r.Task, AuditCategory.Error, w =>
            {
                w.WriteString("layer", layer);
                w.WriteNumber("attempt", attempt);
                w.WriteString("outcome", outcome);
                w.WriteString("error", error);
            });
    }

    private void AuditCompletion(int task, string status, string? layer, int attempts, double ms, string keptBecause)
        => Audit(task, AuditCategory.TaskCompletion, w =>
        {
            w.WriteString("status", status);
            if (layer is not null) w.WriteString("layer", layer);
            w.WriteNumber("attempts", attempts);
            w.WriteNumber("duration_ms", Math.Round(ms, 3));
            w.WriteString("kept_because", keptBecause);
        });

    private void Audit(int? task, string category, Action<System.Text.Json.Utf8JsonWriter> detail)
    {
        try
        {
            _writer.Enqueue(new AuditRow(_runId, task is int t ? _graph.IdOf(t) : null, category,
                DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture), AuditRow.Detail(detail)));
        }
        catch (StoreException) { /* reported through Faulted */ }
    }

    /// <summary>
    /// Adds a run's figures to <c>layer_metrics_daily</c> (the day the run ended, UTC): per layer,
    /// tasks that ran there, succeeded and failed, their durations and cost (with task details),
    /// and the confidences attempts reported there. Counted on the writer's thread.
    /// </summary>
    private sealed class DailyLayerMetrics(RunRecord r, Dictionary<string, (double Sum, int Count)> confidence) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            string day = r.EndedAt.UtcDateTime.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
            foreach (var l in r.Layers)
            {
                var row = b.Command("""
                    INSERT INTO run_layers (run_id, layer, tasks, succeeded, failed, duration_ms, cost)
                    VALUES (@run, @layer, @tasks, @ok, @failed, @ms, @cost)
                    ON CONFLICT (run_id, layer) DO UPDATE SET tasks = excluded.tasks, succeeded = excluded.succeeded, failed = excluded.failed,
                        duration_ms = excluded.duration_ms, cost = excluded.cost
                    """);
                row.Parameters.AddWithValue("@run", r.RunId);
                row.Parameters.AddWithValue("@layer", l.Name);
                row.Parameters.AddWithValue("@tasks", l.Tasks);
                row.Parameters.AddWithValue("@ok", l.Succeeded);
                row.Parameters.AddWithValue("@failed", l.Failed);
                row.Parameters.AddWithValue("@ms", l.DurationMs);
                row.Parameters.AddWithValue("@cost", l.Cost);
                row.ExecuteNonQuery();
                if (l.Tasks == 0) continue;
                var (layer, req, ok, failed, ms) = (l.Name, l.Tasks, l.Succeeded, l.Failed, l.DurationMs);
                var (csum, ccount) = confidence.GetValueOrDefault(layer);
                var cmd = b.Command("""
                    INSERT INTO layer_metrics_daily AS d (day, layer, requests, successes, failures, total_duration_ms, timed, confidence_sum, confidence_count, cost)
                    VALUES (@day, @layer, @req, @ok, @failed, @ms, @timed, @csum, @ccount, @cost)
                    ON CONFLICT (day, layer) DO UPDATE SET requests = d.requests + excluded.requests, successes = d.successes + excluded.successes,
                        timed = d.timed + excluded.timed,
                        failures = d.failures + excluded.failures, total_duration_ms = d.total_duration_ms + excluded.total_duration_ms,
                        confidence_sum = d.confidence_sum + excluded.confidence_sum, confidence_count = d.confidence_count + excluded.confidence_count,
                        cost = d.cost + excluded.cost
                    """);
                cmd.Parameters.AddWithValue("@day", day);
                cmd.Parameters.AddWithValue("@layer", layer);
                cmd.Parameters.AddWithValue("@req", req);
                cmd.Parameters.AddWithValue("@ok", ok);
                cmd.Parameters.AddWithValue("@failed", failed);
                cmd.Parameters.AddWithValue("@ms", ms);
                cmd.Parameters.AddWithValue("@timed", r.HasTaskDetails ? req : 0);
                cmd.Parameters.AddWithValue("@csum", csum);
                cmd.Parameters.AddWithValue("@ccount", ccount);
                cmd.Parameters.AddWithValue("@cost", l.Cost);
                cmd.ExecuteNonQuery();
            }
        }
    }

    private sealed class TaskSubmissions(string runId, TaskGraph graph, string at) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
            for (int task = 0; task < graph.Count; task++)
            {
                buffer.ResetWrittenCount();
                using (var w = new System.Text.Json.Utf8JsonWriter(buffer))
                {
                    w.WriteStartObject();
                    w.WriteString("handler", graph.HandlerOfTask(task));
                    w.WriteString("priority", graph.PriorityOf(task).ToName());
                    w.WriteNumber("predecessors", graph.InDegree[task]);
                    if (graph.SpecOf(task)?.Layer is string forced) w.WriteString("layer", forced);
                    w.WriteEndObject();
                }
                var cmd = b.Command("INSERT INTO audit_log (run_id, task_id, category, at, detail) VALUES (@run, @task, @category, @at, @detail)");
                cmd.Parameters.AddWithValue("@run", runId);
                cmd.Parameters.AddWithValue("@task", graph.IdOf(task));
                cmd.Parameters.AddWithValue("@category", AuditCategory.TaskSubmission);
                cmd.Parameters.AddWithValue("@at", at);
                cmd.Parameters.AddWithValue("@detail", System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan));
                cmd.ExecuteNonQuery();
            }
        }
    }

    private sealed class OutputRow(string runId, int task, string json) : StoreWrite
    {
        public override long Bytes => 2L * json.Length;

        public override void Apply(StoreBatch b) => WriteOutput(b, runId, task, json);
    }

    /// <summary>Keeps a task's output: in its row, or in a file beside the store when it is large.</summary>
    internal static void WriteOutput(StoreBatch b, string runId, int task, string json)
    {
        string? file = null;
        if (json.Length > OutputFiles.InlineLimit && b.FilesFolder is not null)
        {
            file = OutputFiles.OutputName(runId, task);
            OutputFiles.Write(b.FilesFolder, file, json);
        }
        var cmd = b.Command("""
            INSERT INTO task_outputs (run_id, task_index, json, file, bytes) VALUES (@run, @task, @json, @file, @bytes)
            ON CONFLICT (run_id, task_index) DO UPDATE SET json = excluded.json, file = excluded.file, bytes = excluded.bytes
            """);
        cmd.Parameters.AddWithValue("@run", runId);
        cmd.Parameters.AddWithValue("@task", task);
        cmd.Parameters.AddWithValue("@json", file is null ? json : "");
        cmd.Parameters.AddWithValue("@file", (object?)file ?? DBNull.Value);
        cmd.Parameters.AddWithValue("@bytes", json.Length);
        cmd.ExecuteNonQuery();
    }

    /// <summary>A row of the audit trail; <paramref name="runId"/> null for an action on the service rather than a run.</summary>
    internal sealed class AuditRow(string? runId, string? taskId, string category, string at, string detail) : StoreWrite
    {
        /// <summary>The JSON object <paramref name="write"/> fills in: an audit row's detail.</summary>
        public static string Detail(Action<System.Text.Json.Utf8JsonWriter> write)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(128);
            using (var w = new System.Text.Json.Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                write(w);
                w.WriteEndObject();
            }
            return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
        }

        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("INSERT INTO audit_log (run_id, task_id, category, at, detail) VALUES (@run, @task, @category, @at, @detail)");
            cmd.Parameters.AddWithValue("@run", (object?)runId ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@task", (object?)taskId ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@category", category);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.Parameters.AddWithValue("@detail", detail);
            cmd.ExecuteNonQuery();
        }
    }

    public void OnRunEnded(RunRecord record)
    {
        _checkpoints?.Dispose();
        Checkpoint();
        _writer.Enqueue(new RunEnded(record));
        Dictionary<string, (double, int)> confidence;
        lock (_confidence) confidence = new(_confidence);
        _writer.Enqueue(new DailyLayerMetrics(record, confidence));
    }

    private TaskNotes Notes(int task)
    {
        if (_notes.TryGetValue(task, out var n)) return n;
        n = _notes.GetOrAdd(task, static _ => new TaskNotes());
        Interlocked.Increment(ref _noteCount);
        return n;
    }

    private void Checkpoint()
    {
        int count;
        byte[] bytes;
        if (_progress is { } progress) bytes = PackBitmap(progress.Outcomes, (byte)TaskOutcome.Succeeded, out count);
        else if (_marks is { } marks) bytes = PackBitmap(marks, 1, out count);
        else return;   // the run has not started
        // The outcomes were read before the checkpoint is queued: a task's output row, queued before
        // the engine wrote its outcome (with full fences in between), is queued before this row.
        Interlocked.MemoryBarrier();
        try { _writer.Enqueue(new CheckpointRow(_runId, count, bytes, Now())); }
        catch (StoreException) { /* reported through Faulted */ }
    }

    /// <summary>
    /// The checkpoint's bitmap of one byte per task (bit <c>i &amp; 63</c> of little-endian 64-bit
    /// word <c>i / 64</c> set when task <c>i</c>'s byte is <paramref name="value"/>), and its population.
    /// </summary>
    internal static byte[] PackBitmap(ReadOnlySpan<byte> flags, byte value, out int count)
    {
        var match = Vector256.Create(value);
        int words = (flags.Length + 63) / 64;
        var bytes = new byte[words * 8];
        count = 0;
        for (int i = 0; i < words; i++)
        {
            var chunk = flags.Slice(i * 64, Math.Min(64, flags.Length - i * 64));
            ulong word = 0;
            if (chunk.Length == 64 && Vector256.IsHardwareAccelerated)
            {
                ulong low = Vector256.Equals(Vector256.Create<byte>(chunk), match).ExtractMostSignificantBits();
                ulong high = Vector256.Equals(Vector256.Create<byte>(chunk[32..]), match).ExtractMostSignificantBits();
                word = low | high << 32;
            }
            else
                for (int j = 0; j < chunk.Length; j++)
                    if (chunk[j] == value) word |= 1UL << j;
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(i * 8), word);
            count += BitOperations.PopCount(word);
        }
        return bytes;
    }

    internal static string Status(TaskOutcome o) => o switch
    {
        TaskOutcome.Succeeded => "succeeded",
        TaskOutcome.Failed => "failed",
        TaskOutcome.TimedOut => "timed_out",
        TaskOutcome.Skipped => "skipped",
        _ => "cancelled",
    };

    // ------------------------------------------------------------------ the writes

    private static object Db(object? value) => value ?? DBNull.Value;

    private sealed class RunStarted(string runId, string graph, string? hash, string? path, DateTimeOffset startedAt, int total, string? config, string? resumedFrom,
        string? inputs) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                INSERT INTO runs (run_id, graph_name, graph_hash, graph_path, status, started_at, total, config, resumed_from, inputs, owner_host, owner_pid, owner_started)
                VALUES (@id, @graph, @hash, @path, 'running', @started, @total, @config, @from, @inputs, @host, @pid, @pstart)
                """);
            var owner = RunOwner.Current;
            cmd.Parameters.AddWithValue("@inputs", Db(inputs));
            cmd.Parameters.AddWithValue("@host", owner.Host);
            cmd.Parameters.AddWithValue("@pid", owner.Pid);
            cmd.Parameters.AddWithValue("@pstart", Db(owner.Started));
            cmd.Parameters.AddWithValue("@from", Db(resumedFrom));
            cmd.Parameters.AddWithValue("@id", runId);
            cmd.Parameters.AddWithValue("@graph", graph);
            cmd.Parameters.AddWithValue("@hash", Db(hash));
            cmd.Parameters.AddWithValue("@path", Db(path));
            cmd.Parameters.AddWithValue("@started", startedAt.ToString("O", CultureInfo.InvariantCulture));
            cmd.Parameters.AddWithValue("@total", total);
            cmd.Parameters.AddWithValue("@config", Db(config));
            cmd.ExecuteNonQuery();
        }
    }

    internal sealed class TaskRow(string runId, int index, string id, string handler, string? initialLayer, string? layer, string status, int attempts,
        double? confidence, int escalations, double? startedMs, double? durationMs, double? cost, string? error, string? summary, string? skippedBecause, string why, string at) : StoreWrite
    {
        /// <summary>Computes the task's complexity score on the writer's thread (null: not known).</summary>
        public Func<int, double?>? Complexity { get; init; }

        /// <summary>Computes the task's feature vector on the writer's thread (null: not kept).</summary>
        public Func<int, float[]?>? Features { get; init; }

        /// <summary>Computes the numbers the task's arguments state (<see cref="Handlers.ArgumentFeatures.ToJson"/>) on the writer's thread (null: not kept).</summary>
        public Func<int, string?>? ArgumentFeatures { get; init; }

        /// <summary>The last attempt's duration (on the final layer); null when no attempt ran.</summary>
        public double? LastAttemptMs { get; init; }

        /// <summary>The first attempt's duration (on the initial layer) when it ran to its end; null when it failed, timed out or was cancelled.</summary>
        public double? FirstAttemptMs { get; init; }

        /// <summary>An open run's task with an id of its own: the hash of its handler, arguments, options and dependencies.</summary>
        public string? SpecHash { get; init; }

        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                INSERT INTO task_executions (run_id, task_index, task_id, handler, initial_layer, final_layer, status, attempts,
                    confidence, escalations, started_ms, duration_ms, cost, error, output_summary, skipped_because, kept_because, ended_at, complexity, features,
                    last_attempt_ms, first_attempt_ms, spec_hash, arg_features)
                VALUES (@run, @i, @id, @handler, @initial, @layer, @status, @attempts, @confidence, @escalations, @started, @duration,
                    @cost, @error, @summary, @skipped, @why, @at, @complexity, @features, @last, @first, @hash, @args)
                ON CONFLICT (run_id, task_index) DO UPDATE SET task_id = excluded.task_id, handler = excluded.handler, initial_layer = excluded.initial_layer,
                    final_layer = excluded.final_layer, status = excluded.status, attempts = excluded.attempts, confidence = excluded.confidence,
                    escalations = excluded.escalations, started_ms = excluded.started_ms, duration_ms = excluded.duration_ms, cost = excluded.cost,
                    error = excluded.error, output_summary = excluded.output_summary, skipped_because = excluded.skipped_because,
                    kept_because = excluded.kept_because, ended_at = excluded.ended_at, complexity = excluded.complexity, features = excluded.features,
                    last_attempt_ms = excluded.last_attempt_ms, first_attempt_ms = excluded.first_attempt_ms, spec_hash = excluded.spec_hash,
                    arg_features = excluded.arg_features
                """);
            cmd.Parameters.AddWithValue("@run", runId);
            cmd.Parameters.AddWithValue("@i", index);
            cmd.Parameters.AddWithValue("@id", id);
            cmd.Parameters.AddWithValue("@handler", handler);
            cmd.Parameters.AddWithValue("@initial", Db(initialLayer));
            cmd.Parameters.AddWithValue("@layer", Db(layer));
            cmd.Parameters.AddWithValue("@status", status);
            cmd.Parameters.AddWithValue("@attempts", attempts);
            cmd.Parameters.AddWithValue("@confidence", Db(confidence));
            cmd.Parameters.AddWithValue("@escalations", escalations);
            cmd.Parameters.AddWithValue("@started", Db(startedMs));
            cmd.Parameters.AddWithValue("@duration", Db(durationMs));
            cmd.Parameters.AddWithValue("@cost", Db(cost));
            cmd.Parameters.AddWithValue("@error", Db(error));
            cmd.Parameters.AddWithValue("@summary", Db(summary));
            cmd.Parameters.AddWithValue("@skipped", Db(skippedBecause));
            cmd.Parameters.AddWithValue("@why", why);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.Parameters.AddWithValue("@complexity", Db(Complexity?.Invoke(index)));
            cmd.Parameters.AddWithValue("@features", Features?.Invoke(index) is { } f ? System.Runtime.InteropServices.MemoryMarshal.AsBytes(f.AsSpan()).ToArray() : DBNull.Value);
            cmd.Parameters.AddWithValue("@last", Db(LastAttemptMs));
            cmd.Parameters.AddWithValue("@first", Db(FirstAttemptMs));
            cmd.Parameters.AddWithValue("@hash", Db(SpecHash));
            cmd.Parameters.AddWithValue("@args", Db(ArgumentFeatures?.Invoke(index)));
            cmd.ExecuteNonQuery();
        }
    }

    private sealed class CheckpointRow(string runId, int completed, byte[] bitmap, string at) : StoreWrite
    {
        public override long Bytes => bitmap.Length;

        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                INSERT INTO run_checkpoints (run_id, completed, bitmap, updated_at) VALUES (@run, @n, @bits, @at)
                ON CONFLICT (run_id) DO UPDATE SET completed = excluded.completed, bitmap = excluded.bitmap, updated_at = excluded.updated_at
                WHERE excluded.completed >= run_checkpoints.completed
                """);
            cmd.Parameters.AddWithValue("@run", runId);
            cmd.Parameters.AddWithValue("@n", completed);
            cmd.Parameters.AddWithValue("@bits", bitmap);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.ExecuteNonQuery();
        }
    }

    internal sealed class EscalationRow(string runId, EscalationRecord e) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                INSERT INTO escalation_history (run_id, task_id, from_layer, to_layer, trigger, reason, previous_confidence, previous_output_summary, at, rule, rule_id)
                VALUES (@run, @task, @from, @to, @trigger, @reason, @confidence, @summary, @at, @rule,
                    -- the stored rule the run's rule mirrors (the command line mirrors the config's rules into the store first)
                    (SELECT id FROM escalation_rules WHERE CAST(@ruleFrom AS TEXT) IS NOT NULL AND from_layer = @ruleFrom AND to_layer = @ruleTo AND trigger = @ruleTrigger
                        AND threshold IS NOT DISTINCT FROM @ruleThreshold AND priority = @rulePriority ORDER BY active DESC, id LIMIT 1))
                """);
            cmd.Parameters.AddWithValue("@run", runId);
            cmd.Parameters.AddWithValue("@task", e.TaskId);
            cmd.Parameters.AddWithValue("@from", e.From);
            cmd.Parameters.AddWithValue("@to", e.To);
            cmd.Parameters.AddWithValue("@trigger", e.Trigger);
            cmd.Parameters.AddWithValue("@reason", e.Reason);
            cmd.Parameters.AddWithValue("@confidence", Db(e.PreviousConfidence));
            cmd.Parameters.AddWithValue("@summary", Db(e.PreviousOutputSummary));
            cmd.Parameters.AddWithValue("@at", e.Timestamp.ToString("O", CultureInfo.InvariantCulture));
            cmd.Parameters.AddWithValue("@rule", Db(e.Rule?.Describe()));
            cmd.Parameters.AddWithValue("@ruleFrom", (object?)e.Rule?.From ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@ruleTo", (object?)e.Rule?.To ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@ruleTrigger", (object?)e.Rule?.Trigger ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@ruleThreshold", Db(e.Rule?.Threshold));
            cmd.Parameters.AddWithValue("@rulePriority", e.Rule?.Priority ?? 0);
            cmd.ExecuteNonQuery();
        }
    }

    private sealed class RunEnded(RunRecord r) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                UPDATE runs SET status = @status, finished_at = @finished, succeeded = @ok, failed = @failed, timed_out = @timedOut,
                    skipped = @skipped, cancelled = @cancelled, restored = @restored, cached = @cached, escalations = @escalations, cost = @cost, wall_ms = @wall,
                    critical_path_ms = @critical, ready_order = @ready
                WHERE run_id = @id
                """);
            cmd.Parameters.AddWithValue("@id", r.RunId);
            cmd.Parameters.AddWithValue("@status", r.StatusName);
            cmd.Parameters.AddWithValue("@finished", r.EndedAt.ToString("O", CultureInfo.InvariantCulture));
            cmd.Parameters.AddWithValue("@ok", r.Succeeded);
            cmd.Parameters.AddWithValue("@failed", r.Failed);
            cmd.Parameters.AddWithValue("@timedOut", r.TimedOut);
            cmd.Parameters.AddWithValue("@skipped", r.Skipped);
            cmd.Parameters.AddWithValue("@cancelled", r.Cancelled);
            cmd.Parameters.AddWithValue("@restored", r.Restored);
            cmd.Parameters.AddWithValue("@cached", r.Cached);
            cmd.Parameters.AddWithValue("@escalations", r.Escalations.Count);
            cmd.Parameters.AddWithValue("@cost", r.Layers.Sum(l => l.Cost));
            cmd.Parameters.AddWithValue("@wall", r.Wall.TotalMilliseconds);
            cmd.Parameters.AddWithValue("@critical", r.CriticalPathMs);
            cmd.Parameters.AddWithValue("@ready", r.ReadyOrder);
            cmd.ExecuteNonQuery();
        }
    }
}
