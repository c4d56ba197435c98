using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Store;
using TaskMesh.QuantumSim;

namespace TaskMesh.Cluster;

/// <summary>
/// The <c>cluster</c> layer: each attempt it receives is queued for the worker silos, which the
/// <see cref="ClusterDispatcher"/> sends in batches under credit flow control; the attempt ends
/// with the worker's outcome (output, confidence, a request to escalate) as if it had run here.
/// Its slots follow the workers': their slots plus the prefetch of each. With no worker left,
/// its attempts run on <c>local</c> (<see cref="ClusterSettings.FallbackToLocal"/>).
/// </summary>
internal sealed class ClusterLayer : ExecutionLayer
{
    public const string LayerName = "cluster";

    /// <summary>The rank it has when the provider table gives none: above local (0), below quantum (10).</summary>
    public const int DefaultRank = 5;

    private readonly ClusterDispatcher _dispatcher;
    private readonly ClusterSettings _settings;
    private readonly Func<ExecutionLayer> _local;
    private long _nextKey;
    private volatile string[]? _handlers;

    public ClusterLayer(ClusterDispatcher dispatcher, ClusterSettings settings, Func<ExecutionLayer> local) : base(local().Capacity)
    {
        _dispatcher = dispatcher;
        _settings = settings;
        _local = local;
        dispatcher.WorkersChanged += Follow;
    }

    public override string Name => LayerName;

    public override string Kind => LayerName;

    /// <summary>An attempt waits for its worker without a thread; its cancellation takes it back at once.</summary>
    public override bool Cooperative => true;

    /// <summary>Down while no worker is there (attempts then run on <c>local</c>, or wait).</summary>
    public override LayerStatus Status => _dispatcher.Totals().Workers > 0 ? LayerStatus.Active : LayerStatus.Down;

    /// <summary>The handlers the workers run (every handler while none is there: the attempts then run locally).</summary>
    public override IReadOnlyList<string>? RunsHandlers => _handlers;

    public override LayerCapabilities Capabilities => new(_dispatcher.MaxQubits(), _handlers);

    internal ClusterDispatcher Dispatcher => _dispatcher;

    /// <summary>The workers changed: the slots and handlers follow.</summary>
    private void Follow()
    {
        var (workers, _, credits) = _dispatcher.Totals();
        _handlers = workers > 0 ? _dispatcher.Handlers() : null;
        SetCapacity(workers > 0 ? credits : _settings.FallbackToLocal ? _local().Capacity : 0);
    }

    public override async ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        var ctx = invocation.Context;
        var work = ToWork(invocation);
        _dispatcher.Enqueue(work);
        WorkOutcome? outcome;
        using (ct.Register(static s => { var (d, w) = ((ClusterDispatcher, RemoteWork))s!; d.Cancel(w); }, (_dispatcher, work)))
        {
            try
            {
                outcome = await work.Done.Task.ConfigureAwait(false);
            }
            catch (TaskCanceledException)
            {
                ct.ThrowIfCancellationRequested();
                throw;
            }
        }
        if (outcome is null) return await _local().ExecuteAsync(invocation, ct).ConfigureAwait(false);   // no worker left
        if (!double.IsNaN(outcome.Confidence)) ctx.ReportConfidence(Math.Clamp(outcome.Confidence, 0, 1));
        if (outcome.Escalation is [var trigger, var from, var to, var reason]) ctx.RequestEscalation(trigger, from, to, reason);
        return outcome.Status switch
        {
            WorkStatus.Succeeded => outcome.Output is null ? null : StoredOutput.Restore(outcome.Output),
            WorkStatus.TimedOut => throw new TaskFailedException($"on worker {work.LastWorker}: {outcome.Error ?? "timed out"}"),
            WorkStatus.Cancelled => throw new OperationCanceledException(ct),
            _ => throw new TaskFailedException(outcome.Error ?? $"worker {work.LastWorker} reported a failure"),
        };
    }

    private RemoteWork ToWork(LayerInvocation invocation)
    {
        var ctx = invocation.Context;
        KeyValuePair<string, string>[]? inputs = null;
        var given = ctx.Inputs;
        if (given.Count > 0)
        {
            inputs = new KeyValuePair<string, string>[given.Count];
            for (int i = 0; i < given.Count; i++)
                inputs[i] = new(given[i].Key, StoredOutput.Serialize(given[i].Value, Engine.Scheduling.DetachedTasks.MaxOutputBytes)
                    ?? throw new TaskFailedException($"the output of '{given[i].Key}' cannot be sent to a worker (not serialisable as JSON, or over {Engine.Scheduling.DetachedTasks.MaxOutputBytes >> 20} MB)"));
        }
        int qubits = 0;
        long need = 0;
        if (ctx.ParsedArgs<QuantumArgs>() is { } q)
        {
            qubits = q.Circuit.Qubits;
            need = qubits > StateVector.MaxQubits ? long.MaxValue : StateVector.RequiredBytes(qubits, QuantumHandler.PrecisionOf(q, ctx.EscalatedTo, null));
        }
        var timeout = ctx.Timeout;
        var item = new WorkItem
        {
            Key = Interlocked.Increment(ref _nextKey),
            TaskId = ctx.Id,
            Handler = invocation.Handler.Name,
            Args = invocation.Args.ValueKind == System.Text.Json.JsonValueKind.Undefined ? null : invocation.Args.GetRawText(),
            Attempt = ctx.Attempt,
            Variant = ctx.EscalatedTo,
            TimeoutMs = timeout >= TimeSpan.FromDays(1) || timeout <= TimeSpan.Zero ? int.MaxValue : (int)Math.Ceiling(timeout.TotalMilliseconds),
            Inputs = inputs,
        };
        return new RemoteWork(item.Key, item, qubits, need);
    }
}
