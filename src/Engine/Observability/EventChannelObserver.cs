using System.Threading.Channels;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Observability;

/// <summary>What the event stream does when its reader falls behind and the buffer is full.</summary>
public enum EventOverflow
{
    /// <summary>The new event is dropped and counted (<see cref="RunHandle.DroppedEvents"/>); the run never waits for the reader. The default.</summary>
    DropNewest,
    /// <summary>
    /// The thread that raises the event waits for room: nothing is lost, and a slow reader slows the
    /// run down (a reader that stops reading stops the run until it is cancelled; events raised
    /// after the cancellation are dropped and counted).
    /// </summary>
    Wait,
}

/// <summary>
/// The run's event stream (<see cref="RunHandle.Events"/>) as an observer: a bounded channel with
/// one reader. Events carry the task's id and a timestamp from the engine's clock; strings are
/// only formatted because someone asked for the stream.
/// </summary>
internal sealed class EventChannelObserver : IRunObserver
{
    private readonly Channel<RunEvent> _channel;
    private readonly EventOverflow _overflow;
    private TaskGraph? _graph;
    private TimeProvider _clock = TimeProvider.System;
    private CancellationToken _cancellation;
    private long _dropped;

    public EventChannelObserver(int capacity, EventOverflow overflow)
    {
        _overflow = overflow;
        _channel = Channel.CreateBounded<RunEvent>(new BoundedChannelOptions(capacity)
        {
            SingleReader = true,
            FullMode = BoundedChannelFullMode.Wait,
        });
    }

    public ChannelReader<RunEvent> Reader => _channel.Reader;

    /// <summary>Every call but precise timing: events carry the clock's time, not durations.</summary>
    public RunObserverInterests Interests => RunObserverInterests.All & ~RunObserverInterests.PreciseInlineTiming;

    public long Dropped => Interlocked.Read(ref _dropped);

    public void Complete() => _channel.Writer.TryComplete();

    private void Write(RunEventKind kind, int task, string? layer, int attempt, string? message)
    {
        var e = new RunEvent(kind, task, _graph!.IdOf(task), layer, attempt, message, _clock.GetUtcNow());
        if (_channel.Writer.TryWrite(e)) return;
        if (_overflow == EventOverflow.DropNewest)
        {
            Interlocked.Increment(ref _dropped);
            return;
        }
        // Wait for room, or for the run's cancellation.
        try
        {
            while (!_channel.Writer.TryWrite(e))
            {
                if (!_channel.Writer.WaitToWriteAsync(_cancellation).AsTask().GetAwaiter().GetResult()) return;
            }
        }
        catch (OperationCanceledException)
        {
            Interlocked.Increment(ref _dropped);
        }
    }

    public void OnRunStarted(RunStart run)
    {
        _graph = run.Graph;
        _clock = run.Clock;
        _cancellation = run.Cancellation;
    }

    public void OnTaskReleased(int task) => Write(RunEventKind.Released, task, null, 0, null);

    public void OnTaskRouted(int task, in RouteDecision decision) => Write(RunEventKind.Routed, task, decision.Layer, 0, null);

    public void OnAttemptStarted(in AttemptStart attempt) => Write(RunEventKind.Started, attempt.Task, attempt.Layer, attempt.Attempt, null);

    public void OnAttemptEnded(in AttemptResult r)
    {
        var kind = r.Next switch
        {
            AttemptNext.Retry => RunEventKind.Retried,
            AttemptNext.Escalate => (RunEventKind?)null,   // the escalation event says it
            _ => r.Outcome switch
            {
                AttemptOutcome.Succeeded => RunEventKind.Succeeded,
                AttemptOutcome.Failed => RunEventKind.Failed,
                AttemptOutcome.TimedOut => RunEventKind.TimedOut,
                _ => RunEventKind.Cancelled,
            },
        };
        if (kind is { } k) Write(k, r.Task, r.Layer, r.Attempt, r.Error);
    }

    public void OnTaskEnded(in TaskEnd end)
    {
        if (end.Outcome == TaskOutcome.Skipped)
            Write(RunEventKind.Skipped, end.Task, null, 0, $"'{_graph!.IdOf(end.SkippedBecause)}' failed");
    }

    public void OnEscalated(EscalationRecord e)
    {
        Write(RunEventKind.Escalated, e.TaskIndex, e.To, 0, $"{e.Trigger}: {e.From} -> {e.To}: {e.Reason}");
    }
}
