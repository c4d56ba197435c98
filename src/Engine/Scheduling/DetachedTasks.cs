using System.Diagnostics;
using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling.Attempts;
using TaskMesh.Engine.Store;

namespace TaskMesh.Engine.Scheduling;

/// <summary>One attempt of a task sent from elsewhere (a cluster coordinator), to run outside any run of this process.</summary>
/// <param name="Id">The task's id in its run (handlers may read it: a circuit's default seed comes from it).</param>
/// <param name="Args">The task's arguments as JSON text, or null.</param>
/// <param name="Attempt">The attempt's number in its run (1 for the first).</param>
/// <param name="Variant">The variant it runs in after an escalation on its layer (e.g. <c>double</c>), or null.</param>
/// <param name="Inputs">Outputs of its data-edge predecessors as (id, JSON text) pairs, in edge order, or null.</param>
/// <param name="Timeout">How long the attempt may run (its run's timeout for it).</param>
internal sealed record DetachedTask(string Id, string Handler, string? Args, int Attempt, string? Variant,
    IReadOnlyList<KeyValuePair<string, string>>? Inputs, TimeSpan Timeout);

/// <summary>How a detached attempt ended: an output as the run store's JSON, or an error; the confidence and escalation the handler reported.</summary>
internal readonly record struct DetachedOutcome(bool Succeeded, bool TimedOut, string? OutputJson, string? Error, double? Confidence,
    EscalationRequest? Escalation, double DurationMs);

/// <summary>
/// Runs single attempts of tasks outside any run, on this engine's layers: what a cluster worker
/// does with the tasks its coordinator sends. A task is validated as a graph of itself (the tasks of
/// one handler without arguments share one), runs on the engine's layer for its handler (a circuit on
/// <c>quantum</c>, with that layer's memory admission; the rest on <c>local</c>) under its timeout,
/// and comes back as the run store's JSON of its output. Retries, escalation and routing stay with
/// the run that sent it: an attempt runs once, and a handler's request to escalate is handed back.
/// </summary>
internal sealed class DetachedTasks
{
    /// <summary>A handler that ignores its cancelled token is abandoned this long after its timeout.</summary>
    internal static readonly TimeSpan AbandonAfter = TimeSpan.FromSeconds(2);

    /// <summary>The largest output (or input) sent back, in bytes of JSON.</summary>
    internal const int MaxOutputBytes = 16 << 20;

    private readonly TaskMeshEngine _engine;
    private readonly Dictionary<string, PreparedGraph> _plain = new(StringComparer.Ordinal);   // under itself

    internal DetachedTasks(TaskMeshEngine engine) => _engine = engine;

    /// <summary>Runs the attempt; never throws for the task's own failures (they are the outcome).</summary>
    internal async ValueTask<DetachedOutcome> RunAsync(DetachedTask task, CancellationToken ct)
    {
        long start = Stopwatch.GetTimestamp();
        double Ms() => Stopwatch.GetElapsedTime(start).TotalMilliseconds;
        PreparedGraph prepared;
        try
        {
            prepared = Prepare(task);
        }
        catch (TaskRefusedException ex)
        {
            return new DetachedOutcome(false, false, null, ex.Message, null, null, Ms());
        }
        var handler = prepared.HandlerOf(0);
        if (Refusal(handler) is { } refused) return new DetachedOutcome(false, false, null, refused, null, null, Ms());
        var layer = LayerFor(handler);
        if (layer is null)
            return new DetachedOutcome(false, false, null, $"handler '{task.Handler}' runs on no layer of this worker", null, null, Ms());
        var host = new Host(_engine, task, prepared);
        var invocation = new LayerInvocation(handler, new TaskContext(host, 0, task.Attempt));
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
        timeout.CancelAfter(task.Timeout);
        try
        {
            object? output;
            if (handler.Inline is not null && layer is Layers.Local.LocalLayer)
                output = handler.Inline(invocation.Context);
            else
            {
                var running = layer.ExecuteAsync(invocation, timeout.Token).AsTask();
                // A handler that ignores its token is abandoned a little after its timeout, as a run abandons it.
                var settled = await Task.WhenAny(running, Task.Delay(task.Timeout + AbandonAfter, ct)).ConfigureAwait(false);
                if (settled != running)
                {
                    ct.ThrowIfCancellationRequested();
                    return new DetachedOutcome(false, true, null, $"timed out after {task.Timeout.TotalSeconds:0.###} s (the handler ignored its cancellation and was abandoned)", null, null, Ms());
                }
                output = await running.ConfigureAwait(false);
            }
            string? json = StoredOutput.Serialize(output, MaxOutputBytes);
            if (json is null)
                return new DetachedOutcome(false, false, null, $"the output of '{task.Id}' cannot be sent back (not serialisable as JSON, or over {MaxOutputBytes >> 20} MB)", null, null, Ms());
            return new DetachedOutcome(true, false, json, null, host.Confidence, host.Escalation, Ms());
        }
        catch (OperationCanceledException) when (!ct.IsCancellationRequested && timeout.IsCancellationRequested)
        {
            return new DetachedOutcome(false, true, null, $"timed out after {task.Timeout.TotalSeconds:0.###} s", host.Confidence, null, Ms());
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return new DetachedOutcome(false, false, null, ex is TaskFailedException ? ex.Message : $"{ex.GetType().Name}: {ex.Message}", host.Confidence, host.Escalation, Ms());
        }
    }

