using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh metrics [--days 7|30|90] [--json FILE] [--store FILE]</c>: totals, per layer and per day, from the run store.</summary>
internal static class MetricsCommand
{
    public static Command Create(CliIO io)
    {
        var days = CliOptions.OneOf("--days", "The period, in days up to today (UTC). Default 7.", "7", "30", "90");
        var json = new Option<string?>("--json") { Description = "Write the figures (JSON) to this file.", HelpName = "FILE" };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("metrics", "Totals, success rate, average confidence, duration and cost: overall, per layer and per day.") { days, json, store, config };
        command.SetAction(parse =>
        {
            var jsonPath = parse.GetValue(json);
            int period = int.Parse(parse.GetValue(days) ?? "7", CultureInfo.InvariantCulture);
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath);
            var rows = s.DailyMetrics(period);
            var total = Sum("all", rows);
            var layers = rows.GroupBy(r => r.Layer).Select(g => Sum(g.Key, g)).OrderBy(x => x.Name, StringComparer.Ordinal).ToList();
            var perDay = rows.GroupBy(r => r.Day).Select(g => Sum(g.Key, g)).ToList();
            var o = io.Out;
            o.WriteLine($"last {period} day(s), from the run store {s.Path}");
            Print(o, "", [total]);
            Print(o, "layer", layers);
            Print(o, "day", perDay);
            if (jsonPath is not null)
            {
                SafeFile.WriteAtomic(jsonPath, stream =>
                {
                    using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                    w.WriteStartObject();
                    w.WriteNumber("days", period);
                    w.WritePropertyName("total");
                    Write(w, total);
                    w.WriteStartObject("layers");
                    foreach (var l in layers) { w.WritePropertyName(l.Name); Write(w, l); }
                    w.WriteEndObject();
                    w.WriteStartObject("per_day");
                    foreach (var d in perDay) { w.WritePropertyName(d.Name); Write(w, d); }
                    w.WriteEndObject();
                    w.WriteEndObject();
                });
                o.WriteLine($"metrics written to {jsonPath}");
            }
            return ExitCodes.Ok;
        });
        return command;
    }

    private sealed record Figures(string Name, long Requests, long Successes, long Failures, double? AverageDurationMs, double? AverageConfidence, double Cost)
    {
        public double? SuccessRate => Requests == 0 ? null : (double)Successes / Requests;
    }

    private static Figures Sum(string name, IEnumerable<DailyLayerFigures> rows)
    {
        long req = 0, ok = 0, failed = 0, timed = 0, ccount = 0;
        double ms = 0, csum = 0, cost = 0;
        foreach (var r in rows)
        {
            req += r.Requests; ok += r.Successes; failed += r.Failures; timed += r.Timed;
            ms += r.TotalDurationMs; csum += r.ConfidenceSum; ccount += r.ConfidenceCount; cost += r.Cost;
        }
        return new Figures(name, req, ok, failed, timed == 0 ? null : ms / timed, ccount == 0 ? null : csum / ccount, cost);
    }

    private static void Print(TextWriter o, string what, IReadOnlyList<Figures> rows)
    {
        if (rows.Count == 0) return;
        o.WriteLine();
        o.WriteLine($"{what,-12}  {"tasks",10}  {"succeeded",10}  {"failed",8}  {"success",8}  {"avg ms",10}  {"avg conf",8}  {"cost",12}");
        foreach (var f in rows)
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{(what.Length == 0 ? "total" : f.Name),-12}  {f.Requests,10}  {f.Successes,10}  {f.Failures,8}  {(f.SuccessRate is double s ? s.ToString("P1", CultureInfo.InvariantCulture) : "-"),8}  {(f.AverageDurationMs is double d ? d.ToString("0.###", CultureInfo.InvariantCulture) : "-"),10}  {(f.AverageConfidence is double c ? c.ToString("0.###", CultureInfo.InvariantCulture) : "-"),8}  {f.Cost,12:0.######}"));
    }

    private static void Write(Utf8JsonWriter w, Figures f)
    {
        w.WriteStartObject();
        w.WriteNumber("tasks", f.Requests);
        w.WriteNumber("succeeded", f.Successes);
        w.WriteNumber("failed", f.Failures);
        if (f.SuccessRate is double s) w.WriteNumber("success_rate", Math.Round(s, 6)); else w.WriteNull("success_rate");
        if (f.AverageDurationMs is double d) w.WriteNumber("average_duration_ms", Math.Round(d, 3)); else w.WriteNull("average_duration_ms");
        if (f.AverageConfidence is double c) w.WriteNumber("average_confidence", Math.Round(c, 6)); else w.WriteNull("average_confidence");
        w.WriteNumber("cost", Math.Round(f.Cost, 6));
        w.WriteEndObject();
    }
}
