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

/// <summary>The end state of one task, as kept in its run's record.</summary>
/// <param name="Index">The task's dense index.</param>
/// <param name="Id">The task's id.</param>
/// <param name="Handler">The task's handler.</param>
/// <param name="Outcome">How it ended.</param>
/// <param name="InitialLayer">The layer it was first routed to (null when it never ran).</param>
/// <param name="Layer">The layer its last attempt ran in (null when it never ran).</param>
/// <param name="Attempts">Attempts made.</param>
/// <param name="DurationMs">From its first attempt's start to its end (with task details; null otherwise or when it never ran).</param>
/// <param name="StartedAtMs">When its first attempt started, in ms from the run's start (with task details).</param>
/// <param name="Error">Why it failed, or a note on a result kept after a failed escalation.</param>
/// <param name="SkippedBecause">For a skipped task, the id of the failed ancestor.</param>
/// <param name="Escalations">How many times it escalated.</param>
/// <param name="OutputSummary">A short summary of its output (layer tasks, with task details).</param>
public sealed record TaskRecord(
    int Index, string Id, string Handler, TaskOutcome Outcome, string? InitialLayer, string? Layer, int Attempts,
    double? DurationMs, double? StartedAtMs, string? Error, string? SkippedBecause, int Escalations, string? OutputSummary)
{
    /// <summary>The outcome as the summary JSON spells it.</summary>
    public string Status => Outcome switch
    {
        TaskOutcome.Succeeded => "succeeded",
        TaskOutcome.Failed => "failed",
        TaskOutcome.TimedOut => "timed_out",
        TaskOutcome.Skipped => "skipped",
        _ => "cancelled",
    };
}

/// <summary>One layer's share of a run.</summary>
/// <param name="Name">The layer's name.</param>
/// <param name="Tasks">Tasks whose last attempt ran there.</param>
/// <param name="Cost">Price per second × those tasks' durations (0 without task details).</param>
/// <param name="PricePerSecond">The layer's price when the run started.</param>
public sealed record LayerRecord(string Name, int Tasks, double Cost, double PricePerSecond)
{
    /// <summary>Of <see cref="Tasks"/>, those that succeeded.</summary>
    public int Succeeded { get; init; }

    /// <summary>Of <see cref="Tasks"/>, those that failed or timed out.</summary>
    public int Failed { get; init; }

    /// <summary>The durations of <see cref="Tasks"/>, summed (0 without task details).</summary>
    public double DurationMs { get; init; }
}

/// <summary>
/// The immutable record of a finished run: what a store persists, what is sent to a client, what
/// the summary JSON and <see cref="RunResult"/> are built from. Per-task records are materialised
/// on demand from columns the run handed over when it ended (a million tasks are a few arrays,
/// not a million objects); nothing writes those columns afterwards.
/// </summary>
public sealed class RunRecord
{
    private readonly TaskGraph _graph;
    private readonly string[] _layerNames;
    private readonly byte[] _outcome;
    private readonly byte[] _attempts;
    private readonly byte[] _route;
    private readonly int[]? _skipCause;
    private readonly float[]? _duration;
    private readonly float[]? _start;
    private readonly string?[]? _errors;
    private readonly string?[]? _summaries;
    private readonly Dictionary<int, byte> _initialRoute;
    private readonly Dictionary<int, int> _escalationCount;

    internal RunRecord(string runId, TaskGraph graph, RunStatus status, DateTimeOffset startedAt, DateTimeOffset endedAt, TimeSpan wall,
        Func<double> criticalPathMs, (string Name, double Price)[] layers, EscalationRecord[] escalations, IReadOnlyList<string> observerFaults, TaskTable tasks, int restored = 0, int cached = 0,
        string readyOrder = ReadyOrders.Fifo)
    {
        ReadyOrder = readyOrder;
        Restored = restored;
        Cached = cached;
        RunId = runId;
        _graph = graph;
        GraphName = graph.Name;
        StartedAt = startedAt;
        EndedAt = endedAt;
        Wall = wall;
        _criticalPath = criticalPathMs;
        Escalations = escalations;
        ObserverFaults = observerFaults;
        _layerNames = layers.Select(l => l.Name).ToArray();
        _outcome = tasks.Outcome;
        _attempts = tasks.Attempts;
        _route = tasks.Route;
        _skipCause = tasks.SkipCause;
        _duration = tasks.DurationMs;
        _start = tasks.StartMs;
        _errors = tasks.Errors;
        _summaries = tasks.OutputSummaries;
        _initialRoute = new();
        _escalationCount = new();
        foreach (var (node, x) in tasks.AllExtras)
        {
            if (x.InitialRoute is byte r) _initialRoute[node] = r;
            if (x.Escalations > 0) _escalationCount[node] = x.Escalations;
            if (x.LeftLayers is { } left) (_leftLayers ??= new())[node] = left.ToArray();
        }

        _prices = layers.Select(l => l.Price).ToArray();
        Status = status;
    }

