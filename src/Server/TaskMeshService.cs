using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Hosting;

namespace TaskMesh.Server;

/// <summary>
/// A request the service refuses or cannot answer: an HTTP status, a title, the detail, and for
/// an invalid graph or task every problem (code, message, task id, line, column).
/// </summary>
internal sealed class ApiException(int status, string title, string detail, IReadOnlyList<GraphError>? errors = null) : Exception(detail)
{
    public int Status { get; } = status;
    public string Title { get; } = title;
    public IReadOnlyList<GraphError>? Errors { get; } = errors;

    public static ApiException NotFound(string what) => new(404, "not found", what);
}

/// <summary>
/// The application service behind <c>taskmesh serve</c>: every operation exists once here and the
/// transports (the HTTP API; the socket protocol) call it. Graphs are validated as a file is,
/// run through the composition root (<see cref="TaskMeshRuntime"/>: its store, rules, learned
/// router, metrics), many at once; single tasks go to a standing open run that lives as long as
/// the service (and, with a store, is taken over by the next service after a crash, so that a task
/// resubmitted with its id is answered from the store, not run twice).
/// </summary>
internal sealed class TaskMeshService : IAsyncDisposable
{
    /// <summary>The name the standing open run is stored under.</summary>
    public const string StandingRunName = "standing";

    private readonly TaskMeshRuntime _runtime;
    private readonly ServerOptions _options;

    /// <summary>Whether the service only browses its store's history (<see cref="ServerOptions.ReadOnly"/>).</summary>
    public bool ReadOnly => _options.ReadOnly;
    private readonly ILogger _log;
    private readonly string _graphDirectory;
    private readonly ConcurrentDictionary<string, LiveRun> _live = new(StringComparer.Ordinal);
    private readonly FinishedRuns _finished;
    private readonly CancellationTokenSource _stopping = new();
    private readonly long _startedTimestamp = Stopwatch.GetTimestamp();
    private volatile bool _draining;

    /// <summary>A run going, and the task that records it once it ends.</summary>
    private sealed record LiveRun(RunHandle Handle, string Graph, DateTimeOffset StartedAt, EventHub Events, PreparedGraph Prepared, string Hash)
    {
        public Task Recorded { get; set; } = Task.CompletedTask;
    }

    public TaskMeshService(TaskMeshRuntime runtime, ServerOptions options, ILoggerFactory? logs = null)
    {
        _runtime = runtime;
        _options = options;
        _log = (logs ?? NullLoggerFactory.Instance).CreateLogger("TaskMesh.Server");
        _graphDirectory = Path.GetFullPath(options.GraphDirectory ?? Environment.CurrentDirectory);
        _finished = new FinishedRuns(options.KeepFinishedRuns);
        // External workers form a layer like any other (before any run starts, so every run has it).
        Work = new Workers.WorkQueue();
        External = new Workers.ExternalLayer(Work, options.ExternalCapacity);
        External.Configure(options.ExternalPricePerSecond, rank: 1);
        // (A service that only shows takes no workers: the engine's layers stay as they are.)
        if (!options.ReadOnly) _runtime.Engine.AddLayer(External);
        // Handlers the config says workers serve: known before any worker comes (their tasks wait for one).
        foreach (var handler in options.ExternalHandlers)
        {
            try { DeclareExternalHandler(handler, caller: "api.external_handlers", audit: false); }
            catch (ApiException ex) { throw new ArgumentException($"api.external_handlers: {ex.Message}"); }
        }
        Standing = OpenStanding();
        // The standing run writes its events only while a subscriber reads them (it is the service's busiest run).
        StandingEvents = new EventHub(Standing.Events, on => Standing.PublishEvents = on);
        _log.LogInformation("standing run {RunId} open{Resumed}", Standing.RunId, ResumedStanding is null ? "" : $" (taking over {ResumedStanding})");
    }

    /// <summary>The attempts waiting for external workers, and the leases out.</summary>
    public Workers.WorkQueue Work { get; }

    /// <summary>The layer of external workers (<c>external</c>).</summary>
    public Workers.ExternalLayer External { get; }

    /// <summary>
    /// A worker serves <paramref name="handler"/>: tasks of it are taken from now on and run on the
    /// external layer only. A handler this process runs itself cannot be served by a worker.
    /// </summary>
    public void DeclareExternalHandler(string handler, string? caller, bool audit = true)
    {
        if (GraphLimits.IdProblem(handler) is string problem) throw new ApiException(400, "invalid handler", $"handler name {problem}");
        if (_runtime.Engine.Handlers.TryGet(handler, out var known) && known.OnlyOn != Workers.ExternalLayer.LayerName)
            throw new ApiException(409, "handler taken", $"handler '{GraphLimits.Printable(handler)}' runs in this service; a worker cannot serve it");
        try
        {
            if (!Work.Declare(handler)) return;
        }
        catch (InvalidOperationException ex)
        {
            throw new ApiException(429, "too many handlers", ex.Message);
        }
        _runtime.Engine.Handlers.Register(new Engine.Handlers.HandlerDescriptor(handler, (ctx, args, ct) =>
            throw new Engine.Handlers.TaskFailedException($"handler '{handler}' runs on external workers only"))
        {
            OnlyOn = Workers.ExternalLayer.LayerName,
            PreferredLayer = Workers.ExternalLayer.LayerName,
        });
        _log.LogInformation("handler {Handler} is served by external workers (declared by {Caller})", GraphLimits.Printable(handler), Who(caller));
        if (audit) Audit(null, null, "declare_handler", caller, w => w.WriteString("handler", handler));
    }

