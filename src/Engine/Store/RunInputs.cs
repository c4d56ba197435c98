using System.Text.Json;

namespace TaskMesh.Engine.Store;

/// <summary>
/// The files a run's tasks read, as the run's row keeps them (<c>runs.inputs</c>): one entry per
/// file (path relative to the graph's folder, SHA-256 of its content, the first task that reads
/// it). Resuming compares them with the files as they are now: a run's stored outputs were made
/// from the old content, and restoring them beside new results would mix two inputs.
/// </summary>
public static class RunInputs
{
    /// <summary>The JSON kept for <paramref name="inputs"/> (one entry per path).</summary>
    public static string ToJson(IEnumerable<(string TaskId, string Path, string Sha256)> inputs)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartArray();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var (task, path, sha) in inputs)
            {
                if (!seen.Add(path)) continue;
                w.WriteStartObject();
                w.WriteString("path", path);
                w.WriteString("sha256", sha);
                w.WriteString("task", task);
                w.WriteEndObject();
            }
            w.WriteEndArray();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>
    /// What changed between the files a stored run read (<paramref name="storedJson"/>, null for a
    /// run that read none or was stored before they were kept) and those the graph reads now: a
    /// message naming the first changed file and a task that reads it, or null when none changed.
    /// </summary>
    public static string? Changed(string? storedJson, IEnumerable<(string TaskId, string Path, string Sha256)> now, string runId)
    {
        if (storedJson is null) return null;
        var stored = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            using var doc = JsonDocument.Parse(storedJson);
            foreach (var e in doc.RootElement.EnumerateArray())
                stored[e.GetProperty("path").GetString()!] = e.GetProperty("sha256").GetString()!;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or KeyNotFoundException)
        {
            return $"run {runId}'s record of the files its tasks read cannot be read ({ex.Message})";
        }
        foreach (var (task, path, sha) in now)
        {
            if (!stored.TryGetValue(path, out var old))
                return $"task '{Graph.GraphLimits.Printable(task)}' reads '{Graph.GraphLimits.Printable(path)}', which run {runId} did not read";
            if (old != sha)
                return $"'{Graph.GraphLimits.Printable(path)}' (read by task '{Graph.GraphLimits.Printable(task)}') changed since run {runId} (its SHA-256 was {old[..12]}…, now {sha[..12]}…)";
        }
        return null;
    }
}
