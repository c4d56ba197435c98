using System.Text.Json;

namespace TaskMesh.Engine.Handlers;

/// <summary>
/// A structured task output that aggregation handlers (<c>best</c>, <c>report</c>) understand:
/// named numeric metrics, the caller's metadata, and a JSON form.
/// </summary>
public interface ITaskOutput
{
    /// <summary>Looks up a metric by name (e.g. <c>objective</c>, <c>confidence</c>, an observable such as <c>Z0 Z1</c>).</summary>
    bool TryGetMetric(string name, out double value);

    /// <summary>Metadata carried from the task's args (<c>meta</c>), or an undefined element.</summary>
    JsonElement Meta { get; }

    /// <summary>Writes the output as one JSON object.</summary>
    void WriteJson(Utf8JsonWriter writer);
}