    /// <summary>The open run that takes tasks submitted one at a time.</summary>
    public OpenRun Standing { get; }

    /// <summary>The standing run's events, for subscribers.</summary>
    public EventHub StandingEvents { get; }

    /// <summary>The interrupted standing run of an earlier service this one took over, if any.</summary>
    public string? ResumedStanding { get; private set; }

    public TaskMeshRuntime Runtime => _runtime;

    public bool Draining => _draining;

    public TimeSpan Uptime => Stopwatch.GetElapsedTime(_startedTimestamp);

    public int LiveRuns => _live.Count;

    /// <summary>The standing run: the newest interrupted one of the store taken over (its owner is gone), or a new one.</summary>
    private OpenRun OpenStanding()
    {
        // A service that only shows (taskmesh dashboard, run --dashboard) takes no tasks: its standing run records nothing.
        if (_options.ReadOnly) return _runtime.Open(StandingRunName, null, null, emitEvents: true, record: false);
        if (_runtime.Store is { IsReadOnly: false } store)
        {
            var previous = store.ListRuns(limit: 20, status: "interrupted").FirstOrDefault(r => r.Graph == StandingRunName);
            if (previous is not null)
            {
                try
                {
                    var resumed = _runtime.Open(StandingRunName, resume: previous.RunId, emitEvents: true);
                    ResumedStanding = previous.RunId;
                    return resumed;
                }
                catch (Exception ex) when (ex is InvalidOperationException or ArgumentException or StoreException)
                {
                    _log.LogWarning("could not take over the standing run {RunId}: {Why}; a new one is opened", previous.RunId, ex.Message);
                }
            }
        }
        return _runtime.Open(StandingRunName, emitEvents: true);
    }

    private void ThrowIfDraining()
    {
        if (_draining) throw new ApiException(503, "shutting down", "the service is shutting down: it takes no new work");
    }

    // ---------------------------------------------------------------- graphs

    /// <summary>
    /// Validates a graph (JSON bytes) as a file is validated — errors come back with line, column
    /// and task id, and nothing runs — then starts it. Relative paths in its arguments resolve
    /// against the service's graph directory.
    /// </summary>
    public string SubmitGraph(byte[] json, string? caller = null)
    {
        ThrowIfDraining();
        var graph = Validate(json);
        string runId = Start(graph, new RunRequest { GraphHash = RunStore.HashOf(json) }, caller);
        Audit(runId, null, "submit_graph", caller, w => w.WriteString("graph", graph.Graph.Name));
        return runId;
    }

    /// <summary>The graph in <paramref name="json"/>, validated as a file of the graph directory is.</summary>
    private PreparedGraph Validate(byte[] json)
    {
        PreparedGraph graph;
        try
        {
            var builder = GraphLoader.Load(json, "request");
            // The request is read as a file of the graph directory: relative paths resolve there.
            graph = _runtime.Engine.Prepare(builder, Path.Combine(_graphDirectory, "(request)"), _stopping.Token);
        }
        catch (GraphValidationException ex)
        {
            throw new ApiException(400, "invalid graph", ex.Errors.Count == 1 ? ex.Errors[0].Message : $"{ex.Errors.Count} problems", ex.Errors);
        }
        return graph;
    }

    /// <summary>Starts a prepared graph as <paramref name="request"/> asks (a new run, or one that resumes another to escalate a task).</summary>
    private string Start(PreparedGraph graph, RunRequest request, string? caller)
    {
        RunSetup setup;
        try
        {
            setup = _runtime.Prepare(graph, request);
        }
        catch (RunRequestException ex)
        {
            throw new ApiException(400, "invalid request", ex.Message);
        }
        catch (StoreException ex)
        {
            throw new ApiException(409, "cannot resume", ex.Message);
        }
        setup.Options.EmitEvents = true;   // for subscribers (EventHub): bounded, dropped rather than slowing the run
        var handle = setup.Start(_stopping.Token);
        if (setup.Recorder is { } recorder) recorder.Faulted += _ => { try { handle.Cancel(); } catch (ObjectDisposedException) { } };
        var live = new LiveRun(handle, graph.Graph.Name, DateTimeOffset.UtcNow, new EventHub(handle.Events), graph, request.GraphHash!);
        _live[handle.RunId] = live;
        live.Recorded = RecordAsync(live);
        _log.LogInformation("run {RunId} of graph {Graph} started ({Tasks} tasks), submitted by {Caller}", handle.RunId, GraphLimits.Printable(graph.Graph.Name), handle.Total, Who(caller));
        return handle.RunId;
    }

