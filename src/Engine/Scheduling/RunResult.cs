using System.Text.Json;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling;

/// <summary>How a run ended.</summary>
public enum RunStatus
{
    Succeeded,
    /// <summary>At least one task failed or timed out.</summary>
    Failed,
    Cancelled,
}

/// <summary>The end state of one task.</summary>
public sealed record TaskResult(string Id, TaskOutcome Outcome, string? Layer, int Attempts, double? DurationMs, string? Error, string? SkippedBecause)
{
    public string Status => Outcome switch
    {
        TaskOutcome.Succeeded => "succeeded",
        TaskOutcome.Failed => "failed",
        TaskOutcome.TimedOut => "timed_out",
        TaskOutcome.Skipped => "skipped",
        _ => "cancelled",
    };
}

/// <summary>The summary of a finished run.</summary>
public sealed class RunResult
{
    private EscalationRecord[]? _escalationList;

    private readonly RunState _run;

    private RunResult(RunState run)
    {
        _run = run;
        var g = run.Graph;
        for (int i = 0; i < g.Count; i++)
        {
            switch (run.OutcomeOf(i))
            {
                case TaskOutcome.Succeeded: Succeeded++; break;
                case TaskOutcome.Failed: Failed++; break;
                case TaskOutcome.TimedOut: Failed++; TimedOut++; break;
                case TaskOutcome.Skipped: Skipped++; break;
                default: Cancelled++; break;
            }
        }
        Status = run.Cancelled ? RunStatus.Cancelled : Failed > 0 ? RunStatus.Failed : RunStatus.Succeeded;
        Wall = run.Elapsed;
    }

    internal static RunResult From(RunState run) => new(run);

    public string RunId => _run.RunId;

    internal long SteadyStateAllocatedBytes => _run.SteadyStateAllocatedBytes;
    public TaskGraph Graph => _run.Graph;
    public RunStatus Status { get; }
    public int Total => _run.Graph.Count;
    public int Succeeded { get; }
    /// <summary>Failed tasks, timed-out ones included.</summary>
    public int Failed { get; }
    public int TimedOut { get; }
    public int Skipped { get; }
    public int Cancelled { get; }
    public TimeSpan Wall { get; }

    /// <summary>Every escalation recorded during the run, in order.</summary>
    public IReadOnlyList<EscalationRecord> Escalations => _escalationList ??= _run.Escalations.ToArray();

    public double TasksPerSecond => Wall.TotalSeconds > 0 ? (Succeeded + Failed + Skipped) / Wall.TotalSeconds : 0;

    /// <summary>Whether per-task durations and errors were kept (see <see cref="RunOptions.CollectTaskDetails"/>).</summary>
    public bool HasTaskDetails => _run.HasDetails;

    /// <summary>Critical path length by the handlers' estimates, in ms (set by the engine).</summary>
    public double CriticalPathMs { get; internal set; }

    public TaskOutcome OutcomeOf(int index) => _run.OutcomeOf(index);

    /// <summary>The output of a task (kept for tasks with data successors, or for all with <see cref="RunOptions.KeepOutputs"/>).</summary>
    public object? OutputOf(int index) => _run.OutputOf(index);

    public TaskResult TaskResultOf(int index)
    {
        var g = _run.Graph;
        var o = _run.OutcomeOf(index);
        int cause = _run.SkipCauseOf(index);
        return new TaskResult(g.IdOf(index), o, _run.LayerOf(index), _run.AttemptsOf(index),
            o is TaskOutcome.Skipped or TaskOutcome.Cancelled ? null : _run.DurationOf(index),
            _run.ErrorOf(index), o == TaskOutcome.Skipped && cause >= 0 ? g.IdOf(cause) : null);
    }

    /// <summary>Every task's result, in graph order.</summary>
    public IEnumerable<TaskResult> Tasks => Enumerable.Range(0, Total).Select(TaskResultOf);

    /// <summary>Failed and timed-out tasks.</summary>
    public IEnumerable<TaskResult> Failures => Enumerable.Range(0, Total)
        .Where(i => _run.OutcomeOf(i) is TaskOutcome.Failed or TaskOutcome.TimedOut).Select(TaskResultOf);

