using System.Threading.Channels;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine;

/// <summary>A run in progress: its events, progress and completion.</summary>
public sealed class RunHandle
{
    private readonly RunState _state;

    internal RunHandle(RunState state, Task<RunResult> completion)
    {
        _state = state;
        Completion = completion;
    }

    public string RunId => _state.RunId;

    /// <summary>The run's events (only with <see cref="RunOptions.EmitEvents"/>; otherwise an empty stream).</summary>
    /// <remarks>The stream is bounded (<see cref="RunOptions.EventCapacity"/>); see <see cref="RunOptions.EventOverflow"/> for what a slow reader costs.</remarks>
    public ChannelReader<RunEvent> Events => _state.Events?.Reader ?? s_empty;

    /// <summary>Events dropped because the reader fell behind (with <see cref="EventOverflow.DropNewest"/>).</summary>
    public long DroppedEvents => _state.Events?.Dropped ?? 0;

    /// <summary>Tasks ended so far (updated in batches while running).</summary>
    public int Completed => _state.Completed;

    public int Failed => _state.FailedSoFar;

    public int Running => _state.Running;

    public int Total => _state.Graph.Count;

    /// <summary>Completes with the summary once every task ended or the run was cancelled.</summary>
    public Task<RunResult> Completion { get; }

    /// <summary>Stops dispatch and cancels running handlers.</summary>
    public void Cancel() => _state.Cancel();

    private static readonly ChannelReader<RunEvent> s_empty = CreateEmpty();

    private static ChannelReader<RunEvent> CreateEmpty()
    {
        var c = Channel.CreateUnbounded<RunEvent>();
        c.Writer.Complete();
        return c.Reader;
    }
}
