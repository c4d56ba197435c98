using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling.Open;

/// <summary>
/// What every task of one handler submitted without options shares, or one task's own: its
/// one-task graph as validated and prepared (handler, parsed arguments), and its route.
/// </summary>
internal sealed record TaskTemplate(PreparedGraph Prepared, HandlerDescriptor Handler, byte Route, RouteDecision? Decision, RouteDecision? Moved, string? Refused)
{
    /// <summary>The run's pools the task holds while it runs (indices into the run's <see cref="OpenRunOptions.Resources"/>), or null.</summary>
    public int[]? Pools { get; init; }

    /// <summary>
    /// A task that set only its arguments, on the template of its handler's earlier such task: its
    /// options (those arguments), else null (the template is the task's own or shared as it is).
    /// </summary>
    public TaskSpec? OwnSpec { get; init; }

    /// <summary>With <see cref="OwnSpec"/>: its arguments as the handler's validator parsed them.</summary>
    public object? OwnParsedArgs { get; init; }

    private PreparedGraph? _ownPrepared;

    /// <summary>The task's options.</summary>
    public TaskSpec? Spec => OwnSpec ?? Prepared.Graph.Spec(0);

    /// <summary>The task's arguments as its handler's validator parsed them.</summary>
    public object? ParsedArgs => OwnSpec is null ? Prepared.ParsedArgsOf(0) : OwnParsedArgs;

    /// <summary>
    /// The task as a prepared graph of itself: <see cref="Prepared"/>, or for a task of its own
    /// arguments one made from it when first asked (most such tasks are never asked: a handler, a
    /// cache key or an escalation rule reading the graph does).
    /// </summary>
    public PreparedGraph PreparedTask
    {
        get
        {
            if (OwnSpec is null) return Prepared;
            var p = Volatile.Read(ref _ownPrepared);
            return p ?? Interlocked.CompareExchange(ref _ownPrepared, p = Prepared.WithParsedArguments(OwnSpec, OwnParsedArgs), null) ?? p;
        }
    }
}

/// <summary>
/// An open run (<see cref="OpenRun"/>): tasks arrive one at a time with dependencies on tasks
/// already submitted. Each is validated and routed as a graph of itself (so its errors and its
/// layer are those a graph file would give), then waits for its dependencies: a task that ends
/// decrements its dependents' counters, and each that reaches zero is ready (the static run's
/// rule, with the successor lists grown as tasks arrive). Ready tasks of inline handlers run on
/// the run's own worker threads, the first released dependent inline after its predecessor;
/// the others go to their layer's <see cref="LayerDispatcher"/> and <see cref="AttemptRunner"/>,
/// the same ones static runs use (capacities, timeouts, retries, escalation under the rules).
/// <para>
/// Memory stays flat on a run that lives for days: tasks are kept in chunks of
/// <see cref="ChunkSize"/> (a chunk is dropped once all its tasks were released, nothing is
/// copied as the run grows), and an ended task is released once it is older than the last
/// <see cref="OpenRunOptions.RetainTasks"/> submitted (or the outputs kept pass
/// <see cref="OpenRunOptions.RetainBytes"/>) and no pending task reads its output.
/// </para>
/// </summary>
internal sealed class OpenRunState : AttemptHost
{
    internal const int ChunkShift = 12;
    internal const int ChunkSize = 1 << ChunkShift;
    private const int ChunkMask = ChunkSize - 1;

    private sealed class Chunk
    {
        public readonly SubmittedTask?[] Tasks = new SubmittedTask?[ChunkSize];
        public int Live = ChunkSize;   // slots not yet released (unfilled ones count until filled and released)
    }

    private readonly TaskMeshEngine _engine;
    private readonly EngineOptions _options;
    private readonly OpenRunOptions _settings;
    private readonly ExecutionLayer[] _layers;
    private readonly string[] _layerNames;
    private readonly LayerDispatcher[] _dispatchers;
    private readonly string _baseDirectory;
    private readonly CancellationTokenSource _runCts = new();
    private readonly TaskCompletionSource<OpenRunResult> _completion = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly long _openedTimestamp = Stopwatch.GetTimestamp();

    // Submission: one producer at a time (the lock), any number of threads finishing tasks.
    private readonly Lock _submitLock = new();
    private readonly Dictionary<string, TaskTemplate> _templates = new(StringComparer.Ordinal);   // under _submitLock
    private readonly Dictionary<string, TaskTemplate> _argumentsShapes = new(StringComparer.Ordinal);   // under _submitLock: a handler's last task that set only arguments
    private readonly ConcurrentDictionary<string, SubmittedTask> _byId = new(StringComparer.Ordinal);  // given ids only
    private Chunk?[] _chunks = new Chunk?[16];   // grown by doubling (a reference per chunk); read without the lock
    // The fields the submitting thread writes on every task, on cache lines of their own: a worker
    // reading a field beside them (the run's flags, its settings) would otherwise pull the line
    // away from the producer on every task.
    private ProducerLine _producer;
    private ref int _count => ref _producer.Count;   // tasks submitted (written under _submitLock)
    // Ended tasks by outcome, in stripes: each of the first seven workers its own (written without an
    // atomic), the last one for every other thread (atomically): a counter shared by every worker
    // would cost a contended atomic per task.
    private const int Stripes = 8;
    private readonly long[][] _outcomes = Enumerable.Range(0, Stripes).Select(_ => new long[16]).ToArray();   // 128 bytes each: a cache line or two of its own
    // The max_pending bound (see RoomGate): submissions the producers may still make before they count again.
    private readonly RoomGate _room;

    // The retention window. A task older than the last RetainTasks submitted (or, while outputs pass
    // RetainBytes, older than the sweep) is out of it, and released once it has ended and no pending
    // task reads it: at once in what the run answers (IsReleased, from the boundary below), and in
    // memory by the submitting thread, a whole chunk at a time once the window has passed it (a walk
    // over tasks laid out one after the other, with no atomic per task), the few still running or read
    // marked expired and released by their end or their last reader.
    private ref int _expiredBelow => ref _producer.ExpiredBelow;   // tasks with a lower index are out of the window (written under _submitLock, read by anyone)
    private ref int _sweepCursor => ref _producer.SweepCursor;     // under _submitLock: tasks with a lower index were swept (released, or marked expired)
    private long _outputBytes;         // estimated bytes of the outputs the run holds

    // Ready tasks, by priority (a worker takes the most urgent first).
    private readonly ConcurrentQueue<SubmittedTask>[] _ready = [new(), new(), new(), new()];
    private readonly Notifier _notifier = new();
    private readonly int _workerCount;

    // The store's record of the run (null without a store); a resumed run answers tasks it completed before from it.
    private readonly Store.OpenRunJournal? _journal;
    private readonly ResourceGate? _gate;                 // with OpenRunOptions.Resources
    private readonly Dictionary<string, int>? _poolIndex;
    private readonly IOpenRunObserver[]? _observers;   // null when none: nothing per task
    private readonly bool _resumed;
    private readonly int _indexBase;   // a resumed run numbers its tasks after those its earlier life recorded
    // Inline tasks are timed with two clock reads when a store or an observer records their
    // durations; otherwise with the coarse millisecond clock (a memory read), as a static run
    // times the tasks nobody records.
    private readonly bool _preciseTiming;

    private volatile bool _cancelled;
    private volatile bool _completing;
    private volatile bool _stopping;
    private int _ended;

