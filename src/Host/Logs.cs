using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Host;

/// <summary>
/// Structured logs through Microsoft.Extensions.Logging, on standard error: one line per entry as
/// text, or one JSON object per line (<c>--log-format json</c>: <c>Timestamp</c>, <c>EventId</c>,
/// <c>LogLevel</c>, <c>Category</c>, <c>Message</c>, <c>State</c> with the named values).
/// </summary>
internal static class Logs
{
    public static ILoggerFactory Create(string format, string level)
    {
        var min = level switch
        {
            "trace" => LogLevel.Trace,
            "debug" => LogLevel.Debug,
            "information" => LogLevel.Information,
            "warning" => LogLevel.Warning,
            "error" => LogLevel.Error,
            "critical" => LogLevel.Critical,
            _ => LogLevel.None,
        };
        return LoggerFactory.Create(b =>
        {
            b.SetMinimumLevel(min);
            b.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            if (format == "json")
                b.AddJsonConsole(o =>
                {
                    o.JsonWriterOptions = new JsonWriterOptions { Indented = false };
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
            else
                b.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                    o.UseUtcTimestamp = true;
                    o.ColorBehavior = LoggerColorBehavior.Disabled;
                });
        });
    }
}

/// <summary>
/// A text writer for standard error under <c>--log-format json</c>: each line the commands write
/// (an error message, a warning) becomes a JSON object of its own, so the stream stays one JSON
/// object per line.
/// </summary>
internal sealed class JsonLinesWriter(TextWriter inner, string category) : TextWriter
{
    private readonly StringBuilder _line = new();

    public override Encoding Encoding => inner.Encoding;

    public override void Write(char value)
    {
        lock (_line)
        {
            if (value == '\n') Emit();
            else if (value != '\r') _line.Append(value);
        }
    }

    public override void Write(string? value)
    {
        if (value is null) return;
        foreach (char c in value) Write(c);
    }

    public override void Flush()
    {
        lock (_line) if (_line.Length > 0) Emit();
        inner.Flush();
    }

    private void Emit()
    {
        string message = _line.ToString();
        _line.Clear();
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("Timestamp", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
            w.WriteNumber("EventId", 0);
            w.WriteString("LogLevel", message.StartsWith("taskmesh: warning", StringComparison.Ordinal) ? "Warning" : "Error");
            w.WriteString("Category", category);
            w.WriteString("Message", message);
            w.WriteEndObject();
        }
        inner.WriteLine(Encoding.UTF8.GetString(buffer.WrittenSpan));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Flush();
        base.Dispose(disposing);
    }
}

/// <summary>
/// What a run logs: its start and end (information; a failed or cancelled end as a warning), each
/// task that failed or timed out for good (warnings, the first 100 of a run, then how many more),
/// retries (debug) and escalations (information). Hears of attempts only when they are not plain
/// successes: nothing per tiny task.
/// </summary>
internal sealed partial class RunLogger(ILogger logger) : IRunObserver
{
    private const int MaxFailuresLogged = 100;
    private TaskMesh.Engine.Graph.TaskGraph _graph = null!;
    private string _runId = "";
    private int _failures;

    public RunObserverInterests Interests => RunObserverInterests.AttemptEndedUnlessPlain;

    public void OnRunStarted(RunStart run)
    {
        _graph = run.Graph;
        _runId = run.RunId;
        RunStarted(logger, run.RunId, Safe(run.Graph.Name), run.Graph.Count, string.Join(",", run.Layers));
    }

    public void OnAttemptEnded(in AttemptResult r)
    {
        if (r.Succeeded) return;
        if (r.Next == AttemptNext.Retry) { AttemptRetried(logger, _runId, Safe(_graph.IdOf(r.Task)), r.Layer, r.Attempt, Safe(r.Error)); return; }
        if (r.Next != AttemptNext.Complete || r.Outcome == AttemptOutcome.Cancelled) return;
        int n = Interlocked.Increment(ref _failures);
        if (n <= MaxFailuresLogged)
            TaskFailed(logger, _runId, Safe(_graph.IdOf(r.Task)), r.Layer, r.Attempt, r.Outcome == AttemptOutcome.TimedOut ? "timed_out" : "failed", Safe(r.Error));
    }

    public void OnEscalated(EscalationRecord e) => TaskEscalated(logger, _runId, Safe(e.TaskId), e.From, e.To, e.Trigger, Safe(e.Reason));

    // The console logger writes to the terminal itself: user data is escaped before it is logged.
    private static string Safe(string? s) => TaskMesh.Engine.IO.TerminalText.Safe(s);

    public void OnRunEnded(RunRecord record)
    {
        if (_failures > MaxFailuresLogged) MoreFailures(logger, _runId, _failures - MaxFailuresLogged);
        var level = record.Status == RunStatus.Succeeded ? LogLevel.Information : LogLevel.Warning;
        RunEnded(logger, level, record.RunId, record.StatusName, record.Succeeded, record.Failed, record.Skipped, record.Cancelled, Math.Round(record.Wall.TotalMilliseconds, 3));
    }

    [LoggerMessage(EventId = 1, Level = LogLevel.Information, Message = "run {RunId} of '{Graph}' started: {Tasks} tasks, layers {Layers}")]
    private static partial void RunStarted(ILogger logger, string runId, string graph, int tasks, string layers);

    [LoggerMessage(EventId = 2, Message = "run {RunId} ended {Status}: {Succeeded} succeeded, {Failed} failed, {Skipped} skipped, {Cancelled} cancelled in {WallMs} ms")]
    private static partial void RunEnded(ILogger logger, LogLevel level, string runId, string status, int succeeded, int failed, int skipped, int cancelled, double wallMs);

    [LoggerMessage(EventId = 3, Level = LogLevel.Warning, Message = "run {RunId}: task {TaskId} {Outcome} on {Layer} after {Attempts} attempt(s): {Error}")]
    private static partial void TaskFailed(ILogger logger, string runId, string taskId, string layer, int attempts, string outcome, string error);

    [LoggerMessage(EventId = 4, Level = LogLevel.Warning, Message = "run {RunId}: {More} more tasks failed (not logged one by one)")]
    private static partial void MoreFailures(ILogger logger, string runId, int more);

    [LoggerMessage(EventId = 5, Level = LogLevel.Debug, Message = "run {RunId}: task {TaskId} attempt {Attempt} on {Layer} failed and is retried: {Error}")]
    private static partial void AttemptRetried(ILogger logger, string runId, string taskId, string layer, int attempt, string error);

    [LoggerMessage(EventId = 6, Level = LogLevel.Information, Message = "run {RunId}: task {TaskId} escalated from {From} to {To} ({Trigger}): {Reason}")]
    private static partial void TaskEscalated(ILogger logger, string runId, string taskId, string from, string to, string trigger, string reason);
}
