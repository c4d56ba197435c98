using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;

namespace TaskMesh.Server;

/// <summary>
/// A run as the API shows it (snake_case JSON, the names of <c>taskmesh run --json</c>): going
/// (its counts so far), finished (the summary <c>run --json</c> writes), or as the store keeps it.
/// </summary>
internal sealed class RunView
{
    private readonly Action<Utf8JsonWriter> _write;

    private RunView(string runId, string status, DateTimeOffset startedAt, Action<Utf8JsonWriter> write)
        => (RunId, Status, StartedAt, _write) = (runId, status, startedAt, write);

    public string RunId { get; }
    public string Status { get; }
    public DateTimeOffset StartedAt { get; }
    public bool Ended => Status is not ("running" or "open");

    public void Write(Utf8JsonWriter w) => _write(w);

    public static RunView Live(RunHandle handle, string graph, DateTimeOffset startedAt) => new(handle.RunId, "running", startedAt, w =>
    {
        w.WriteStartObject();
        w.WriteString("run_id", handle.RunId);
        w.WriteString("graph", graph);
        w.WriteString("status", "running");
        w.WriteString("started_at", startedAt);
        w.WriteStartObject("tasks");
        w.WriteNumber("total", handle.Total);
        w.WriteNumber("ended", handle.Completed);
        w.WriteNumber("failed", handle.Failed);
        w.WriteNumber("running", handle.Running);
        w.WriteEndObject();
        w.WriteEndObject();
    });

    public static RunView Finished(RunResult result) => new(result.RunId, result.StatusName, result.Record.StartedAt, w => result.WriteJson(w, includeNodes: false));

    public static RunView Stored(StoredRun run) => new(run.RunId, run.Status, run.StartedAt, run.WriteJson);
}

/// <summary>A task as the API shows it: how it ended (or that it has not), where it ran, its escalations and audit trail.</summary>
internal sealed class TaskView
{
    private readonly Action<Utf8JsonWriter> _write;

    private TaskView(string status, Action<Utf8JsonWriter> write) => (Status, _write) = (status, write);

    public string Status { get; }

    public void Write(Utf8JsonWriter w) => _write(w);

    public static TaskView Pending(string id, int sequence) => new("pending", w =>
    {
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteNumber("sequence", sequence);
        w.WriteString("status", "pending");
        w.WriteEndObject();
    });

    public static TaskView Of(TaskResult r, int sequence) => new(r.OutcomeName, w =>
    {
        w.WriteStartObject();
        w.WriteString("id", r.Id);
        w.WriteNumber("sequence", sequence);
        w.WriteString("status", r.OutcomeName);
        if (r.Layer is not null) w.WriteString("layer", r.Layer);
        w.WriteNumber("attempts", r.Attempts);
        if (r.Confidence is double c) w.WriteNumber("confidence", c);
        w.WriteNumber("duration_ms", Math.Round(r.Duration.TotalMilliseconds, 3));
        if (r.OutputSummary is string summary) w.WriteString("output_summary", summary);
        if (r.Error is not null) w.WriteString("error", r.Error);
        w.WriteEndObject();
    });

    /// <summary>The fields every view of an ended task starts with (an object opened here).</summary>
    private static void WriteHead(Utf8JsonWriter w, string id, string handler, string status, string? initialLayer, string? layer, int attempts)
    {
        w.WriteStartObject();
        w.WriteString("id", id);
        w.WriteString("handler", handler);
        w.WriteString("status", status);
        if (initialLayer is not null) w.WriteString("initial_layer", initialLayer);
        if (layer is not null) w.WriteString("layer", layer);
        w.WriteNumber("attempts", attempts);
    }

    public static TaskView Of(TaskRecord t, IReadOnlyList<EscalationRecord> escalations, JsonElement? args = null) => new(t.Status, w =>
    {
        WriteHead(w, t.Id, t.Handler, t.Status, t.InitialLayer, t.Layer, t.Attempts);
        WriteArgs(w, args);
        if (t.DurationMs is double d) w.WriteNumber("duration_ms", Math.Round(d, 3));
        if (t.OutputSummary is not null) w.WriteString("output_summary", t.OutputSummary);
        if (t.Error is not null) w.WriteString("error", t.Error);
        if (t.SkippedBecause is not null) w.WriteString("skipped_because", t.SkippedBecause);
        w.WriteStartArray("escalations");
        foreach (var e in escalations) WriteEscalation(w, e.From, e.To, e.Trigger, e.Reason, e.PreviousConfidence, rule: null, at: e.Timestamp);
        w.WriteEndArray();
        w.WriteEndObject();
    });

