using System.Diagnostics.CodeAnalysis;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Open;

namespace TaskMesh.Engine;

/// <summary>
/// A run that takes tasks while it goes (a graph that grows as it runs): <see cref="Submit"/> adds a
/// task whose dependencies name tasks already submitted, so no cycle can be made; it runs once they
/// ended, routed, retried and escalated as a task of a graph is. Made by <see cref="TaskMeshEngine.Open"/>.
/// <para>
/// A refused submission (unknown dependency, duplicate id, arguments the handler's validator
/// refuses) throws <see cref="TaskRefusedException"/> and the run goes on. At most
/// <see cref="OpenRunOptions.MaxPending"/> tasks are submitted and not ended: <see cref="Submit"/>
/// and <see cref="SubmitAsync"/> wait for room, <see cref="TrySubmit"/> says no.
/// The run ends after <see cref="Complete"/> once its last task ended, or at <see cref="Cancel()"/>.
/// </para>
/// </summary>
public sealed class OpenRun : IAsyncDisposable
{
    private readonly OpenRunState _state;

    internal OpenRun(OpenRunState state) => _state = state;

    /// <summary>The run's id.</summary>
    public string RunId => _state.RunId;

    /// <summary>Adds a task, waiting for room when <see cref="OpenRunOptions.MaxPending"/> tasks are pending.</summary>
    /// <exception cref="TaskRefusedException">The task cannot be part of this run (the message says why; the run goes on).</exception>
    /// <exception cref="InvalidOperationException">The run was completed or cancelled.</exception>
    public SubmittedTask Submit(TaskRequest request)
    {
        ArgumentNullException.ThrowIfNull(request);
        return _state.Add(request);
    }

    /// <summary>Adds a task, waiting asynchronously for room.</summary>
    /// <exception cref="TaskRefusedException">The task cannot be part of this run.</exception>
    /// <exception cref="InvalidOperationException">The run was completed or cancelled.</exception>
    public async ValueTask<SubmittedTask> SubmitAsync(TaskRequest request, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(request);
        return await _state.AddAsync(request, ct).ConfigureAwait(false);
    }

    /// <summary>Adds a task if there is room now; false (nothing added) when <see cref="OpenRunOptions.MaxPending"/> tasks are pending.</summary>
    /// <exception cref="TaskRefusedException">The task cannot be part of this run.</exception>
    /// <exception cref="InvalidOperationException">The run was completed or cancelled.</exception>
    public bool TrySubmit(TaskRequest request, [NotNullWhen(true)] out SubmittedTask? task)
    {
        ArgumentNullException.ThrowIfNull(request);
        return _state.TryAdd(request, out task);
    }

    /// <summary>
    /// Cancels a task: one not started is not run, and its dependents are skipped; a running one is
    /// cancelled (its handler's token). False when the run keeps no unfinished task by that id.
    /// </summary>
    public bool Cancel(string id) => _state.CancelTask(id);

    /// <summary>Cancels the run: no task starts any more, running ones are cancelled, the run ends.</summary>
    public void Cancel() => _state.Cancel();

    /// <summary>No more tasks: the run ends when the last one submitted has.</summary>
    public void Complete() => _state.Complete();

    /// <summary>The task of <paramref name="id"/> while the run keeps it (not ended, or within the retention window).</summary>
    public bool TryGetTask(string id, [NotNullWhen(true)] out SubmittedTask? task) => _state.TryFind(id, out task);

    /// <summary>Tasks submitted so far.</summary>
    public long Submitted => _state.SubmittedCount;

    /// <summary>Tasks submitted and not ended.</summary>
    public int Pending => _state.PendingCount;

    /// <summary>Tasks ended so far, by outcome.</summary>
    public long Succeeded => _state.Counts(TaskOutcome.Succeeded);

    /// <inheritdoc cref="Succeeded"/>
    public long Failed => _state.Counts(TaskOutcome.Failed) + _state.Counts(TaskOutcome.TimedOut);