    /// <summary>Tasks that ran, by layer.</summary>
    public IReadOnlyDictionary<string, int> TasksByLayer
    {
        get
        {
            var d = new SortedDictionary<string, int>(StringComparer.Ordinal);
            foreach (var l in _run.Layers) d[l.Name] = 0;
            for (int i = 0; i < Total; i++)
                if (_run.LayerOf(i) is string l) d[l] = d.GetValueOrDefault(l) + 1;
            return d;
        }
    }

    /// <summary>Cost by layer: the layer's price per second times its tasks' durations (needs task details).</summary>
    public IReadOnlyDictionary<string, double> CostByLayer
    {
        get
        {
            var price = _run.Layers.ToDictionary(l => l.Name, l => l.PricePerSecond);
            var d = new Dictionary<string, double>(StringComparer.Ordinal);
            for (int i = 0; i < Total; i++)
            {
                if (_run.LayerOf(i) is string l && _run.DurationOf(i) is double ms)
                    d[l] = d.GetValueOrDefault(l) + price.GetValueOrDefault(l) * ms / 1000.0;
            }
            return d;
        }
    }

    public string StatusName => Status switch
    {
        RunStatus.Succeeded => "succeeded",
        RunStatus.Failed => "failed",
        _ => "cancelled",
    };

    /// <summary>Writes the summary JSON of DESIGN.md.</summary>
    /// <param name="writer">Destination.</param>
    /// <param name="includeNodes">Write the per-task list (null: only up to 100,000 tasks).</param>
    public void WriteJson(Utf8JsonWriter writer, bool? includeNodes = null)
    {
        writer.WriteStartObject();
        writer.WriteString("run_id", RunId);
        writer.WriteString("graph", Graph.Name);
        writer.WriteString("status", StatusName);
        writer.WriteStartObject("tasks");
        writer.WriteNumber("total", Total);
        writer.WriteNumber("succeeded", Succeeded);
        writer.WriteNumber("failed", Failed);
        writer.WriteNumber("timed_out", TimedOut);
        writer.WriteNumber("skipped", Skipped);
        writer.WriteNumber("cancelled", Cancelled);
        writer.WriteEndObject();
        writer.WriteNumber("wall_ms", Math.Round(Wall.TotalMilliseconds, 3));
        writer.WriteNumber("tasks_per_second", Math.Round(TasksPerSecond, 1));
        writer.WriteNumber("critical_path_ms", Math.Round(CriticalPathMs, 3));
        writer.WriteStartObject("layers");
        var cost = CostByLayer;
        foreach (var (layer, count) in TasksByLayer)
        {
            writer.WriteStartObject(layer);
            writer.WriteNumber("tasks", count);
            writer.WriteNumber("cost", Math.Round(cost.GetValueOrDefault(layer), 6));
            writer.WriteEndObject();
        }
        writer.WriteEndObject();
        writer.WriteNumber("escalations", Escalations.Count);
        if (Escalations.Count > 0)
        {
            writer.WriteStartArray("escalation_log");
            foreach (var e in Escalations)
            {
                writer.WriteStartObject();
                writer.WriteString("task", e.TaskId);
                writer.WriteString("from", e.From);
                writer.WriteString("to", e.To);
                writer.WriteString("trigger", e.Trigger);
                writer.WriteString("reason", e.Reason);
                writer.WriteString("at", e.Timestamp);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        }
        if (includeNodes ?? Total <= RunOptions.DetailsLimit)
        {
            writer.WriteStartArray("nodes");
            for (int i = 0; i < Total; i++)
            {
                var t = TaskResultOf(i);
                writer.WriteStartObject();
                writer.WriteString("id", t.Id);
                writer.WriteString("status", t.Status);
                if (t.Layer is null) writer.WriteNull("layer"); else writer.WriteString("layer", t.Layer);
                writer.WriteNumber("attempts", t.Attempts);
                if (t.DurationMs is double d) writer.WriteNumber("duration_ms", Math.Round(d, 3)); else writer.WriteNull("duration_ms");
                if (t.Error is null) writer.WriteNull("error"); else writer.WriteString("error", t.Error);
                if (t.SkippedBecause is null) writer.WriteNull("skipped_because"); else writer.WriteString("skipped_because", t.SkippedBecause);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        }
        writer.WriteEndObject();
    }
}
