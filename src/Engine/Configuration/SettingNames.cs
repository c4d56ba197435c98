namespace TaskMesh.Engine.Configuration;

/// <summary>The learned router's objectives (<c>routing.objective</c>, <c>--objective</c>): defined here once, read by the config, the command line and the router.</summary>
public static class RoutingObjectives
{
    /// <summary>The cheapest layer whose predicted confidence meets the task's <c>minConfidence</c> (default 0.70).</summary>
    public const string Auto = "auto";

    /// <summary>The layer that finishes first: its queue's wait plus the predicted duration.</summary>
    public const string Fastest = "fastest";

    /// <summary>The layer of least expected cost — its own, and for a likely failure the escalation it leads to — whatever its confidence.</summary>
    public const string Cheapest = "cheapest";

    /// <summary>Every objective.</summary>
    public static readonly IReadOnlyList<string> All = [Auto, Fastest, Cheapest];
}

/// <summary>How long work is shown (<c>general.progress</c>, <c>--progress</c>).</summary>
public static class ProgressModes
{
    /// <summary>A bar on a terminal, lines otherwise.</summary>
    public const string Auto = "auto";

    /// <summary>A live progress bar.</summary>
    public const string Bar = "bar";

    /// <summary>A plain line a second.</summary>
    public const string Lines = "lines";

    /// <summary>Nothing.</summary>
    public const string None = "none";

    /// <summary>Every mode.</summary>
    public static readonly IReadOnlyList<string> All = [Auto, Bar, Lines, None];
}
