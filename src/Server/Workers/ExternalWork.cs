using System.Text.Json;
using TaskMesh.Engine.Layers;

namespace TaskMesh.Server.Workers;

/// <summary>
/// One attempt of a task for an external worker: what the worker is sent (task id, handler,
/// arguments as JSON, attempt) and how it ends. It is granted to a worker under a lease id of its
/// own; re-granted (a new lease id) when that worker goes away first; ended once — by the first
/// result of its current lease, or by the attempt's cancellation (its timeout, the run's
/// cancellation). A result of any other lease of it is dropped.
/// </summary>
internal sealed class ExternalWork(string taskId, string handler, JsonElement args, int attempt)
{
    private readonly TaskCompletionSource<WorkResult> _done = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public string TaskId { get; } = taskId;
    public string Handler { get; } = handler;
    /// <summary>The task's arguments (an object), or <c>default</c> when it has none (sent as nil).</summary>
    public JsonElement Args { get; } = args;
    public int Attempt { get; } = attempt;

    /// <summary>The lease it is granted under now (0 while queued); guarded by the queue's lock.</summary>
    public long Lease { get; set; }

    public Task<WorkResult> Done => _done.Task;
    public bool IsDone => _done.Task.IsCompleted;

    public bool TryComplete(WorkResult result) => _done.TrySetResult(result);

    public bool TryCancel() => _done.TrySetCanceled();
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

    /// <summary>An attempt waits for a worker's answer without a thread, and its cancellation takes it back at once.</summary>
    public override bool Cooperative => true;

    /// <summary>Down while no worker is connected.</summary>
    public override LayerStatus Status => queue.Workers > 0 ? LayerStatus.Active : LayerStatus.Down;

    public override async ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        var work = new ExternalWork(invocation.Context.Id, invocation.Handler.Name, invocation.Args, invocation.Context.Attempt);
        queue.Enqueue(work);
        WorkResult result;
        using (ct.Register(() => queue.Cancel(work)))
        {
            try
            {
                result = await work.Done.ConfigureAwait(false);
            }
            catch (TaskCanceledException)
            {
                ct.ThrowIfCancellationRequested();
                throw;
            }
        }
        if (result.Confidence is double c) invocation.Context.ReportConfidence(c);
        if (!result.Succeeded) throw new Engine.Handlers.TaskFailedException(result.Error ?? "the worker reported a failure");
        return result.Output;
    }
}
