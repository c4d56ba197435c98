using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Learning.Features;

namespace TaskMesh.Learning.Models;

/// <summary>
/// The duration models as the engine's last estimate of a task (after its <c>estimateMs</c> and
/// its handler's): the task's features through the duration model of the layer it is routed to.
/// One feature extractor per graph, shared with the router and the recorder when they pass theirs.
/// </summary>
public sealed class LearnedDurationEstimator(TrainedModels models, FeatureExtractor? features = null) : IDurationEstimator
{
    private FeatureExtractor? _features = features;

    public double? EstimateMs(PreparedGraph graph, int task, string layer)
    {
        var f = _features;
        if (f is null || f.Graph != graph) _features = f = new FeatureExtractor(graph);
        return models.PredictDurationMs(layer, f.HandlerOf(task), f.Extract(task));
    }
}