    /// <summary>
    /// The run's events — each task's end (kind, sequence number, id, layer, attempts, error) and
    /// each escalation — with <see cref="OpenRunOptions.EmitEvents"/>; the stream completes when the
    /// run ends. Without it, an empty, completed stream.
    /// </summary>
    public System.Threading.Channels.ChannelReader<RunEvent> Events => _state.Events?.Reader ?? s_noEvents;

    /// <summary>
    /// Whether task ends and escalations are written into <see cref="Events"/> now (true at first,
    /// with <see cref="OpenRunOptions.EmitEvents"/>; the run's end always completes the stream).
    /// A reader with no one to pass them to may turn it off, sparing the run the work, and on again
    /// when it has: events meanwhile are not written.
    /// </summary>
    public bool PublishEvents
    {
        get => _state.Events?.Listening ?? false;
        set
        {
            if (_state.Events is { } events) events.Listening = value;
        }
    }

    /// <summary>Events dropped because the reader fell behind.</summary>
    public long DroppedEvents => _state.Events?.Dropped ?? 0;

    private static readonly System.Threading.Channels.ChannelReader<RunEvent> s_noEvents = NoEvents();

    private static System.Threading.Channels.ChannelReader<RunEvent> NoEvents()
    {
        var c = System.Threading.Channels.Channel.CreateUnbounded<RunEvent>();
        c.Writer.Complete();
        return c.Reader;
    }

    /// <summary>Ends when the run does (after <see cref="Complete"/> or <see cref="Cancel()"/>).</summary>
    public Task<OpenRunResult> Completion => _state.Completion;

    /// <summary>Cancels the run unless it ended, and waits for it.</summary>
    public async ValueTask DisposeAsync()
    {
        _state.Cancel();
        await _state.Completion.ConfigureAwait(false);
    }
}

/// <summary>Settings of an open run.</summary>
public sealed class OpenRunOptions
{
    /// <summary>Most tasks submitted and not ended at once (producers wait above it).</summary>
    public int MaxPending { get; set; } = DefaultMaxPending;

    /// <summary>The default of <see cref="MaxPending"/>, from the <c>stream</c> benchmark (bench/README.md).</summary>
    public const int DefaultMaxPending = 4_096;

    /// <summary>The run keeps its last this-many submitted tasks (ended ones with their outputs, for dependents submitted later); older ones go once ended and unread.</summary>
    public int RetainTasks { get; set; } = DefaultRetainTasks;

    /// <summary>The default of <see cref="RetainTasks"/>.</summary>
    public const int DefaultRetainTasks = 10_000;

    /// <summary>Most bytes of outputs the run keeps for ended tasks (estimated): past it, older tasks go once unread, whatever <see cref="RetainTasks"/> says.</summary>
    public long RetainBytes { get; set; } = DefaultRetainBytes;

    /// <summary>The default of <see cref="RetainBytes"/>: 64 MiB.</summary>
    public const long DefaultRetainBytes = 64L << 20;

    /// <summary>A name for the run (its tasks' one-task graphs carry it).</summary>
    public string Name { get; set; } = "open";

    /// <summary>The directory relative paths in arguments are resolved against (default: the current one).</summary>
    public string? BaseDirectory { get; set; }

    /// <summary>Routes this run's tasks instead of the engine's router.</summary>
    public ILayerRouter? Router { get; set; }

    /// <summary>Most the run's attempts may cost: a retry or escalation that would pass it is refused.</summary>
    public double? Budget { get; set; }

    /// <summary>
    /// Records the run in this store as it goes (status <c>open</c>, then <c>interrupted</c> if the
    /// process dies): tasks with ids of their own get a row and their output, so that once the run is
    /// resumed (<see cref="Resume"/>) resubmitting one that completed answers it from the store.
    /// </summary>
    public Store.RunStore? Store { get; set; }

    /// <summary>The id of an interrupted open run of <see cref="Store"/> to take over (its owner is gone).</summary>
    public string? Resume { get; set; }