    /// <summary>
    /// Shows a run this service did not start (<c>taskmesh run --dashboard</c>: the command runs and
    /// records it) as a going run, and keeps its result once it ends. Its options must have emitted
    /// events (<c>EmitEvents</c>) for the page to follow it live.
    /// </summary>
    public void Watch(RunHandle handle, PreparedGraph graph, string? hash)
    {
        ArgumentNullException.ThrowIfNull(handle);
        ArgumentNullException.ThrowIfNull(graph);
        var live = new LiveRun(handle, graph.Graph.Name, DateTimeOffset.UtcNow, new EventHub(handle.Events), graph, hash ?? "");
        _live[handle.RunId] = live;
        live.Recorded = KeepAsync(live);

        async Task KeepAsync(LiveRun l)
        {
            try
            {
                var result = await l.Handle.Completion.ConfigureAwait(false);
                _finished.Add(result, l.Prepared, l.Hash);
            }
            catch (Exception ex)
            {
                _log.LogError("run {RunId}: {Why}", l.Handle.RunId, ex.Message);
            }
            finally
            {
                _live.TryRemove(l.Handle.RunId, out _);
            }
        }
    }

    /// <summary>Waits for a run's end, records it (store, training), and keeps its result for the API.</summary>
    private async Task RecordAsync(LiveRun live)
    {
        RunResult? result = null;
        try
        {
            result = await live.Handle.Completion.ConfigureAwait(false);
            if (_runtime.Store is { } store)
            {
                var trained = _runtime.AfterRunAsync(result, CancellationToken.None);
                await store.FlushAsync(CancellationToken.None).ConfigureAwait(false);
                await trained.ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            _log.LogError("run {RunId}: {Why}", live.Handle.RunId, ex.Message);
        }
        finally
        {
            if (result is not null)
            {
                _finished.Add(result, live.Prepared, live.Hash);
                _log.LogInformation("run {RunId} {Status}: {Succeeded}/{Total} succeeded", result.RunId, result.StatusName, result.Succeeded, result.Total);
            }
            _live.TryRemove(live.Handle.RunId, out _);
        }
    }

    /// <summary>What the API says of a run: going, finished in memory, or as the store keeps it.</summary>
    public RunView GetRun(string runId)
    {
        if (_live.TryGetValue(runId, out var live)) return RunView.Live(live.Handle, live.Graph, live.StartedAt);
        if (_finished.TryGet(runId, out var result)) return RunView.Finished(result);
        if (_runtime.Store is { } store)
        {
            try { return RunView.Stored(store.GetRun(store.ResolveRunId(runId))); }
            catch (StoreException) { }
        }
        throw ApiException.NotFound($"no run '{GraphLimits.Printable(runId)}'");
    }

    /// <summary>Waits up to <paramref name="wait"/> (bounded by the options) for a going run to end.</summary>
    public async Task<RunView> WaitForRunAsync(string runId, TimeSpan wait, CancellationToken ct)
    {
        if (wait > TimeSpan.Zero && _live.TryGetValue(runId, out var live))
        {
            wait = wait > _options.MaxWait ? _options.MaxWait : wait;
            try { await live.Recorded.WaitAsync(wait, ct).ConfigureAwait(false); }
            catch (TimeoutException) { }
        }
        return GetRun(runId);
    }

    /// <summary>Runs, newest first: with a store, as it lists them (going ones included); without, the going and the finished in memory.</summary>
    public IReadOnlyList<RunView> ListRuns(int limit, int offset, string? status)
    {
        if (limit is < 1 or > 1000) throw new ApiException(400, "invalid request", $"limit must be 1–1000, got {limit}");
        if (offset < 0) throw new ApiException(400, "invalid request", $"offset must not be negative, got {offset}");
        if (status is not null && !RunStatuses.Contains(status))
            throw new ApiException(400, "invalid request", $"status must be one of {string.Join(", ", RunStatuses)}, got '{GraphLimits.Printable(status)}'");
        if (_runtime.Store is { } store)
            return store.ListRuns(limit, status, offset).Select(r => _live.TryGetValue(r.RunId, out var l) ? RunView.Live(l.Handle, l.Graph, l.StartedAt) : RunView.Stored(r)).ToList();
        var all = _live.Values.Select(l => RunView.Live(l.Handle, l.Graph, l.StartedAt)).Concat(_finished.All().Select(RunView.Finished));
        return all.Where(v => status is null || v.Status == status).OrderByDescending(v => v.StartedAt).Skip(offset).Take(limit).ToList();
    }

    private static readonly string[] RunStatuses = ["running", "succeeded", "failed", "cancelled", "open", "interrupted"];

    /// <summary>The events of a going run (or of the standing run) for a subscriber; null when the run has ended (404 when there is none).</summary>
    public EventHub? EventsOf(string runId)
    {
        if (runId == Standing.RunId) return StandingEvents;
        if (_live.TryGetValue(runId, out var live)) return live.Events;
        GetRun(runId);
        return null;
    }

    /// <summary>
    /// Manual escalation: a new run that resumes <paramref name="runId"/> (what finished there is
    /// reused) with <paramref name="taskId"/> — and the tasks that read its output — run again on
    /// <paramref name="layer"/>, recorded as a manual escalation. Needs the store, and the run's graph,
    /// which the service keeps with the finished runs it keeps in memory.
    /// </summary>
    public string Escalate(string runId, string taskId, string layer, string? reason, string? caller)
    {
        ThrowIfDraining();
        if (_live.ContainsKey(runId)) throw new ApiException(409, "run going", $"run {runId} is still going: escalate a task once it has ended");
        if (!_finished.TryGetGraph(runId, out var graph, out var hash))
        {
            GetRun(runId);   // 404 when there is no such run at all
            throw new ApiException(409, "graph gone", $"the service no longer keeps run {runId}'s graph (it keeps the last {_options.KeepFinishedRuns} finished runs): submit the graph again");
        }
        string why = string.IsNullOrWhiteSpace(reason) ? $"escalated over the API by {Who(caller)}" : reason;
        string newRun = Start(graph, new RunRequest { GraphHash = hash, ResumeFrom = runId, Escalate = (taskId, layer, why) }, caller);
        Audit(newRun, taskId, "escalate", caller, w =>
        {
            w.WriteString("resumes", runId);
            w.WriteString("layer", layer);
            w.WriteString("reason", why);
        });
        return newRun;
    }

    /// <summary>
    /// Where each task of a graph would run, and why — the plan a run would follow (the same router,
    /// objective, budget and features as <c>taskmesh predict</c>); nothing runs and nothing is recorded.
    /// </summary>
    public (Engine.Routing.RunPlan Plan, string Model) Predict(byte[] json, string? objective)
    {
        var graph = Validate(json);
        RunSetup setup;
        try
        {
            setup = _runtime.Prepare(graph, new RunRequest { Objective = objective });
        }
        catch (RunRequestException ex)
        {
            throw new ApiException(400, "invalid request", ex.Message);
        }
        return (setup.Plan(), setup.Router is null ? "no learned routing: handlers' layers, else local" : setup.ModelNote);
    }

    /// <summary>
    /// Replaces the escalation rules (admin): kept in the store and in force at once for every run
    /// (<see cref="TaskMeshRuntime.ReplaceRulesAsync"/>). Refused when the config declares them.
    /// </summary>
    public async Task SetRulesAsync(IReadOnlyList<Engine.Escalation.EscalationRule> rules, string? caller, CancellationToken ct)
    {
        var layers = _runtime.Engine.Layers.Select(l => l.Name).ToHashSet(StringComparer.Ordinal);
        for (int i = 0; i < rules.Count; i++)
        {
            var r = rules[i];
            foreach (var (field, name, wildcard) in new[] { ("from", r.From, Engine.Escalation.EscalationRule.AnyLayer), ("to", r.To, Engine.Escalation.EscalationRule.NextLayer) })
                if (name != wildcard && !layers.Contains(name))
                    throw new ApiException(400, "invalid rules", $"rule {i + 1}: {field} is '{GraphLimits.Printable(name)}', which is no layer of this service ({string.Join(", ", layers.Order(StringComparer.Ordinal))}, or {wildcard})");
        }
        try
        {
            await _runtime.ReplaceRulesAsync(rules, ct).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            throw new ApiException(400, "invalid rules", ex.Message);
        }
        catch (InvalidOperationException ex)
        {
            throw new ApiException(409, "rules not changeable here", ex.Message);
        }
        catch (StoreException ex)
        {
            throw new ApiException(500, "the store failed", ex.Message);
        }
        _log.LogInformation("escalation rules replaced by {Caller}: {Count} rule(s)", Who(caller), rules.Count);
        Audit(null, null, "set_rules", caller, w =>
        {
            w.WriteStartArray("rules");
            foreach (var r in rules) w.WriteStringValue(r.Describe() + (r.Active ? "" : " (inactive)"));
            w.WriteEndArray();
        });
    }

    private readonly SemaphoreSlim _training = new(1, 1);

    /// <summary>
    /// Trains a new model version from the store's history now (as <c>taskmesh train</c>), one
    /// training at a time (409 while one goes); the runs that start after it route with it.
    /// </summary>
    public async Task<Learning.Models.PublishedModels> TrainAsync(string? caller, CancellationToken ct)
    {
        ThrowIfDraining();
        if (_runtime.Store is not { IsReadOnly: false } store) throw new ApiException(404, "no store", "the service keeps no writable run store: there is nothing to train from");
        if (!await _training.WaitAsync(0, ct).ConfigureAwait(false)) throw new ApiException(409, "training", "a training started by the API is going: wait for it");
        try
        {
            await store.FlushAsync(ct).ConfigureAwait(false);
            var published = await Learning.Models.ModelPublisher.TrainAsync(store, _runtime.Metrics, ct, _runtime.Config.MaxArgumentFeatures).ConfigureAwait(false)
                ?? throw new ApiException(409, "nothing to train from", "the store has no task rows with features yet: run some graphs first");
            _log.LogInformation("model version {Version} trained from {Rows} task rows, asked by {Caller}", published.Version, published.Rows, Who(caller));
            Audit(null, null, "train", caller, w =>
            {
                w.WriteNumber("version", published.Version);
                w.WriteNumber("rows", published.Rows);
            });
            return published;
        }
        catch (StoreException ex)
        {
            throw new ApiException(500, "training failed", ex.Message);
        }
        finally
        {
            _training.Release();
        }
    }

    /// <summary>Cancels a going run; false when it has ended.</summary>
    public bool CancelRun(string runId, string? caller = null)
    {
        if (_live.TryGetValue(runId, out var live))
        {
            live.Handle.Cancel();
            _log.LogInformation("run {RunId} cancelled by {Caller}", runId, Who(caller));
            Audit(runId, null, "cancel_run", caller);
            return true;
        }
        GetRun(runId);   // 404 when there is no such run at all
        return false;
    }

    /// <summary>
    /// One task of a run: as the store keeps it, with its confidence, cost, escalations (and the
    /// rules that fired) and audit trail; else as the finished run reports it (a task the store kept
    /// no row of, or a service without a store).
    /// </summary>
    public TaskView GetRunTask(string runId, string taskId)
    {
        var args = ArgsOf(runId, taskId);
        if (_runtime.Store is { } store)
        {
            string id = StoredRunId(store, runId);
            if (store.TaskOf(id, taskId) is { } row)
                return TaskView.Of(row, store.EscalationHistoryOf(id).Where(e => e.TaskId == taskId).ToList(), store.AuditOf(id, taskId), args);
        }
        if (_finished.TryGet(runId, out var result) && result.HasTaskDetails && result.Graph.TryGetIndex(taskId, out int index))
            return TaskView.Of(result.TaskResultOf(index), result.Escalations.Where(e => e.TaskId == taskId).ToList(), args);
        if (_live.ContainsKey(runId))
            throw ApiException.NotFound($"run {runId} has no ended task '{GraphLimits.Printable(taskId)}' yet (a going run's tasks are known as they end, from the run store)");
        GetRun(runId);
        throw ApiException.NotFound($"run {runId} has no task '{GraphLimits.Printable(taskId)}' the service or its store keeps");
    }

    // A task's arguments from the graph of a going run or one the service keeps (the store keeps none).
    private JsonElement? ArgsOf(string runId, string taskId)
    {
        PreparedGraph? graph = _live.TryGetValue(runId, out var live) ? live.Prepared : _finished.TryGetGraph(runId, out var kept, out _) ? kept : null;
        return graph is not null && graph.Graph.TryGetIndex(taskId, out int i) && graph.Graph.SpecOf(i) is { } spec && spec.Args.ValueKind != JsonValueKind.Undefined
            ? spec.Args : null;
    }

    /// <summary>A task in a run's list: where it ran and how it ended, and when it started (ms after the run's start).</summary>
    public sealed record TaskRow(string Id, string Handler, string Status, string? Layer, int Attempts, int Escalations, double? DurationMs, string? Error, double? StartedMs = null, int Index = -1);

    /// <summary>
    /// A run's graph, for drawing it: the graph a going or kept run ran, else the graph file its
    /// store row names when it is still there unchanged (its SHA-256 as recorded). 409 when the
    /// service has it no more.
    /// </summary>
    public PreparedGraph GraphOfRun(string runId)
    {
        if (_live.TryGetValue(runId, out var live)) return live.Prepared;
        if (_finished.TryGetGraph(runId, out var graph, out _)) return graph;
        if (_runtime.Store is { } store)
        {
            string id = StoredRunId(store, runId);
            var (path, hash) = store.GraphOf(id);
            if (path is not null && hash is not null && File.Exists(path))
            {
                byte[] bytes;
                try { bytes = Engine.IO.SafeFile.ReadInput(path, _options.MaxRequestBytes, "graph file"); }
                catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException) { bytes = []; }
                if (bytes.Length > 0 && Engine.Store.RunStore.HashOf(bytes) == hash) return Validate(bytes);
            }
        }
        GetRun(runId);   // 404 when there is no such run
        throw new ApiException(409, "graph gone", $"the service keeps run {runId}'s graph no more, and its graph file is gone or changed");
    }

