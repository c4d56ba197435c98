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

    /// <summary>The layer value that leaves the choice to the router.</summary>
    public const string AutoLayer = "auto";

    /// <summary>Longest layer name.</summary>
    public const int MaxLayerNameLength = 64;

    /// <summary>
    /// Whether <paramref name="name"/> can name a layer: 1–64 ASCII letters, digits, <c>-</c>,
    /// <c>_</c> or <c>.</c>. Which layers exist is the engine's business (layers are an open set).
    /// </summary>
    public static bool IsValidLayerName(string? name)
    {
        if (string.IsNullOrEmpty(name) || name.Length > MaxLayerNameLength) return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '-' or '_' or '.')) return false;
        return true;
    }
}
