using System.Collections.Concurrent;
using System.Diagnostics;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// One run of a graph: its lifecycle (start, cancel, fault, end, record). The parts live beside
/// it: per-task state in <see cref="TaskTable"/>, the ready queues in <c>RunState.Queues.cs</c>,
/// the worker loop in <c>RunState.Workers.cs</c>, tasks on layers in <c>RunState.Layers.cs</c>,
/// one attempt in <see cref="AttemptRunner"/>.
/// <para>
/// Hot path (Taskflow's executor): every task's counter starts at its number of predecessors;
/// a task that ends decrements its successors' counters, and each one that reaches zero is
/// ready. The first ready successor runs inline on the same worker; the rest go to the worker's
/// own work-stealing deque (or a shared queue by priority). Tasks whose handler is inline run
/// right there; the others are dispatched to their layer.
/// </para>
/// </summary>
internal sealed partial class RunState : AttemptHost, IRunProgress
{
    internal readonly TaskGraph Graph;
    internal readonly PreparedGraph Prepared;
    internal readonly TaskTable Tasks;
    private readonly EngineOptions _options;
    private readonly HandlerDescriptor[] _handlerOf;   // by the graph's handler index
    private readonly InlineTaskHandler?[] _inlineOf;   // by the graph's handler index
    private readonly LayerDispatcher[] _dispatchers;   // by route index; 0 is local
    private readonly string[] _layerNames;
    private readonly ObserverSet? _observers;
    // Decided once, after the observers heard the run start (DecideObserverCalls): the hot path
    // holds a reference per kind of call, null when nobody wants it.
    private ObserverSet? _onReleased, _onAttemptStarted, _onAttemptEnded, _onPlainAttemptEnded, _onTaskEnded, _onTasksEnded, _onRouted;
    private bool _preciseInlineTiming;
    private bool _timeInline;
    private bool _quickCounted;   // quick plain successes are counted, not listed, in batched ends   // some observer hears of inline attempts' or tasks' ends: they are timed
    private readonly EventChannelObserver? _events;
    private readonly bool _keepAllOutputs;
    private readonly Func<double> _criticalPathMs;

    private int _remaining;               // tasks not yet ended; workers subtract in batches
    private volatile bool _stopping;
    private volatile bool _cancelled;
    private int _guardedInFlight;
    private readonly TaskCompletionSource _finished = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly CancellationTokenSource _runCts = new();
    private readonly ResourceGate? _gate;
    private readonly ConcurrentQueue<EscalationRecord> _escalations = new();
    private int _failedCount;
    private readonly RestoredTasks? _restored;
    private int _restoredCount;
    private readonly ITaskCache? _cache;
    private int _cachedCount;
    private ConcurrentDictionary<int, string>? _cacheKeys;   // key of each cache-enabled task that ran
    private long _startTimestamp;
    private long _endTimestamp;
    private DateTimeOffset _startedAt;