    internal OpenRunState(TaskMeshEngine engine, EngineOptions options, ExecutionLayer[] layers, OpenRunOptions settings,
        IEscalationPolicy escalation, RetryPolicy retry, IOpenRunObserver[] observers)
        : base(settings.Budget)
    {
        _observers = observers.Length == 0 ? null : observers;
        _engine = engine;
        _options = options;
        _settings = settings;
        _layers = layers;
        _layerNames = layers.Select(l => l.Name).ToArray();
        _baseDirectory = Path.GetFullPath(settings.BaseDirectory ?? Environment.CurrentDirectory);
        _room = new RoomGate(settings.MaxPending, () => SubmittedCount - Ended());
        Attempts = new AttemptRunner(this, escalation, retry);
        _dispatchers = layers.Select(l => new LayerDispatcher(this, l)).ToArray();
        if (settings.Resources is { Count: > 0 } pools)
        {
            var names = pools.Keys.Order(StringComparer.Ordinal).ToArray();
            _poolIndex = names.Select((n, i) => (n, i)).ToDictionary(p => p.n, p => p.i, StringComparer.Ordinal);
            _gate = new ResourceGate(names.Select(n => pools[n]).ToArray(), n => TaskAt(n).Template.Pools!, n => TaskAt(n).Priority);
        }
        RunId = settings.Resume ?? Guid.NewGuid().ToString("N")[..12];
        if (settings.Store is { } store)
        {
            if (settings.Resume is { } resume)
            {
                if (!store.IsOpenRun(resume)) throw new ArgumentException($"store '{store.Path}' holds no open run '{GraphLimits.Printable(resume)}'", nameof(settings));
                if (store.LiveOwnerOf(resume) is { } live)
                    throw new InvalidOperationException($"open run {resume} is still going ({live.Owner}): it cannot be resumed twice");
                _indexBase = store.NextOpenTaskIndex(resume);
                _resumed = true;
            }
            _journal = new Store.OpenRunJournal(store, RunId, settings.Name, _resumed, () => (SubmittedCount, Counts(TaskOutcome.Succeeded),
                Counts(TaskOutcome.Failed), Counts(TaskOutcome.TimedOut), Counts(TaskOutcome.Skipped), Counts(TaskOutcome.Cancelled)));
        }
        if (_observers is not null)
            foreach (var o in _observers) Safely(o, x => x.OnOpenRunStarted(RunId, settings.Name, _layerNames));
        _preciseTiming = _journal is not null || _observers is not null;
        if (!_preciseTiming) CoarseClock.Acquire();
        _workerCount = Math.Max(1, options.WorkerThreads);
        for (int i = 0; i < _workerCount; i++)
            WorkerThreads.Run(static s => { var (run, worker) = ((OpenRunState, int))s!; run.WorkerLoop(worker); }, (this, i));
    }

    public override string RunId { get; }
    public override string BaseDirectory => _baseDirectory;
    internal override EngineOptions Options => _options;
    internal override AttemptRunner Attempts { get; }
    internal override bool Cancelled => _cancelled;
    internal override CancellationToken RunToken => _runCts.Token;
    internal override IReadOnlyList<string> LayerNames => _layerNames;
    internal override ExecutionLayer LayerAt(int route) => _layers[route];
    internal override LayerDispatcher DispatcherAt(int route) => _dispatchers[route];
    internal override ObserverSet? OnAttemptStartedObservers => null;
    internal override ObserverSet? OnAttemptEndedObservers => null;
    internal override ObserverSet? OnRoutedObservers => null;

    internal Task<OpenRunResult> Completion => _completion.Task;

    /// <summary>The sequence number of the run's first task (a resumed run goes on from its earlier life's count).</summary>
    internal int IndexBase => _indexBase;

    /// <summary>The run's event stream, with <see cref="OpenRunOptions.EmitEvents"/>.</summary>
    internal OpenRunEvents? Events { get; init; }
    internal long SubmittedCount => Volatile.Read(ref _count);
    internal int PendingCount => (int)(SubmittedCount - Ended());

    internal long Counts(TaskOutcome outcome)
    {
        long n = 0;
        foreach (var stripe in _outcomes) n += Volatile.Read(ref stripe[(int)outcome]);
        return n;
    }

    /// <summary>Tasks ended so far, whatever their outcome.</summary>
    private long Ended()
    {
        long n = 0;
        foreach (var stripe in _outcomes)
            for (int o = 0; o < OutcomeCount; o++) n += Volatile.Read(ref stripe[o]);
        return n;
    }

    private static readonly int OutcomeCount = Enum.GetValues<TaskOutcome>().Length;


    // ---------------------------------------------------------------- tasks by index

    private SubmittedTask TaskAt(int node) => Volatile.Read(ref _chunks)[node >> ChunkShift]!.Tasks[node & ChunkMask]!;

    /// <summary>The task at <paramref name="index"/> while the run keeps it, else null.</summary>
    private SubmittedTask? FindAt(int index)
    {
        if ((uint)index >= (uint)Volatile.Read(ref _count)) return null;
        var chunks = Volatile.Read(ref _chunks);
        var chunk = Volatile.Read(ref chunks[index >> ChunkShift]);
        return chunk is null ? null : Volatile.Read(ref chunk.Tasks[index & ChunkMask]);
    }

    internal bool TryFind(string id, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SubmittedTask? task)
    {
        ArgumentNullException.ThrowIfNull(id);
        if (TryParseGenerated(id, out int index))
        {
            task = FindAt(index - _indexBase);
            return task is not null && !IsReleased(task);
        }
        return _byId.TryGetValue(id, out task) && !IsReleased(task);
    }

    /// <summary>
    /// True once the run has released <paramref name="t"/>: out of the retention window, ended, and
    /// read by no pending task (whether or not the sweep has freed its memory yet).
    /// </summary>
    private bool IsReleased(SubmittedTask t)
        => Volatile.Read(ref t.Released) != 0
            || (t.Index >= 0 && t.Index < Volatile.Read(ref _expiredBelow) && t.IsEnded && Volatile.Read(ref t.Readers) == 0);

    private static bool TryParseGenerated(string id, out int index)
    {
        index = -1;
        return id.Length > 1 && id[0] == '#' && int.TryParse(id.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture, out index);
    }

    internal override HandlerDescriptor HandlerOf(int node) => TaskAt(node).Template.Handler;
    internal override string IdOf(int node) => TaskAt(node).Id;
    internal override string HandlerNameOf(int node) => TaskAt(node).Template.Handler.Name;
    internal override TaskSpec? SpecOf(int node) => TaskAt(node).Template.Spec;
    internal override byte PriorityOf(int node) => TaskAt(node).Priority;
    internal override TaskGraph GraphOf(int node) => TaskAt(node).Template.PreparedTask.Graph;
    internal override object? ParsedArgsOf(int node) => TaskAt(node).Template.ParsedArgs;
    internal override byte RouteOfTask(int node) => TaskAt(node).Route;
    internal override void SetRouteOfTask(int node, byte route) => TaskAt(node).Route = route;
    internal override RouteDecision DecisionOf(int node, string layer)
        => TaskAt(node).Template.Decision is { } d && d.Layer == layer ? d : new RouteDecision(layer);

    internal override IReadOnlyList<KeyValuePair<string, object?>> InputsOf(int node)
    {
        var inputs = TaskAt(node).ColdOrNull?.Inputs;
        if (inputs is null) return [];
        var list = new List<KeyValuePair<string, object?>>(inputs.Count);
        foreach (var d in inputs) list.Add(new(d.Id, d.Output));
        return list;
    }

    internal override int RetriesOf(int node) => TaskAt(node).Template.Spec?.Retries ?? _options.RetryAttempts;

    internal override TimeSpan TimeoutOf(int node)
        => TaskAt(node).Template.Spec?.TimeoutSeconds is double s ? TimeSpan.FromSeconds(s) : _options.DefaultTimeout;

    internal override int NextAttempt(int node)
    {
        var t = TaskAt(node);
        int a = t.AttemptCount + 1;
        t.AttemptCount = (byte)Math.Min(a, byte.MaxValue);
        return a;
    }

    internal override void NoteFirstStart(int node, long timestamp) => TaskAt(node).StartTimestamp = timestamp;

    internal override TaskExtras ExtrasOf(int node)
    {
        var t = TaskAt(node);
        var x = Volatile.Read(ref t.Extras);
        return x ?? Interlocked.CompareExchange(ref t.Extras, x = new TaskExtras(), null) ?? x;
    }

    internal override TaskExtras? TryExtrasOf(int node) => Volatile.Read(ref TaskAt(node).Extras);

    internal override CancellationToken TokenOf(int node)
    {
        var t = TaskAt(node);
        var cold = t.Cold;
        var cts = Volatile.Read(ref cold.Cts);
        if (cts is null)
        {
            var made = CancellationTokenSource.CreateLinkedTokenSource(_runCts.Token);
            cts = Interlocked.CompareExchange(ref cold.Cts, made, null) ?? made;
            if (!ReferenceEquals(cts, made)) made.Dispose();
            if (t.CancelRequested) cts.Cancel();   // cancelled before the token existed
        }
        return cts.Token;
    }

    internal override bool IsCancelled(int node) => _cancelled || TaskAt(node).CancelRequested;

    private int _tasksCancelled;

    internal override int TasksCancelled => Volatile.Read(ref _tasksCancelled);

    internal override bool StartInSlot(int node)
    {
        var t = TaskAt(node);
        if (_cancelled || t.CancelRequested) return false;
        // A first attempt leaves the queue; a retry or an escalation is already running.
        return Interlocked.CompareExchange(ref t.State, SubmittedTask.Running, SubmittedTask.Queued) is SubmittedTask.Queued or SubmittedTask.Running;
    }

