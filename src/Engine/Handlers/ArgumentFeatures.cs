using System.Globalization;
using System.Text;
using System.Text.Json;

namespace TaskMesh.Engine.Handlers;

/// <summary>
/// Parsed arguments (what a handler's validator returns) that state numbers of their own for the
/// router to learn from, under names of their own (<c>rows</c>, <c>pages</c>, <c>prompt.length</c>).
/// They are taken beside those read from the task's JSON arguments, and win on a name both give.
/// </summary>
public interface IStatedFeatures
{
    /// <summary>The numbers the task states, by name (names as <see cref="ArgumentFeatures.IsName"/> takes them; others are ignored).</summary>
    IEnumerable<KeyValuePair<string, double>> StatedFeatures { get; }
}

/// <summary>
/// The numbers a task's own arguments state, by name, whatever the names are: every number (and
/// true/false as 1/0) at the top level and one level down (<c>rows</c>, <c>input.rows</c>), the
/// length of every string (its UTF-8 bytes as written) and array (<c>prompt.length</c>,
/// <c>input.files.length</c>), and what its
/// parsed arguments state (<see cref="IStatedFeatures"/>). The well-known measures
/// (<see cref="TaskMeasures"/>) are not repeated here: the router has them already. At most
/// <see cref="MaxPerTask"/> per task, in the order the arguments give them; names of letters,
/// digits, <c>_</c>, <c>-</c> and <c>.</c>, at most <see cref="MaxNameLength"/> characters (others
/// are skipped, so nothing a user wrote reaches a terminal or a log unchecked).
/// </summary>
public static class ArgumentFeatures
{
    /// <summary>Most features taken from one task.</summary>
    public const int MaxPerTask = 32;

    /// <summary>Longest feature name.</summary>
    public const int MaxNameLength = 64;

    private static readonly HashSet<string> WellKnown = new(StringComparer.Ordinal) { "micros", "millis", "bytes", "size", "qubits", "gates" };

    /// <summary>Whether <paramref name="name"/> can name a feature.</summary>
    public static bool IsName(string name)
    {
        if (name.Length is 0 or > MaxNameLength) return false;
        foreach (char c in name)
            if (!(char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.')) return false;
        return true;
    }

    /// <summary>The features of a task with JSON arguments <paramref name="args"/> (null: none) and parsed arguments <paramref name="parsed"/>, appended to <paramref name="into"/>.</summary>
    public static void Collect(JsonElement? args, object? parsed, List<KeyValuePair<string, double>> into)
    {
        ArgumentNullException.ThrowIfNull(into);
        int start = into.Count;
        if (args is { ValueKind: JsonValueKind.Object } a)
            foreach (var p in a.EnumerateObject())
            {
                if (into.Count - start >= MaxPerTask) break;
                string name = p.Name;
                if (!IsName(name) || WellKnown.Contains(name)) continue;
                switch (p.Value.ValueKind)
                {
                    case JsonValueKind.Object:
                        foreach (var q in p.Value.EnumerateObject())
                        {
                            if (into.Count - start >= MaxPerTask) break;
                            string inner = name + "." + q.Name;
                            if (IsName(q.Name) && inner.Length <= MaxNameLength) Add(into, inner, q.Value);
                        }
                        break;
                    default:
                        Add(into, name, p.Value);
                        break;
                }
            }
        if (parsed is IStatedFeatures stated)
            foreach (var (name, value) in stated.StatedFeatures)
            {
                if (!IsName(name) || !double.IsFinite(value)) continue;
                int at = into.FindIndex(start, kv => kv.Key == name);
                if (at >= 0) into[at] = new(name, value);
                else if (into.Count - start < MaxPerTask) into.Add(new(name, value));
            }
    }

    private static void Add(List<KeyValuePair<string, double>> into, string name, JsonElement value)
    {
        switch (value.ValueKind)
        {
            case JsonValueKind.Number when value.TryGetDouble(out double x) && double.IsFinite(x):
                into.Add(new(name, x));
                break;
            case JsonValueKind.True:
                into.Add(new(name, 1));
                break;
            case JsonValueKind.False:
                into.Add(new(name, 0));
                break;
            case JsonValueKind.String when name.Length + 7 <= MaxNameLength:
                // Its size as written (UTF-8 bytes between the quotes): read without copying the
                // string out, which for a long prompt on every task would cost more than the rest.
                into.Add(new(name + ".length", System.Runtime.InteropServices.JsonMarshal.GetRawUtf8Value(value).Length - 2));
                break;
            case JsonValueKind.Array when name.Length + 7 <= MaxNameLength:
                into.Add(new(name + ".length", value.GetArrayLength()));
                break;
        }
    }

    /// <summary>The features as a JSON object (<c>{"rows": 1200, "prompt.length": 88}</c>, as the run store keeps them); null when there are none.</summary>
    public static string? ToJson(IReadOnlyList<KeyValuePair<string, double>> features)
    {
        ArgumentNullException.ThrowIfNull(features);
        if (features.Count == 0) return null;
        var sb = new StringBuilder(16 * features.Count + 2).Append('{');
        for (int i = 0; i < features.Count; i++)
        {
            if (i > 0) sb.Append(", ");
            // Names are letters, digits, '_', '-' and '.': nothing to escape.
            sb.Append('"').Append(features[i].Key).Append("\": ").Append(features[i].Value.ToString("R", CultureInfo.InvariantCulture));
        }
        return sb.Append('}').ToString();
    }

    /// <summary>Features read back from <see cref="ToJson"/>'s text (what is not a name and a finite number is skipped; bad JSON gives none).</summary>
    public static List<KeyValuePair<string, double>> FromJson(string? json)
    {
        var list = new List<KeyValuePair<string, double>>();
        if (string.IsNullOrEmpty(json)) return list;
        try
        {
            using var doc = JsonDocument.Parse(json);
            if (doc.RootElement.ValueKind != JsonValueKind.Object) return list;
            foreach (var p in doc.RootElement.EnumerateObject())
                if (list.Count < MaxPerTask && IsName(p.Name) && p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetDouble(out double x) && double.IsFinite(x))
                    list.Add(new(p.Name, x));
        }
        catch (JsonException)
        {
        }
        return list;
    }
}
