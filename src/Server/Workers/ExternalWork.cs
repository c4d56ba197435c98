using System.Text.Json;
using TaskMesh.Engine.Layers;

namespace TaskMesh.Server.Workers;

/// <summary>
/// One attempt of a task for an external worker: what the worker is sent (task id, handler,
/// arguments as JSON, attempt) and how it ends. It is granted to a worker under a lease id of its
/// own; re-granted (a new lease id) when that worker goes away first; ended once — by the first
/// result of its current lease, or by the engine (the attempt's timeout, the run's or the task's
/// cancellation). A result of any other lease of it is dropped.
/// </summary>
internal class ExternalWork(string taskId, string handler, JsonElement args, int attempt)
{
    private TaskCompletionSource<WorkResult>? _done;

    public string TaskId { get; } = taskId;
    public string Handler { get; } = handler;
    /// <summary>The task's arguments (an object), or <c>default</c> when it has none (sent as nil).</summary>
    public JsonElement Args { get; } = args;
    public int Attempt { get; } = attempt;

    /// <summary>The lease it is granted under now (0 while queued); guarded by the queue's lock.</summary>
    public long Lease { get; set; }

    /// <summary>This class's own ending (the layer's attempts override it: <see cref="ExternalLayer"/>).</summary>
    public Task<WorkResult> Done => LazyInitializer.EnsureInitialized(ref _done).Task;

    public virtual bool IsDone => Done.IsCompleted;

    /// <summary>Ends it with the worker's result (false: it had ended already).</summary>
    public virtual bool TryComplete(WorkResult result) => LazyInitializer.EnsureInitialized(ref _done).TrySetResult(result);

    /// <summary>Taken back by its owner (false: it had ended already).</summary>
    public virtual bool TryCancel() => LazyInitializer.EnsureInitialized(ref _done).TrySetCanceled();
}

/// <summary>What a worker answered: an output, or an error; and the confidence it reported, if any.</summary>
/// <param name="Output">A string, a number (long or double), a boolean or null as itself; an object or an array as a <see cref="JsonElement"/>.</param>
internal sealed record WorkResult(bool Succeeded, object? Output, string? Error, double? Confidence)
{
    /// <summary>A worker's output (JSON) as a task's output: what successors and summaries expect.</summary>
    public static object? OutputOf(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.String => e.GetString(),
        JsonValueKind.Number => e.TryGetInt64(out long l) ? (object)l : e.GetDouble(),
        JsonValueKind.True => true,
        JsonValueKind.False => false,
        JsonValueKind.Null or JsonValueKind.Undefined => null,
        _ => e.Clone(),
    };
}

/// <summary>The layer of external workers: each attempt is queued for a worker that serves its handler.</summary>
internal sealed class ExternalLayer(WorkQueue queue, int capacity) : ExecutionLayer(capacity)
{
    public const string LayerName = "external";

    public override string Name => LayerName;

    public override string Kind => LayerName;

    /// <summary>The handlers workers declared (and the config's): only those run here, and they run nowhere else.</summary>
    public override IReadOnlyList<string>? RunsHandlers => queue.Handlers;


    /// <summary>Down while no worker is connected.</summary>
    public override LayerStatus Status => queue.Workers > 0 ? LayerStatus.Active : LayerStatus.Down;

    /// <summary>Attempts come in batches (<see cref="StartAttempts"/>): no task, timer or token per attempt.</summary>
    public override bool TakesBatches => true;

    public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
        => throw new NotSupportedException("the external layer takes its attempts in batches (StartAttempts)");

    public override void StartAttempts(ReadOnlySpan<LayerAttempt> attempts)
    {
        var works = new ExternalWork[attempts.Length];
        for (int i = 0; i < attempts.Length; i++) attempts[i].State = works[i] = new AttemptWork(attempts[i]);
        queue.Enqueue(works);
    }

    /// <summary>An attempt of a run as the queue holds it: the worker's result ends the engine's attempt.</summary>
    private sealed class AttemptWork(LayerAttempt attempt)
        : ExternalWork(attempt.Invocation.Context.Id, attempt.Invocation.Handler.Name, attempt.Invocation.Args, attempt.Invocation.Context.Attempt)
    {
        public override bool IsDone => attempt.IsEnded;

        public override bool TryComplete(WorkResult result)
        {
            if (attempt.IsEnded) return false;
            if (result.Confidence is double c) attempt.Invocation.Context.ReportConfidence(c);
            return result.Succeeded
                ? attempt.Succeed(result.Output)
                : attempt.Fail(new Engine.Handlers.TaskFailedException(result.Error ?? "the worker reported a failure"));
        }

        /// <summary>Only the engine takes an attempt back, and it has ended it already.</summary>
        public override bool TryCancel() => false;
    }

    /// <summary>The engine took the attempt back (timeout, cancellation): out of its queue or its lease.</summary>
    public override void StopAttempt(LayerAttempt attempt)
    {
        if (attempt.State is ExternalWork work) queue.Cancel(work);
    }
}
