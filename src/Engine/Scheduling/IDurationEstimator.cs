namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// A learned estimate of how long a task runs on a layer (the learning component's duration
/// model): the last of a task's estimates, after its own <c>estimateMs</c> and its handler's.
/// </summary>
public interface IDurationEstimator
{
    /// <summary>The task's expected duration on <paramref name="layer"/> in ms, or null when there is no model for it.</summary>
    double? EstimateMs(Graph.PreparedGraph graph, int task, string layer);
}