    /// <summary>The result of a finished run the service still keeps (null for a going run, or one only the store has).</summary>
    internal RunResult? FinishedResultOf(string runId) => _finished.TryGet(runId, out var result) ? result : null;

    private static readonly string[] TaskStatuses = ["succeeded", "failed", "timed_out", "skipped", "cancelled"];

    /// <summary>
    /// A run's tasks, in the graph's order, optionally of one status: every task of a finished run
    /// the service keeps (<c>source</c> <c>run</c>), else the rows the store keeps of it (<c>store</c>:
    /// each task that did not simply succeed, and those the journal keeps besides — see store.md).
    /// </summary>
    /// <summary>Escalations of the last <paramref name="days"/> days by day and route (the overview's heatmap).</summary>
    public IReadOnlyList<(string Day, string From, string To, int Count)> EscalationsByDay(int days)
        => HistoryStore(days).EscalationsByDay(days);

    /// <summary>The kept task rows of the last <paramref name="days"/> days by complexity bucket: how many, and their cost.</summary>
    public IReadOnlyList<(int Bucket, long Tasks, double Cost)> ComplexityBuckets(int days)
        => HistoryStore(days).ComplexityBuckets(days);

    // The store that keeps the history of a report over days, or the reason there is none.
    private Engine.Store.RunStore HistoryStore(int days)
    {
        if (days is < 1 or > 3650) throw new ApiException(400, "invalid request", $"days must be 1–3650, got {days}");
        return _runtime.Store ?? throw new ApiException(404, "no store", "the service keeps no run store: there is no history");
    }

