using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// One run of a graph: per-task counters and outcomes in flat arrays, the scheduler workers,
/// and the dispatchers that feed the layers.
/// <para>
/// Hot path (Taskflow's executor): every task's counter starts at its number of predecessors;
/// a task that ends decrements its successors' counters, and each one that reaches zero is
/// ready. The first ready successor runs inline on the same worker; the rest go to the worker's
/// own work-stealing deque (or a shared queue by priority). Tasks whose handler is inline run
/// right there; the others are dispatched to their layer.
/// </para>
/// </summary>
internal sealed partial class RunState
{
    internal const byte RouteInline = 255;
    private const int FlushEvery = 256;

    internal readonly TaskGraph Graph;
    private readonly EngineOptions _options;
    private readonly HandlerDescriptor[] _handlerOf;   // by the graph's handler index
    private readonly InlineTaskHandler?[] _inlineOf;   // by the graph's handler index
    private readonly byte[] _route;                    // by task: RouteInline or a dispatcher index
    private readonly LayerDispatcher[] _dispatchers;

    // Per task.
    private readonly int[] _pending;
    private readonly byte[] _outcome;
    private readonly int[] _skipCause;                 // 1 + the failed ancestor, 0 for none
    private readonly byte[] _attempts;
    private readonly object?[]? _outputs;
    private readonly bool _keepAllOutputs;
    private readonly float[]? _durationMs;
    private readonly string?[]? _errors;

    // Workers and queues.
    private readonly Worker[] _workers;
    private readonly ConcurrentQueue<int> _injected = new();   // normal priority, released off the workers
    private readonly ConcurrentQueue<int> _critical = new();
    private readonly ConcurrentQueue<int> _high = new();
    private readonly ConcurrentQueue<int> _low = new();
    private int _urgentCount;                                   // items in _critical + _high
    private readonly SemaphoreSlim _wake = new(0);
    private int _sleepers;

    private int _remaining;
    private volatile bool _stopping;
    private volatile bool _cancelled;
    private int _guardedInFlight;
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _runCts = new();
    private readonly ResourceGate? _gate;
    private readonly Channel<RunEvent>? _events;
    private readonly Random _jitter;
    private int _failedCount;
    private long _startTimestamp;
    private long _endTimestamp;

    internal RunState(TaskGraph graph, EngineOptions options, HandlerDescriptor[] handlerOf, byte[] route,
        ExecutionLayer[] layers, RunOptions runOptions)
    {
        Graph = graph;
        _options = options;
        _handlerOf = handlerOf;
        _inlineOf = handlerOf.Select(h => h.Inline).ToArray();
        _route = route;
        BaseDirectory = runOptions.BaseDirectory ?? Environment.CurrentDirectory;
        int n = graph.Count;
        _pending = new int[n];
        for (int i = 0; i < n; i++) _pending[i] = graph.PredStart[i + 1] - graph.PredStart[i];
        _outcome = new byte[n];
        _skipCause = new int[n];
        _attempts = new byte[n];
        _keepAllOutputs = runOptions.KeepOutputs;
        if (graph.HasDataEdges || _keepAllOutputs) _outputs = new object?[n];
        if (runOptions.CollectTaskDetails ?? n <= RunOptions.DetailsLimit)
        {
            _durationMs = new float[n];
            _errors = new string?[n];
        }
        _remaining = n;
        _workers = new Worker[options.WorkerThreads];
        for (int i = 0; i < _workers.Length; i++) _workers[i] = new Worker(this, i);
        _dispatchers = layers.Select(l => new LayerDispatcher(this, l)).ToArray();
        if (graph.PoolCapacity.Length > 0) _gate = new ResourceGate(graph);
        if (runOptions.EmitEvents)
            _events = Channel.CreateUnbounded<RunEvent>(new UnboundedChannelOptions { SingleReader = true });
        _jitter = options.RandomSeed is int seed ? new Random(seed) : new Random();
        RunId = Guid.NewGuid().ToString("N")[..12];
    }

    public string RunId { get; }

    /// <summary>Managed bytes allocated (by any thread) between the workers' start and the last task's end: the per-task cost of the hot path, for the bench.</summary>
    internal long SteadyStateAllocatedBytes { get; private set; }
    public string BaseDirectory { get; }
    public ChannelReader<RunEvent>? Events => _events?.Reader;