    internal override void RecordEscalation(int node, string from, string to, string trigger, string reason, double? previousConfidence = null,
        string? previousOutput = null, Escalation.EscalationRule? rule = null)
    {
        ExtrasOf(node).Escalations++;
        bool publish = Events is { Listening: true };
        if (_journal is null && _observers is null && !publish) return;
        var e = new EscalationRecord(IdOf(node), from, to, trigger, reason, _options.TimeProvider.GetUtcNow())
        {
            TaskIndex = node,
            PreviousConfidence = previousConfidence,
            PreviousOutputSummary = previousOutput,
            Rule = rule,
        };
        _journal?.Escalated(e);
        if (publish) Events!.OnOpenRunEscalated(RunId, e);
        if (_observers is not null)
            foreach (var o in _observers) Safely(o, x => x.OnOpenRunEscalated(RunId, e));
    }

    internal override void OnGuardedStarted() { }
    internal override void OnGuardedEnded() { }
    internal override void OnGuardedEnded(int count) { }

    internal override void Fault(Exception ex)
    {
        _cancelled = true;
        try { _runCts.Cancel(); } catch (AggregateException) { }
        EndRun(ex);
    }

    internal override void OnDelayCancelled(int node)
    {
        var t = TaskAt(node);
        Finish(t, TaskOutcome.Cancelled, null, "cancelled while waiting to retry", TimeSpan.Zero, NotOnWorker);
    }

    internal override void CompleteGuarded(int node, in AttemptResult final, double durationMs, string? note)
    {
        var t = TaskAt(node);
        if (final.Confidence is double confidence) t.Cold.Confidence = confidence;
        Finish(t, final.TaskOutcome, final.Output, final.Error ?? note, TimeSpan.FromMilliseconds(durationMs), NotOnWorker);
    }

    // ---------------------------------------------------------------- submitting

    /// <summary>Adds a task, waiting for room.</summary>
    internal SubmittedTask Add(TaskRequest request)
    {
        SubmittedTask? t;
        while (!TryAdd(request, out t)) _room.WaitAsync(CancellationToken.None).AsTask().GetAwaiter().GetResult();
        return t;
    }

    /// <summary>Adds a task, waiting asynchronously for room.</summary>
    internal async ValueTask<SubmittedTask> AddAsync(TaskRequest request, CancellationToken ct)
    {
        SubmittedTask? t;
        while (!TryAdd(request, out t)) await _room.WaitAsync(ct).ConfigureAwait(false);
        return t;
    }

    private void ThrowIfClosed()
    {
        if (_cancelled) throw new InvalidOperationException($"open run {RunId} was cancelled: it takes no more tasks");
        if (_completing) throw new InvalidOperationException($"open run {RunId} was completed: it takes no more tasks");
    }

    /// <summary>Adds a task if there is room (a refused one takes none); false when <see cref="OpenRunOptions.MaxPending"/> tasks are pending.</summary>
    internal bool TryAdd(TaskRequest request, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out SubmittedTask? added)
    {
        ArgumentNullException.ThrowIfNull(request.Handler, nameof(request.Handler));
        SubmittedTask t;
        bool fresh;
        added = null;
        lock (_submitLock)
        {
            ThrowIfClosed();
            if (!_room.HasRoom()) return false;
            int index = _count;
            if (index == int.MaxValue) Refuse(GraphErrorCodes.Limit, $"open run {RunId} has taken {int.MaxValue} tasks: open another run", request.Id);
            string? id = request.Id;
            if (id is not null)
            {
                if (GraphLimits.IdProblem(id) is string problem) Refuse(GraphErrorCodes.BadId, $"id {problem}", id);
                if (id[0] == '#') Refuse(GraphErrorCodes.BadId, "ids beginning with '#' are the run's own (#N for the N-th task submitted without an id)", id);
                if (_byId.ContainsKey(id)) Refuse(GraphErrorCodes.DuplicateId, "duplicate id: the run has a task with this id", id);
            }
            var deps = ResolveDependencies(request, id, index);
            var template = TemplateFor(request, id, index);
            string? specHash = id is not null && _journal is not null ? SpecHash(request) : null;
            var answered = _resumed && id is not null ? AnsweredFromStore(id, specHash!) : null;

            t = new SubmittedTask(this, index, id, template, (byte)request.Priority);
            if (specHash is not null) t.Cold.SpecHash = specHash;
            // No dependency: ready the moment it is published (set before, so no atomic is needed).
            fresh = deps is null && answered is null;
            if (fresh) (t.Pending, t.State) = (0, SubmittedTask.Queued);
            var chunks = _chunks;
            int c = index >> ChunkShift;
            if (c == chunks.Length)
            {
                Array.Resize(ref chunks, chunks.Length * 2);   // the directory only: a reference per 4,096 tasks
                Volatile.Write(ref _chunks, chunks);
            }
            var chunk = chunks[c] ??= new Chunk();
            Volatile.Write(ref chunk.Tasks[index & ChunkMask], t);
            if (id is not null) _byId[id] = t;
            Volatile.Write(ref _count, index + 1);
            _room.Took();
            Sweep();
            if (answered is not null)
            {
                // Completed before the crash, with these options: its stored result, nothing run.
                t.Pending = 0;
                Interlocked.Exchange(ref t.State, SubmittedTask.Queued);
                Finish(t, TaskOutcome.Succeeded, answered.Output, "answered from the store: it completed before the run was resumed", TimeSpan.Zero, NotOnWorker);
                added = t;
                return true;
            }
            if (id is not null)
                _journal?.Submitted(id, template.Handler.Name, _layerNames[template.Route == RouteTable.Inline ? RouteTable.Local : template.Route],
                    request.Priority.ToName(), deps?.Count ?? 0, request.SubmittedBy);

            if (deps is not null)
                for (int i = 0; i < deps.Count; i++) Wire(t, deps[i].Task, deps[i].Kind);
            if (template.Moved is { } moved)
                RecordEscalation(index, moved.EscalatedFrom!, moved.Layer, moved.Trigger!, moved.Reason ?? moved.Trigger!, rule: moved.Rule);
        }
        if (fresh) Enqueue(t);
        else if (Interlocked.Decrement(ref t.Pending) == 0) MakeReady(t);
        added = t;
        return true;
    }

    private readonly List<(SubmittedTask Task, EdgeKind Kind)> _depsScratch = [];
    private string? _lastHandler;          // under _submitLock: the handler of the last shared template looked up
    private TaskTemplate? _lastTemplate;

