using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Tasks.Dataflow;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Feeds one layer. Ready tasks wait here in four priority queues; a pump moves the most urgent
/// into the layer's Dataflow <see cref="ActionBlock{T}"/> while it has free slots, so the block
/// never holds more than the layer's capacity (back-pressure) and priorities decide who gets a
/// slot when slots are scarce. Each task's attempts, timeouts, retries and abandonment of hung
/// handlers happen here.
/// </summary>
internal sealed class LayerDispatcher
{
    private readonly RunState _run;
    private readonly ConcurrentQueue<int>[] _queues = [new(), new(), new(), new()]; // by TaskPriority
    private readonly ActionBlock<int> _block;
    private int _freeSlots;
    private int _pumping;
    private int _pumpRequests;

    public LayerDispatcher(RunState run, ExecutionLayer layer)
    {
        _run = run;
        Layer = layer;
        _freeSlots = layer.Capacity;
        _block = new ActionBlock<int>(RunTaskAsync, new ExecutionDataflowBlockOptions
        {
            MaxDegreeOfParallelism = layer.Capacity,
            // The pump admits at most Capacity tasks at once (_freeSlots). A task frees its slot
            // just before its delegate returns, and Dataflow counts it until it has returned, so
            // the block may briefly hold Capacity finishing tasks plus Capacity new ones.
            BoundedCapacity = 2 * layer.Capacity,
            EnsureOrdered = false,
        });
    }

    public ExecutionLayer Layer { get; }

    public void Enqueue(int node)
    {
        _run.Emit(RunEventKind.Routed, node, Layer.Name, 0, null);
        _queues[_run.Graph.Priorities[node]].Enqueue(node);
        Layer.AddQueued(1);
        Pump();
    }

    private void Pump()
    {
        // One pumper at a time. A caller that finds the pump busy has already counted its
        // request, and the pumper re-checks the count after letting go, so no request is lost.
        Interlocked.Increment(ref _pumpRequests);
        while (true)
        {
            if (Interlocked.CompareExchange(ref _pumping, 1, 0) != 0) return;
            int seen = Volatile.Read(ref _pumpRequests);
            while (!_run.Cancelled && Volatile.Read(ref _freeSlots) > 0 && TryPeekMostUrgent(out var queue, out int node))
            {
                Interlocked.Decrement(ref _freeSlots);
                _run.OnGuardedStarted();
                if (!_block.Post(node))
                {
                    _run.OnGuardedEnded();
                    Interlocked.Increment(ref _freeSlots);
                    break;
                }
                queue.TryDequeue(out _);
                Layer.AddQueued(-1);
            }
            Interlocked.Exchange(ref _pumping, 0);
            if (Volatile.Read(ref _pumpRequests) == seen) return;
        }
    }

    private bool TryPeekMostUrgent(out ConcurrentQueue<int> queue, out int node)
    {
        for (int p = _queues.Length - 1; p >= 0; p--)
        {
            if (_queues[p].TryPeek(out node))
            {
                queue = _queues[p];
                return true;
            }
        }
        queue = _queues[0];
        node = -1;
        return false;
    }

    private async Task RunTaskAsync(int node)
    {
        var (outcome, output, error, elapsed) = (TaskOutcome.Cancelled, (object?)null, (string?)null, 0.0);
        Layer.AddRunning(1);
        try
        {
            (outcome, output, error, elapsed) = await RunAttemptsAsync(node).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            outcome = TaskOutcome.Failed;
            error = "internal error: " + RunState.DescribeFailure(ex);
        }
        finally
        {
            Layer.AddRunning(-1);
        }
        try
        {
            _run.CompleteGuarded(node, outcome, output, error, elapsed);
        }
        catch (Exception ex)
        {
            _run.Fault(ex);
        }
        finally
        {
            Interlocked.Increment(ref _freeSlots);
            _run.OnGuardedEnded();
        }
        Pump();
    }