    private readonly System.Collections.Concurrent.ConcurrentQueue<EscalationRecord> _escalations = new();

    /// <summary>Escalations recorded so far, in the order they happened.</summary>
    internal IReadOnlyCollection<EscalationRecord> Escalations => _escalations;

    internal void RecordEscalation(int node, string from, string to, string trigger, string reason)
    {
        _escalations.Enqueue(new EscalationRecord(Graph.IdOf(node), from, to, trigger, reason, _options.TimeProvider.GetUtcNow()));
        if (_events is not null) Emit(RunEventKind.Escalated, node, null, 0, $"{trigger}: {from} -> {to}: {reason}");
    }
    internal bool Cancelled => _cancelled;
    internal CancellationToken RunToken => _runCts.Token;
    internal EngineOptions Options => _options;
    internal HandlerDescriptor HandlerOf(int node) => _handlerOf[Graph.HandlerOf[node]];
    internal ResourceGate? Gate => _gate;

    /// <summary>Tasks ended so far (approximate while running: workers report in batches).</summary>
    public int Completed => Graph.Count - Volatile.Read(ref _remaining);
    public int FailedSoFar => Volatile.Read(ref _failedCount);
    public int Running => _dispatchers.Sum(d => d.Layer.Running);

    // ---------------------------------------------------------------- run lifecycle

    public async Task<RunResult> RunAsync(CancellationToken ct)
    {
        _startTimestamp = Stopwatch.GetTimestamp();
        if (Graph.Count == 0)
            _finished.TrySetResult();
        else
            SeedRoots();

        using var reg = ct.Register(static s => ((RunState)s!).Cancel(), this);
        long allocatedBefore = GC.GetTotalAllocatedBytes();
        foreach (var w in _workers) w.Start();
        try
        {
            await _finished.Task.ConfigureAwait(false);
            SteadyStateAllocatedBytes = GC.GetTotalAllocatedBytes() - allocatedBefore;
        }
        finally
        {
            _stopping = true;
            Interlocked.MemoryBarrier(); // publish _stopping before _guardedInFlight is read below
            WakeAll();
            foreach (var w in _workers) await w.Exited.ConfigureAwait(false);
            if (Volatile.Read(ref _guardedInFlight) == 0) _drained.TrySetResult();
            await _drained.Task.ConfigureAwait(false);
            _endTimestamp = Stopwatch.GetTimestamp();
            _events?.Writer.TryComplete();
        }
        return RunResult.From(this);
    }

    /// <summary>Stops dispatch, cancels running handlers; the run ends once they stopped or were abandoned.</summary>
    public void Cancel()
    {
        if (_cancelled) return;
        _cancelled = true;
        try { _runCts.Cancel(); } catch (AggregateException) { /* a handler's callback threw; the run still ends */ }
        _finished.TrySetResult();
        WakeAll();
    }

    private void SeedRoots()
    {
        // Single-threaded, before any worker starts: spread normal roots round-robin over the
        // deques, urgent and low ones into their shared queues.
        int w = 0;
        for (int i = 0; i < Graph.Count; i++)
        {
            if (_pending[i] != 0) continue;
            Emit(RunEventKind.Released, i, null, 0, null);
            byte p = Graph.Priorities[i];
            if (p == (byte)TaskPriority.Normal)
            {
                _workers[w].Deque.Push(i);
                if (++w == _workers.Length) w = 0;
            }
            else EnqueueShared(i, p);
        }
    }

    internal void Fault(Exception ex)
    {
        _cancelled = true;
        _runCts.Cancel();
        _finished.TrySetException(ex);
        WakeAll();
    }

    // ---------------------------------------------------------------- queues

    /// <summary>Queues a ready task. <paramref name="w"/> is the current worker, or null off the workers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enqueue(Worker? w, int node)
    {
        byte p = Graph.Priorities[node];
        if (p == (byte)TaskPriority.Normal)
        {
            if (w is not null) w.Deque.Push(node);
            else _injected.Enqueue(node);
        }
        else EnqueueShared(node, p);
        if (Volatile.Read(ref _sleepers) > 0) WakeOne();
    }

