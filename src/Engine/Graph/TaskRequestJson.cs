using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// Reads one task for an open run from JSON: the object a task is in a graph file (<c>id</c>,
/// <c>handler</c>, <c>args</c>, <c>dependsOn</c> — ids or <c>{"id", "type"}</c> — <c>priority</c>,
/// <c>timeoutSeconds</c>, <c>retries</c>, <c>layer</c>, <c>minConfidence</c>, <c>estimateMs</c>,
/// <c>cache</c>, <c>uses</c>, <c>tags</c>, <c>requires</c>), with the same field names and checks.
/// </summary>
public static class TaskRequestJson
{
    /// <summary>The task <paramref name="json"/> describes.</summary>
    /// <exception cref="TaskRefusedException">Not a task object: every problem, with the task's id when it has one.</exception>
    public static TaskRequest Parse(string json)
    {
        ArgumentNullException.ThrowIfNull(json);
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = GraphLimits.MaxJsonDepth });
        }
        catch (JsonException ex)
        {
            throw new TaskRefusedException([new GraphError(GraphErrorCodes.MalformedJson, $"not JSON: {ex.Message}")]);
        }
        using (doc)
            return Read(doc.RootElement);
    }

    /// <summary>The task the object <paramref name="task"/> describes.</summary>
    /// <exception cref="TaskRefusedException">Not a task object.</exception>
    public static TaskRequest Read(JsonElement task)
    {
        var errors = new List<GraphError>();
        if (task.ValueKind != JsonValueKind.Object)
            throw new TaskRefusedException([new GraphError(GraphErrorCodes.Schema, "a task is a JSON object")]);
        string? id = task.TryGetProperty("id", out var idValue) && idValue.ValueKind == JsonValueKind.String ? idValue.GetString() : null;
        string? handler = null;
        var spec = new TaskSpec();
        bool hasSpec = false;
        var priority = TaskPriority.Normal;
        List<TaskDependency>? deps = null;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var p in task.EnumerateObject())
        {
            if (!seen.Add(p.Name))
            {
                errors.Add(new GraphError(GraphErrorCodes.DuplicateKey, $"field '{GraphLimits.Printable(p.Name)}' is given twice", id));
                continue;
            }
            var v = p.Value;
            switch (p.Name)
            {
                case "id":
                    if (v.ValueKind != JsonValueKind.String) errors.Add(Wrong("id", "a string"));
                    break;
                case "handler":
                    if (v.ValueKind == JsonValueKind.String) handler = v.GetString();
                    else errors.Add(Wrong("handler", "a string"));
                    break;
                case "args":
                    if (v.ValueKind == JsonValueKind.Object) { spec.Args = v.Clone(); hasSpec = true; }
                    else errors.Add(new GraphError(GraphErrorCodes.Schema, "'args' must be an object", id));
                    break;
                case "dependsOn":
                    deps = ReadDependencies(v, id, errors);
                    break;
                case "priority":
                    if (v.ValueKind == JsonValueKind.String && GraphNames.TryParsePriority(v.GetString()!, out var pr)) priority = pr;
                    else errors.Add(new GraphError(GraphErrorCodes.BadValue, "priority must be low, normal, high or critical", id));
                    break;
                case "timeoutSeconds": spec.TimeoutSeconds = Number(v, "timeoutSeconds"); hasSpec = true; break;
                case "retries":
                    if (v.ValueKind == JsonValueKind.Number && v.TryGetInt32(out int r)) spec.Retries = r;
                    else errors.Add(Wrong("retries", "an integer"));
                    hasSpec = true;
                    break;
                case "layer":
                    if (v.ValueKind == JsonValueKind.String) spec.Layer = v.GetString();
                    else errors.Add(Wrong("layer", "a string"));
                    hasSpec = true;
                    break;
                case "minConfidence": spec.MinConfidence = Number(v, "minConfidence"); hasSpec = true; break;
                case "estimateMs": spec.EstimateMs = Number(v, "estimateMs"); hasSpec = true; break;
                case "cache":
                    if (v.ValueKind is JsonValueKind.True or JsonValueKind.False) spec.Cache = v.GetBoolean();
                    else errors.Add(Wrong("cache", "true or false"));
                    hasSpec = true;
                    break;
                case "uses": spec.Uses = Strings(v, "uses"); hasSpec = true; break;
                case "tags": spec.Tags = Strings(v, "tags"); hasSpec = true; break;
                case "requires": spec.Requires = Strings(v, "requires"); hasSpec = true; break;
                default:
                    errors.Add(new GraphError(GraphErrorCodes.Schema, $"unknown field '{GraphLimits.Printable(p.Name)}'", id));
                    break;
            }
        }
        if (handler is null && !seen.Contains("handler")) errors.Add(new GraphError(GraphErrorCodes.MissingHandler, "task has no 'handler'", id));
        if (errors.Count > 0) throw new TaskRefusedException(errors);
        return new TaskRequest(handler!) { Id = id, Spec = hasSpec ? spec : null, Priority = priority, DependsOn = deps };

        GraphError Wrong(string field, string what) => new(GraphErrorCodes.Schema, $"'{field}' must be {what}", id);

        double? Number(JsonElement v, string field)
        {
            if (v.ValueKind == JsonValueKind.Number) return v.GetDouble();
            errors.Add(Wrong(field, "a number"));
            return null;
        }

        string[]? Strings(JsonElement v, string field)
        {
            if (v.ValueKind == JsonValueKind.Array && v.EnumerateArray().All(e => e.ValueKind == JsonValueKind.String))
                return v.EnumerateArray().Select(e => e.GetString()!).ToArray();
            errors.Add(Wrong(field, "an array of strings"));
            return null;
        }
    }

    private static List<TaskDependency>? ReadDependencies(JsonElement v, string? id, List<GraphError> errors)
    {
        if (v.ValueKind != JsonValueKind.Array)
        {
            errors.Add(new GraphError(GraphErrorCodes.Schema, "'dependsOn' must be an array", id));
            return null;
        }
        var deps = new List<TaskDependency>();
        foreach (var d in v.EnumerateArray())
        {
            if (d.ValueKind == JsonValueKind.String) { deps.Add(new TaskDependency(d.GetString()!)); continue; }
            if (d.ValueKind == JsonValueKind.Object && d.TryGetProperty("id", out var depId) && depId.ValueKind == JsonValueKind.String)
            {
                var kind = EdgeKind.Hard;
                if (d.TryGetProperty("type", out var type) && !(type.ValueKind == JsonValueKind.String && GraphNames.TryParseEdgeKind(type.GetString()!, out kind)))
                {
                    errors.Add(new GraphError(GraphErrorCodes.BadValue, "dependsOn.type must be hard, data or soft", id));
                    continue;
                }
                deps.Add(new TaskDependency(depId.GetString()!, kind));
                continue;
            }
            errors.Add(new GraphError(GraphErrorCodes.Schema, "a dependency is an id or {\"id\": …, \"type\": …}", id));
        }
        return deps;
    }
}
