using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Layers;

/// <summary>
/// One attempt held by a layer that takes its attempts in batches (<see cref="ExecutionLayer.TakesBatches"/>):
/// the engine starts many in one <see cref="ExecutionLayer.StartAttempts"/> call, and the layer ends
/// each once, from any thread, with <see cref="Succeed"/> or <see cref="Fail"/> — no task, timer or
/// cancellation source per attempt. The engine watches the attempt's timeout and the run's and the
/// task's cancellation itself; when it ends an attempt first it tells the layer
/// (<see cref="ExecutionLayer.StopAttempt"/>) and ignores what the layer reports for it afterwards.
/// </summary>
public sealed class LayerAttempt
{
    private readonly LayerDispatcher _dispatcher;
    private CancellationTokenSource? _stopped;   // made only when a layer asks for a token
    private int _ended;

    internal LayerAttempt(LayerDispatcher dispatcher, int node, LayerInvocation invocation, TimeSpan timeout, long startedAt, long deadline)
    {
        _dispatcher = dispatcher;
        Node = node;
        Invocation = invocation;
        Timeout = timeout;
        StartedAt = startedAt;
        Deadline = deadline;
    }

    /// <summary>The handler and the task's context, as <see cref="ExecutionLayer.ExecuteAsync"/> receives them.</summary>
    public LayerInvocation Invocation { get; }

    /// <summary>How long the attempt may run; the engine ends it as timed out after that.</summary>
    public TimeSpan Timeout { get; }

    /// <summary>The layer's own state for the attempt (its work item, say).</summary>
    public object? State { get; set; }

    /// <summary>True once the attempt has ended, by the layer or by the engine.</summary>
    public bool IsEnded => Volatile.Read(ref _ended) != 0;

    /// <summary>
    /// Cancelled when the engine ends the attempt before the layer does (its timeout, the run's or
    /// the task's cancellation): for a layer that hands the attempt to code which takes a token.
    /// Made on first use; most layers need none (<see cref="ExecutionLayer.StopAttempt"/> tells them).
    /// </summary>
    public CancellationToken Token
    {
        get
        {
            var cts = Volatile.Read(ref _stopped);
            if (cts is null)
            {
                var made = new CancellationTokenSource();
                cts = Interlocked.CompareExchange(ref _stopped, made, null) ?? made;
                if (IsEnded) cts.Cancel();   // ended before the token was made: it is born cancelled
            }
            return cts.Token;
        }
    }

    /// <summary>Ends the attempt with <paramref name="output"/>. False (and nothing done) when it had already ended.</summary>
    public bool Succeed(object? output)
    {
        if (!TryEnd()) return false;
        _dispatcher.Ended(this, Scheduling.Attempts.AttemptOutcome.Succeeded, output, null);
        return true;
    }

    /// <summary>
    /// Ends the attempt with <paramref name="error"/>: a failure the escalation rules see, or, for an
    /// <see cref="OperationCanceledException"/>, cancelled when the task was. False (and nothing
    /// done) when it had already ended.
    /// </summary>
    public bool Fail(Exception error)
    {
        ArgumentNullException.ThrowIfNull(error);
        if (!TryEnd()) return false;
        _dispatcher.Failed(this, error);
        return true;
    }

    /// <summary>
    /// A scope in which this thread's <see cref="Succeed"/> and <see cref="Fail"/> calls give their
    /// slots back together when it is disposed (per run and layer: a few counter updates and one
    /// dispatch round instead of those per attempt). Wrap a loop that ends many attempts at once — a
    /// worker's batch of results — in one; each attempt still ends at its own call.
    /// </summary>
    public static EndTogetherScope EndTogether() => new(LayerDispatcher.Enter());

    /// <summary>Returned by <see cref="EndTogether"/>: dispose it on the thread that made it, with no <c>await</c> between.</summary>
    public readonly struct EndTogetherScope : IDisposable
    {
        private readonly LayerDispatcher.EndingTogether? _scope;

        internal EndTogetherScope(LayerDispatcher.EndingTogether scope) => _scope = scope;

        /// <summary>Gives back the slots of the attempts ended in the scope (the outermost scope only).</summary>
        public void Dispose()
        {
            if (_scope is not null) LayerDispatcher.Leave(_scope);
        }
    }

    internal int Node { get; }
    internal long StartedAt { get; }
    /// <summary>When it times out, on the run's <see cref="TimeProvider"/> clock (<see cref="long.MaxValue"/>: never).</summary>
    internal long Deadline { get; }
    /// <summary>Its place in its dispatcher's table of attempts in flight (under the dispatcher's lock).</summary>
    internal int Slot = -1;
    /// <summary>The run's count of task cancellations when its own was last looked at (under the dispatcher's lock, once in flight).</summary>
    internal int CancellationsSeen;

    internal bool TryEnd() => Interlocked.Exchange(ref _ended, 1) == 0;

    /// <summary>The engine ended it first: a token handed out is cancelled.</summary>
    internal void CancelToken() => Volatile.Read(ref _stopped)?.Cancel();
}