    /// <summary>The task's arguments as its graph gave them, when the service still has the graph.</summary>
    private static void WriteArgs(Utf8JsonWriter w, JsonElement? args)
    {
        if (args is not { ValueKind: not JsonValueKind.Undefined } a) return;
        w.WritePropertyName("args");
        a.WriteTo(w);
    }

    private static void WriteEscalation(Utf8JsonWriter w, string from, string to, string trigger, string reason, double? previousConfidence, string? rule, DateTimeOffset? at)
    {
        w.WriteStartObject();
        w.WriteString("from", from);
        w.WriteString("to", to);
        w.WriteString("trigger", trigger);
        w.WriteString("reason", reason);
        if (previousConfidence is double pc) w.WriteNumber("previous_confidence", pc);
        if (rule is not null) w.WriteString("rule", rule);
        if (at is { } when) w.WriteString("at", when);
        w.WriteEndObject();
    }

    public static TaskView Of(StoredTask t, IReadOnlyList<StoredEscalation> escalations, IReadOnlyList<AuditRecord> audit, JsonElement? args = null) => new(t.Status, w =>
    {
        WriteHead(w, t.Id, t.Handler, t.Status, t.InitialLayer, t.Layer, t.Attempts);
        WriteArgs(w, args);
        if (t.Confidence is double c) w.WriteNumber("confidence", c);
        if (t.DurationMs is double d) w.WriteNumber("duration_ms", Math.Round(d, 3));
        if (t.Cost is double cost) w.WriteNumber("cost", Math.Round(cost, 6));
        if (t.OutputSummary is not null) w.WriteString("output_summary", t.OutputSummary);
        if (t.Error is not null) w.WriteString("error", t.Error);
        if (t.SkippedBecause is not null) w.WriteString("skipped_because", t.SkippedBecause);
        w.WriteStartArray("escalations");
        foreach (var e in escalations) WriteEscalation(w, e.From, e.To, e.Trigger, e.Reason, e.PreviousConfidence, e.Rule, at: null);
        w.WriteEndArray();
        w.WriteStartArray("audit");
        foreach (var a in audit) JsonParts.WriteAudit(w, a, withTask: false);
        w.WriteEndArray();
        w.WriteEndObject();
    });
}

/// <summary>Pieces of JSON more than one view writes.</summary>
internal static class JsonParts
{
    /// <summary>A JSON text the store kept (an audit detail, a model's metrics) as the property's value; anything not JSON is passed as a string.</summary>
    public static void WriteStoredJson(Utf8JsonWriter w, string name, string json)
    {
        w.WritePropertyName(name);
        try
        {
            using var doc = JsonDocument.Parse(json);
            doc.RootElement.WriteTo(w);
        }
        catch (JsonException)
        {
            w.WriteStringValue(json);
        }
    }

    /// <summary>A row of the audit trail: category, time, (task,) detail.</summary>
    public static void WriteAudit(Utf8JsonWriter w, AuditRecord a, bool withTask)
    {
        w.WriteStartObject();
        w.WriteString("category", a.Category);
        w.WriteString("at", a.Timestamp);
        if (withTask && a.TaskId is not null) w.WriteString("task_id", a.TaskId);
        WriteStoredJson(w, "detail", a.Detail);
        w.WriteEndObject();
    }

    /// <summary>A layer's figures of a day: requests, succeeded, failed, success rate, mean duration and confidence, cost.</summary>
    public static void WriteFigures(Utf8JsonWriter w, DailyLayerFigures d)
    {
        w.WriteNumber("requests", d.Requests);
        w.WriteNumber("succeeded", d.Successes);
        w.WriteNumber("failed", d.Failures);
        if (d.Requests > 0) w.WriteNumber("success_rate", Math.Round((double)d.Successes / d.Requests, 4));
        if (d.Timed > 0) w.WriteNumber("mean_duration_ms", Math.Round(d.TotalDurationMs / d.Timed, 3));
        w.WriteNumber("timed", d.Timed);
        w.WriteNumber("total_duration_ms", Math.Round(d.TotalDurationMs, 3));
        if (d.ConfidenceCount > 0) w.WriteNumber("mean_confidence", Math.Round(d.ConfidenceSum / d.ConfidenceCount, 4));
        w.WriteNumber("cost", Math.Round(d.Cost, 6));
    }
}