    /// <summary>
    /// True when <paramref name="handler"/> runs inline here (a local handler that returns at once):
    /// <see cref="RunInline"/> runs its attempts on the caller's thread, without a timer or a token.
    /// </summary>
    internal bool IsInline(string handler)
        => _engine.Handlers.TryGet(handler, out var h) && h.Inline is not null && !h.LocalOnly && LayerFor(h) is Layers.Local.LocalLayer;

    /// <summary>Runs an attempt of an inline handler (<see cref="IsInline"/>) now, on this thread.</summary>
    internal DetachedOutcome RunInline(DetachedTask task)
    {
        long start = Stopwatch.GetTimestamp();
        PreparedGraph prepared;
        try
        {
            prepared = Prepare(task);
        }
        catch (TaskRefusedException ex)
        {
            return new DetachedOutcome(false, false, null, ex.Message, null, null, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
        if (Refusal(prepared.HandlerOf(0)) is { } refused) return new DetachedOutcome(false, false, null, refused, null, null, Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        var host = new Host(_engine, task, prepared);
        try
        {
            var output = prepared.HandlerOf(0).Inline!(new TaskContext(host, 0, task.Attempt));
            string? json = StoredOutput.Serialize(output, MaxOutputBytes);
            double ms = Stopwatch.GetElapsedTime(start).TotalMilliseconds;
            return json is null
                ? new DetachedOutcome(false, false, null, $"the output of '{task.Id}' cannot be sent back (not serialisable as JSON, or over {MaxOutputBytes >> 20} MB)", null, null, ms)
                : new DetachedOutcome(true, false, json, null, host.Confidence, host.Escalation, ms);
        }
        catch (Exception ex)
        {
            return new DetachedOutcome(false, false, null, ex is TaskFailedException ? ex.Message : $"{ex.GetType().Name}: {ex.Message}", host.Confidence, host.Escalation,
                Stopwatch.GetElapsedTime(start).TotalMilliseconds);
        }
    }

    /// <summary>
    /// Why this process does not run <paramref name="handler"/> for another one, or null: a local-only
    /// handler (<c>shell</c>, <c>report</c>) acts on the machine of the run that holds the task, and is
    /// never run on a worker's, whatever the sender asks.
    /// </summary>
    private static string? Refusal(HandlerDescriptor handler)
        => handler.LocalOnly ? $"handler '{handler.Name}' runs only on the local layer of the process that holds its run; a worker does not run it" : null;

    /// <summary>The layer a handler runs on here: its own kind's or the one it prefers (a circuit: quantum), else local.</summary>
    private ExecutionLayer? LayerFor(HandlerDescriptor handler)
    {
        var layers = _engine.Layers;
        if (handler.OnlyOn is { } kind)
        {
            ExecutionLayer? best = null;
            foreach (var l in layers)
                if (l.Kind == kind && l.CanRun(handler) && (best is null || ExecutionLayer.LessCapable(l, best))) best = l;
            return best;
        }
        if (handler.PreferredLayer is { } preferred)
            foreach (var l in layers)
                if (l.Name == preferred && l.CanRun(handler)) return l;
        return layers[0].CanRun(handler) ? layers[0] : null;
    }

    private PreparedGraph Prepare(DetachedTask task)
    {
        bool plain = task.Args is null;
        if (plain)
            lock (_plain)
                if (_plain.TryGetValue(task.Handler, out var shared)) return shared;
        var b = new GraphBuilder("detached");
        var r = b.Task(task.Id, task.Handler);
        if (task.Args is { } args)
        {
            try
            {
                using var doc = JsonDocument.Parse(args);
                r.WithArgs(doc.RootElement.Clone());
            }
            catch (JsonException ex)
            {
                throw new TaskRefusedException([new GraphError("bad_args", $"the arguments are not JSON: {ex.Message}", task.Id)]);
            }
        }
        var graph = b.TryBuild(out var errors);
        if (graph is null || !_engine.TryPrepare(graph, null, out var prepared, out errors))
            throw new TaskRefusedException(errors);
        if (plain)
            lock (_plain) _plain[task.Handler] = prepared;
        return prepared;
    }

    /// <summary>The run a detached attempt sees: one task, its inputs given, its reports kept.</summary>
    private sealed class Host(TaskMeshEngine engine, DetachedTask task, PreparedGraph prepared) : AttemptHost(null)
    {
        private readonly TaskExtras _extras = new() { Variant = task.Variant };
        private IReadOnlyList<KeyValuePair<string, object?>>? _inputs;

        public double? Confidence { get { lock (_extras) return _extras.Confidence; } }
        public EscalationRequest? Escalation { get { lock (_extras) return _extras.Request; } }

        public override string RunId => "detached";
        public override string BaseDirectory => Environment.CurrentDirectory;
        internal override EngineOptions Options => engine.Options;
        internal override AttemptRunner Attempts => throw Unused();
        internal override bool Cancelled => false;
        internal override CancellationToken RunToken => CancellationToken.None;
        internal override IReadOnlyList<string> LayerNames => engine.Layers.Select(l => l.Name).ToArray();
        internal override ExecutionLayer LayerAt(int route) => engine.Layers[route];
        internal override ObserverSet? OnAttemptStartedObservers => null;
        internal override ObserverSet? OnAttemptEndedObservers => null;
        internal override ObserverSet? OnRoutedObservers => null;
        internal override void OnGuardedStarted() { }
        internal override void OnGuardedEnded() { }
        internal override void OnGuardedEnded(int count) { }
        internal override void Fault(Exception ex) { }
        internal override HandlerDescriptor HandlerOf(int node) => prepared.HandlerOf(0);
        internal override string IdOf(int node) => task.Id;
        internal override string HandlerNameOf(int node) => task.Handler;
        internal override TaskSpec? SpecOf(int node) => prepared.Graph.Spec(0);
        internal override byte PriorityOf(int node) => 0;
        internal override TaskGraph GraphOf(int node) => prepared.Graph;
        internal override object? ParsedArgsOf(int node) => prepared.ParsedArgsOf(0);

        internal override IReadOnlyList<KeyValuePair<string, object?>> InputsOf(int node)
            => _inputs ??= task.Inputs is { } given ? given.Select(i => new KeyValuePair<string, object?>(i.Key, StoredOutput.Restore(i.Value))).ToArray() : [];

        internal override int RetriesOf(int node) => 0;
        internal override TimeSpan TimeoutOf(int node) => task.Timeout;
        internal override byte RouteOfTask(int node) => RouteTable.Local;
        internal override int NextAttempt(int node) => task.Attempt;
        internal override void NoteFirstStart(int node, long timestamp) { }
        internal override TaskExtras ExtrasOf(int node) => _extras;
        internal override TaskExtras? TryExtrasOf(int node) => _extras;
        internal override RouteDecision DecisionOf(int node, string layer) => new(layer);
        internal override void CompleteGuarded(int node, in AttemptResult final, double durationMs, string? note) => throw Unused();
        internal override LayerDispatcher DispatcherAt(int route) => throw Unused();
        internal override void SetRouteOfTask(int node, byte route) => throw Unused();

        internal override void RecordEscalation(int node, string from, string to, string trigger, string reason, double? previousConfidence = null,
            string? previousOutput = null, Escalation.EscalationRule? rule = null)
        {
            // A handler's own escalation on a worker (its inner cascade) is its business: the coordinator records the task's moves.
        }

        private static NotSupportedException Unused() => new("a detached attempt has no scheduler");
    }
}
