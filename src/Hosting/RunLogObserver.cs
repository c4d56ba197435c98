using Microsoft.Extensions.Logging;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Hosting;

/// <summary>
/// What a run logs: its start and end (information; a failed or cancelled end as a warning), each
/// task that failed or timed out for good (warnings, the first 100 of a run, then how many more),
/// retries (debug) and escalations (information). Hears of attempts only when they are not plain
/// successes: nothing per tiny task.
/// </summary>
public sealed partial class RunLogObserver(ILogger logger) : IRunObserver, IOpenRunObserver
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

    /// <inheritdoc />
    public void OnOpenRunStarted(string runId, string name, IReadOnlyList<string> layers)
    {
        _runId = runId;
        OpenRunStarted(logger, runId, Safe(name), string.Join(",", layers));
    }

    /// <inheritdoc />
    public void OnOpenTaskEnded(string runId, int sequence, TaskMesh.Engine.TaskResult task, double cost, int retries)
    {
        if (task.Outcome is not (TaskOutcome.Failed or TaskOutcome.TimedOut)) return;
        int n = Interlocked.Increment(ref _failures);
        if (n <= MaxFailuresLogged) TaskFailed(logger, runId, Safe(task.Id), task.Layer ?? "none", task.Attempts, task.OutcomeName, Safe(task.Error));
    }

    /// <inheritdoc />
    public void OnOpenRunEscalated(string runId, EscalationRecord e) => OnEscalated(e);

    /// <inheritdoc />
    public void OnOpenRunEnded(TaskMesh.Engine.OpenRunResult r)
    {
        if (_failures > MaxFailuresLogged) MoreFailures(logger, r.RunId, _failures - MaxFailuresLogged);
        RunEnded(logger, r.Status == RunStatus.Succeeded ? LogLevel.Information : LogLevel.Warning, r.RunId, r.Status.ToString().ToLowerInvariant(),
            (int)Math.Min(int.MaxValue, r.Succeeded), (int)Math.Min(int.MaxValue, r.Failed), (int)Math.Min(int.MaxValue, r.Skipped), (int)Math.Min(int.MaxValue, r.Cancelled),
            Math.Round(r.Duration.TotalMilliseconds, 3));
    }

    [LoggerMessage(EventId = 7, Level = LogLevel.Information, Message = "open run {RunId} '{Name}' opened: layers {Layers}")]
    private static partial void OpenRunStarted(ILogger logger, string runId, string name, string layers);

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