    /// <summary>
    /// Resource pools the run's tasks may name in <see cref="TaskSpec.Uses"/>, with their capacities
    /// (a graph's <c>resources</c>): at most that many tasks hold a pool at once.
    /// </summary>
    public IReadOnlyDictionary<string, int>? Resources { get; set; }

    /// <summary>
    /// The result cache for tasks marked <c>cache</c> (<see cref="TaskSpec.Cache"/>): a hit ends the
    /// task as succeeded without running it, a successful run is kept (as in a graph's run).
    /// </summary>
    public Scheduling.ITaskCache? Cache { get; set; }

    /// <summary>Publish the run's events on <see cref="OpenRun.Events"/> (each task's end, each escalation).</summary>
    public bool EmitEvents { get; set; }

    /// <summary>Events <see cref="OpenRun.Events"/> holds for a slow reader; past it the newest are dropped and counted (the run never waits).</summary>
    public int EventCapacity { get; set; } = 65_536;

    /// <summary>Observers of this run, beside the engine's own that implement <see cref="Observability.IOpenRunObserver"/>.</summary>
    public IReadOnlyList<Observability.IOpenRunObserver>? Observers { get; set; }

    internal void Check()
    {
        if (MaxPending < 1) throw new ArgumentOutOfRangeException(nameof(MaxPending), MaxPending, "MaxPending must be at least 1");
        if (RetainTasks < 0) throw new ArgumentOutOfRangeException(nameof(RetainTasks), RetainTasks, "RetainTasks must not be negative");
        if (RetainBytes < 0) throw new ArgumentOutOfRangeException(nameof(RetainBytes), RetainBytes, "RetainBytes must not be negative");
        if (Budget is double b && !(b >= 0)) throw new ArgumentOutOfRangeException(nameof(Budget), Budget, "a budget is a non-negative number");
        if (EventCapacity < 1) throw new ArgumentOutOfRangeException(nameof(EventCapacity), EventCapacity, "EventCapacity must be at least 1");
        if (Resources?.FirstOrDefault(r => r.Value < 1) is { Key: not null } bad)
            throw new ArgumentOutOfRangeException(nameof(Resources), $"resource pool '{bad.Key}' has capacity {bad.Value}; it must be at least 1");
        if (Resume is not null && Store is null) throw new ArgumentException("OpenRunOptions.Resume needs OpenRunOptions.Store: the run to resume is in a store", nameof(Resume));
    }
}

/// <summary>
/// A task for an open run: its handler, options (arguments, timeout, retries, layer, …, as in a
/// graph file), priority, and the tasks it depends on — by id, or by the <see cref="SubmittedTask"/>
/// returned for them.
/// </summary>
/// <param name="Handler">The handler's name.</param>
public sealed record TaskRequest(string Handler)
{
    /// <summary>The task's id; generated (<c>#N</c>, N its place in submission order) when null.</summary>
    public string? Id { get; init; }

    /// <summary>The task's options, or null for none.</summary>
    public TaskSpec? Spec { get; init; }

    /// <summary>Runs before tasks of lower priority when both are ready.</summary>
    public TaskPriority Priority { get; init; } = TaskPriority.Normal;

    /// <summary>Tasks submitted before that must end first.</summary>
    public IReadOnlyList<TaskDependency>? DependsOn { get; init; }

    /// <summary>Who submitted it (a service's caller: a token's subject): written into the audit trail of a task with an id of its own.</summary>
    public string? SubmittedBy { get; init; }
}

/// <summary>A dependency of a submitted task: on a task by id or by its <see cref="SubmittedTask"/>, with the kind of edge.</summary>
public readonly record struct TaskDependency
{
    /// <summary>A dependency on the task with id <paramref name="id"/>.</summary>
    public TaskDependency(string id, EdgeKind kind = EdgeKind.Hard)
    {
        ArgumentNullException.ThrowIfNull(id);
        Id = id;
        Kind = kind;
    }

    /// <summary>A dependency on <paramref name="task"/>.</summary>
    public TaskDependency(SubmittedTask task, EdgeKind kind = EdgeKind.Hard)
    {
        ArgumentNullException.ThrowIfNull(task);
        Task = task;
        Kind = kind;
    }

    /// <summary>The id depended on (null when given as a task).</summary>
    public string? Id { get; }

    /// <summary>The task depended on (null when given by id).</summary>
    public SubmittedTask? Task { get; }

    /// <summary>Hard (runs after it succeeded), data (also reads its output) or soft (runs after it ended, however).</summary>
    public EdgeKind Kind { get; }

    /// <summary>A hard dependency on the task of <paramref name="id"/>.</summary>
    public static implicit operator TaskDependency(string id) => new(id);

    /// <summary>A hard dependency on <paramref name="task"/>.</summary>
    public static implicit operator TaskDependency(SubmittedTask task) => new(task);
}