    /// <summary>What makes a task with an id the same task when it is submitted again: its handler, arguments, options, priority and dependencies.</summary>
    private static string SpecHash(TaskRequest request)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("handler", request.Handler);
            w.WriteString("priority", request.Priority.ToName());
            if (request.Spec is { } s)
            {
                if (s.Args.ValueKind != System.Text.Json.JsonValueKind.Undefined)
                {
                    w.WritePropertyName("args");
                    s.Args.WriteTo(w);
                }
                if (s.TimeoutSeconds is double timeout) w.WriteNumber("timeoutSeconds", timeout);
                if (s.Retries is int retries) w.WriteNumber("retries", retries);
                if (s.Layer is string layer) w.WriteString("layer", layer);
                if (s.MinConfidence is double min) w.WriteNumber("minConfidence", min);
                if (s.EstimateMs is double estimate) w.WriteNumber("estimateMs", estimate);
                if (s.Cache is bool cache) w.WriteBoolean("cache", cache);
                foreach (var (name, values) in new[] { ("uses", s.Uses), ("tags", s.Tags), ("requires", s.Requires) })
                {
                    if (values is null) continue;
                    w.WriteStartArray(name);
                    foreach (var v in values) w.WriteStringValue(v);
                    w.WriteEndArray();
                }
            }
            w.WriteStartArray("dependsOn");
            if (request.DependsOn is { } deps)
                for (int i = 0; i < deps.Count; i++)
                {
                    w.WriteStringValue(deps[i].Id ?? deps[i].Task?.Id);
                    w.WriteNumberValue((int)deps[i].Kind);
                }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return Store.RunStore.HashOf(buffer.WrittenSpan);
    }

    /// <summary>The stored output of a task this run completed under <paramref name="id"/> before it was resumed, or null to run it.</summary>
    /// <exception cref="TaskRefusedException">It completed with other options: the id names another task.</exception>
    private StoredAnswer? AnsweredFromStore(string id, string specHash)
    {
        if (_journal!.Recorded(id) is not { Status: "succeeded" } row) return null;
        if (row.SpecHash is not null && row.SpecHash != specHash)
            Refuse(GraphErrorCodes.DuplicateId, "this run completed a task with this id and other options (handler, arguments, options or dependencies) before it was resumed: give the new task an id of its own", id);
        return row.HasOutput ? new StoredAnswer(row.Output) : null;
    }

    /// <summary>A stored output (which may itself be null) told apart from "not answered".</summary>
    private sealed record StoredAnswer(object? Output);

    private List<(SubmittedTask Task, EdgeKind Kind)>? ResolveDependencies(TaskRequest request, string? id, int index)
    {
        if (request.DependsOn is not { Count: > 0 } given) return null;
        // Names for messages only: a generated id is a string made on demand.
        string Shown() => id ?? SubmittedTask.GeneratedId(_indexBase + index);
        var deps = _depsScratch;   // under the submit lock: one list for every submission
        deps.Clear();
        List<GraphError>? errors = null;
        for (int i = 0; i < given.Count; i++)
        {
            var dep = given[i];
            if (!Enum.IsDefined(dep.Kind))
            {
                (errors ??= []).Add(new GraphError(GraphErrorCodes.BadValue, $"dependency kind {(int)dep.Kind} is not hard, data or soft", Shown()));
                continue;
            }
            SubmittedTask? d = dep.Task;
            string name = dep.Id ?? "";   // (by id; a dependency given as a task is named by d.Id, in messages only)
            if (d is null && dep.Id is null)
            {
                (errors ??= []).Add(new GraphError(GraphErrorCodes.UnknownDependency, "a dependency names no task", Shown()));
                continue;
            }
            if (d is not null && d.Run != this)
            {
                (errors ??= []).Add(new GraphError(GraphErrorCodes.UnknownDependency, $"depends on '{GraphLimits.Printable(d.Id)}', a task of another run", Shown()));
                continue;
            }
            if (d is null && name == request.Id)
            {
                (errors ??= []).Add(new GraphError(GraphErrorCodes.SelfLoop, "depends on itself", Shown()));
                continue;
            }
            if (d is null && !TryFind(name, out d) && FromStore(name, dep.Kind, out var stored))
            {
                if (stored is null)
                {
                    (errors ??= []).Add(new GraphError(GraphErrorCodes.ReleasedDependency,
                        $"reads the output of '{GraphLimits.Printable(name)}', which the run released and the store did not keep (too large, or not JSON)", Shown()));
                    continue;
                }
                d = stored;
            }
            if (d is null)
            {
                (errors ??= []).Add(TryParseGenerated(name, out int n) && n - _indexBase < _count
                    ? new GraphError(GraphErrorCodes.ReleasedDependency, $"depends on '{name}', which ended and was released: the run keeps its last {_settings.RetainTasks:N0} tasks (and outputs up to {_settings.RetainBytes:N0} bytes) beyond those still read", Shown())
                    : new GraphError(GraphErrorCodes.UnknownDependency, $"depends on '{GraphLimits.Printable(name)}', which is not in the run (never submitted, or ended and released: the run keeps its last {_settings.RetainTasks:N0} tasks)", Shown()));
                continue;
            }
            if (dep.Kind == EdgeKind.Data && d.IsEnded && d.Outcome == TaskOutcome.Succeeded && d.Run == this && IsReleased(d))
            {
                (errors ??= []).Add(new GraphError(GraphErrorCodes.ReleasedDependency, $"reads the output of '{GraphLimits.Printable(d.Id)}', which was released (retention window: {_settings.RetainTasks:N0} tasks, {_settings.RetainBytes:N0} bytes)", Shown()));
                continue;
            }
            deps.Add((d, dep.Kind));
        }
        if (errors is not null) throw new TaskRefusedException(errors);
        return deps;
    }

    /// <summary>
    /// A dependency on a task the run no longer holds (released, or completed before the run was
    /// resumed), read from the store's row when it kept one: true with how it ended (and, for a
    /// data edge, its output) as <paramref name="stored"/>, or with null when a data edge needs an
    /// output the store did not keep; false when the store has no row for it (or there is no store).
    /// </summary>
    private bool FromStore(string id, EdgeKind kind, out SubmittedTask? stored)
    {
        stored = null;
        if (_journal is null || id.StartsWith('#')) return false;
        var row = _journal.Recorded(id);
        if (row is null)
        {
            // Its row may be on its way to the store: wait for the writer once.
            _journal.FlushAsync().GetAwaiter().GetResult();
            row = _journal.Recorded(id);
        }
        if (row is not { } r) return false;
        var outcome = r.Status switch
        {
            "succeeded" => TaskOutcome.Succeeded,
            "timed_out" => TaskOutcome.TimedOut,
            "skipped" => TaskOutcome.Skipped,
            "cancelled" => TaskOutcome.Cancelled,
            _ => TaskOutcome.Failed,
        };
        if (kind == EdgeKind.Data && outcome == TaskOutcome.Succeeded && !r.HasOutput) return true;
        stored = SubmittedTask.Stored(this, id, outcome, r.Output);
        return true;
    }

    /// <summary>Makes <paramref name="t"/> wait for <paramref name="d"/> (or learn at once how it ended).</summary>
    private static void Wire(SubmittedTask t, SubmittedTask d, EdgeKind kind)
    {
        if (kind == EdgeKind.Data)
        {
            Interlocked.Increment(ref d.Readers);
            (t.Cold.Inputs ??= []).Add(d);
        }
        // Counted before the edge is published (d may end, and decrement, at once); the count held
        // while t is being submitted keeps it from reaching zero meanwhile. Atomic: a dependency
        // wired before this one may end, and decrement, meanwhile.
        Interlocked.Increment(ref t.Pending);
        object? head = Volatile.Read(ref d.DependentsHead);
        while (!ReferenceEquals(head, SubmittedTask.Closed))
        {
            object entry;
            if (head is null)
            {
                d.FirstDependentKind = kind;   // read by d's end only if the exchange below publishes t
                entry = t;
            }
            else entry = new DependentNode(t, kind, head);
            object? seen = Interlocked.CompareExchange(ref d.DependentsHead, entry, head);
            if (ReferenceEquals(seen, head)) return;
            head = seen;
        }
        // d ended before the edge was published: t learns how, and does not wait for it.
        Interlocked.Decrement(ref t.Pending);
        if (d.Outcome != TaskOutcome.Succeeded && kind != EdgeKind.Soft) Interlocked.CompareExchange(ref t.Cold.SkipCause, d, null);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private static void Refuse(string code, string message, string? id) => throw new TaskRefusedException([new GraphError(code, message, id)]);

    /// <summary>
    /// The task validated and routed as a graph of itself. Tasks without options share their
    /// handler's (when its routing depends on nothing else).
    /// </summary>
    private TaskTemplate TemplateFor(TaskRequest request, string? id, int index)
    {
        bool plain = request.Spec is null;
        if (plain && ReferenceEquals(request.Handler, _lastHandler)) return _lastTemplate!;   // a stream of one handler's tasks: no lookup
        if (plain && _templates.TryGetValue(request.Handler, out var shared))
        {
            (_lastHandler, _lastTemplate) = (request.Handler, shared);
            return shared;
        }
        // A task that sets only its arguments, of a handler that had such a task before, under a
        // router that decides without looking at tasks: the earlier task's graph, validation and
        // route with these arguments checked by the handler (no graph built, nothing routed again).
        bool argsOnly = request.Spec is { SetsArgumentsOnly: true };
        if (argsOnly && _argumentsShapes.TryGetValue(request.Handler, out var shape))
        {
            // The task's graph of itself is made only if something asks for it (TaskTemplate.PreparedTask).
            if (!shape.Prepared.TryParseArguments(request.Spec!, out var parsed, out var problems))
                throw BadArguments(problems, id ?? SubmittedTask.GeneratedId(_indexBase + index));
            return shape with { OwnSpec = request.Spec, OwnParsedArgs = parsed };
        }
        string shownId = id ?? SubmittedTask.GeneratedId(_indexBase + index);
        var b = new GraphBuilder(_settings.Name);
        var r = plain ? b.Task(request.Handler) : b.Task(shownId, request.Handler);
        if (_settings.Resources is { } resources)
            foreach (var (pool, capacity) in resources) b.Resources[pool] = capacity;
        if (request.Spec is { } spec) b.SetSpec(r.Index, spec);
        r.WithPriority(request.Priority);
        var graph = b.TryBuild(out var errors);
        PreparedGraph? prepared = null;
        if (graph is null || !_engine.TryPrepare(graph, _baseDirectory, out prepared, out errors))
            throw Refused(errors, shownId);
        var (route, decision, moved, refused) = _engine.RouteOne(prepared!, _layers, _settings.Router, Budget);
        var template = new TaskTemplate(prepared!, prepared!.HandlerOf(0), route, decision, moved, refused)
        {
            Pools = request.Spec?.Uses is { Length: > 0 } uses && _poolIndex is not null ? uses.Select(u => _poolIndex[u]).Distinct().ToArray() : null,
        };
        if (plain && moved is null && refused is null)
            (_templates[request.Handler], _lastHandler, _lastTemplate) = (template, request.Handler, template);
        if (argsOnly && moved is null && refused is null && Budget is null && (_settings.Router ?? _engine.Router).FixedDecision is not null)
            _argumentsShapes[request.Handler] = template;
        return template;
    }

    // (Lambdas in TemplateFor would make it allocate their closure on every call: the refusals are built here.)
    private static TaskRefusedException BadArguments(IReadOnlyList<string> problems, string taskId)
    {
        var errors = new List<GraphError>(problems.Count);
        foreach (var p in problems) errors.Add(new GraphError(GraphErrorCodes.BadArgs, p, taskId));
        return new TaskRefusedException(errors);
    }

    private static TaskRefusedException Refused(IReadOnlyList<GraphError> errors, string taskId)
    {
        var list = new List<GraphError>(errors.Count);
        foreach (var e in errors) list.Add(e with { TaskId = taskId, Line = null, Column = null });
        return new TaskRefusedException(list);
    }

    // ---------------------------------------------------------------- running

    private void MakeReady(SubmittedTask t)
    {
        if (Interlocked.CompareExchange(ref t.State, SubmittedTask.Queued, SubmittedTask.Waiting) != SubmittedTask.Waiting) return;   // cancelled meanwhile
        Enqueue(t);
    }

    /// <summary>Hands a queued task to the workers.</summary>
    private void Enqueue(SubmittedTask t)
    {
        _ready[t.Priority].Enqueue(t);
        _notifier.NotifyOne();
    }

    /// <summary>
    /// How far an idle worker lets the producer get ahead: a worker that finds fewer than this many
    /// tasks queued while tasks are still arriving (more submitted, or more queued, than when it
    /// last looked) waits a moment (<see cref="LagSpins"/>, under a microsecond) before it takes
    /// one, up to <see cref="LagRounds"/> times in a row (about 25 µs). Taking each task the moment
    /// it is published moves the lines the producer is writing (the queue's slot, the task) to the
    /// worker's core and back for every task; a worker that stays a few dozen tasks behind reads
    /// lines the producer is done with, and the tasks submitted meanwhile on one that is queued (a
    /// chain) are run after it inline. A task submitted alone waits one round (nothing moved), and
    /// the wait ends as soon as enough are queued.
    /// </summary>
    private const int LagBatch = 64;
    private const int LagRounds = 32;
    private const int LagSpins = 20;

    /// <summary>A worker's state of waiting for a batch to build up (see <see cref="LagBatch"/>).</summary>
    private struct Lag
    {
        public int Rounds;
        public int LastCount;
        public int LastSubmitted;
        public bool Waiting;   // the last take waited instead of taking: the worker is not idle
        public int CreditQueue; // the queue (priority) of Credit
        public int Credit;      // tasks this worker may take from it without counting the queue again
    }

    private bool TryTakeReady(out SubmittedTask t, ref Lag lag)
    {
        lag.Waiting = false;
        for (int p = _ready.Length - 1; p >= 0; p--)
        {
            var q = _ready[p];
            // Tasks this worker counted in the queue last time are taken without counting again (the
            // count reads the line the producer writes on every submission).
            if (p == lag.CreditQueue && lag.Credit > 0 && q.TryDequeue(out t!))
            {
                lag.Credit--;
                return true;
            }
            if (q.IsEmpty) continue;
            int c = q.Count;
            if (c < LagBatch && lag.Rounds < LagRounds)
            {
                int submitted = Volatile.Read(ref _count);
                if (c != lag.LastCount || submitted != lag.LastSubmitted)
                {
                    (lag.LastCount, lag.LastSubmitted, lag.Waiting) = (c, submitted, true);
                    lag.Rounds++;
                    Thread.SpinWait(LagSpins);
                    t = null!;
                    return false;
                }
            }
            if (q.TryDequeue(out t!))
            {
                // The others counted may be taken by another worker meanwhile; half are this one's to take uncounted.
                lag = default;
                (lag.CreditQueue, lag.Credit) = (p, (c - 1) / _workerCount);
                return true;
            }
        }
        lag = default;
        t = null!;
        return false;
    }

    private bool HasReady()
    {
        foreach (var q in _ready)
            if (!q.IsEmpty) return true;
        return false;
    }

    /// <summary>Rounds of <see cref="SpinWait.SpinOnce(int)"/> (spins, then yields) an idle worker makes before it sleeps.</summary>
    private const int IdleSpins = 200;

    /// <summary>The worker argument of <see cref="Finish"/> on a thread that is not one of the run's workers.</summary>
    private const int NotOnWorker = -1;

    private void WorkerLoop(int worker)
    {
        try
        {
            var spinner = new SpinWait();
            // The clock at the end of this worker's last inline task, or 0 after anything that may
            // have waited: back-to-back tasks share one clock read (the next one's start).
            long tick = 0;
            var lag = default(Lag);
            while (true)
            {
                if (TryTakeReady(out var t, ref lag))
                {
                    spinner.Reset();
                    SubmittedTask? next = t;
                    do next = RunReady(next, ref tick, worker);
                    while (next is not null);
                    continue;
                }
                tick = 0;
                if (lag.Waiting) continue;
                if (spinner.Count == 0)
                {
                    // Idle: the tasks this worker counted are seen (the fence) by a producer waiting
                    // for room and by the end of a completed run, or this sees them.
                    Interlocked.MemoryBarrier();
                    _room.OnEnded();
                    if (_completing || _cancelled) EndIfDone();
                }
                if (_stopping) break;
                // Tasks arrive one at a time from producers: a worker that parks at once would be
                // woken (a futex call) for nearly every task. It spins, then yields its core (to the
                // producer, on a small machine), for about IdleSpins rounds before it sleeps.
                if (spinner.Count < IdleSpins)
                {
                    spinner.SpinOnce(sleep1Threshold: -1);
                    continue;
                }
                int epoch = _notifier.PrepareWait();
                if (HasReady() || _stopping) _notifier.CancelWait();
                else _notifier.CommitWait(epoch);
                spinner.Reset();
            }
        }
        catch (Exception ex)
        {
            Fault(ex);
        }
    }

    /// <summary>Runs a ready task (a queued one, or one its predecessor released to this worker); returns a released dependent to run next.</summary>
    private SubmittedTask? RunReady(SubmittedTask t, ref long tick, int worker)
    {
        long start = tick;   // only an inline task that comes straight after the last one starts at its end
        tick = 0;
        if (Volatile.Read(ref t.State) != SubmittedTask.Queued) return null;   // cancelled while queued
        if (t.ColdOrNull?.SkipCause is { } cause)
            return Finish(t, TaskOutcome.Skipped, null, SkipReason(cause), TimeSpan.Zero, worker);
        if (_cancelled || t.CancelRequested)
            return Finish(t, TaskOutcome.Cancelled, null, "cancelled before it started", TimeSpan.Zero, worker);
        if (t.Template.Refused is string why)
        {
            t.AttemptCount = 1;
            return Finish(t, TaskOutcome.Failed, null, why, TimeSpan.Zero, worker);
        }
        if (_settings.Cache is { } cache && (t.Template.Prepared.Graph.FlagsOf(0) & NodeFlags.Cached) != 0 && TryCache(t, cache, out var cached))
        {
            return Finish(t, TaskOutcome.Succeeded, cached, "answered from the result cache", TimeSpan.Zero, worker);
        }
        if (t.Route != RouteTable.Inline)
        {
            // A task that uses pools waits, parked, until it can hold them all (it never runs inline).
            if (t.Template.Pools is not null && !_gate!.TryAcquireOrPark(t.Index)) return null;
            if (t.Template.Pools is not null) Volatile.Write(ref t.Cold.HoldsPools, 1);
            _dispatchers[t.Route].Enqueue(t.Index);
            return null;
        }
        if (Interlocked.CompareExchange(ref t.State, SubmittedTask.Running, SubmittedTask.Queued) != SubmittedTask.Queued) return null;
        return RunInline(t, start, ref tick, worker);
    }

    /// <summary>
    /// A cache-enabled task: its key from its handler, arguments, inputs and the variant its layer
    /// runs (as in a graph's run); a hit is its output, a miss keeps the key for its success.
    /// </summary>
    private bool TryCache(SubmittedTask t, ITaskCache cache, out object? output)
    {
        output = null;
        var prepared = t.Template.PreparedTask;
        string? variant = t.Template.Handler.CacheVariant is { } variantOf
            ? variantOf(prepared.ParsedArgsOf(0), _layers[t.Route == RouteTable.Inline ? RouteTable.Local : t.Route]) : null;
        if (TaskCacheKey.Of(prepared, 0, InputsOf(t.Index), variant) is not string key) return false;
        if (cache.TryGet(key, out output)) return true;
        t.Cold.CacheKey = key;
        return false;
    }

    private static string SkipReason(SubmittedTask cause)
    {
        var root = cause.ColdOrNull?.SkipCause ?? cause;
        return $"skipped: '{root.Id}' {(root.Outcome == TaskOutcome.TimedOut ? "timed out" : root.Outcome.ToString().ToLowerInvariant())}";
    }

    /// <summary>The clock inline tasks are timed by (<see cref="_preciseTiming"/>): a stopwatch stamp, or milliseconds.</summary>
    private long Now() => _preciseTiming ? Stopwatch.GetTimestamp() : CoarseClock.Now;

    private TimeSpan Elapsed(long from, long to) => _preciseTiming ? Stopwatch.GetElapsedTime(from, to) : TimeSpan.FromMilliseconds(to - from);

    private TimeSpan Elapsed(long from) => Elapsed(from, Now());

    private SubmittedTask? RunInline(SubmittedTask t, long start, ref long tick, int worker)
    {
        long t0 = start != 0 ? start : Now();
        if (_preciseTiming) t.StartTimestamp = t0;
        t.AttemptCount = 1;
        object? output;
        try
        {
            output = t.Template.Handler.Inline!(new TaskContext(this, t.Index, 1));
        }
        catch (Exception ex)
        {
            return OnInlineAttemptEnded(t, new AttemptResult(t.Index, _layerNames[RouteTable.Local], 1, AttemptOutcome.Failed, null,
                RunState.DescribeFailure(ex), Elapsed(t0)), worker);
        }
        if (Volatile.Read(ref t.Extras) is { } extras)
        {
            var (confidence, request) = extras.TakeReports(1);
            return OnInlineAttemptEnded(t, new AttemptResult(t.Index, _layerNames[RouteTable.Local], 1, AttemptOutcome.Succeeded, output, null,
                Elapsed(t0), confidence, request), worker);
        }
        if (t.CancelRequested)
            return Finish(t, TaskOutcome.Cancelled, null, "cancelled while it ran", Elapsed(t0), worker);
        long end = Now();
        var next = Finish(t, TaskOutcome.Succeeded, output, null, Elapsed(t0, end), worker);
        // A plain end with no one told (no journal, no observers): the next task starts now.
        if (_journal is null && _observers is null) tick = end;
        return next;
    }

    /// <summary>An inline attempt that failed, or reported a confidence or an escalation request: the policy decides (as in a static run).</summary>
    private SubmittedTask? OnInlineAttemptEnded(SubmittedTask t, AttemptResult result, int worker)
    {
        t.Cold.Confidence = result.Confidence;
        var decision = Attempts.Decide(result);
        if (decision.Next != AttemptNext.Complete)
        {
            Attempts.MoveInlineAttemptOn(t.Index, result, decision);
            return null;
        }
        return Finish(t, result.TaskOutcome, result.Output, result.Error, result.Duration, worker);
    }

    /// <summary>
    /// Records how <paramref name="t"/> ended (once: later calls do nothing), completes its
    /// <see cref="SubmittedTask.Completion"/>, releases its dependents, and keeps it in the
    /// retention window's books. Returns a released dependent for a worker to run next.
    /// </summary>
    private SubmittedTask? Finish(SubmittedTask t, TaskOutcome outcome, object? output, string? error, TimeSpan duration, int worker)
    {
        int s;
        do
        {
            s = Volatile.Read(ref t.State);
            if (s >= SubmittedTask.Finishing) return null;
        }
        while (Interlocked.CompareExchange(ref t.State, SubmittedTask.Finishing, s) != s);
        t.Outcome = outcome;
        t.Output = outcome == TaskOutcome.Succeeded ? output : null;
        if (error is not null) t.Cold.Error = error;
        if (t.Extras is { ElapsedMs: > 0 } x) duration += TimeSpan.FromMilliseconds(x.ElapsedMs);
        t.Duration = duration;
        var cold = t.ColdOrNull;
        if (cold?.CacheKey is { } key && outcome == TaskOutcome.Succeeded)
            try { _settings.Cache!.Put(key, t.Template.Handler.Name, t.Id, output); }
            catch (Exception ex) when (ex is Store.StoreException or IOException) { /* the task succeeded; only its cache entry is lost */ }
        Volatile.Write(ref t.State, SubmittedTask.Ended);
        // Closing the list of dependents is a full fence: the fields above, and the state, precede
        // it; a dependent wired after it learns that t ended (and how) instead.
        object? dependents = Interlocked.Exchange(ref t.DependentsHead, SubmittedTask.Closed);
        if (cold?.Inputs is { } inputs)
        {
            cold.Inputs = null;
            foreach (var d in inputs)
                if (Interlocked.Decrement(ref d.Readers) == 0 && Volatile.Read(ref d.Expired) != 0) Release(d);
        }
        if (cold is not null && Interlocked.Exchange(ref cold.Cts, null) is { } cts) cts.Dispose();
        if (t.Template.Pools is not null) ReleasePools(t);
        Retain(t);
        if (_journal is not null) Journal(t);
        if (_observers is not null) Observe(t);
        if (Events is { Listening: true } events)
            events.TaskEnded(t.SequenceNumber, t.Id, t.Outcome, t.AttemptCount > 0 ? _layerNames[t.Route == RouteTable.Inline ? RouteTable.Local : t.Route] : null,
                t.AttemptCount, t.ColdOrNull?.Error);
        t.Completed();   // after the bookkeeping: whoever awaits it sees the run as the task left it

        SubmittedTask? next = null;
        if (dependents is not null) ReleaseDependents(t, dependents, outcome != TaskOutcome.Succeeded, worker >= 0, ref next);
        // Counted last: whoever sees every task counted sees each one's bookkeeping done.
        if ((uint)worker < Stripes - 1)
        {
            // A worker's own stripe: one writer, no atomic. Its next idle moment fences and looks
            // for waiting producers and a run to end (see WorkerLoop), so neither is missed.
            ref long count = ref _outcomes[worker][(int)outcome];
            Volatile.Write(ref count, count + 1);
            _room.OnEnded();
            return next;
        }
        Interlocked.Increment(ref _outcomes[Stripes - 1][(int)outcome]);   // full fence: before the reads below
        _room.OnEnded();
        if (_completing || _cancelled) EndIfDone();
        return next;
    }

    /// <summary>
    /// <paramref name="t"/> ended: each dependent in the order they were wired (the list is a stack,
    /// newest first, ending with the first dependent itself; reversed in place, as it is t's alone now).
    /// </summary>
    private void ReleaseDependents(SubmittedTask t, object head, bool propagate, bool onWorker, ref SubmittedTask? next)
    {
        DependentNode? reversed = null;
        object? o = head;
        while (o is DependentNode n)
        {
            object? older = n.Next;
            n.Next = reversed;
            reversed = n;
            o = older;
        }
        Release(t, (SubmittedTask)o!, t.FirstDependentKind, propagate, onWorker, ref next);
        for (var n = reversed; n is not null; n = (DependentNode?)n.Next) Release(t, n.Task, n.Kind, propagate, onWorker, ref next);
    }

    /// <summary>One dependency of <paramref name="d"/> ended: the last one makes it ready (the first such, on a worker, is run next by that worker).</summary>
    private void Release(SubmittedTask ended, SubmittedTask d, EdgeKind kind, bool propagate, bool onWorker, ref SubmittedTask? next)
    {
        // The skip mark is written before the decrement, whose full fence publishes it.
        if (propagate && kind != EdgeKind.Soft) Interlocked.CompareExchange(ref d.Cold.SkipCause, ended, null);
        if (Interlocked.Decrement(ref d.Pending) != 0) return;
        if (onWorker && next is null && d.Priority != (byte)TaskPriority.Low
            && Interlocked.CompareExchange(ref d.State, SubmittedTask.Queued, SubmittedTask.Waiting) == SubmittedTask.Waiting)
            next = d;
        else
            MakeReady(d);
    }

    private void Observe(SubmittedTask t)
    {
        var result = t.ToResult();
        byte last = t.Route == RouteTable.Inline ? RouteTable.Local : t.Route;
        double cost = t.AttemptCount > 0 ? _layers[last].PricePerSecond * t.Duration.TotalSeconds : 0;
        int retries = Math.Max(0, t.AttemptCount - 1 - (t.Extras?.EscalatedAfterAttempt ?? 0));
        int sequence = t.SequenceNumber;
        foreach (var o in _observers!) Safely(o, x => x.OnOpenTaskEnded(RunId, sequence, result, cost, retries));
    }

    /// <summary>Calls an observer; one that throws is not the run's problem (it loses that call only).</summary>
    private static void Safely(IOpenRunObserver observer, Action<IOpenRunObserver> call)
    {
        try { call(observer); }
        catch (Exception) { /* an observer's fault ends nothing */ }
    }

    private void Journal(SubmittedTask t)
    {
        bool ran = t.AttemptCount > 0;
        byte last = t.Route == RouteTable.Inline ? RouteTable.Local : t.Route;
        byte first = t.Extras?.InitialRoute ?? last;
        string? layer = ran ? _layerNames[last] : null;
        double started = t.StartTimestamp == 0 ? 0 : Stopwatch.GetElapsedTime(_openedTimestamp, t.StartTimestamp).TotalMilliseconds;
        double cost = ran ? _layers[last].PricePerSecond * t.Duration.TotalSeconds : 0;
        try
        {
            _journal!.Ended(_indexBase + t.Index, t.Id, t.HasGivenId, t.Template.Handler.Name, ran ? _layerNames[first] : null, layer, t.Outcome, t.AttemptCount,
                t.ColdOrNull?.Confidence, t.Extras?.Escalations ?? 0, started, t.Duration.TotalMilliseconds, cost, t.ColdOrNull?.Error, t.Output,
                t.Outcome == TaskOutcome.Skipped && t.ColdOrNull?.SkipCause is { } cause ? (cause.ColdOrNull?.SkipCause ?? cause).Id : null, t.ColdOrNull?.SpecHash);
        }
        catch (Store.StoreException) { /* the store's writer reports its own fault */ }
    }

    /// <summary>A task that held pools ended (or, parked, was cancelled): its pools go to the parked tasks that now fit.</summary>
    private void ReleasePools(SubmittedTask t)
    {
        if (Interlocked.Exchange(ref t.Cold.HoldsPools, 0) == 0)
        {
            _gate!.Unpark(t.Index);
            return;
        }
        var admitted = _gate!.Release(t.Index);
        if (admitted is null) return;
        foreach (int n in admitted)
        {
            var next = TaskAt(n);
            Interlocked.Exchange(ref next.Cold.HoldsPools, 1);   // full fence: set before its state is read
            if (Volatile.Read(ref next.State) == SubmittedTask.Queued && !_cancelled) _dispatchers[next.Route].Enqueue(n);
            else ReleasePools(next);   // it ended while parked: its pools go on at once
        }
    }

    // ---------------------------------------------------------------- retention

    /// <summary>A task ended: its output counts against the byte limit, and, out of the window already, it goes.</summary>
    private void Retain(SubmittedTask t)
    {
        if (t.Output is not null) Interlocked.Add(ref _outputBytes, t.OutputBytes = OutputSize.Estimate(t.Output));
        // Its state is Ended (a full fence) before this read; the sweep marks Expired (a full fence) before it reads the state.
        if (Volatile.Read(ref t.Expired) != 0 && Volatile.Read(ref t.Readers) == 0) Release(t);
    }

    /// <summary>
    /// Moves the retention window on after a submission (on the submitting thread): the boundary
    /// first, then the memory of every chunk the window has wholly passed, and, while the outputs
    /// kept pass <see cref="OpenRunOptions.RetainBytes"/>, task by task beyond that.
    /// </summary>
    private void Sweep()
    {
        int keepFrom = _count - _settings.RetainTasks;
        if (keepFrom > _expiredBelow) Volatile.Write(ref _expiredBelow, keepFrom);
        while ((_sweepCursor & ChunkMask) == 0 && _sweepCursor + ChunkSize <= _expiredBelow)
        {
            SweepChunk(_sweepCursor >> ChunkShift);
            _sweepCursor += ChunkSize;
        }
        while (_sweepCursor < _count && (_sweepCursor < _expiredBelow && (_sweepCursor & ChunkMask) != 0 || Volatile.Read(ref _outputBytes) > _settings.RetainBytes))
        {
            SweepOne(_sweepCursor++);
            if (_sweepCursor > _expiredBelow) Volatile.Write(ref _expiredBelow, _sweepCursor);
        }
    }

    /// <summary>
    /// A chunk wholly out of the window: its ended, unread tasks go (nothing else can release them:
    /// none is marked expired yet, and readers are only added under the submit lock, which this
    /// holds); the others are marked expired, for their end or their last reader to release.
    /// </summary>
    private void SweepChunk(int c)
    {
        var chunks = _chunks;
        var chunk = chunks[c];
        if (chunk is null) return;
        var tasks = chunk.Tasks;
        int released = 0;
        long bytes = 0;
        for (int i = 0; i < tasks.Length; i++)
        {
            var t = tasks[i];
            if (t is null) continue;
            if (Volatile.Read(ref t.State) == SubmittedTask.Ended && Volatile.Read(ref t.Readers) == 0)
            {
                t.Released = 1;
                bytes += t.OutputBytes;
                if (t.HasGivenId) _byId.TryRemove(new KeyValuePair<string, SubmittedTask>(t.Id, t));
                tasks[i] = null;
                released++;
                continue;
            }
            SweepOne(c << ChunkShift | i);
        }
        if (bytes > 0) Interlocked.Add(ref _outputBytes, -bytes);
        if (Interlocked.Add(ref chunk.Live, -released) == 0) Volatile.Write(ref chunks[c], null);
    }

    /// <summary>Marks one task out of the window expired, releasing it when it has ended and is unread.</summary>
    private void SweepOne(int index)
    {
        var t = FindAt(index);
        if (t is null) return;
        // Readers are only added under the submit lock, which this holds: an ended, unread task goes now.
        if (Volatile.Read(ref t.State) == SubmittedTask.Ended && Volatile.Read(ref t.Readers) == 0)
        {
            Release(t);
            return;
        }
        Interlocked.Exchange(ref t.Expired, 1);   // full fence: an ending task or a last reader sees it, or this sees them
        if (Volatile.Read(ref t.State) == SubmittedTask.Ended && Volatile.Read(ref t.Readers) == 0) Release(t);
    }

    /// <summary>The run forgets an ended task: its id, its slot (and its chunk once every slot of it went).</summary>
    private void Release(SubmittedTask t)
    {
        if (Volatile.Read(ref t.State) != SubmittedTask.Ended) return;   // a last reader of a task not ended yet: its end releases it
        if (Interlocked.Exchange(ref t.Released, 1) != 0) return;
        if (t.OutputBytes > 0) Interlocked.Add(ref _outputBytes, -t.OutputBytes);
        if (t.HasGivenId) _byId.TryRemove(new KeyValuePair<string, SubmittedTask>(t.Id, t));
        var chunks = Volatile.Read(ref _chunks);
        int c = t.Index >> ChunkShift;
        var chunk = chunks[c]!;
        Volatile.Write(ref chunk.Tasks[t.Index & ChunkMask], null);
        if (Interlocked.Decrement(ref chunk.Live) == 0) Volatile.Write(ref chunks[c], null);
    }

    // ---------------------------------------------------------------- cancelling and ending

    internal bool CancelTask(string id) => TryFind(id, out var t) && CancelTask(t);

    internal bool CancelTask(SubmittedTask t)
    {
        if (t.Run != this) return false;
        t.CancelRequested = true;
        Interlocked.Increment(ref _tasksCancelled);   // a full fence: the request precedes the read of the token (TokenOf makes it, then reads the request)
        while (true)
        {
            int s = Volatile.Read(ref t.State);
            switch (s)
            {
                case SubmittedTask.Waiting:
                case SubmittedTask.Queued:
                    // Not started: it ends now (a queue that still holds it will find it ended).
                    Finish(t, TaskOutcome.Cancelled, null, "cancelled before it started", TimeSpan.Zero, NotOnWorker);
                    if (Volatile.Read(ref t.State) == SubmittedTask.Ended && t.Outcome == TaskOutcome.Cancelled) return true;
                    continue;
                case SubmittedTask.Running:
                    if (t.ColdOrNull is { } c) Volatile.Read(ref c.Cts)?.Cancel();
                    return true;
                default:
                    return false;
            }
        }
    }

    /// <summary>
    /// Changes a task that waits for its dependencies (<see cref="SubmittedTask.Change"/>). One more
    /// pending count holds it back while it changes: it cannot become ready meanwhile, and becomes
    /// ready here if its last dependency ended during the change.
    /// </summary>
    internal void ChangeTask(SubmittedTask t, TaskPriority? priority, System.Text.Json.JsonElement? args)
    {
        if (t.Run != this) throw new ArgumentException("the task belongs to another run", nameof(t));
        if (args is { ValueKind: not System.Text.Json.JsonValueKind.Object })
            Refuse(GraphErrorCodes.Schema, "'args' must be an object", t.Id);
        int pending;
        do
        {
            pending = Volatile.Read(ref t.Pending);
            if (pending == 0) throw new InvalidOperationException(WhyUnchangeable(t));
        }
        while (Interlocked.CompareExchange(ref t.Pending, pending + 1, pending) != pending);
        try
        {
            if (Volatile.Read(ref t.State) != SubmittedTask.Waiting || t.CancelRequested) throw new InvalidOperationException(WhyUnchangeable(t));
            lock (_submitLock)
            {
                var newPriority = priority ?? (TaskPriority)t.Priority;
                if (args is { } a)
                {
                    var spec = t.Template.Spec?.Clone() ?? new TaskSpec();
                    spec.Args = a.Clone();
                    var template = TemplateFor(new TaskRequest(t.Template.Handler.Name) { Spec = spec, Priority = newPriority }, t.HasGivenId ? t.Id : null, t.Index);
                    (t.Template, t.Route) = (template, template.Route);
                    // Its stored row no longer says what was first submitted: a resubmission of its id
                    // after a crash is answered from what it became.
                    if (t.ColdOrNull is { SpecHash: not null } cold) cold.SpecHash = null;
                }
                t.Priority = (byte)newPriority;
            }
        }
        finally
        {
            if (Interlocked.Decrement(ref t.Pending) == 0) MakeReady(t);
        }
    }

    private static string WhyUnchangeable(SubmittedTask t)
    {
        if (t.CancelRequested) return $"task {t.Id} was cancelled";
        return Volatile.Read(ref t.State) switch
        {
            SubmittedTask.Waiting or SubmittedTask.Queued => $"task {t.Id} is ready and queued: it may start at any moment (only a task still waiting for its dependencies can change)",
            SubmittedTask.Running => $"task {t.Id} is running",
            _ => $"task {t.Id} has ended",
        };
    }

    internal void Cancel()
    {
        lock (_submitLock)
        {
            if (_cancelled) return;
            _cancelled = true;
        }
        try { _runCts.Cancel(); } catch (AggregateException) { /* a handler's callback threw; the run still ends */ }
        // Every task not started ends now; running ones end as their attempts see the token.
        var chunks = Volatile.Read(ref _chunks);
        int count = Volatile.Read(ref _count);
        for (int i = 0; i < count; i++)
        {
            var chunk = Volatile.Read(ref chunks[i >> ChunkShift]);
            if (chunk is null) { i |= ChunkMask; continue; }
            if (Volatile.Read(ref chunk.Tasks[i & ChunkMask]) is { } t && Volatile.Read(ref t.State) is SubmittedTask.Waiting or SubmittedTask.Queued)
                CancelTask(t);
        }
        _room.RingAll();
        EndIfDone();
    }

    internal void Complete()
    {
        lock (_submitLock) _completing = true;
        Interlocked.MemoryBarrier();   // the flag precedes the read of the counts (a finishing task reads them the other way round)
        _room.RingAll();
        EndIfDone();
    }

    /// <summary>Ends a completed or cancelled run once every task submitted has ended.</summary>
    private void EndIfDone()
    {
        if (Ended() == Volatile.Read(ref _count)) EndRun(null);
    }

    private void EndRun(Exception? fault)
    {
        if (Interlocked.Exchange(ref _ended, 1) != 0) return;
        if (!_preciseTiming) CoarseClock.Release();
        _stopping = true;
        _notifier.NotifyAll();
        foreach (var d in _dispatchers) d.Close();
        long failed = Counts(TaskOutcome.Failed) + Counts(TaskOutcome.TimedOut);
        var status = _cancelled ? RunStatus.Cancelled : failed > 0 || Counts(TaskOutcome.Skipped) > 0 ? RunStatus.Failed : RunStatus.Succeeded;
        var result = new OpenRunResult(RunId, status, SubmittedCount, Counts(TaskOutcome.Succeeded), failed,
            Counts(TaskOutcome.Skipped), Counts(TaskOutcome.Cancelled), Stopwatch.GetElapsedTime(_openedTimestamp));
        Events?.OnOpenRunEnded(result);
        if (_observers is not null)
            foreach (var o in _observers) Safely(o, x => x.OnOpenRunEnded(result));
        if (_journal is null)
        {
            if (fault is not null) _completion.TrySetException(fault);
            else _completion.TrySetResult(result);
            return;
        }
        // The run's end is in the store before its completion says so.
        _ = CloseJournalAsync(result, fault);
    }

    private async Task CloseJournalAsync(OpenRunResult result, Exception? fault)
    {
        try
        {
            _journal!.Closed(result);
            await _journal.FlushAsync().ConfigureAwait(false);
        }
        catch (Exception ex) when (fault is null)
        {
            fault = ex;
        }
        if (fault is not null) _completion.TrySetException(fault);
        else _completion.TrySetResult(result);
    }
}