    public (string Source, int Total, IReadOnlyList<TaskRow> Tasks) ListRunTasks(string runId, string? status, int limit, int offset)
    {
        if (limit is < 1 or > 10_000) throw new ApiException(400, "invalid request", $"limit must be 1–10000, got {limit}");
        if (offset < 0) throw new ApiException(400, "invalid request", $"offset must not be negative, got {offset}");
        if (status is not null && Array.IndexOf(TaskStatuses, status) < 0)
            throw new ApiException(400, "invalid request", $"status must be one of {string.Join(", ", TaskStatuses)}, got '{GraphLimits.Printable(status)}'");
        IEnumerable<TaskRow> rows;
        string source;
        if (_finished.TryGet(runId, out var result) && result.HasTaskDetails)
        {
            source = "run";
            rows = Enumerable.Range(0, result.Total).Select(result.TaskResultOf)
                .Select(t => new TaskRow(t.Id, t.Handler, t.Status, t.Layer, t.Attempts, t.Escalations, t.DurationMs, t.Outcome == TaskOutcome.Succeeded ? null : t.Error, t.StartedAtMs, t.Index));
        }
        else if (_runtime.Store is { } store)
        {
            // The database counts the matching rows and reads the page alone.
            var (count, stored) = store.TaskPage(StoredRunId(store, runId), status, limit, offset);
            return ("store", count, stored.Select(t => new TaskRow(t.Id, t.Handler, t.Status, t.Layer, t.Attempts, t.Escalations, t.DurationMs,
                t.Status == "succeeded" ? null : t.Error, t.StartedAtMs, t.Index)).ToList());
        }
        else
        {
            GetRun(runId);   // 404 when there is no such run at all
            throw new ApiException(409, "no task list", $"run {runId} is going, and the service keeps no store: its tasks are listed once it ends");
        }
        // One pass over the run's results: the matching ones counted, the page kept (a large run's list is never copied whole).
        int total = 0;
        var page = new List<TaskRow>(Math.Min(limit, 1024));
        foreach (var row in rows)
        {
            if (status is not null && row.Status != status) continue;
            if (total++ >= offset && page.Count < limit) page.Add(row);
        }
        return (source, total, page);
    }