/// <summary>What became of a task of an open run.</summary>
/// <param name="Id">The task's id.</param>
/// <param name="Outcome">How it ended.</param>
/// <param name="Output">Its output when it succeeded.</param>
/// <param name="Layer">The layer of its last attempt, or null when it never ran.</param>
/// <param name="Attempts">Attempts made.</param>
/// <param name="Confidence">The confidence its handler reported on its last attempt, if any.</param>
/// <param name="Error">Why it failed, timed out, was skipped or cancelled; a note on a success.</param>
/// <param name="Duration">
/// From its first attempt's start to its end (zero when it never ran). A task of an inline
/// handler, in a run with no store and no observers, is timed by a millisecond clock (as a graph's
/// run times tasks nobody records): a sub-millisecond one shows 0 or 1 ms.
/// </param>
public sealed record TaskResult(string Id, TaskOutcome Outcome, object? Output, string? Layer, int Attempts, double? Confidence, string? Error, TimeSpan Duration)
{
    /// <summary>The output in a line (at most a few hundred characters), as the store and the run summaries show it; null unless it succeeded.</summary>
    public string? OutputSummary => Outcome == TaskOutcome.Succeeded ? Scheduling.OutputSummary.Of(Output) : null;

    /// <summary>The outcome's name as the store and the command line write it: <c>succeeded</c>, <c>failed</c>, <c>timed_out</c>, <c>skipped</c>, <c>cancelled</c>.</summary>
    public string OutcomeName => Store.RunRecorder.Status(Outcome);
}

/// <summary>How an open run ended.</summary>
/// <param name="RunId">The run's id.</param>
/// <param name="Status">Succeeded (every task did), failed (some did not) or cancelled.</param>
/// <param name="Submitted">Tasks submitted.</param>
/// <param name="Succeeded">Tasks that succeeded.</param>
/// <param name="Failed">Tasks that failed or timed out.</param>
/// <param name="Skipped">Tasks skipped (a dependency did not succeed).</param>
/// <param name="Cancelled">Tasks cancelled.</param>
/// <param name="Duration">From the run's opening to its end.</param>
public sealed record OpenRunResult(string RunId, RunStatus Status, long Submitted, long Succeeded, long Failed, long Skipped, long Cancelled, TimeSpan Duration);

/// <summary>A submission an open run refused: it was not added, and the run goes on.</summary>
public sealed class TaskRefusedException : Exception
{
    /// <summary>A refusal with the validator's errors.</summary>
    public TaskRefusedException(IReadOnlyList<GraphError> errors)
        : base(string.Join("; ", errors.Select(e => e.TaskId is null ? e.Message : $"task '{GraphLimits.Printable(e.TaskId)}': {e.Message}")))
        => Errors = errors;

    /// <summary>Each problem, with the task id it concerns.</summary>
    public IReadOnlyList<GraphError> Errors { get; }

    /// <summary>A refusal with no details.</summary>
    public TaskRefusedException() : this([]) { }

    /// <summary>A refusal with a message.</summary>
    public TaskRefusedException(string message) : this([new GraphError(GraphErrorCodes.BadValue, message)]) { }

    /// <summary>A refusal with a message and a cause.</summary>
    public TaskRefusedException(string message, Exception innerException) : base(message, innerException) => Errors = [new GraphError(GraphErrorCodes.BadValue, message)];
}
