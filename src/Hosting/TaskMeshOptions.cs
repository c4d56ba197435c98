using Microsoft.Extensions.Options;
using TaskMesh.Engine.Configuration;
using TaskMesh.Learning.Routing;

namespace TaskMesh.Hosting;

/// <summary>When runs are routed by the learned router.</summary>
public enum LearnedRouting
{
    /// <summary>When something asks for it: the config's <c>[routing]</c>, an active <c>complexity</c> rule, an objective or a budget for the run, a daily cost limit, or trained models in the store (the default).</summary>
    WhenNeeded,

    /// <summary>Always (its cold-start rules serve until the store has models).</summary>
    Always,

    /// <summary>Never: tasks go to their handler's layer, else <c>local</c>.</summary>
    Never,
}

/// <summary>
/// What the composition root builds a TaskMesh from (<see cref="TaskMeshServiceCollectionExtensions.AddTaskMesh"/>):
/// the configuration (<c>taskmesh.toml</c>, or one made in code), the run store, and how runs are
/// routed. Checked once, when the runtime is first resolved (<see cref="TaskMeshOptionsValidator"/>),
/// with every problem reported together.
/// </summary>
public sealed class TaskMeshOptions
{
    /// <summary>The configuration; every key has a default. Default: <c>new TaskMeshConfig()</c>.</summary>
    public TaskMeshConfig Config { get; set; } = new();

    /// <summary>The run store: a file, or a <c>postgresql://</c> URL; null for none (<see cref="TaskMeshBuilder.AddRunStore"/> sets it). Default: null.</summary>
    public string? StorePath { get; set; }

    /// <summary>Open the store for reading only (reports, <c>predict</c>): nothing is recorded. Default: false.</summary>
    public bool StoreReadOnly { get; set; }

    /// <summary>When runs are routed by the learned router. Default: <see cref="LearnedRouting.WhenNeeded"/>.</summary>
    public LearnedRouting Routing { get; set; } = LearnedRouting.WhenNeeded;

    /// <summary>The objective of the learned router (one of <see cref="Objectives.All"/>), over the config's <c>routing.objective</c>; null: the config's. Default: null.</summary>
    public string? Objective { get; set; }

    /// <summary>Train a new model version after a run when the config's <c>[learning]</c> says one is due. Default: true.</summary>
    public bool TrainAfterRuns { get; set; } = true;
}

/// <summary>Checks <see cref="TaskMeshOptions"/> once, reporting every problem together.</summary>
public sealed class TaskMeshOptionsValidator : IValidateOptions<TaskMeshOptions>
{
    public ValidateOptionsResult Validate(string? name, TaskMeshOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var problems = new List<string>();
        if (options.Config is null) problems.Add("Config must be set (new TaskMeshConfig() for the defaults)");
        if (options.StorePath is { } path && string.IsNullOrWhiteSpace(path)) problems.Add("the store path is empty (StorePath): give a file name or a postgresql:// URL, or none for no store");
        if (options.Objective is { } o && !Objectives.All.Contains(o)) problems.Add($"Objective '{o}' is not one of {string.Join(", ", Objectives.All)}");
        if (!Enum.IsDefined(options.Routing)) problems.Add($"Routing {(int)options.Routing} is not a LearnedRouting value");
        if (options.Config is { } c)
        {
            if (!Objectives.All.Contains(c.RoutingObjective)) problems.Add($"Config.RoutingObjective '{c.RoutingObjective}' is not one of {string.Join(", ", Objectives.All)}");
            if (c.MaxParallelTasks < 1) problems.Add($"Config.MaxParallelTasks is {c.MaxParallelTasks}; it must be at least 1");
            if (c.RoutingDailyCostLimit is double limit && !(limit >= 0)) problems.Add($"Config.RoutingDailyCostLimit is {limit}; it must be 0 or more");
            if (c.StoreLockTimeoutSeconds is < 1 or > 86_400 || double.IsNaN(c.StoreLockTimeoutSeconds)) problems.Add($"Config.StoreLockTimeoutSeconds is {c.StoreLockTimeoutSeconds}; it must be between 1 and 86400");
            if (c.Journal.Problem() is { } journal) problems.Add($"Config.Journal: {journal}");
        }
        return problems.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(problems);
    }
}