    private readonly double[] _prices;
    private Tally? _tally;

    /// <summary>Counts by outcome and by layer: one pass over the tasks, made when first asked for (a run of a million tasks does not pay for it until then).</summary>
    private sealed class Tally
    {
        public int Succeeded, Failed, TimedOut, Skipped, Cancelled;
        public LayerRecord[] Layers = [];
    }

    private Dictionary<int, (byte Route, double Ms)[]>? _leftLayers;

    private Tally Counts
    {
        get
        {
            var t = Volatile.Read(ref _tally);
            if (t is not null) return t;
            t = new Tally();
            var count = new int[_layerNames.Length];
            var ok = new int[_layerNames.Length];
            var failed = new int[_layerNames.Length];
            var ms = new double[_layerNames.Length];
            var cost = new double[_layerNames.Length];
            for (int i = 0; i < _outcome.Length; i++)
            {
                switch ((TaskOutcome)_outcome[i])
                {
                    case TaskOutcome.Succeeded: t.Succeeded++; break;
                    case TaskOutcome.Failed: t.Failed++; break;
                    case TaskOutcome.TimedOut: t.Failed++; t.TimedOut++; break;
                    case TaskOutcome.Skipped: t.Skipped++; break;
                    default: t.Cancelled++; break;
                }
                int l = LayerIndexOf(i);
                if (l < 0) continue;
                count[l]++;
                switch ((TaskOutcome)_outcome[i])
                {
                    case TaskOutcome.Succeeded: ok[l]++; break;
                    case TaskOutcome.Failed or TaskOutcome.TimedOut: failed[l]++; break;
                }
                if (_duration is null) continue;
                // A task that moved between layers pays each layer for its own time there; its last
                // layer for the rest.
                double here = _duration[i];
                if (_leftLayers is not null && _leftLayers.TryGetValue(i, out var left))
                    foreach (var (route, spent) in left)
                    {
                        if (route >= _prices.Length) continue;
                        ms[route] += spent;
                        cost[route] += _prices[route] * spent / 1000.0;
                        here -= spent;
                    }
                here = Math.Max(0, here);
                ms[l] += here;
                cost[l] += _prices[l] * here / 1000.0;
            }
            t.Layers = _layerNames.Select((n, l) => new LayerRecord(n, count[l], cost[l], _prices[l]) { Succeeded = ok[l], Failed = failed[l], DurationMs = ms[l] })
                .OrderBy(l => l.Name, StringComparer.Ordinal).ToArray();
            return Interlocked.CompareExchange(ref _tally, t, null) ?? t;
        }
    }

    public string RunId { get; }
    public string GraphName { get; }
    public RunStatus Status { get; }
    public DateTimeOffset StartedAt { get; }
    public DateTimeOffset EndedAt { get; }
    public TimeSpan Wall { get; }
    public int Total => _outcome.Length;
    public int Succeeded => Counts.Succeeded;
    /// <summary>Failed tasks, timed-out ones included.</summary>
    public int Failed => Counts.Failed;
    public int TimedOut => Counts.TimedOut;
    public int Skipped => Counts.Skipped;
    public int Cancelled => Counts.Cancelled;

    /// <summary>Tasks taken as done from an earlier run instead of running (also counted in <see cref="Succeeded"/>).</summary>
    public int Restored { get; }

    /// <summary>Tasks answered from the result cache instead of running (also counted in <see cref="Succeeded"/>).</summary>
    public int Cached { get; }

    /// <summary>The order ready tasks took free slots in: <c>critical_path</c> (by upward rank, on the layers that had more tasks than slots) or <c>fifo</c> (arrival).</summary>
    public string ReadyOrder { get; }

    /// <summary>Critical path length by the tasks' estimates and edge weights, in ms (0 when nothing has an estimate).</summary>
    public double CriticalPathMs
    {
        get
        {
            // Analysed on first use: a run does not wait for it, and a record nobody asks does not pay.
            if (Volatile.Read(ref _criticalPathValue) is double[] known) return known[0];
            var computed = new[] { _criticalPath() };
            return (Interlocked.CompareExchange(ref _criticalPathValue, computed, null) ?? computed)[0];
        }
    }