    /// <summary>
    /// The store's id of <paramref name="runId"/> (an id, a unique prefix, <c>last</c>); a run this
    /// service started is taken as it is, since its row may not be committed yet (404 for any other).
    /// </summary>
    private string StoredRunId(RunStore store, string runId)
    {
        if (_live.ContainsKey(runId) || runId == Standing.RunId || _finished.TryGet(runId, out _)) return runId;
        try { return store.ResolveRunId(runId); }
        catch (StoreException) { throw ApiException.NotFound($"no run '{GraphLimits.Printable(runId)}'"); }
    }

    // ---------------------------------------------------------------- single tasks (the standing run)

    /// <summary>
    /// Adds a task (a graph file's task object) to the standing run, waiting up to a few seconds
    /// for room when it holds <c>max_pending</c> tasks (then 429: retry later).
    /// </summary>
    public Task<SubmittedTask> SubmitTaskAsync(JsonElement task, string? caller, CancellationToken ct)
    {
        TaskRequest request;
        try
        {
            request = TaskRequestJson.Read(task);
        }
        catch (TaskRefusedException ex)
        {
            throw new ApiException(400, "invalid task", ex.Message, ex.Errors);
        }
        return SubmitTaskAsync(request, caller, ct);
    }

    /// <summary>Adds a task read already (<paramref name="request"/>; its submitter becomes <paramref name="caller"/>) to the standing run.</summary>
    public async Task<SubmittedTask> SubmitTaskAsync(TaskRequest request, string? caller, CancellationToken ct)
    {
        // Room now (the usual case): no timer, no wait.
        if (TrySubmitTask(request, caller, out var now)) return now;
        if (caller is not null) request = request with { SubmittedBy = caller };
        using var room = CancellationTokenSource.CreateLinkedTokenSource(ct, _stopping.Token);
        room.CancelAfter(RoomWait);
        try
        {
            return await Standing.SubmitAsync(request, room.Token).ConfigureAwait(false);
        }
        catch (TaskRefusedException ex)
        {
            throw new ApiException(400, "task refused", ex.Message, ex.Errors);
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested && !_stopping.IsCancellationRequested)
        {
            throw new ApiException(429, "too many pending tasks", $"the standing run holds {Standing.Pending} tasks not ended (its max_pending): retry later");
        }
        catch (InvalidOperationException ex)
        {
            throw new ApiException(503, "shutting down", ex.Message);
        }
    }

