using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh runs [--limit N] [--status S] [--json FILE] [--store FILE]</c>: the stored runs, newest first.</summary>
internal static class RunsCommand
{
    public static Command Create(CliIO io)
    {
        var limit = CliOptions.Int("--limit", 1, 1_000_000, "Most runs to list (default 20).");
        var status = CliOptions.OneOf("--status", "Only runs with this status.", "running", "succeeded", "failed", "cancelled", "interrupted");
        var json = new Option<string?>("--json") { Description = "Write the runs (JSON) to this file.", HelpName = "FILE" };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("runs", "List the runs kept in the run store, newest first.") { limit, status, json, store, config };
        command.SetAction(parse =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var path = StoreInput.PathOf(parse.GetValue(store), cfg);
            var jsonPath = parse.GetValue(json);
            CliOptions.CheckOutput("--json", jsonPath, path, parse.GetValue(config));
            using var s = StoreInput.Open(path, readOnly: true);
            var runs = s.ListRuns(parse.GetValue(limit) ?? 20, parse.GetValue(status));
            Print(runs, io.Out);
            if (jsonPath is not null)
            {
                SafeFile.WriteAtomic(jsonPath, stream =>
                {
                    using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                    Write(runs, w);
                });
                io.Out.WriteLine($"runs written to {jsonPath}");
            }
            return ExitCodes.Ok;
        });
        return command;
    }

    private static void Print(IReadOnlyList<StoredRun> runs, TextWriter o)
    {
        if (runs.Count == 0)
        {
            o.WriteLine("no runs");
            return;
        }
        o.WriteLine($"{"run",-12}  {"graph",-24}  {"status",-11}  {"started (UTC)",-19}  {"tasks",9}  {"ok",9}  {"failed",7}  {"skipped",7}  {"wall ms",10}  {"cost",10}");
        foreach (var r in runs)
        {
            var t = r.Tasks;
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{r.RunId,-12}  {Clip(r.Graph, 24),-24}  {r.Status,-11}  {r.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {t.Total,9}  {t.Succeeded,9}  {t.Failed,7}  {t.Skipped,7}  {r.WallMs,10:0.#}  {r.Cost,10:0.######}"));
        }
    }

    private static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";

    /// <summary>The JSON of <c>runs --json</c>: a list of runs.</summary>
    internal static void Write(IReadOnlyList<StoredRun> runs, Utf8JsonWriter w)
    {
        w.WriteStartArray();
        foreach (var r in runs)
        {
            w.WriteStartObject();
            w.WriteString("run_id", r.RunId);
            w.WriteString("graph", r.Graph);
            w.WriteString("status", r.Status);
            w.WriteString("started_at", r.StartedAt);
            if (r.FinishedAt is { } f) w.WriteString("finished_at", f); else w.WriteNull("finished_at");
            w.WriteStartObject("tasks");
            w.WriteNumber("total", r.Tasks.Total);
            w.WriteNumber("succeeded", r.Tasks.Succeeded);
            w.WriteNumber("failed", r.Tasks.Failed);
            w.WriteNumber("timed_out", r.Tasks.TimedOut);
            w.WriteNumber("skipped", r.Tasks.Skipped);
            w.WriteNumber("cancelled", r.Tasks.Cancelled);
            w.WriteNumber("restored", r.Tasks.Restored);
            w.WriteNumber("cached", r.Tasks.Cached);
            w.WriteEndObject();
            w.WriteNumber("escalations", r.Escalations);
            w.WriteNumber("cost", Math.Round(r.Cost, 6));
            if (r.WallMs is double wall) w.WriteNumber("wall_ms", Math.Round(wall, 3));
            if (r.GraphPath is not null) w.WriteString("graph_path", r.GraphPath);
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
