using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// Hears an open run (<see cref="OpenRun"/>) go: its start, each task's end, each escalation, its
/// end. An open run has no graph, so it does not speak <see cref="IRunObserver"/>'s per-index
/// language: it hands over each ended task's <see cref="TaskResult"/>. Observers registered with
/// the engine (<see cref="TaskMeshEngine.AddObserver"/>) that implement this hear every open run;
/// <see cref="OpenRunOptions.Observers"/> adds more for one run. Calls come from the run's threads,
/// concurrently: an observer must be thread-safe and quick.
/// </summary>
public interface IOpenRunObserver
{
    /// <summary>The run opened (or was resumed) with these layers.</summary>
    void OnOpenRunStarted(string runId, string name, IReadOnlyList<string> layers);

    /// <summary>
    /// A task ended; <paramref name="sequence"/> is its place in submission order (<see cref="SubmittedTask.SequenceNumber"/>),
    /// <paramref name="cost"/> its last layer's price × its duration, <paramref name="retries"/> its attempts tried again there.
    /// </summary>
    void OnOpenTaskEnded(string runId, int sequence, TaskResult task, double cost, int retries);

    /// <summary>A task moved to another layer or variant.</summary>
    void OnOpenRunEscalated(string runId, EscalationRecord escalation);

    /// <summary>The run ended.</summary>
    void OnOpenRunEnded(OpenRunResult result);
}