    /// <summary>Adds a task to the standing run if it has room now; false (nothing added) when it holds <c>max_pending</c> tasks not ended.</summary>
    public bool TrySubmitTask(TaskRequest request, string? caller, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SubmittedTask? task)
    {
        ThrowIfDraining();
        if (caller is not null) request = request with { SubmittedBy = caller };
        try
        {
            return Standing.TrySubmit(request, out task);
        }
        catch (TaskRefusedException ex)
        {
            throw new ApiException(400, "task refused", ex.Message, ex.Errors);
        }
        catch (InvalidOperationException ex)
        {
            throw new ApiException(503, "shutting down", ex.Message);
        }
    }

    /// <summary>How long a submission waits for room in the standing run before it is refused with 429.</summary>
    internal static readonly TimeSpan RoomWait = TimeSpan.FromSeconds(5);

    /// <summary>A task of the standing run: kept by the run (going, or ended within its retention window), or its row in the store.</summary>
    /// <param name="capWait">Bound <paramref name="wait"/> by <see cref="ServerOptions.MaxWait"/> (a request's wait); false for a client's standing wait for results.</param>
    public async Task<TaskView> GetTaskAsync(string taskId, TimeSpan wait, CancellationToken ct, bool capWait = true)
    {
        if (Standing.TryGetTask(taskId, out var task))
        {
            if (!task.IsEnded && wait > TimeSpan.Zero)
            {
                try { await task.Completion.WaitAsync(capWait && wait > _options.MaxWait ? _options.MaxWait : wait, ct).ConfigureAwait(false); }
                catch (TimeoutException) { }
            }
            return task.IsEnded ? TaskView.Of(await task.Completion.ConfigureAwait(false), task.SequenceNumber) : TaskView.Pending(task.Id, task.SequenceNumber);
        }
        return GetRunTask(Standing.RunId, taskId);
    }

    /// <summary>Cancels a task of the standing run; false when it had ended (or the run no longer keeps it).</summary>
    public bool CancelTask(string taskId, string? caller = null)
    {
        if (!Standing.TryGetTask(taskId, out var task)) throw ApiException.NotFound($"the standing run keeps no task '{GraphLimits.Printable(taskId)}'");
        bool cancelled = task.Cancel();
        if (cancelled)
        {
            _log.LogInformation("task {TaskId} of the standing run cancelled by {Caller}", task.Id, Who(caller));
            Audit(Standing.RunId, task.Id, "cancel_task", caller);
        }
        return cancelled;
    }

    /// <summary>
    /// Changes a task of the standing run before it starts (seed 003's <c>PUT /tasks/{id}</c>): its
    /// priority and/or arguments. Refused with the reason (409) once it is ready, running or ended.
    /// </summary>
    public void ChangeTask(string taskId, TaskPriority? priority, JsonElement? args, string? caller)
    {
        if (!Standing.TryGetTask(taskId, out var task)) throw ApiException.NotFound($"the standing run keeps no task '{GraphLimits.Printable(taskId)}'");
        if (priority is null && args is null) throw new ApiException(400, "invalid request", "give the task's new \"priority\", \"args\", or both");
        try
        {
            task.Change(priority, args);
        }
        catch (TaskRefusedException ex)
        {
            throw new ApiException(400, "invalid task", ex.Message, ex.Errors);
        }
        catch (InvalidOperationException ex)
        {
            throw new ApiException(409, "task not waiting", ex.Message);
        }
        _log.LogInformation("task {TaskId} of the standing run changed by {Caller}", task.Id, Who(caller));
        Audit(Standing.RunId, task.Id, "change_task", caller, w =>
        {
            if (priority is { } p) w.WriteString("priority", p.ToName());
            if (args is { } a)
            {
                w.WritePropertyName("args");
                a.WriteTo(w);
            }
        });
    }

    /// <summary>The caller as logs name it: a token's subject, or "an unauthenticated caller" when the service takes none.</summary>
    private static string Who(string? caller) => caller is null ? "an unauthenticated caller" : GraphLimits.Printable(caller);

