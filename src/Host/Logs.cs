using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Host;

/// <summary>
/// Structured logs through Microsoft.Extensions.Logging, on standard error: one line per entry as
/// text, or one JSON object per line (<c>--log-format json</c>: <c>Timestamp</c>, <c>EventId</c>,
/// <c>LogLevel</c>, <c>Category</c>, <c>Message</c>, <c>State</c> with the named values).
/// </summary>
internal static class Logs
{
    /// <summary>
    /// Logs at <paramref name="level"/> and up; Orleans' own (a cluster's silos) from Warning up unless
    /// <paramref name="verboseCluster"/>, without its startup notes that are no problem here.
    /// </summary>
    public static ILoggerFactory Create(string format, string level, bool verboseCluster = false)
    {
        var min = level switch
        {
            "trace" => LogLevel.Trace,
            "debug" => LogLevel.Debug,
            "information" => LogLevel.Information,
            "warning" => LogLevel.Warning,
            "error" => LogLevel.Error,
            "critical" => LogLevel.Critical,
            _ => LogLevel.None,
        };
        return LoggerFactory.Create(b =>
        {
            b.SetMinimumLevel(min);
            if (!verboseCluster)
            {
                b.AddFilter("Orleans", (LogLevel l) => l >= LogLevel.Warning && l >= min);
                b.AddFilter("Polly", (LogLevel l) => l >= LogLevel.Warning && l >= min);
                // Server GC advice, and the watchdog's first check on a busy machine.
                b.AddFilter("Orleans.Runtime.Silo", (LogLevel l) => l >= LogLevel.Error && l >= min);
                b.AddFilter("Orleans.Runtime.Watchdog", (LogLevel l) => l >= LogLevel.Error && l >= min);
            }
            b.AddConsole(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
            if (format == "json")
                b.AddJsonConsole(o =>
                {
                    o.JsonWriterOptions = new JsonWriterOptions { Indented = false };
                    o.TimestampFormat = "yyyy-MM-ddTHH:mm:ss.fffZ";
                    o.UseUtcTimestamp = true;
                });
            else
                b.AddSimpleConsole(o =>
                {
                    o.SingleLine = true;
                    o.TimestampFormat = "HH:mm:ss.fff ";
                    o.UseUtcTimestamp = true;
                    o.ColorBehavior = LoggerColorBehavior.Disabled;
                });
        });
    }
}

/// <summary>
/// A text writer for standard error under <c>--log-format json</c>: each line the commands write
/// (an error message, a warning) becomes a JSON object of its own, so the stream stays one JSON
/// object per line.
/// </summary>
internal sealed class JsonLinesWriter(TextWriter inner, string category) : TextWriter
{
    private readonly StringBuilder _line = new();

    public override Encoding Encoding => inner.Encoding;

    public override void Write(char value)
    {
        lock (_line)
        {
            if (value == '\n') Emit();
            else if (value != '\r') _line.Append(value);
        }
    }

    public override void Write(string? value)
    {
        if (value is null) return;
        foreach (char c in value) Write(c);
    }

    public override void Flush()
    {
        lock (_line) if (_line.Length > 0) Emit();
        inner.Flush();
    }

    private void Emit()
    {
        string message = _line.ToString();
        _line.Clear();
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("Timestamp", DateTime.UtcNow.ToString("yyyy-MM-ddTHH:mm:ss.fffZ", System.Globalization.CultureInfo.InvariantCulture));
            w.WriteNumber("EventId", 0);
            w.WriteString("LogLevel", message.StartsWith("taskmesh: warning", StringComparison.Ordinal) ? "Warning" : "Error");
            w.WriteString("Category", category);
            w.WriteString("Message", message);
            w.WriteEndObject();
        }
        inner.WriteLine(Encoding.UTF8.GetString(buffer.WrittenSpan));
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing) Flush();
        base.Dispose(disposing);
    }
}
