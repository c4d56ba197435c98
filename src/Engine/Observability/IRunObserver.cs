using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// Watches runs: the run store, the audit trail, metrics, the dashboard and the event stream are
/// observers. The observers of a run are fixed when it starts (<see cref="TaskMeshEngine.Observers"/>
/// plus <see cref="RunOptions.Observers"/>); a run with none does no observer work at all.
/// <para>
/// Calls come from the scheduler's workers and the layers' threads, concurrently: an observer
/// must be thread-safe and quick (hand slow work to a queue of its own). Per task, the calls are
/// ordered: released, then for each attempt started → ended, then ended. An observer that throws
/// is detached for the rest of the run and the fault is kept in <see cref="RunRecord.ObserverFaults"/>.
/// Every method has an empty default, so an observer implements only what it needs.
/// </para>
/// </summary>
public interface IRunObserver
{
    /// <summary>
    /// The calls this observer wants. A run skips, on its hot path, every call no observer wants,
    /// and times inline attempts precisely only when one asks for <see cref="RunObserverInterests.PreciseInlineTiming"/>
    /// (otherwise an inline attempt's duration comes from a millisecond tick count kept in memory by a
    /// clock thread: whole milliseconds, which may count the worker's hand-over from the task it ran
    /// just before, and may err short by the clock thread's lag, about a millisecond on a machine
    /// that is not overloaded).
    /// Read once, right after <see cref="OnRunStarted"/> (so it may depend on the run). Default: everything.
    /// </summary>
    RunObserverInterests Interests => RunObserverInterests.All;

    /// <summary>The run is about to start its first task.</summary>
    void OnRunStarted(RunStart run) { }

    /// <summary>Every predecessor of <paramref name="task"/> ended: it is ready.</summary>
    void OnTaskReleased(int task) { }

    /// <summary>A task was queued for a layer (not called for tasks run inline on a scheduler worker).</summary>
    void OnTaskRouted(int task, in RouteDecision decision) { }

    /// <summary>An attempt of a task starts.</summary>
    void OnAttemptStarted(in AttemptStart attempt) { }

    /// <summary>An attempt ended; <see cref="AttemptResult.Next"/> says what the scheduler does next.</summary>
    void OnAttemptEnded(in AttemptResult result) { }

    /// <summary>A task reached its final outcome (succeeded, failed, timed out or skipped).</summary>
    void OnTaskEnded(in TaskEnd end) { }

    /// <summary>
    /// Tasks reached their final outcomes, for observers that want <see cref="RunObserverInterests.TaskEndedInBatches"/>.
    /// The batch is a view of the engine's buffer: read it during the call, do not keep it.
    /// Default: <see cref="OnTaskEnded"/> for each.
    /// </summary>
    void OnTasksEnded(TaskEndBatch ends)
    {
        for (int i = 0; i < ends.Count; i++) OnTaskEnded(ends[i]);
    }

    /// <summary>A task moved to a more capable layer or variant.</summary>
    void OnEscalated(EscalationRecord escalation) { }

    /// <summary>The run ended; <paramref name="record"/> is its immutable record.</summary>
    void OnRunEnded(RunRecord record) { }
}

