namespace TaskMesh.Engine.Graph;

/// <summary>How a dependency constrains its target.</summary>
public enum EdgeKind : byte
{
    /// <summary>The target runs after the source succeeded; a failed or skipped source skips the target.</summary>
    Hard = 0,
    /// <summary>The target runs after the source ended, whatever its outcome.</summary>
    Soft = 1,
    /// <summary>Like <see cref="Hard"/>, and the source's output is handed to the target.</summary>
    Data = 2,
}

/// <summary>Order of ready tasks when slots are scarce.</summary>
public enum TaskPriority : byte
{
    Low = 0,
    Normal = 1,
    High = 2,
    Critical = 3,
}

/// <summary>Names used in graph files for the enums above.</summary>
public static class GraphNames
{
    public static bool TryParseEdgeKind(string? text, out EdgeKind kind)
    {
        switch (text)
        {
            case null or "hard": kind = EdgeKind.Hard; return true;
            case "soft": kind = EdgeKind.Soft; return true;
            case "data": kind = EdgeKind.Data; return true;
            default: kind = EdgeKind.Hard; return false;
        }
    }

    public static bool TryParsePriority(string? text, out TaskPriority priority)
    {
        switch (text)
        {
            case null or "normal": priority = TaskPriority.Normal; return true;
            case "low": priority = TaskPriority.Low; return true;
            case "high": priority = TaskPriority.High; return true;
            case "critical": priority = TaskPriority.Critical; return true;
            default: priority = TaskPriority.Normal; return false;
        }
    }

    public static string ToName(this EdgeKind kind) => kind switch
    {
        EdgeKind.Soft => "soft",
        EdgeKind.Data => "data",
        _ => "hard",
    };

    public static string ToName(this TaskPriority priority) => priority switch
    {
        TaskPriority.Low => "low",
        TaskPriority.High => "high",
        TaskPriority.Critical => "critical",
        _ => "normal",
    };

    /// <summary>Layer names a graph may force; <c>auto</c> leaves the choice to the router.</summary>
    public static readonly string[] LayerNames = ["auto", "local", "cluster", "quantum"];
}
