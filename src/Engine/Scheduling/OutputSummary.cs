using System.Globalization;
using System.Text;
using System.Text.Json;
using TaskMesh.Engine.Handlers;

namespace TaskMesh.Engine.Scheduling;

/// <summary>A short, printable summary of a task's output for the run record (at most <see cref="MaxLength"/> characters).</summary>
internal static class OutputSummary
{
    public const int MaxLength = 240;

    public static string? Of(object? output) => output switch
    {
        null => null,
        string s => Truncate(s),
        ITaskOutput t => Truncate(Json(t)),
        JsonElement e => Truncate(e.ValueKind == JsonValueKind.String ? e.GetString()! : e.GetRawText()),
        IFormattable f when output.GetType().IsPrimitive || output is decimal => f.ToString(null, CultureInfo.InvariantCulture),
        _ => output.GetType().Name,
    };

    private static string Json(ITaskOutput output)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms)) output.WriteJson(w);
        return Encoding.UTF8.GetString(ms.GetBuffer(), 0, (int)Math.Min(ms.Length, MaxLength * 4));
    }

    private static string Truncate(string s) => s.Length <= MaxLength ? s : string.Concat(s.AsSpan(0, MaxLength - 1), "…");
}
