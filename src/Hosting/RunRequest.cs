using TaskMesh.Engine.Observability;

namespace TaskMesh.Hosting;

/// <summary>What a caller asks of one run (the command line's <c>run</c>, <c>resume</c> and <c>escalate</c>; later the service's API).</summary>
public sealed record RunRequest
{
    /// <summary>The graph file the graph came from (kept with the run, so that it can be resumed), or null for a graph built in code.</summary>
    public string? GraphPath { get; init; }

    /// <summary>The SHA-256 of the graph file's bytes (<see cref="Engine.Store.RunStore.HashOf"/>), checked when a run is resumed.</summary>
    public string? GraphHash { get; init; }

    /// <summary>The learned router's objective for this run (one of <c>auto</c>, <c>fastest</c>, <c>cheapest</c>); null: the options' or the config's.</summary>
    public string? Objective { get; init; }

    /// <summary>Most this run may cost (the command line's <c>--budget</c>); bounded further by what today's spend leaves of the daily limit. Null: none.</summary>
    public double? Budget { get; init; }

    /// <summary>A stored run this one resumes (an id, a unique prefix, or <c>last</c>): what finished there is reused. Null: a new run.</summary>
    public string? ResumeFrom { get; init; }

    /// <summary>With <see cref="ResumeFrom"/>: a task to run again on another layer (manual escalation), with the tasks that read its output.</summary>
    public (string Task, string Layer, string Reason)? Escalate { get; init; }

    /// <summary>Keep per-task details (null: up to 100,000 tasks).</summary>
    public bool? CollectTaskDetails { get; init; }

    /// <summary>Observers of this run besides the composition's (the recorder, the metrics, the run log).</summary>
    public IReadOnlyList<IRunObserver> Observers { get; init; } = [];
}

/// <summary>A request the runtime cannot carry out (a task or layer that does not exist, a run that cannot be resumed); <see cref="Field"/> names what was wrong.</summary>
public sealed class RunRequestException(string field, string message) : Exception(message)
{
    /// <summary>The request's field at fault: <see cref="RunRequestFields"/>.</summary>
    public string Field { get; } = field;
}

/// <summary>The fields a <see cref="RunRequestException"/> names.</summary>
public static class RunRequestFields
{
    public const string ResumeFrom = "resume";
    public const string EscalateTask = "escalate.task";
    public const string EscalateLayer = "escalate.layer";
    public const string Store = "store";
}
