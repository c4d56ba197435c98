using System.Text.Json;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// The result of a finished run: its immutable <see cref="Record"/>, plus what only lives in this
/// process — the graph object and the outputs kept for data edges (or all, with
/// <see cref="RunOptions.KeepOutputs"/>).
/// </summary>
public sealed class RunResult
{
    private readonly object?[]? _outputs;

    internal RunResult(RunRecord record, TaskGraph graph, object?[]? outputs, long steadyStateAllocatedBytes)
    {
        Record = record;
        Graph = graph;
        _outputs = outputs;
        SteadyStateAllocatedBytes = steadyStateAllocatedBytes;
    }

    /// <summary>The run's immutable record (what a store keeps).</summary>
    public RunRecord Record { get; }

    public string RunId => Record.RunId;

    internal long SteadyStateAllocatedBytes { get; }
    public TaskGraph Graph { get; }
    public RunStatus Status => Record.Status;
    public int Total => Record.Total;
    public int Succeeded => Record.Succeeded;
    /// <summary>Failed tasks, timed-out ones included.</summary>
    public int Failed => Record.Failed;
    public int TimedOut => Record.TimedOut;
    public int Skipped => Record.Skipped;
    public int Cancelled => Record.Cancelled;
    /// <summary>Tasks reused from an earlier run (counted in <see cref="Succeeded"/> too).</summary>
    public int Restored => Record.Restored;
    /// <summary>Tasks answered from the result cache (counted in <see cref="Succeeded"/> too).</summary>
    public int Cached => Record.Cached;
    public TimeSpan Wall => Record.Wall;

    /// <summary>Every escalation recorded during the run, in order.</summary>
    public IReadOnlyList<EscalationRecord> Escalations => Record.Escalations;

    public double TasksPerSecond => Record.TasksPerSecond;

    /// <summary>Whether per-task durations and errors were kept (see <see cref="RunOptions.CollectTaskDetails"/>).</summary>
    public bool HasTaskDetails => Record.HasTaskDetails;

    /// <summary>Critical path length by the handlers' estimates, in ms.</summary>
    public double CriticalPathMs => Record.CriticalPathMs;

    /// <summary>The order ready tasks took free slots in (<c>fifo</c> or <c>critical_path</c>).</summary>
    public string ReadyOrder => Record.ReadyOrder;

    public TaskOutcome OutcomeOf(int index) => Record.OutcomeOf(index);

    /// <summary>The output of a task (kept for tasks with data successors, or for all with <see cref="RunOptions.KeepOutputs"/>).</summary>
    public object? OutputOf(int index) => _outputs?[index];

    public TaskRecord TaskResultOf(int index) => Record.TaskAt(index);

    /// <summary>Every task's result, in graph order.</summary>
    public IEnumerable<TaskRecord> Tasks => Record.Tasks;

    /// <summary>Failed and timed-out tasks.</summary>
    public IEnumerable<TaskRecord> Failures => Record.Failures;

    /// <summary>Tasks that ran, by layer.</summary>
    public IReadOnlyDictionary<string, int> TasksByLayer => Record.Layers.ToDictionary(l => l.Name, l => l.Tasks);

    /// <summary>Cost by layer: the layer's price per second times its tasks' durations (needs task details).</summary>
    public IReadOnlyDictionary<string, double> CostByLayer => Record.Layers.ToDictionary(l => l.Name, l => l.Cost);

    public string StatusName => Record.StatusName;

    /// <summary>Writes the run summary JSON (see <see cref="RunRecord.WriteJson"/>).</summary>
    public void WriteJson(Utf8JsonWriter writer, bool? includeNodes = null) => Record.WriteJson(writer, includeNodes);
}