    private readonly Func<double> _criticalPath;
    private double[]? _criticalPathValue;

    /// <summary>
    /// The path that set the run's makespan, as the run measured it (with task details; null
    /// without, or when no task ran): the task that ended last, then back through, at each task,
    /// the predecessor that ended last — the one it waited for longest — to a task that waited for
    /// none that ran. Task indexes, first to last. Beside <see cref="CriticalPathMs"/> (by the
    /// estimates, before the run) it says which chain the run actually waited on.
    /// </summary>
    public IReadOnlyList<int>? MeasuredCriticalPath
    {
        get
        {
            // Found on first use, as the estimated one: a record nobody asks does not pay.
            var known = Volatile.Read(ref _measured);
            if (known is null)
            {
                var computed = MeasurePath();
                known = Interlocked.CompareExchange(ref _measured, computed, null) ?? computed;
            }
            return known.Path;
        }
    }

    /// <summary>From the start of <see cref="MeasuredCriticalPath"/>'s first task to the end of its last, in ms (null without it).</summary>
    public double? MeasuredCriticalPathMs
        => MeasuredCriticalPath is { Count: > 0 } path ? _start![path[^1]] + (double)_duration![path[^1]] - _start[path[0]] : null;

    private sealed record MeasuredPath(int[]? Path);
    private MeasuredPath? _measured;

    private MeasuredPath MeasurePath()
    {
        if (_start is null || _duration is null) return new MeasuredPath(null);
        int n = _graph.Count, last = -1;
        var end = new double[n];
        for (int i = 0; i < n; i++)
        {
            end[i] = LayerIndexOf(i) >= 0 ? _start[i] + _duration[i] : double.NaN;   // NaN: skipped, or cancelled before it started
            if (!double.IsNaN(end[i]) && (last < 0 || end[i] > end[last])) last = i;
        }
        if (last < 0) return new MeasuredPath(null);
        var path = new List<int>();
        for (int i = last; i >= 0;)
        {
            path.Add(i);
            int waitedFor = -1;
            foreach (int p in _graph.PredecessorsOf(i))
                if (!double.IsNaN(end[p]) && (waitedFor < 0 || end[p] > end[waitedFor])) waitedFor = p;
            i = waitedFor;
        }
        path.Reverse();
        return new MeasuredPath(path.ToArray());
    }

    /// <summary>Each layer of the run, by name: tasks and cost.</summary>
    public IReadOnlyList<LayerRecord> Layers => Counts.Layers;

    /// <summary>Every escalation, in the order they happened.</summary>
    public IReadOnlyList<EscalationRecord> Escalations { get; }

    /// <summary>Observers detached because they threw, one line each.</summary>
    public IReadOnlyList<string> ObserverFaults { get; }

    /// <summary>Whether per-task durations, start times and errors were kept.</summary>
    public bool HasTaskDetails => _duration is not null;

    public string StatusName => Status switch
    {
        RunStatus.Succeeded => "succeeded",
        RunStatus.Failed => "failed",
        _ => "cancelled",
    };

    public double TasksPerSecond => Wall.TotalSeconds > 0 ? (Succeeded + Failed + Skipped) / Wall.TotalSeconds : 0;

    public TaskOutcome OutcomeOf(int index) => (TaskOutcome)_outcome[index];

    private int LayerIndexOf(int i)
    {
        var o = (TaskOutcome)_outcome[i];
        if (o is TaskOutcome.Skipped || o is TaskOutcome.Cancelled && _attempts[i] == 0) return -1;
        return _route[i] == RouteTable.Inline ? RouteTable.Local : _route[i];
    }

    /// <summary>The record of task <paramref name="index"/>.</summary>
    public TaskRecord TaskAt(int index)
    {
        var o = (TaskOutcome)_outcome[index];
        int layer = LayerIndexOf(index);
        int cause = _skipCause is null ? -1 : TaskTable.DecodeCause(_skipCause[index]);
        string? initial = layer < 0 ? null : _initialRoute.TryGetValue(index, out byte r) ? _layerNames[r] : _layerNames[layer];
        int attempts = _attempts[index] == 0 && o == TaskOutcome.Succeeded ? 1 : _attempts[index];
        bool ran = layer >= 0;
        return new TaskRecord(index, _graph.IdOf(index), _graph.HandlerOfTask(index), o, initial, ran ? _layerNames[layer] : null, attempts,
            ran && _duration is not null ? _duration[index] : null,
            ran && _start is not null ? _start[index] : null,
            _errors?[index], o == TaskOutcome.Skipped && cause >= 0 ? _graph.IdOf(cause) : null,
            _escalationCount.GetValueOrDefault(index), _summaries?[index]);
    }