    private void EnqueueShared(int node, byte p)
    {
        switch ((TaskPriority)p)
        {
            case TaskPriority.Low: _low.Enqueue(node); break;
            case TaskPriority.Normal: _injected.Enqueue(node); break;
            case TaskPriority.High: _high.Enqueue(node); Interlocked.Increment(ref _urgentCount); break;
            default: _critical.Enqueue(node); Interlocked.Increment(ref _urgentCount); break;
        }
    }

    /// <summary>Next task for <paramref name="w"/>: urgent shared, own deque, released-elsewhere, stolen, low.</summary>
    private int TryTake(Worker w)
    {
        int node;
        if (Volatile.Read(ref _urgentCount) > 0)
        {
            if (_critical.TryDequeue(out node) || _high.TryDequeue(out node))
            {
                Interlocked.Decrement(ref _urgentCount);
                return node;
            }
        }
        if (w.Deque.TryPop(out node)) return node;
        if (_injected.TryDequeue(out node)) return node;
        var workers = _workers;
        for (int k = 1; k < workers.Length; k++)
        {
            var victim = workers[(w.Id + k) % workers.Length];
            if (victim.Deque.TrySteal(out node)) return node;
        }
        if (_low.TryDequeue(out node)) return node;
        return -1;
    }

    private void WakeOne()
    {
        // Extra permits only cause a spurious wake-up; a lost one costs at most one idle timeout.
        if (_wake.CurrentCount < Volatile.Read(ref _sleepers)) _wake.Release();
    }

    private void WakeAll() => _wake.Release(_workers.Length + 1);

    // ---------------------------------------------------------------- worker loop

    internal void WorkerLoop(Worker w)
    {
        try
        {
            var spinner = new SpinWait();
            while (true)
            {
                if (_cancelled) break;
                int node = TryTake(w);
                if (node >= 0)
                {
                    spinner.Reset();
                    RunChain(w, node);
                    continue;
                }
                Flush(w);
                if (_stopping) break;
                if (!spinner.NextSpinWillYield)
                {
                    spinner.SpinOnce(sleep1Threshold: -1);
                    continue;
                }
                Interlocked.Increment(ref _sleepers);
                node = TryTake(w);
                if (node < 0 && !_stopping && !_cancelled)
                    _wake.Wait(2);
                Interlocked.Decrement(ref _sleepers);
                if (node >= 0) RunChain(w, node);
                spinner.Reset();
            }
            Flush(w);
        }
        catch (Exception ex)
        {
            Fault(ex);
        }
    }

    /// <summary>Runs a ready task and, inline, the chain of first-released successors after it.</summary>
    private void RunChain(Worker w, int node)
    {
        do
        {
            int skip = _skipCause[node];
            if (skip != 0)
            {
                Emit(RunEventKind.Skipped, node, null, 0, $"'{Graph.IdOf(skip - 1)}' failed");
                node = Finish(w, node, TaskOutcome.Skipped, skip);
            }
            else if (_route[node] == RouteInline)
                node = RunInline(w, node);
            else
            {
                Dispatch(node);
                node = -1;
            }
        }
        while (node >= 0 && !_cancelled);
        // A task left in hand at cancellation never started: it is reported as cancelled.
    }

    private int RunInline(Worker w, int node)
    {
        var body = _inlineOf[Graph.HandlerOf[node]]!;
        long t0 = _durationMs is null ? 0 : Stopwatch.GetTimestamp();
        if (_events is not null) Emit(RunEventKind.Started, node, LocalName, 1, null);
        object? output;
        try
        {
            output = body(new TaskContext(this, node, 1));
        }
        catch (Exception ex)
        {
            return OnInlineFailure(w, node, ex, t0);
        }
        if (_outputs is not null && (_keepAllOutputs || (Graph.Flags[node] & NodeFlags.HasDataSuccessor) != 0))
            _outputs[node] = output;
        if (_durationMs is not null)
            _durationMs[node] = (float)Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        if (_events is not null) Emit(RunEventKind.Succeeded, node, LocalName, 1, null);
        return Finish(w, node, TaskOutcome.Succeeded, 0);
    }

    private string LocalName => _dispatchers.Length > 0 ? _dispatchers[0].Layer.Name : "local";

