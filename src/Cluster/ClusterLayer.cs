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

    /// <summary>Attempts come in batches (<see cref="StartAttempts"/>): no task, timer or token per attempt on the coordinator.</summary>
    public override bool TakesBatches => true;

    public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
        => throw new NotSupportedException("the cluster layer takes its attempts in batches (StartAttempts)");

    public override void StartAttempts(ReadOnlySpan<LayerAttempt> attempts)
    {
        var works = new List<RemoteWork>(attempts.Length);
        foreach (var attempt in attempts)
        {
            AttemptWork work;
            try
            {
                work = ToWork(attempt);
            }
            catch (Exception ex)
            {
                attempt.Fail(ex);   // an input that cannot be sent: the attempt fails, the rules decide
                continue;
            }
            attempt.State = work;
            // Ended meanwhile (its timeout or cancellation, seen by the engine's sweep): not sent.
            if (!attempt.IsEnded) works.Add(work);
        }
        _dispatcher.Enqueue(works);
    }

    /// <summary>The engine took the attempt back (timeout, cancellation): it leaves the queue, or its worker is told to stop it.</summary>
    public override void StopAttempt(LayerAttempt attempt)
    {
        if (attempt.State is AttemptWork work) _dispatcher.Cancel(work);
    }

    /// <summary>An attempt of a run as the dispatcher holds it: its ending ends the engine's attempt.</summary>
    private sealed class AttemptWork(ClusterLayer layer, LayerAttempt attempt, WorkItem item, int qubits, long needBytes)
        : RemoteWork(item.Key, item, qubits, needBytes)
    {
        public override void End(WorkOutcome? outcome)
        {
            if (attempt.IsEnded) return;
            if (outcome is null)
            {
                _ = layer.RunLocallyAsync(attempt);   // no worker left
                return;
            }
            var ctx = attempt.Invocation.Context;
            try
            {
                if (!double.IsNaN(outcome.Confidence)) ctx.ReportConfidence(Math.Clamp(outcome.Confidence, 0, 1));
                if (outcome.Escalation is [var trigger, var from, var to, var reason]) ctx.RequestEscalation(trigger, from, to, reason);
                switch (outcome.Status)
                {
                    case WorkStatus.Succeeded:
                        attempt.Succeed(outcome.Output is null ? null : StoredOutput.Restore(outcome.Output));
                        break;
                    case WorkStatus.TimedOut:
                        attempt.Fail(new TaskFailedException($"on worker {LastWorker}: {outcome.Error ?? "timed out"}"));
                        break;
                    case WorkStatus.Cancelled:
                        attempt.Fail(new OperationCanceledException());
                        break;
                    default:
                        attempt.Fail(new TaskFailedException(outcome.Error ?? $"worker {LastWorker} reported a failure"));
                        break;
                }
            }
            catch (Exception ex)
            {
                attempt.Fail(ex);   // an outcome that cannot be read back
            }
        }

        public override void EndCancelled() => attempt.Fail(new OperationCanceledException());
    }

    /// <summary>An attempt no worker can take any more runs on <c>local</c>, off the dispatcher's thread.</summary>
    private async Task RunLocallyAsync(LayerAttempt attempt)
    {
        try
        {
            await Task.Yield();
            attempt.Succeed(await _local().ExecuteAsync(attempt.Invocation, attempt.Token).ConfigureAwait(false));
        }
        catch (Exception ex)
        {
            attempt.Fail(ex);
        }
    }

    private AttemptWork ToWork(LayerAttempt attempt)
    {
        var invocation = attempt.Invocation;
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
        var timeout = attempt.Timeout;
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
        return new AttemptWork(this, attempt, item, qubits, need);
    }
}
