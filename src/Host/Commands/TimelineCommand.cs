using System.CommandLine;
using System.Globalization;
using System.Net;
using System.Text;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh runs timeline RUN --out run.html [--store FILE]</c>: one self-contained HTML file with
/// an SVG Gantt chart of a stored run — a lane per layer slot in use, tasks on the critical path
/// outlined, a task's details on hover (the SVG <c>title</c>).
/// </summary>
internal static class TimelineCommand
{
    public static Command Create(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "A run id (or a unique prefix of one), or 'last'." };
        var output = new Option<string>("--out") { Description = "The HTML file to write.", HelpName = "run.html", Required = true };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("timeline", "Write a run's timeline (an SVG Gantt chart in one HTML file).") { run, output, store, config };
        command.SetAction(parse =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var storePath = StoreInput.PathOf(parse.GetValue(store), cfg);
            var outPath = parse.GetValue(output)!;
            CliOptions.CheckOutput("--out", outPath, storePath, parse.GetValue(config));
            using var s = StoreInput.Open(storePath, readOnly: true, cfg);
            var runId = s.ResolveRunId(parse.GetValue(run)!);
            var info = s.GetRun(runId);
            var tasks = s.TasksOf(runId);
            var critical = CriticalPath(info, cfg, io.Token);
            var html = Render(info, tasks, critical);
            SafeFile.WriteAtomic(outPath, stream => { using var w = new StreamWriter(stream, new UTF8Encoding(false)); w.Write(html); });
            io.Out.WriteLine($"timeline of run {runId} ({tasks.Count(t => t.StartedAtMs is not null)} tasks) written to {outPath}");
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>The critical path's task ids, when the run's graph file is still there and unchanged.</summary>
    private static HashSet<string> CriticalPath(StoredRun run, Engine.Configuration.TaskMeshConfig cfg, CancellationToken ct)
    {
        if (run.GraphPath is null || !File.Exists(run.GraphPath)) return [];
        try
        {
            var (engine, graph, hash) = GraphInput.LoadWithHash(run.GraphPath, cfg, ct);
            if (run.GraphHash is not null && run.GraphHash != hash) return [];
            return engine.Analyze(graph).CriticalPath.Select(graph.IdOf).ToHashSet();
        }
        catch (Exception ex) when (ex is Engine.Graph.GraphValidationException or IOException)
        {
            return [];
        }
    }

    private static string Render(StoredRun run, IReadOnlyList<StoredTask> tasks, HashSet<string> critical)
    {
        var inv = CultureInfo.InvariantCulture;
        var timed = tasks.Where(t => t.StartedAtMs is not null && t.DurationMs is not null).OrderBy(t => t.StartedAtMs).ToList();
        double end = Math.Max(1, Math.Max(run.WallMs ?? 0, timed.Count == 0 ? 0 : timed.Max(t => t.StartedAtMs!.Value + t.DurationMs!.Value)));
        // Lanes: per layer, the first slot free when a task starts (as many as ran at once).
        var lanes = new List<(string Layer, List<double> Ends)>();
        var placed = new List<(StoredTask Task, int Lane)>();
        foreach (var layer in timed.Select(t => t.Layer ?? "-").Distinct().Order(StringComparer.Ordinal))
        {
            var ends = new List<double>();
            int first = lanes.Count;
            foreach (var t in timed.Where(t => (t.Layer ?? "-") == layer))
            {
                int slot = ends.FindIndex(e => e <= t.StartedAtMs!.Value + 1e-6);
                if (slot < 0) { ends.Add(0); slot = ends.Count - 1; }
                ends[slot] = t.StartedAtMs!.Value + t.DurationMs!.Value;
                placed.Add((t, first + slot));
            }
            for (int i = 0; i < ends.Count; i++) lanes.Add((layer, ends));
        }
        const int width = 1200, left = 150, laneHeight = 22, top = 30;
        int height = top + lanes.Count * laneHeight + 30;
        double scale = (width - left - 20) / end;
        var sb = new StringBuilder();
        sb.Append("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>TaskMesh run ").Append(Enc(run.RunId)).Append("</title>\n");
        sb.Append("<style>body{font-family:sans-serif;margin:16px} rect.t{stroke:#555;stroke-width:.5} rect.crit{stroke:#d00;stroke-width:2} ")
          .Append("rect.succeeded{fill:#81c784} rect.failed,rect.timed_out{fill:#e57373} rect.cancelled{fill:#fff176} text{font-size:11px}</style></head><body>\n");
        sb.Append(inv, $"<h1>Run {Enc(run.RunId)} of {Enc(run.Graph)}: {Enc(run.Status)}</h1>\n");
        sb.Append(inv, $"<p>{run.Tasks.Total} tasks, {timed.Count} on the timeline (the tasks the store kept); makespan {run.WallMs ?? 0:0.###} ms, critical path {run.CriticalPathMs ?? 0:0.###} ms (outlined in red); ready order {Enc(run.ReadyOrder ?? "not recorded")}.</p>\n");
        sb.Append(inv, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n");
        for (int l = 0; l < lanes.Count; l++)
        {
            int y = top + l * laneHeight;
            sb.Append(inv, $"<text x=\"4\" y=\"{y + 15}\">{Enc(lanes[l].Layer)} #{l - lanes.FindIndex(x => x.Layer == lanes[l].Layer) + 1}</text>");
            sb.Append(inv, $"<line x1=\"{left}\" y1=\"{y + laneHeight}\" x2=\"{width - 20}\" y2=\"{y + laneHeight}\" stroke=\"#eee\"/>\n");
        }
        foreach (var (t, lane) in placed)
        {
            double x = left + t.StartedAtMs!.Value * scale, w = Math.Max(1, t.DurationMs!.Value * scale);
            int y = top + lane * laneHeight + 3;
            string cls = $"t {t.Status}{(critical.Contains(t.Id) ? " crit" : "")}";
            sb.Append(inv, $"<rect class=\"{cls}\" x=\"{x:0.##}\" y=\"{y}\" width=\"{w:0.##}\" height=\"{laneHeight - 6}\" data-task=\"{Enc(t.Id)}\">");
            sb.Append(inv, $"<title>{Enc(t.Id)} ({Enc(t.Handler)}) on {Enc(t.Layer ?? "-")}: {Enc(t.Status)}, start {t.StartedAtMs:0.###} ms, {t.DurationMs:0.###} ms, {t.Attempts} attempt(s){(t.Error is null ? "" : ", " + Enc(t.Error))}</title></rect>\n");
        }
        sb.Append(inv, $"<text x=\"{left}\" y=\"{height - 8}\">0 ms</text><text x=\"{width - 80}\" y=\"{height - 8}\">{end:0.#} ms</text>\n");
        sb.Append("</svg>\n</body></html>\n");
        return sb.ToString();
    }

    private static string Enc(string s) => WebUtility.HtmlEncode(s);
}
