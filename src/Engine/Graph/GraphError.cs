namespace TaskMesh.Engine.Graph;

/// <summary>One problem found in a graph before anything runs.</summary>
/// <param name="Code">A stable code, e.g. <c>cycle</c>, <c>unknown-dependency</c>.</param>
/// <param name="Message">What is wrong, in words a user can act on.</param>
/// <param name="TaskId">The task it concerns, when there is one.</param>
/// <param name="Line">1-based line in the graph file, when known.</param>
/// <param name="Column">1-based column in the graph file, when known.</param>
public sealed record GraphError(string Code, string Message, string? TaskId = null, int? Line = null, int? Column = null)
{
    /// <summary>Formats as <c>file:line:col: [task id] message</c>.</summary>
    public string Format(string? file)
    {
        var where = file ?? "graph";
        if (Line is int line)
            where += Column is int col ? $":{line}:{col}" : $":{line}";
        var task = TaskId is null ? "" : $"task '{GraphLimits.Printable(TaskId)}': ";
        return $"{where}: error {Code}: {task}{Message}";
    }

    public override string ToString() => Format(null);
}

/// <summary>Thrown when a graph has problems; carries all of them.</summary>
public sealed class GraphValidationException : Exception
{
    public GraphValidationException(IReadOnlyList<GraphError> errors, string? file = null)
        : base(BuildMessage(errors, file))
    {
        Errors = errors;
        File = file;
    }

    /// <summary>Every problem found, in file order where known.</summary>
    public IReadOnlyList<GraphError> Errors { get; }

    /// <summary>The graph file, when the graph came from one.</summary>
    public string? File { get; }

    private static string BuildMessage(IReadOnlyList<GraphError> errors, string? file)
    {
        var lines = errors.Take(50).Select(e => e.Format(file));
        var more = errors.Count > 50 ? $"\n... and {errors.Count - 50} more" : "";
        return $"{errors.Count} problem(s) in {file ?? "graph"}:\n" + string.Join('\n', lines) + more;
    }
}
