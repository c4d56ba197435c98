using System.Text.Json;
using TaskMesh.Engine.Handlers;

namespace TaskMesh.Engine.Store;

/// <summary>
/// A task output restored from the run store (its JSON form): what a successor reads over a data
/// edge when a resumed run reuses the task instead of running it again. Metrics are looked up as
/// the original outputs expose them: a number at the top level, an expectation value, or the
/// winner's (for a <c>best</c> output).
/// </summary>
public sealed class StoredOutput : ITaskOutput
{
    private readonly JsonElement _root;

    internal StoredOutput(JsonElement root) => _root = root;

    /// <summary>The output as stored.</summary>
    public JsonElement Json => _root;

    /// <inheritdoc />
    public JsonElement Meta => _root.ValueKind == JsonValueKind.Object && _root.TryGetProperty("meta", out var m) ? m : default;

    /// <inheritdoc />
    public bool TryGetMetric(string name, out double value)
    {
        value = 0;
        if (_root.ValueKind != JsonValueKind.Object) return false;
        if (_root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number) return v.TryGetDouble(out value);
        if (_root.TryGetProperty("expectations", out var e) && e.ValueKind == JsonValueKind.Object
            && e.TryGetProperty(name, out var x) && x.ValueKind == JsonValueKind.Number)
            return x.TryGetDouble(out value);
        if (_root.TryGetProperty("winner", out var w)) return new StoredOutput(w).TryGetMetric(name, out value);
        return false;
    }

    /// <inheritdoc />
    public void WriteJson(Utf8JsonWriter writer) => _root.WriteTo(writer);

    /// <inheritdoc />
    public override string ToString() => _root.GetRawText();

    /// <summary>The JSON an output is stored as, or null when it cannot be (too large, or not serialisable).</summary>
    internal static string? Serialize(object? output, int maxBytes)
    {
        switch (output)
        {
            // The common small outputs without a writer.
            case null: return "null";
            case bool b: return b ? "true" : "false";
            case long l: return l.ToString(System.Globalization.CultureInfo.InvariantCulture);
            case int i: return i.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        try
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
            using (var w = new Utf8JsonWriter(buffer))
            {
                switch (output)
                {
                    case null: w.WriteNullValue(); break;
                    case ITaskOutput t: t.WriteJson(w); break;
                    default: JsonSerializer.Serialize(w, output, output.GetType()); break;
                }
            }
            return buffer.WrittenCount > maxBytes ? null : System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
        }
        catch (Exception ex) when (ex is NotSupportedException or InvalidOperationException or JsonException)
        {
            return null;
        }
    }

    /// <summary>The object a successor gets back: a string, number or boolean as itself, anything else as a <see cref="StoredOutput"/>.</summary>
    internal static object? Restore(string json)
    {
        switch (json)
        {
            case "null": return null;
            case "true": return true;
            case "false": return false;
        }
        using var doc = JsonDocument.Parse(json);
        var root = doc.RootElement;
        return root.ValueKind switch
        {
            JsonValueKind.Null => null,
            JsonValueKind.String => root.GetString(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Number when root.TryGetInt64(out long l) => l,
            JsonValueKind.Number => root.GetDouble(),
            _ => new StoredOutput(root.Clone()),
        };
    }
}