/// <summary>The calls an observer wants (see <see cref="IRunObserver.Interests"/>). Runs always call <see cref="IRunObserver.OnRunStarted"/>, <see cref="IRunObserver.OnRunEnded"/> and <see cref="IRunObserver.OnEscalated"/>.</summary>
[Flags]
public enum RunObserverInterests
{
    None = 0,
    TaskReleased = 1,
    TaskRouted = 2,
    AttemptStarted = 4,
    AttemptEnded = 8,
    TaskEnded = 16,
    /// <summary>Inline attempts timed with <see cref="System.Diagnostics.Stopwatch"/> (two clock reads per task) rather than the coarse tick count.</summary>
    PreciseInlineTiming = 32,
    /// <summary>
    /// Attempt ends except the plain success of an inline task (no confidence, no escalation
    /// request): for observers that learn about those from <see cref="IRunObserver.OnTaskEnded"/>
    /// alone, which saves a call per tiny task.
    /// </summary>
    AttemptEndedUnlessPlain = 64,
    /// <summary>
    /// Task ends through <see cref="IRunObserver.OnTasksEnded"/>, in batches, instead of one
    /// <see cref="IRunObserver.OnTaskEnded"/> call per task (an observer asks for one or the other).
    /// A scheduler worker buffers the ends of the tasks it runs and hands them over when it has
    /// gathered 256, when a task of it ran across a millisecond boundary of the coarse clock, when it
    /// hands a task to a layer, and when it goes idle — always before the run's end, and before the
    /// run counts those tasks as done. A task's end then still follows its own attempts, but may
    /// follow events of its successors, and may wait for at most the task the worker runs next.
    /// Ends on layers' threads come at once, one per call. For observers that count or journal every
    /// task: it saves an interface call per tiny task.
    /// </summary>
    TaskEndedInBatches = 128,
    /// <summary>
    /// With <see cref="TaskEndedInBatches"/>: quick plain successes are counted in
    /// <see cref="TaskEndBatch.QuickSuccesses"/> rather than listed — tasks run inline on the
    /// <c>local</c> layer, one attempt, nothing reported (no confidence, no escalation, no output
    /// kept for a data edge, no attempt-end call made for them), timed coarsely at 0 ms, and whose
    /// index is not a multiple of <see cref="TaskEndBatch.ListedEvery"/> (those are always listed,
    /// so an observer can sample by index). Takes effect only when every observer that takes ends
    /// in batches asks for it; an observer that needs each task id (the run store reads outcomes
    /// from the run instead) must not. Saves packing an entry per tiny task.
    /// </summary>
    QuickSuccessesCounted = 256,
    All = TaskReleased | TaskRouted | AttemptStarted | AttemptEnded | TaskEnded | PreciseInlineTiming,
}

/// <summary>What an observer learns when a run starts.</summary>
/// <param name="RunId">The run's id.</param>
/// <param name="Graph">The graph being run (task ids: <see cref="TaskGraph.IdOf"/>).</param>
/// <param name="Layers">The layers the run may use, by name.</param>
/// <param name="StartedAt">When, from the engine's clock.</param>
/// <param name="Clock">The engine's clock, for observers that stamp events.</param>
/// <param name="Cancellation">Fires when the run is cancelled (an observer that waits must stop waiting then).</param>
/// <param name="PricesPerSecond">Each layer's price of one slot-second when the run started, in the order of <paramref name="Layers"/> (null: all free).</param>
public sealed record RunStart(string RunId, TaskGraph Graph, IReadOnlyList<string> Layers, DateTimeOffset StartedAt, TimeProvider Clock, CancellationToken Cancellation,
    IReadOnlyList<double>? PricesPerSecond = null)
{
    /// <summary>The run's progress as it goes (each task's outcome so far, the ready tasks): null when the engine does not offer it.</summary>
    public IRunProgress? Progress { get; init; }

    /// <summary>The price of one slot-second of <paramref name="layer"/> (0 for an unknown or free layer).</summary>
    public double PriceOf(string? layer)
    {
        if (PricesPerSecond is not { } prices || layer is null) return 0;
        for (int i = 0; i < Layers.Count && i < prices.Count; i++)
            if (Layers[i] == layer) return prices[i];
        return 0;
    }
}

/// <summary>The start of one attempt.</summary>
/// <param name="Task">The task's dense index.</param>
/// <param name="Layer">The layer it runs in.</param>
/// <param name="Attempt">1 for the first attempt, 2 for the next, …</param>
public readonly record struct AttemptStart(int Task, string Layer, int Attempt);

