using System.Text;
using System.Text.Json;

namespace TaskMesh.Engine.Handlers;

/// <summary>
/// Fan-in handlers for structured outputs (<see cref="ITaskOutput"/>) arriving on data edges:
/// <c>best</c> picks the input with the highest (or lowest) metric, <c>report</c> writes the
/// inputs to a JSON file beside the graph.
/// </summary>
internal static class AggregationHandlers
{
    private sealed record BestArgs(string Metric, bool Maximise);

    private sealed record ReportArgs(string Path, string Title, JsonElement Meta);

    public static void Register(HandlerRegistry r)
    {
        r.Register(new HandlerDescriptor("best", Best)
        {
            Cacheable = true,
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var metric = rd.String("metric", required: true) ?? "";
                var mode = rd.String("mode", required: false) ?? "max";
                rd.RejectUnknown();
                if (mode is not ("max" or "min")) rd.Problems.Add($"argument 'mode' must be \"max\" or \"min\", got \"{mode}\"");
                return (new BestArgs(metric, mode == "max"), rd.Problems);
            },
            EstimateMicros = static _ => 5,
        });
        r.Register(new HandlerDescriptor("report", Report)
        {
            ValidateWithContext = static (a, context) =>
            {
                var rd = new ArgsReader(a);
                var path = rd.String("path", required: true) ?? "";
                var title = rd.String("title", required: false) ?? "report";
                var meta = a.ValueKind == JsonValueKind.Object && a.TryGetProperty("meta", out var m) ? m.Clone() : default;
                rd.Known("meta");
                rd.RejectUnknown();
                if (path.Length > 0)
                {
                    // Inside the graph's folder with links resolved, never over an input, never over a
                    // directory or a device: checked here, before anything runs, and again when writing.
                    var full = IO.SafeFile.ResolveInside(context.BaseDirectory, path, out var problem);
                    if (full is null) rd.Problems.Add($"argument 'path' {problem}");
                    else if (IO.SafeFile.CheckOutput(full, context.InputFiles) is string bad) rd.Problems.Add($"argument 'path': {bad}");
                }
                return (new ReportArgs(path, title, meta), rd.Problems);
            },
            EstimateMicros = static _ => 200,
            LocalOnly = true,
        });
    }

    private static ValueTask<object?> Best(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var a = ctx.ParsedArgs<BestArgs>()!;
        string? bestId = null;
        ITaskOutput? best = null;
        double bestValue = 0;
        int candidates = 0;
        foreach (var (id, output) in ctx.Inputs)
        {
            if (output is not ITaskOutput o || !o.TryGetMetric(a.Metric, out double v) || double.IsNaN(v)) continue;
            candidates++;
            if (best is null || (a.Maximise ? v > bestValue : v < bestValue))
                (bestId, best, bestValue) = (id, o, v);
        }
        if (best is null)
            throw new TaskFailedException($"none of the {ctx.Inputs.Count} input(s) has metric '{a.Metric}' (inputs come from 'data' edges)");
        return new ValueTask<object?>(new BestOutput(bestId!, a.Metric, bestValue, candidates, best));
    }

    private static ValueTask<object?> Report(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var a = ctx.ParsedArgs<ReportArgs>()!;
        var full = IO.SafeFile.ResolveInside(ctx.BaseDirectory, a.Path, out var problem)
            ?? throw new TaskFailedException($"report path {problem}");
        // Readers never see half a report: written beside it, then renamed over it.
        IO.SafeFile.WriteAtomic(full, stream =>
        {
            using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
            w.WriteStartObject();
            w.WriteString("title", a.Title);
            w.WriteString("task", ctx.Id);
            w.WriteString("generated_at", DateTimeOffset.UtcNow);
            if (a.Meta.ValueKind != JsonValueKind.Undefined)
            {
                w.WritePropertyName("meta");
                a.Meta.WriteTo(w);
            }
            w.WriteStartArray("inputs");
            foreach (var (id, output) in ctx.Inputs)
            {
                w.WriteStartObject();
                w.WriteString("task", id);
                w.WritePropertyName("output");
                if (output is ITaskOutput o) o.WriteJson(w);
                else JsonSerializer.Serialize(w, output?.ToString());
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        });
        return new ValueTask<object?>(full);
    }
}

/// <summary>The output of <c>best</c>: the winning input, its metric value and how many competed.</summary>
public sealed class BestOutput : ITaskOutput
{
    internal BestOutput(string task, string metric, double value, int candidates, ITaskOutput winner)
    {
        Task = task;
        Metric = metric;
        Value = value;
        Candidates = candidates;
        Winner = winner;
    }

    /// <summary>The id of the input task that won.</summary>
    public string Task { get; }

    /// <summary>The metric compared.</summary>
    public string Metric { get; }

    /// <summary>The winner's value of <see cref="Metric"/>.</summary>
    public double Value { get; }

    /// <summary>Inputs that had the metric.</summary>
    public int Candidates { get; }

    /// <summary>The winning output itself.</summary>
    public ITaskOutput Winner { get; }

    /// <inheritdoc />
    public JsonElement Meta => Winner.Meta;

    /// <inheritdoc />
    public bool TryGetMetric(string name, out double value) => Winner.TryGetMetric(name, out value);

    /// <inheritdoc />
    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("best_of", Task);
        w.WriteString("metric", Metric);
        w.WriteNumber("value", Value);
        w.WriteNumber("candidates", Candidates);
        w.WritePropertyName("winner");
        Winner.WriteJson(w);
        w.WriteEndObject();
    }

    /// <inheritdoc />
    public override string ToString() => $"{Task}: {Metric} = {Value.ToString("G6", System.Globalization.CultureInfo.InvariantCulture)}";
}
