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
        var status = CliOptions.OneOf("--status", "Only runs with this status.", "running", "open", "succeeded", "failed", "cancelled", "interrupted");
        var json = new Option<string?>("--json") { Description = "Write the runs (JSON) to this file.", HelpName = "FILE" };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("runs", "List the runs kept in the run store, newest first.") { limit, status, json, store, config };
        command.Subcommands.Add(CreateShow(io));
        command.Subcommands.Add(TimelineCommand.Create(io));
        command.SetAction(parse =>
        {
            var jsonPath = parse.GetValue(json);
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath);
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

    /// <summary><c>taskmesh runs show RUN [--slowest N] [--store FILE]</c>: one run: layers, escalations, slowest tasks, critical path vs makespan.</summary>
    private static Command CreateShow(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "A run id (or a unique prefix of one), or 'last'." };
        var slowest = CliOptions.Int("--slowest", 1, 1000, "How many of the slowest kept tasks to list (default 10).");
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("show", "One run: counts and cost per layer, escalations, slowest tasks, critical path vs makespan.") { run, slowest, store, config };
        command.SetAction(parse =>
        {
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath: null);
            var id = s.ResolveRunId(parse.GetValue(run)!);
            var r = s.GetRun(id);
            var o = io.Out;
            var inv = CultureInfo.InvariantCulture;
            o.WriteLine($"run {r.RunId} of '{TerminalText.Safe(r.Graph)}': {r.Status}{(r.GraphPath is null ? "" : $" ({TerminalText.Safe(Shown(r.GraphPath))})")}{(r.Status is "running" or "open" && r.Owner is { } owner ? $", {owner}" : "")}");
            o.WriteLine(string.Create(inv, $"  started {r.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss} UTC, {(r.FinishedAt is { } f ? $"ended {f.UtcDateTime:HH:mm:ss}" : "never ended")}"));
            var t = r.Tasks;
            o.WriteLine($"  tasks: {t.Total} total, {t.Succeeded} succeeded ({t.Restored} restored, {t.Cached} cached), {t.Failed} failed ({t.TimedOut} timed out), {t.Skipped} skipped, {t.Cancelled} cancelled");
            if (r.WallMs is double wall && r.CriticalPathMs is null)
                o.WriteLine(string.Create(inv, $"  wall {wall:0.###} ms (tasks submitted while it went: no graph, no critical path)"));
            else if (r.WallMs is double wallMs)
                o.WriteLine(string.Create(inv, $"  critical path {r.CriticalPathMs ?? 0:0.###} ms vs makespan {wallMs:0.###} ms ({(r.CriticalPathMs is double cp && cp >= 1 ? $"{wallMs / cp:0.##}x" : "no ratio: the critical path is under 1 ms")}); ready order {r.ReadyOrder ?? "not recorded"}"));
            o.WriteLine(string.Create(inv, $"  cost {r.Cost:0.######}, escalations {r.Escalations}"));
            var layers = s.LayersOf(id);
            if (layers.Count > 0)
            {
                o.WriteLine("  layers:");
                foreach (var l in layers.Where(l => l.Tasks > 0))
                    o.WriteLine(string.Create(inv, $"    {l.Layer,-16} {l.Tasks,9} tasks  {l.Succeeded,9} ok  {l.Failed,7} failed  {l.DurationMs,12:0.###} ms  cost {l.Cost:0.######}"));
            }
            var escalations = s.EscalationHistoryOf(id);
            if (escalations.Count > 0)
            {
                o.WriteLine("  escalations:");
                foreach (var e in escalations.Take(20))
                    o.WriteLine($"    {TerminalText.Safe(e.TaskId)}: {e.From} -> {e.To} ({e.Trigger}{(e.Rule is { } rule ? $", rule {(e.RuleId is int id2 ? $"{id2} " : "")}{rule}" : "")}): {TerminalText.Safe(e.Reason)}");
                if (escalations.Count > 20) o.WriteLine($"    ... and {escalations.Count - 20} more");
            }
            var tasks = s.SlowestTasks(id, parse.GetValue(slowest) ?? 10);
            if (tasks.Count > 0)
            {
                o.WriteLine("  slowest tasks (of those kept):");
                foreach (var x in tasks)
                    o.WriteLine(string.Create(inv, $"    {TerminalText.Safe(x.Id),-28} {x.DurationMs,10:0.###} ms  {x.Layer ?? "-",-10} {x.Status}{(x.Attempts > 1 ? $", {x.Attempts} attempts" : "")}"));
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
                $"{r.RunId,-12}  {Clip(TerminalText.Safe(r.Graph), 24),-24}  {r.Status,-11}  {r.StartedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {t.Total,9}  {t.Succeeded,9}  {t.Failed,7}  {t.Skipped,7}  {r.WallMs,10:0.#}  {r.Cost,10:0.######}"));
        }
    }

    // A path under the current folder is shown relative to it (examples/qaoa-sweep.json), others in full.
    private static string Shown(string path)
    {
        var rel = Path.GetRelativePath(Environment.CurrentDirectory, path);
        return rel.StartsWith("..", StringComparison.Ordinal) || Path.IsPathRooted(rel) ? path : rel;
    }

    private static string Clip(string s, int n) => s.Length <= n ? s : s[..(n - 1)] + "…";

    /// <summary>The JSON of <c>runs --json</c>: a list of runs.</summary>
    internal static void Write(IReadOnlyList<StoredRun> runs, Utf8JsonWriter w)
    {
        w.WriteStartArray();
        foreach (var r in runs) r.WriteJson(w);
        w.WriteEndArray();
    }
}