/// <summary>The final outcome of one task.</summary>
/// <param name="Task">The task's dense index.</param>
/// <param name="Outcome">Succeeded, failed, timed out or skipped.</param>
/// <param name="Layer">The layer its last attempt ran in (null when skipped).</param>
/// <param name="Attempts">Attempts made.</param>
/// <param name="SkippedBecause">For a skipped task, the index of the failed ancestor; otherwise -1.</param>
/// <param name="Duration">From its first attempt's start to its end (zero when skipped; inline tasks are timed coarsely unless an observer asked for precise timing).</param>
/// <param name="ReusedFrom">Null when the task ran; <c>cache</c> when the result cache answered it; <c>restored</c> when a resumed run took it from the run it resumes.</param>
public readonly record struct TaskEnd(int Task, TaskOutcome Outcome, string? Layer, int Attempts, int SkippedBecause, TimeSpan Duration = default, string? ReusedFrom = null);

/// <summary>
/// Task ends handed over together (see <see cref="RunObserverInterests.TaskEndedInBatches"/>): a
/// view of a worker's buffer of compact entries, each read as a <see cref="TaskEnd"/>. Valid during
/// the call that received it only.
/// </summary>
public readonly ref struct TaskEndBatch
{
    private readonly ReadOnlySpan<PackedTaskEnd> _ends;
    private readonly string[] _layers;

    internal TaskEndBatch(ReadOnlySpan<PackedTaskEnd> ends, string[] layers, string runId, int quickSuccesses = 0)
    {
        _ends = ends;
        _layers = layers;
        RunId = runId;
        QuickSuccesses = quickSuccesses;
    }

    /// <summary>Quick plain successes are listed when their index is a multiple of this (see <see cref="RunObserverInterests.QuickSuccessesCounted"/>).</summary>
    public const int ListedEvery = 1024;

    /// <summary>
    /// Quick plain successes on the <c>local</c> layer that ended with this batch and are not in it
    /// (only when the observers asked: <see cref="RunObserverInterests.QuickSuccessesCounted"/>; else 0).
    /// </summary>
    public int QuickSuccesses { get; }

    /// <summary>The run the tasks belong to (an observer may watch several runs at once).</summary>
    public string RunId { get; }

    /// <summary>Ends in the batch.</summary>
    public int Count => _ends.Length;

    /// <summary>The <paramref name="i"/>th end.</summary>
    public TaskEnd this[int i] => _ends[i].Unpack(_layers);

    /// <summary>The compact entries themselves, for the engine's own observers' hot loops.</summary>
    internal ReadOnlySpan<PackedTaskEnd> Packed => _ends;
}

/// <summary>
/// A task's end as a worker buffers it: 24 bytes and no references (a <see cref="TaskEnd"/> holds
/// two strings, and storing those into a heap buffer costs a GC write barrier each, per task).
/// </summary>
internal readonly struct PackedTaskEnd
{
    /// <summary>The layer index of a task that never ran.</summary>
    public const byte NoLayer = byte.MaxValue;

    public readonly int Task;
    public readonly int SkippedBecause;
    public readonly long DurationTicks;
    public readonly byte Outcome;
    public readonly byte Layer;      // index into the run's layer names, or NoLayer
    public readonly byte Attempts;
    public readonly byte Reused;     // 0 ran, 1 cache, 2 restored
    /// <summary>Its one attempt was a plain inline success that observers of <see cref="RunObserverInterests.AttemptEndedUnlessPlain"/> did not hear of.</summary>
    public readonly bool AttemptUnreported;

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public PackedTaskEnd(int task, TaskOutcome outcome, byte layer, int attempts, int skippedBecause, long durationTicks, string? reusedFrom, bool attemptUnreported = false)
    {
        AttemptUnreported = attemptUnreported;
        Task = task;
        SkippedBecause = skippedBecause;
        DurationTicks = durationTicks;
        Outcome = (byte)outcome;
        Layer = layer;
        Attempts = (byte)Math.Min(attempts, byte.MaxValue);
        Reused = reusedFrom is null ? (byte)0 : reusedFrom == Cache ? (byte)1 : (byte)2;
    }

    public const string Cache = "cache", Restored = "restored";

    public TaskEnd Unpack(string[] layers)
        => new(Task, (TaskOutcome)Outcome, Layer == NoLayer ? null : layers[Layer], Attempts, SkippedBecause,
            new TimeSpan(DurationTicks), Reused == 0 ? null : Reused == 1 ? Cache : Restored);
}
