namespace TaskMesh.Engine.Observability;

/// <summary>
/// What an observer may read of a run while it goes, through the public contract (the engine's own
/// state stays its own): each task's outcome so far, and how many tasks wait on the scheduler's
/// workers. Given to observers in <see cref="RunStart.Progress"/>.
/// </summary>
public interface IRunProgress
{
    /// <summary>
    /// Each task's outcome so far, by task index, as a <see cref="Scheduling.TaskOutcome"/> byte —
    /// 0 (<c>Cancelled</c>) until it ends. A live view, written by the scheduler as tasks end: a
    /// reader sees every end published before its read (the engine writes with full fences).
    /// </summary>
    ReadOnlySpan<byte> Outcomes { get; }

    /// <summary>Tasks ready on the scheduler's workers and not started (for gauges; not exact while the run moves).</summary>
    long ReadyOnWorkers();
}