    private int OnInlineFailure(Worker w, int node, Exception ex, long t0)
    {
        _attempts[node] = 1;
        string message = DescribeFailure(ex);
        if (RetriesOf(node) >= 1 && !_cancelled)
        {
            // Retries need back-off, which must not stall a worker: hand the task to the local layer.
            Emit(RunEventKind.Retried, node, LocalName, 1, message);
            _dispatchers[0].Enqueue(node);
            return -1;
        }
        if (_durationMs is not null) _durationMs[node] = (float)Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        if (_errors is not null) _errors[node] = message;
        Emit(RunEventKind.Failed, node, LocalName, 1, message);
        return Finish(w, node, TaskOutcome.Failed, 0);
    }

    /// <summary>
    /// Records the task's outcome and releases its successors. Returns one successor for the
    /// caller to run inline (workers only), or -1.
    /// </summary>
    internal int Finish(Worker? w, int node, TaskOutcome outcome, int skipCause)
    {
        _outcome[node] = (byte)outcome;
        bool propagate = outcome != TaskOutcome.Succeeded;
        if (propagate && outcome != TaskOutcome.Skipped) Interlocked.Increment(ref _failedCount);
        int cause = outcome == TaskOutcome.Skipped ? skipCause : node + 1;
        int inline = -1;
        var succ = Graph.Succ;
        var kinds = Graph.SuccKind;
        int end = Graph.SuccStart[node + 1];
        for (int e = Graph.SuccStart[node]; e < end; e++)
        {
            int s = succ[e];
            // The skip mark is written before the decrement, whose full fence publishes it to
            // whichever thread sees the counter reach zero.
            if (propagate && kinds[e] != (byte)EdgeKind.Soft)
                Interlocked.CompareExchange(ref _skipCause[s], cause, 0);
            if (Interlocked.Decrement(ref _pending[s]) == 0)
            {
                if (_events is not null) Emit(RunEventKind.Released, s, null, 0, null);
                if (w is not null && inline < 0 && Graph.Priorities[s] != (byte)TaskPriority.Low)
                    inline = s;
                else
                    Enqueue(w, s);
            }
        }
        if (w is not null)
        {
            if (++w.Unflushed == FlushEvery) Flush(w);
        }
        else if (Interlocked.Decrement(ref _remaining) == 0)
            _finished.TrySetResult();
        return inline;
    }

    private void Flush(Worker w)
    {
        if (w.Unflushed == 0) return;
        int left = Interlocked.Add(ref _remaining, -w.Unflushed);
        w.Unflushed = 0;
        if (left == 0) _finished.TrySetResult();
    }

    // ---------------------------------------------------------------- guarded path (layers)

    private void Dispatch(int node)
    {
        if (_gate is not null && (Graph.Flags[node] & NodeFlags.UsesResources) != 0 && !_gate.TryAcquireOrPark(node))
            return;
        _dispatchers[_route[node]].Enqueue(node);
    }

    internal void OnGuardedStarted() => Interlocked.Increment(ref _guardedInFlight);

    internal void OnGuardedEnded()
    {
        if (Interlocked.Decrement(ref _guardedInFlight) == 0 && (_cancelled || _stopping))
            _drained.TrySetResult();
    }

    internal int RetriesOf(int node)
        => Graph.Specs[node]?.Retries ?? Graph.Defaults.Retries ?? _options.RetryAttempts;

    internal TimeSpan TimeoutOf(int node)
    {
        double? s = Graph.Specs[node]?.TimeoutSeconds ?? Graph.Defaults.TimeoutSeconds;
        return s is double x ? TimeSpan.FromSeconds(x) : _options.DefaultTimeout;
    }

    internal int NextAttempt(int node)
    {
        int a = _attempts[node] + 1;
        _attempts[node] = (byte)Math.Min(a, 255);
        return a;
    }

    internal TimeSpan BackoffDelay(int attempt)
    {
        // Exponential with equal jitter: half the delay is fixed, half random, so retries of
        // many tasks failing together spread out instead of striking in step.
        double baseMs = _options.RetryBaseDelay.TotalMilliseconds * Math.Pow(2, Math.Min(attempt - 1, 30));
        baseMs = Math.Min(baseMs, _options.RetryMaxDelay.TotalMilliseconds);
        double r;
        lock (_jitter) r = _jitter.NextDouble();
        return TimeSpan.FromMilliseconds(baseMs * (0.5 + 0.5 * r));
    }

