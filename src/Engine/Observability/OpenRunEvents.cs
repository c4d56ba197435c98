using System.Threading.Channels;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// An open run's events (<see cref="OpenRun.Events"/>, with <see cref="OpenRunOptions.EmitEvents"/>):
/// each task's end and each escalation, on a bounded channel that never makes the run wait — past
/// its capacity the newest events are dropped and counted. The channel completes when the run ends.
/// </summary>
internal sealed class OpenRunEvents(int capacity, TimeProvider clock) : IOpenRunObserver
{
    private readonly Channel<RunEvent> _channel = Channel.CreateBounded<RunEvent>(new BoundedChannelOptions(capacity)
    {
        SingleReader = false,
        FullMode = BoundedChannelFullMode.DropWrite,
    });
    private long _dropped;

    public ChannelReader<RunEvent> Reader => _channel.Reader;

    /// <summary>
    /// Whether the run writes task ends and escalations now (the run's end is always written).
    /// Read by the run per task: a consumer with no one to pass them to turns it off and spares the
    /// run the work (<see cref="OpenRun.PublishEvents"/>).
    /// </summary>
    public volatile bool Listening = true;

    /// <summary>A task ended (<paramref name="layer"/>: where its last attempt ran, or null).</summary>
    public void TaskEnded(int sequence, string id, TaskOutcome outcome, string? layer, int attempts, string? error)
    {
        var kind = outcome switch
        {
            TaskOutcome.Succeeded => RunEventKind.Succeeded,
            TaskOutcome.Failed => RunEventKind.Failed,
            TaskOutcome.TimedOut => RunEventKind.TimedOut,
            TaskOutcome.Skipped => RunEventKind.Skipped,
            _ => RunEventKind.Cancelled,
        };
        Publish(new RunEvent(kind, sequence, id, layer, attempts, error, clock.GetUtcNow()));
    }

    public long Dropped => Interlocked.Read(ref _dropped);

    private void Publish(in RunEvent e)
    {
        if (!_channel.Writer.TryWrite(e)) Interlocked.Increment(ref _dropped);
    }

    public void OnOpenRunStarted(string runId, string name, IReadOnlyList<string> layers) { }

    public void OnOpenTaskEnded(string runId, int sequence, TaskResult task, double cost, int retries)
        => TaskEnded(sequence, task.Id, task.Outcome, task.Layer, task.Attempts, task.Error);

    public void OnOpenRunEscalated(string runId, EscalationRecord e)
        => Publish(new RunEvent(RunEventKind.Escalated, e.TaskIndex, e.TaskId, e.To, 0, $"{e.From} → {e.To} ({e.Trigger}): {e.Reason}", e.Timestamp));

    public void OnOpenRunEnded(OpenRunResult result) => _channel.Writer.TryComplete();
}
