using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Open;

namespace TaskMesh.Engine;

/// <summary>
/// A task submitted to an <see cref="OpenRun"/>: its id, and its <see cref="Completion"/> to
/// await. Pass it as a dependency of later tasks (<see cref="TaskDependency"/>).
/// </summary>
public sealed class SubmittedTask
{
    // States, in order; a task only moves forward (see OpenRunState).
    internal const int Waiting = 0, Queued = 1, Running = 2, Finishing = 3, Ended = 4;

    internal readonly OpenRunState Run;
    internal readonly int Index;
    private string? _id;                       // null for a generated id until asked
    internal TaskTemplate Template;            // changed only while the task waits, held back (OpenRunState.ChangeTask)
    internal byte Priority;
    internal byte Route;
    internal byte AttemptCount;
    internal int State;
    internal int Pending = 1;                  // unfinished dependencies, plus one while it is being submitted
    // The tasks waiting for this one: null (none yet), the first dependent itself (its edge kind in
    // FirstDependentKind), or a DependentNode per later one, newest first, ending with the first;
    // Closed once this task ended (a dependent wired then learns how it ended instead).
    internal object? DependentsHead;
    internal EdgeKind FirstDependentKind;
    internal static readonly object Closed = new();
    internal int Readers;                      // pending tasks that read this task's output
    internal int Expired;                      // 1: out of the retention window, released once unread
    internal int Released;                     // 1: the run no longer finds it
    internal volatile bool CancelRequested;
    internal TaskExtras? Extras;
    internal long StartTimestamp;
    internal TaskOutcome Outcome;
    internal object? Output;
    internal TimeSpan Duration;
    internal long OutputBytes;
    private TaskCold? _cold;                   // what few tasks need, made on first use
    private TaskCompletionSource<TaskResult>? _completion;
    private int _completed;                    // 1 once the run's bookkeeping of its end is done (Completed)

    internal SubmittedTask(OpenRunState run, int index, string? id, TaskTemplate template, byte priority)
    {
        Run = run;
        Index = index;
        _id = id;
        Template = template;
        Priority = priority;
        Route = template?.Route ?? 0;
    }

    /// <summary>A task the run knows only from its store's row: ended as <paramref name="outcome"/>, with <paramref name="output"/>.</summary>
    internal static SubmittedTask Stored(OpenRunState run, string id, TaskOutcome outcome, object? output)
    {
        var t = new SubmittedTask(run, -1, id, null!, 0)
        {
            State = Ended,
            DependentsHead = Closed,
            Outcome = outcome,
            Output = output,
            _completed = 1,
        };
        t.Cold.Error = "read from the run store";
        return t;
    }

    /// <summary>The task's id (given, or <c>#N</c> with N its place in submission order).</summary>
    public string Id => _id ??= GeneratedId(Run.IndexBase + Index);

    internal bool HasGivenId => _id is not null && !_id.StartsWith('#');

    internal static string GeneratedId(int index) => "#" + index.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Its place in submission order (0 for the run's first task; a resumed run goes on from its earlier life's count).</summary>
    public int SequenceNumber => Run.IndexBase + Index;

    /// <summary>The task's rarely used fields, made on first use (safe from any thread).</summary>
    internal TaskCold Cold
    {
        get
        {
            var c = Volatile.Read(ref _cold);
            return c ?? Interlocked.CompareExchange(ref _cold, c = new TaskCold(), null) ?? c;
        }
    }

    /// <summary>The task's rarely used fields, or null while nothing needed them.</summary>
    internal TaskCold? ColdOrNull => Volatile.Read(ref _cold);

    /// <summary>True once the task ended.</summary>
    public bool IsEnded => Volatile.Read(ref State) == Ended;

    /// <summary>Completes with what became of the task once it ended.</summary>
    public Task<TaskResult> Completion
    {
        get
        {
            var tcs = Volatile.Read(ref _completion);
            if (tcs is not null) return tcs.Task;
            tcs = new TaskCompletionSource<TaskResult>(TaskCreationOptions.RunContinuationsAsynchronously);
            var won = Interlocked.CompareExchange(ref _completion, tcs, null) ?? tcs;
            // The task may have ended before anyone asked: then nobody else completes it. (Not
            // State: a task is Ended before the run's bookkeeping of it — journal, observers — is done.)
            if (Volatile.Read(ref _completed) != 0) won.TrySetResult(ToResult());
            return won.Task;
        }
    }

    /// <summary>Cancels the task (see <see cref="OpenRun.Cancel(string)"/>); false when it had ended.</summary>
    public bool Cancel() => Run.CancelTask(this);

    /// <summary>
    /// Changes the task before it starts: its <paramref name="priority"/>, its arguments
    /// (<paramref name="args"/>, a JSON object that replaces them, validated and routed again as a
    /// new submission's are). Only a task still waiting for its dependencies can change: a ready one
    /// may start at any moment.
    /// </summary>
    /// <exception cref="TaskRefusedException">The arguments are not valid for its handler (every problem listed).</exception>
    /// <exception cref="InvalidOperationException">The task no longer waits (the message says what it does instead).</exception>
    public void Change(TaskPriority? priority = null, System.Text.Json.JsonElement? args = null) => Run.ChangeTask(this, priority, args);

    /// <summary>Called once as the task ends (after <see cref="State"/> became <see cref="Ended"/>, with a full fence).</summary>
    internal void Completed()
    {
        Interlocked.Exchange(ref _completed, 1);   // a full fence: a getter that made its source after this sees the flag, or this sees its source
        Volatile.Read(ref _completion)?.TrySetResult(ToResult());
    }

    internal TaskResult ToResult()
    {
        bool ran = AttemptCount > 0;
        string? layer = ran ? Run.LayerNames[Route == RouteTable.Inline ? RouteTable.Local : Route] : null;
        var cold = ColdOrNull;
        return new TaskResult(Id, Outcome, Outcome == TaskOutcome.Succeeded ? Output : null, layer, AttemptCount,
            cold?.Confidence, cold?.Error, Duration);
    }
}

/// <summary>
/// What few tasks of an open run need (kept apart, so that the many that need none are small: a
/// task is allocated per submission, and copied between caches as it goes from producer to worker).
/// </summary>
internal sealed class TaskCold
{
    public SubmittedTask? SkipCause;           // the dependency that did not succeed (its own cause when it was skipped)
    public List<SubmittedTask>? Inputs;        // data dependencies, in order; dropped when the task ends
    public CancellationTokenSource? Cts;       // made when a layer attempt asks for its token
    public double? Confidence;                 // reported by the handler on the last attempt
    public string? Error;                      // why it did not succeed, or a note on a success
    public string? CacheKey;                   // a cache-enabled task that ran: its key, to keep its output under
    public int HoldsPools;                     // 1 while it holds its resource pools (cleared with an exchange: released once)
    public string? SpecHash;                   // with a store and an id of its own: what makes a resubmission the same task
}