    internal RunState(PreparedGraph prepared, EngineOptions options, byte[] route,
        ExecutionLayer[] layers, RunOptions runOptions, IEnumerable<IRunObserver> observers,
        IEscalationPolicy escalation, RetryPolicy retry, Func<double> criticalPathMs, ReadyPlan? ready = null)
        : base(runOptions.Budget)
    {
        var graph = prepared.Graph;
        var handlerOf = prepared.Handlers;
        Prepared = prepared;
        Graph = graph;
        _options = options;
        _handlerOf = handlerOf;
        _inlineOf = handlerOf.Select(h => h.Inline).ToArray();
        _criticalPathMs = criticalPathMs;
        BaseDirectory = runOptions.BaseDirectory ?? prepared.BaseDirectory;
        _keepAllOutputs = runOptions.KeepOutputs;
        Tasks = new TaskTable(graph, route, _keepAllOutputs, runOptions.CollectTaskDetails ?? graph.Count <= RunOptions.DetailsLimit);
        _remaining = graph.Count;
        _workers = new Worker[options.WorkerThreads];
        for (int i = 0; i < _workers.Length; i++) _workers[i] = new Worker(this, i);
        Ready = ready ?? ReadyPlan.Fifo;
        _dispatchers = layers.Select((l, i) => new LayerDispatcher(this, l, Ready.RanksFor(i))).ToArray();
        _layerNames = layers.Select(l => l.Name).ToArray();
        if (graph.PoolCapacity.Length > 0) _gate = new ResourceGate(graph);
        if (runOptions.EmitEvents)
            _events = new EventChannelObserver(runOptions.EventCapacity, runOptions.EventOverflow);
        if (_events is not null) observers = observers.Append(_events);
        // Traces only when something listens as the run starts: otherwise no tracing work at all.
        if (TaskMeshTracing.Source.HasListeners()) observers = observers.Append(new TaskMeshTracing());
        _observers = ObserverSet.Create(observers);
        Attempts = new AttemptRunner(this, escalation, retry);
        _restored = runOptions.Restored is { Count: > 0 } restored ? restored : null;
        _cache = graph.HasCachedTasks ? runOptions.Cache : null;
        _seedRootsByScan = !graph.HasPriorities && Ready.Ranks is null;
        RunId = Guid.NewGuid().ToString("N")[..12];
    }

    public override string RunId { get; }

    /// <summary>How the run orders ready tasks on its layers.</summary>
    internal ReadyPlan Ready { get; }

    /// <summary>Reads what the observers want (right after they heard the run start) into the fields the hot path checks.</summary>
    private void DecideObserverCalls()
    {
        if (_observers is not { } set) return;
        set.ReadInterests();
        _onReleased = set.For(RunObserverInterests.TaskReleased);
        _onAttemptStarted = set.For(RunObserverInterests.AttemptStarted);
        _onAttemptEnded = set.For(RunObserverInterests.AttemptEnded | RunObserverInterests.AttemptEndedUnlessPlain);
        _onPlainAttemptEnded = set.For(RunObserverInterests.AttemptEnded);
        _onTaskEnded = set.For(RunObserverInterests.TaskEnded);
        _onTasksEnded = set.For(RunObserverInterests.TaskEndedInBatches);
        if (_onTasksEnded is not null)
            foreach (var w in _workers) w.Ends = new PackedTaskEnd[FlushEvery];
        _timeInline = _onAttemptEnded is not null || _onTaskEnded is not null || _onTasksEnded is not null;
        _onRouted = set.For(RunObserverInterests.TaskRouted);
        _preciseInlineTiming = set.For(RunObserverInterests.PreciseInlineTiming) is not null;
        _quickCounted = _onTasksEnded is not null && set.AllWith(RunObserverInterests.TaskEndedInBatches, RunObserverInterests.QuickSuccessesCounted);
    }

    /// <summary>Managed bytes allocated (by any thread) between the workers' start and the last task's end: the per-task cost of the hot path, for the bench.</summary>
    internal long SteadyStateAllocatedBytes { get; private set; }
    public override string BaseDirectory { get; }
    internal EventChannelObserver? Events => _events;
    internal ObserverSet? Observers => _observers;
    internal override ObserverSet? OnAttemptStartedObservers => _onAttemptStarted;
    internal override ObserverSet? OnAttemptEndedObservers => _onAttemptEnded;
    internal override ObserverSet? OnRoutedObservers => _onRouted;
    internal override AttemptRunner Attempts { get; }
    internal override bool Cancelled => _cancelled;
    internal override CancellationToken RunToken => _runCts.Token;
    internal override EngineOptions Options => _options;
    internal override HandlerDescriptor HandlerOf(int node) => _handlerOf[Graph.HandlerIndex(node)];
    internal override string IdOf(int node) => Graph.IdOf(node);
    internal override string HandlerNameOf(int node) => Graph.HandlerOfTask(node);
    internal override TaskSpec? SpecOf(int node) => Graph.Spec(node);
    internal override byte PriorityOf(int node) => Graph.PriorityByte(node);
    internal override TaskGraph GraphOf(int node) => Graph;
    internal override object? ParsedArgsOf(int node) => Prepared.ParsedArgsOf(node);
    internal override byte RouteOfTask(int node) => Tasks.Route[node];
    internal override int NextAttempt(int node) => Tasks.NextAttempt(node);
    internal override void NoteFirstStart(int node, long timestamp)
    {
        if (Tasks.StartMs is { } starts) starts[node] = (float)Stopwatch.GetElapsedTime(_startTimestamp, timestamp).TotalMilliseconds;
    }
    internal override TaskExtras ExtrasOf(int node) => Tasks.ExtrasOf(node);
    internal override TaskExtras? TryExtrasOf(int node) => Tasks.TryExtrasOf(node);
    internal override IReadOnlyList<string> LayerNames => _layerNames;
    internal ResourceGate? Gate => _gate;