    /// <summary>
    /// Writes who did what into the audit trail (category <c>api</c>): of run <paramref name="runId"/>,
    /// or of the service when it is null. <c>caller</c> is the token's subject (null when the service
    /// takes no tokens). Without a store, the log line each operation writes is the record.
    /// </summary>
    private void Audit(string? runId, string? taskId, string action, string? caller, Action<Utf8JsonWriter>? detail = null)
    {
        if (_runtime.Store is not { IsReadOnly: false } store) return;
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(128);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("action", action);
            if (caller is null) w.WriteNull("caller");
            else w.WriteString("caller", caller);
            detail?.Invoke(w);
            w.WriteEndObject();
        }
        try { store.RecordAudit(runId, taskId, AuditCategory.Api, System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan)); }
        catch (StoreException ex) { _log.LogError("the run store refused an audit row ({Action}): {Why}", action, ex.Message); }
    }

    /// <summary>
    /// The audit trail: of run <paramref name="runId"/> in the order written (the first
    /// <paramref name="limit"/> rows, of one category when given), or with no run the newest actions
    /// taken on the service itself (layers, handlers, rules, training), newest first.
    /// </summary>
    public IReadOnlyList<AuditRecord> AuditOf(string? runId, string? category, int limit)
    {
        if (limit is < 1 or > 10_000) throw new ApiException(400, "invalid request", $"limit must be 1–10000, got {limit}");
        if (category is not null && Array.IndexOf(AuditCategory.All, category) < 0)
            throw new ApiException(400, "invalid request", $"category must be one of {string.Join(", ", AuditCategory.All)}, got '{GraphLimits.Printable(category)}'");
        var store = _runtime.Store ?? throw new ApiException(404, "no store", "the service keeps no run store: its log is the audit trail");
        if (runId is null) return store.ServiceAudit(limit).Where(a => category is null || a.Category == category).ToList();
        return store.AuditOf(StoredRunId(store, runId), null, category, limit);
    }

    /// <summary>Sets how many attempts a layer runs at once (runs going on included).</summary>
    public void SetLayerCapacity(string layer, int capacity, string? caller)
    {
        var target = _runtime.Engine.Layers.FirstOrDefault(l => l.Name == layer) ?? throw ApiException.NotFound($"no layer '{GraphLimits.Printable(layer)}'");
        if (capacity is < 1 or > 1_000_000) throw new ApiException(400, "invalid request", $"capacity must be 1–1000000, got {capacity}");
        target.SetCapacity(capacity);
        _log.LogInformation("layer {Layer} capacity set to {Capacity} by {Caller}", target.Name, capacity, Who(caller));
        Audit(null, null, "set_layer_capacity", caller, w =>
        {
            w.WriteString("layer", target.Name);
            w.WriteNumber("capacity", capacity);
        });
    }

    // ---------------------------------------------------------------- shutting down

    /// <summary>
    /// Stops taking work, lets the going runs and the standing run's tasks finish for up to
    /// <see cref="ServerOptions.DrainTimeout"/>, cancels what is left, and flushes the store.
    /// </summary>
    public async Task DrainAsync()
    {
        if (_draining) return;
        _draining = true;
        _log.LogInformation("draining: {Runs} run(s) going, {Pending} standing task(s) pending; waiting up to {Seconds} s", _live.Count, Standing.Pending, _options.DrainTimeout.TotalSeconds);
        Standing.Complete();
        var going = _live.Values.Select(l => l.Recorded).Append(Standing.Completion).ToArray();
        try
        {
            await Task.WhenAll(going).WaitAsync(_options.DrainTimeout).ConfigureAwait(false);
        }
        catch (TimeoutException)
        {
            _log.LogWarning("drain timeout: cancelling {Runs} run(s) and {Pending} standing task(s)", _live.Count, Standing.Pending);
            _stopping.Cancel();
            foreach (var l in _live.Values) l.Handle.Cancel();
            Standing.Cancel();
            try { await Task.WhenAll(going).WaitAsync(TimeSpan.FromSeconds(10)).ConfigureAwait(false); }
            catch (Exception ex) { _log.LogError("runs did not end after cancellation: {Why}", ex.Message); }
        }
        catch (Exception ex)
        {
            _log.LogError("draining: {Why}", ex.Message);
        }
        if (_runtime.Store is { } store)
        {
            try { await store.FlushAsync(CancellationToken.None).ConfigureAwait(false); }
            catch (StoreException ex) { _log.LogError("the run store failed while draining: {Why}", ex.Message); }
        }
        _log.LogInformation("drained");
    }

    public async ValueTask DisposeAsync()
    {
        await DrainAsync().ConfigureAwait(false);
        _stopping.Dispose();
    }

    /// <summary>The newest finished runs, bounded (for a service without a store, and until the store has them).</summary>
    private sealed class FinishedRuns(int capacity)
    {
        private readonly Dictionary<string, (RunResult Result, PreparedGraph Graph, string Hash)> _byId = new(StringComparer.Ordinal);
        private readonly Queue<string> _order = new();

        public void Add(RunResult result, PreparedGraph graph, string hash)
        {
            if (capacity == 0) return;
            lock (_byId)
            {
                if (_byId.TryAdd(result.RunId, (result, graph, hash))) _order.Enqueue(result.RunId);
                while (_order.Count > capacity) _byId.Remove(_order.Dequeue());
            }
        }

        public bool TryGet(string runId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out RunResult? result)
        {
            lock (_byId)
            {
                bool found = _byId.TryGetValue(runId, out var entry);
                result = entry.Result;
                return found;
            }
        }

        public bool TryGetGraph(string runId, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out PreparedGraph? graph, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? hash)
        {
            lock (_byId)
            {
                bool found = _byId.TryGetValue(runId, out var entry);
                (graph, hash) = (entry.Graph, entry.Hash);
                return found;
            }
        }

        public IReadOnlyList<RunResult> All()
        {
            lock (_byId) return _byId.Values.Select(e => e.Result).ToList();
        }
    }
}