    /// <summary>Called by a dispatcher when a guarded task ended (any outcome but cancellation).</summary>
    internal void CompleteGuarded(int node, TaskOutcome outcome, object? output, string? error, double durationMs)
    {
        if (_outputs is not null && outcome == TaskOutcome.Succeeded && (_keepAllOutputs || (Graph.Flags[node] & NodeFlags.HasDataSuccessor) != 0))
            _outputs[node] = output;
        if (_durationMs is not null) _durationMs[node] = (float)durationMs;
        if (_errors is not null && error is not null) _errors[node] = error;
        ReleasePools(node);
        if (outcome == TaskOutcome.Cancelled) return;
        Finish(null, node, outcome, 0);
    }

    internal void ReleasePools(int node)
    {
        if (_gate is null || (Graph.Flags[node] & NodeFlags.UsesResources) == 0) return;
        var admitted = _gate.Release(node);
        if (admitted is null) return;
        foreach (var next in admitted)
        {
            if (_cancelled) break;
            _dispatchers[_route[next]].Enqueue(next);
        }
    }

    internal static string DescribeFailure(Exception ex) => ex switch
    {
        TaskFailedException f => f.Message,
        AggregateException { InnerExceptions.Count: 1 } a => DescribeFailure(a.InnerException!),
        _ => $"{ex.GetType().Name}: {ex.Message}",
    };

    // ---------------------------------------------------------------- events and results

    internal void Emit(RunEventKind kind, int node, string? layer, int attempt, string? message)
    {
        _events?.Writer.TryWrite(new RunEvent(kind, node, Graph.IdOf(node), layer, attempt, message, _options.TimeProvider.GetUtcNow()));
    }

    internal IReadOnlyList<KeyValuePair<string, object?>> InputsOf(int node)
    {
        var list = new List<KeyValuePair<string, object?>>();
        if (_outputs is null) return list;
        for (int e = Graph.PredStart[node]; e < Graph.PredStart[node + 1]; e++)
            if (Graph.PredKind[e] == (byte)EdgeKind.Data)
                list.Add(new(Graph.IdOf(Graph.Pred[e]), _outputs[Graph.Pred[e]]));
        return list;
    }

    internal TaskOutcome OutcomeOf(int node) => (TaskOutcome)_outcome[node];
    internal int AttemptsOf(int node) => _attempts[node] == 0 && _outcome[node] == (byte)TaskOutcome.Succeeded ? 1 : _attempts[node];
    internal string? ErrorOf(int node) => _errors?[node];
    internal double? DurationOf(int node) => _durationMs?[node];
    internal int SkipCauseOf(int node) => _skipCause[node] - 1;
    internal object? OutputOf(int node) => _outputs?[node];
    internal bool HasDetails => _durationMs is not null;
    internal TimeSpan Elapsed => Stopwatch.GetElapsedTime(_startTimestamp, _endTimestamp == 0 ? Stopwatch.GetTimestamp() : _endTimestamp);
    internal IReadOnlyList<ExecutionLayer> Layers => _dispatchers.Select(d => d.Layer).ToArray();

    /// <summary>The layer a task ran in, or null when it never ran.</summary>
    internal string? LayerOf(int node)
    {
        // Derived from the route: a task runs where it was routed (an inline task's retries run
        // in the local layer, which is where inline tasks count anyway).
        var o = (TaskOutcome)_outcome[node];
        if (o is TaskOutcome.Skipped or TaskOutcome.Cancelled) return null;
        return _route[node] == RouteInline ? LocalName : _dispatchers[_route[node]].Layer.Name;
    }

    /// <summary>A scheduler thread with its own deque.</summary>
    internal sealed class Worker
    {
        private readonly RunState _run;
        private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Worker(RunState run, int id)
        {
            _run = run;
            Id = id;
            Deque = new WorkStealingDeque(Math.Min(run.Graph.Count / Math.Max(1, run._options.WorkerThreads) + 16, 1 << 16));
        }

        public readonly int Id;
        public readonly WorkStealingDeque Deque;
        public int Unflushed;
        public Task Exited => _exited.Task;

        public void Start()
        {
            var t = new Thread(static s =>
            {
                var w = (Worker)s!;
                try { w._run.WorkerLoop(w); }
                finally { w._exited.TrySetResult(); }
            })
            {
                IsBackground = true,
                Name = $"taskmesh-worker-{Id}",
            };
            t.Start(this);
        }
    }
}