    /// <summary>Tasks ended so far (approximate while running: workers report in batches).</summary>
    public int Completed => Graph.Count - Volatile.Read(ref _remaining);
    public int FailedSoFar => Volatile.Read(ref _failedCount);
    /// <inheritdoc />
    public ReadOnlySpan<byte> Outcomes => Tasks.Outcome;

    /// <summary>This run's tasks running on its layers now (another run's on the same layers are theirs).</summary>
    public int Running => _dispatchers.Sum(d => d.Running);

    /// <summary>The layer at route <paramref name="route"/> (0 is local).</summary>
    internal override Layers.ExecutionLayer LayerAt(int route) => _dispatchers[route].Layer;

    // ---------------------------------------------------------------- run lifecycle

    public async Task<RunResult> RunAsync(CancellationToken ct)
    {
        _startedAt = _options.TimeProvider.GetUtcNow();
        _observers?.RunStarted(new RunStart(RunId, Graph, _layerNames, _startedAt, _options.TimeProvider, _runCts.Token,
            Array.ConvertAll(_dispatchers, d => d.Layer.PricePerSecond)) { Progress = this });
        DecideObserverCalls();
        if (_manual is { } manual)
            foreach (var (task, m) in manual)
                RecordEscalation(task, m.From, m.Layer, "manual", m.Reason);
        if (_routedEscalations is { } routed)
            foreach (var (task, d) in routed)
                RecordEscalation(task, d.EscalatedFrom!, d.Layer, d.Trigger!, d.Reason ?? d.Trigger!, rule: d.Rule);
        _startTimestamp = Stopwatch.GetTimestamp();
        if (Graph.Count == 0)
            _finished.TrySetResult();
        else if (!_seedRootsByScan)
            SeedRoots();

        using var reg = ct.Register(static s => ((RunState)s!).Cancel(), this);
        long allocatedBefore = GC.GetTotalAllocatedBytes();
        // Inline tasks timed coarsely read the tick count from memory (see CoarseClock); released
        // in the finally below, which every started run reaches.
        bool coarseClock = _timeInline && !_preciseInlineTiming && Tasks.DurationMs is null;
        if (coarseClock) CoarseClock.Acquire();
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
            _notifier.NotifyAll();
            foreach (var w in _workers) await w.Exited.ConfigureAwait(false);
            if (Volatile.Read(ref _guardedInFlight) == 0) _drained.TrySetResult();
            await _drained.Task.ConfigureAwait(false);
            _endTimestamp = Stopwatch.GetTimestamp();
            foreach (var d in _dispatchers) d.Close();
            if (coarseClock) CoarseClock.Release();
        }
        var record = BuildRecord();
        _observers?.RunEnded(record);
        _events?.Complete();
        return new RunResult(record, Graph, Tasks.Outputs, SteadyStateAllocatedBytes);
    }

    /// <summary>Stops dispatch, cancels running handlers; the run ends once they stopped or were abandoned.</summary>
    public void Cancel()
    {
        if (_cancelled) return;
        _cancelled = true;
        try { _runCts.Cancel(); } catch (AggregateException) { /* a handler's callback threw; the run still ends */ }
        _finished.TrySetResult();
        _notifier.NotifyAll();
    }

    internal override void Fault(Exception ex)
    {
        _cancelled = true;
        _runCts.Cancel();
        _finished.TrySetException(ex);
        _notifier.NotifyAll();
    }

    private RunRecord BuildRecord()
    {
        var endedAt = _startedAt + Stopwatch.GetElapsedTime(_startTimestamp, _endTimestamp);
        var layers = _dispatchers.Select(d => (d.Layer.Name, d.Layer.PricePerSecond)).ToArray();
        // The failure count is exact (every failure increments it at once), so the status needs no pass over the tasks.
        var status = _cancelled ? RunStatus.Cancelled : Volatile.Read(ref _failedCount) > 0 ? RunStatus.Failed : RunStatus.Succeeded;
        return new RunRecord(RunId, Graph, status, _startedAt, endedAt,
            Stopwatch.GetElapsedTime(_startTimestamp, _endTimestamp), _criticalPathMs, layers, _escalations.ToArray(),
            _observers?.Faults ?? [], Tasks, Volatile.Read(ref _restoredCount), Volatile.Read(ref _cachedCount), Ready.Name);
    }

    // ---------------------------------------------------------------- escalations

    private List<(int Task, ManualEscalation Move)>? _manual;

    internal void SetManualEscalations(List<(int Task, ManualEscalation Move)>? manual)
    {
        _manual = manual;
        _manualTasks = manual is null ? null : manual.Select(m => m.Task).ToHashSet();
    }

    // The manually escalated tasks: they run on their new layer, never answered from the result cache
    // (its entry came from the layer they are moved away from) nor kept in it.
    private HashSet<int>? _manualTasks;

    private List<(int Task, Routing.RouteDecision Decision)>? _routedEscalations;

    /// <summary>Tasks a rule moved up as they were routed (a <c>complexity</c> rule): recorded as escalations when the run starts.</summary>
    internal void SetRoutedEscalations(List<(int Task, Routing.RouteDecision Decision)>? moved) => _routedEscalations = moved;

    internal override void RecordEscalation(int node, string from, string to, string trigger, string reason, double? previousConfidence = null, string? previousOutput = null,
        Escalation.EscalationRule? rule = null)
    {
        var e = new EscalationRecord(Graph.IdOf(node), from, to, trigger, reason, _options.TimeProvider.GetUtcNow())
        {
            TaskIndex = node,
            PreviousConfidence = previousConfidence,
            PreviousOutputSummary = previousOutput,
            Rule = rule,
        };
        _escalations.Enqueue(e);
        Tasks.ExtrasOf(node).Escalations++;
        _observers?.Escalated(e);
    }

    /// <summary>Escalations recorded so far, in the order they happened.</summary>
    internal IReadOnlyCollection<EscalationRecord> Escalations => _escalations;

    internal static string DescribeFailure(Exception ex) => ex switch
    {
        TaskFailedException f => f.Message,
        AggregateException { InnerExceptions.Count: 1 } a => DescribeFailure(a.InnerException!),
        _ => $"{ex.GetType().Name}: {ex.Message}",
    };

    // ---------------------------------------------------------------- handler context

    internal override IReadOnlyList<KeyValuePair<string, object?>> InputsOf(int node)
    {
        var outputs = Tasks.Outputs;
        if (outputs is null) return [];
        var list = new List<KeyValuePair<string, object?>>();
        var pred = Graph.Pred;
        for (int e = pred.Start[node]; e < pred.Start[node + 1]; e++)
            if (pred.KindAt(e) == EdgeKind.Data)
                list.Add(new(Graph.IdOf(pred.Tasks[e]), outputs[pred.Tasks[e]]));
        return list;
    }
}
