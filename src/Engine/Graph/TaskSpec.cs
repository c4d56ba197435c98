using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// The optional settings of one task. Most tasks of a large graph set none of them, so the
/// graph keeps a reference per task and leaves it null: a million plain tasks cost nothing here.
/// </summary>
public sealed class TaskSpec
{
    /// <summary>Handler arguments as given (an object), or <c>default</c> when none.</summary>
    public JsonElement Args { get; set; }
    public double? TimeoutSeconds { get; set; }
    public int? Retries { get; set; }
    /// <summary>Forced layer (<c>local</c>, <c>cluster</c>, <c>quantum</c>) or null/<c>auto</c>.</summary>
    public string? Layer { get; set; }
    public double? MinConfidence { get; set; }
    /// <summary>How long the task is expected to run, in ms (<c>estimateMs</c>): first of its estimates, before its handler's and a learned model's; it orders ready tasks by critical path.</summary>
    public double? EstimateMs { get; set; }
    public string[]? Uses { get; set; }
    public string[]? Tags { get; set; }
    /// <summary>Capability tags the task needs (e.g. <c>gpu</c>): only layers that have them all run it.</summary>
    public string[]? Requires { get; set; }
    /// <summary>Reuse a stored successful execution with the same handler, version, arguments and inputs (needs a cacheable handler and a task cache).</summary>
    public bool? Cache { get; set; }

    internal TaskSpec Clone() => (TaskSpec)MemberwiseClone();

    /// <summary>True when arguments are the only option set.</summary>
    internal bool SetsArgumentsOnly => TimeoutSeconds is null && Retries is null && Layer is null && MinConfidence is null && EstimateMs is null
        && Uses is null && Tags is null && Requires is null && Cache is null;
}

/// <summary>Graph-wide defaults that tasks inherit unless they set their own value.</summary>
public sealed class GraphDefaults
{
    public double? TimeoutSeconds { get; set; }
    public int? Retries { get; set; }
    public string? Layer { get; set; }
    /// <summary>The <c>cache</c> of tasks that set none.</summary>
    public bool? Cache { get; set; }

    internal GraphDefaults Clone() => (GraphDefaults)MemberwiseClone();
}