/// <summary>The submitting thread's counters, with a cache line of padding on either side.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 192)]
internal struct ProducerLine
{
    [System.Runtime.InteropServices.FieldOffset(64)] public int Count;
    [System.Runtime.InteropServices.FieldOffset(68)] public int ExpiredBelow;
    [System.Runtime.InteropServices.FieldOffset(72)] public int SweepCursor;
}

/// <summary>An int with a cache line of padding on either side.</summary>
[System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 132)]
internal struct PaddedInt
{
    [System.Runtime.InteropServices.FieldOffset(64)] public int Value;
}

/// <summary>
/// The bound on an open run's pending tasks (submitted and not ended), with nothing shared
/// written per task: a producer counts the room free (<c>max_pending</c> minus the tasks
/// submitted and not ended, from the run's counters) only when the room it counted last is used
/// up, and spends it one submission at a time under the run's submit lock. A producer that finds
/// no room waits on a doorbell that the tasks ending ring once a quarter of the room is free
/// again (so a producer at the bound submits in bursts, and ending tasks rarely take a lock).
/// </summary>
internal sealed class RoomGate(int capacity, Func<long> pending)
{
    private readonly int _capacity = capacity;
    private readonly int _wakeAt = Math.Max(0, capacity - Math.Max(1, capacity / 4));
    private readonly Func<long> _pending = pending;
    // Under the submit lock: submissions that fit without counting again. Written on every
    // submission, so on a line of its own: _waiters beside it is read at every task's end.
    private PaddedInt _credit;
    private int _waiters;
    private readonly object _lock = new();
    private TaskCompletionSource? _doorbell;