    /// <summary>Every task's record, in graph order.</summary>
    public IEnumerable<TaskRecord> Tasks => Enumerable.Range(0, Total).Select(TaskAt);

    /// <summary>Failed and timed-out tasks.</summary>
    public IEnumerable<TaskRecord> Failures => Enumerable.Range(0, Total)
        .Where(i => OutcomeOf(i) is TaskOutcome.Failed or TaskOutcome.TimedOut).Select(TaskAt);

    /// <summary>Writes the run summary JSON (<c>taskmesh run --json</c>; README, "The command").</summary>
    /// <param name="writer">Destination.</param>
    /// <param name="includeNodes">Write the per-task list (null: only up to 100,000 tasks).</param>
    public void WriteJson(Utf8JsonWriter writer, bool? includeNodes = null)
    {
        writer.WriteStartObject();
        writer.WriteString("run_id", RunId);
        writer.WriteString("graph", GraphName);
        writer.WriteString("status", StatusName);
        writer.WriteString("started_at", StartedAt);
        writer.WriteString("ended_at", EndedAt);
        writer.WriteStartObject("tasks");
        writer.WriteNumber("total", Total);
        writer.WriteNumber("succeeded", Succeeded);
        writer.WriteNumber("failed", Failed);
        writer.WriteNumber("timed_out", TimedOut);
        writer.WriteNumber("skipped", Skipped);
        writer.WriteNumber("cancelled", Cancelled);
        writer.WriteNumber("restored", Restored);
        writer.WriteNumber("cached", Cached);
        writer.WriteEndObject();
        writer.WriteNumber("wall_ms", Math.Round(Wall.TotalMilliseconds, 3));
        writer.WriteNumber("tasks_per_second", Math.Round(TasksPerSecond, 1));
        writer.WriteNumber("critical_path_ms", Math.Round(CriticalPathMs, 3));
        if (MeasuredCriticalPathMs is double measured) writer.WriteNumber("critical_path_measured_ms", Math.Round(measured, 3));
        writer.WriteString("ready_order", ReadyOrder);
        writer.WriteStartObject("layers");
        foreach (var l in Layers)
        {
            writer.WriteStartObject(l.Name);
            writer.WriteNumber("tasks", l.Tasks);
            writer.WriteNumber("cost", Math.Round(l.Cost, 6));
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
                if (e.PreviousConfidence is double c) writer.WriteNumber("previous_confidence", c);
                writer.WriteString("at", e.Timestamp);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        }
        if (ObserverFaults.Count > 0)
        {
            writer.WriteStartArray("observer_faults");
            foreach (var f in ObserverFaults) writer.WriteStringValue(f);
            writer.WriteEndArray();
        }
        if (includeNodes ?? Total <= RunOptions.DetailsLimit)
        {
            writer.WriteStartArray("nodes");
            for (int i = 0; i < Total; i++)
            {
                var t = TaskAt(i);
                writer.WriteStartObject();
                writer.WriteString("id", t.Id);
                writer.WriteString("status", t.Status);
                if (t.Layer is null) writer.WriteNull("layer"); else writer.WriteString("layer", t.Layer);
                if (t.InitialLayer is string il && il != t.Layer) writer.WriteString("initial_layer", il);
                writer.WriteNumber("attempts", t.Attempts);
                if (t.DurationMs is double d) writer.WriteNumber("duration_ms", Math.Round(d, 3)); else writer.WriteNull("duration_ms");
                if (t.StartedAtMs is double s) writer.WriteNumber("started_ms", Math.Round(s, 3));
                if (t.Error is null) writer.WriteNull("error"); else writer.WriteString("error", t.Error);
                if (t.SkippedBecause is null) writer.WriteNull("skipped_because"); else writer.WriteString("skipped_because", t.SkippedBecause);
                if (t.Escalations > 0) writer.WriteNumber("escalations", t.Escalations);
                if (t.OutputSummary is string os) writer.WriteString("output_summary", os);
                writer.WriteEndObject();
            }
            writer.WriteEndArray();
        }
        writer.WriteEndObject();
    }
}