    private async Task<(TaskOutcome, object?, string?, double)> RunAttemptsAsync(int node)
    {
        var handler = _run.HandlerOf(node);
        int retries = _run.RetriesOf(node);
        var timeout = _run.TimeoutOf(node);
        long started = Stopwatch.GetTimestamp();
        while (true)
        {
            int attempt = _run.NextAttempt(node);
            _run.Emit(RunEventKind.Started, node, Layer.Name, attempt, null);
            var (outcome, output, error) = await RunOneAttemptAsync(node, handler, attempt, timeout).ConfigureAwait(false);
            double ms = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            switch (outcome)
            {
                case TaskOutcome.Succeeded:
                    _run.Emit(RunEventKind.Succeeded, node, Layer.Name, attempt, null);
                    return (outcome, output, null, ms);
                case TaskOutcome.Cancelled:
                    _run.Emit(RunEventKind.Cancelled, node, Layer.Name, attempt, error);
                    return (outcome, null, error, ms);
            }
            if (attempt <= retries && !_run.Cancelled)
            {
                _run.Emit(RunEventKind.Retried, node, Layer.Name, attempt, error);
                try
                {
                    await Task.Delay(_run.BackoffDelay(attempt), _run.Options.TimeProvider, _run.RunToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    return (TaskOutcome.Cancelled, null, "cancelled while waiting to retry", ms);
                }
                continue;
            }
            _run.Emit(outcome == TaskOutcome.TimedOut ? RunEventKind.TimedOut : RunEventKind.Failed, node, Layer.Name, attempt, error);
            return (outcome, null, error, ms);
        }
    }

    private async Task<(TaskOutcome, object?, string?)> RunOneAttemptAsync(int node, HandlerDescriptor handler, int attempt, TimeSpan timeout)
    {
        using var timeoutCts = new CancellationTokenSource(timeout, _run.Options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(_run.RunToken, timeoutCts.Token);
        var token = linked.Token;
        var invocation = new LayerInvocation(handler, new TaskContext(_run, node, attempt));
        var layer = Layer;

        // Off the dispatcher's thread: a handler that blocks synchronously must not keep us
        // from noticing its timeout.
        Task<object?> work = Task.Run(() => layer.ExecuteAsync(invocation, token).AsTask(), CancellationToken.None);

        if (!work.IsCompleted)
        {
            var cancelRequested = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (token.Register(static s => ((TaskCompletionSource)s!).TrySetResult(), cancelRequested))
            {
                if (await Task.WhenAny(work, cancelRequested.Task).ConfigureAwait(false) != work)
                {
                    var grace = Task.Delay(_run.Options.CancelGracePeriod, _run.Options.TimeProvider);
                    if (await Task.WhenAny(work, grace).ConfigureAwait(false) != work)
                    {
                        // The handler ignores its token: abandon it, and observe its eventual fault.
                        _ = work.ContinueWith(static t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted);
                        if (_run.Cancelled)
                            return (TaskOutcome.Cancelled, null, "cancelled; the handler ignored cancellation and was abandoned");
                        return (TaskOutcome.TimedOut, null,
                            $"timed out after {timeout.TotalSeconds:0.###}s; the handler ignored cancellation and was abandoned after {_run.Options.CancelGracePeriod.TotalSeconds:0.###}s");
                    }
                }
            }
        }

        if (work.IsCompletedSuccessfully)
            return (TaskOutcome.Succeeded, work.Result, null);
        var ex = work.Exception?.InnerException ?? new OperationCanceledException();
        if (ex is OperationCanceledException)
        {
            if (_run.Cancelled) return (TaskOutcome.Cancelled, null, "cancelled");
            if (timeoutCts.IsCancellationRequested) return (TaskOutcome.TimedOut, null, $"timed out after {timeout.TotalSeconds:0.###}s");
        }
        return (TaskOutcome.Failed, null, RunState.DescribeFailure(ex));
    }
}