    /// <summary>True when one more task fits (call under the submit lock; <see cref="Took"/> spends it).</summary>
    public bool HasRoom()
    {
        if (_credit.Value > 0) return true;
        long free = _capacity - _pending();
        _credit.Value = free > 0 ? (int)free : 0;
        return _credit.Value > 0;
    }

    /// <summary>A task was submitted after <see cref="HasRoom"/> said it fits (under the submit lock).</summary>
    public void Took() => _credit.Value--;

    /// <summary>Returns once room may be free (the caller tries again), or the run stopped taking tasks.</summary>
    public async ValueTask WaitAsync(CancellationToken ct)
    {
        Task bell;
        lock (_lock)
        {
            _waiters++;
            Interlocked.MemoryBarrier();   // the announcement precedes the re-count (an ending task reads them the other way round)
            if (_pending() < _capacity)
            {
                _waiters--;
                return;
            }
            bell = (_doorbell ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
        }
        try
        {
            await bell.WaitAsync(ct).ConfigureAwait(false);
        }
        finally
        {
            lock (_lock) _waiters--;
        }
    }

    /// <summary>A task ended (counted, with a full fence): a waiting producer is woken once enough room is free.</summary>
    public void OnEnded()
    {
        if (Volatile.Read(ref _waiters) != 0 && _pending() <= _wakeAt) RingAll();
    }

    /// <summary>Wakes every waiting producer (room is free, or the run stopped taking tasks).</summary>
    public void RingAll()
    {
        TaskCompletionSource? bell;
        lock (_lock)
        {
            bell = _doorbell;
            _doorbell = null;
        }
        bell?.TrySetResult();
    }
}

/// <summary>A second or later dependent of a task: an entry of its list of dependents (<see cref="SubmittedTask.DependentsHead"/>).</summary>
internal sealed class DependentNode(SubmittedTask task, EdgeKind kind, object? next)
{
    public readonly SubmittedTask Task = task;
    public readonly EdgeKind Kind = kind;
    public object? Next = next;   // an older node, or the first dependent itself
}

/// <summary>A rough size of an output, for the retention window's byte limit.</summary>
internal static class OutputSize
{
    private const int Header = 24;

    public static long Estimate(object? output) => output switch
    {
        null => 0,
        string s => Header + 2L * s.Length,
        byte[] b => Header + b.LongLength,
        Array a => Header + 8L * a.LongLength,
        System.Collections.ICollection c => Header + 16L * c.Count,
        _ => Header + 16,
    };
}
