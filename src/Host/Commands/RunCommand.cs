using System.Text.Json;
using Spectre.Console;
using TaskMesh.Engine;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh run GRAPH.json [--json SUMMARY.json] [--max-parallel N] [--config F] [--nodes] [--progress MODE]</c>.</summary>
internal static class RunCommand
{
    public static async Task<int> ExecuteAsync(ArgList args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        var config = GraphInput.LoadConfig(args);
        var jsonPath = args.Value("--json");
        var maxParallel = args.Int("--max-parallel", 1, 100_000);
        bool nodes = args.Flag("--nodes");
        var progress = args.Value("--progress") ?? config.Progress;
        if (progress is not ("auto" or "bar" or "lines" or "none"))
            throw new UsageException($"--progress must be auto, bar, lines or none, got '{progress}'");
        var path = args.Positional("graph file");
        if (maxParallel is int mp)
        {
            config.MaxParallelTasks = mp;
            if (config.WorkerThreads > mp) config.WorkerThreads = mp;
        }

        var (engine, graph) = GraphInput.Load(path, config);
        var runOptions = new RunOptions
        {
            BaseDirectory = Path.GetDirectoryName(Path.GetFullPath(path)),
            CollectTaskDetails = nodes ? true : null,
        };
        var handle = engine.Start(graph, runOptions, ct);
        if (progress == "auto")
            progress = Console.IsOutputRedirected || !ReferenceEquals(stdout, Console.Out) ? "lines" : "bar";
        if (progress == "bar") await ShowBarAsync(handle);
        else if (progress == "lines") await ShowLinesAsync(handle, stdout);
        var result = await handle.Completion;

        PrintSummary(result, stdout);
        if (jsonPath is not null)
        {
            AtomicFile.Write(jsonPath, s =>
            {
                using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
                result.WriteJson(w, nodes ? true : null);
            });
            stdout.WriteLine($"summary written to {jsonPath}");
        }
        return result.Status switch
        {
            RunStatus.Succeeded => ExitCodes.Ok,
            RunStatus.Failed => ExitCodes.TasksFailed,
            _ => ExitCodes.Cancelled,
        };
    }

    private static async Task ShowBarAsync(RunHandle handle)
    {
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var bar = ctx.AddTask("running", maxValue: Math.Max(1, handle.Total));
                var started = DateTime.UtcNow;
                while (!handle.Completion.IsCompleted)
                {
                    Update(bar, handle, started);
                    await Task.WhenAny(handle.Completion, Task.Delay(100));
                }
                Update(bar, handle, started);
            });

        static void Update(ProgressTask bar, RunHandle h, DateTime started)
        {
            bar.Value = h.Completed;
            double rate = h.Completed / Math.Max(1e-3, (DateTime.UtcNow - started).TotalSeconds);
            bar.Description = $"done {h.Completed}/{h.Total}  failed {h.Failed}  running {h.Running}  {rate:0}/s";
        }
    }

    private static async Task ShowLinesAsync(RunHandle handle, TextWriter stdout)
    {
        var started = DateTime.UtcNow;
        while (await Task.WhenAny(handle.Completion, Task.Delay(1000)) != handle.Completion)
        {
            double rate = handle.Completed / Math.Max(1e-3, (DateTime.UtcNow - started).TotalSeconds);
            stdout.WriteLine($"progress: {handle.Completed}/{handle.Total} done, {handle.Failed} failed, {handle.Running} running, {rate:0} tasks/s");
        }
    }

    internal static void PrintSummary(RunResult r, TextWriter o)
    {
        o.WriteLine($"run {r.RunId} of '{r.Graph.Name}': {r.StatusName}");
        o.WriteLine($"  tasks: {r.Total} total, {r.Succeeded} succeeded, {r.Failed} failed ({r.TimedOut} timed out), {r.Skipped} skipped, {r.Cancelled} cancelled");
        o.WriteLine($"  layers: {string.Join(", ", r.TasksByLayer.Select(kv => $"{kv.Key} {kv.Value}"))}");
        o.WriteLine($"  wall {r.Wall.TotalMilliseconds:0.###} ms, {r.TasksPerSecond:0.#} tasks/s; critical path {r.CriticalPathMs:0.###} ms vs makespan {r.Wall.TotalMilliseconds:0.###} ms");
        if (!r.HasTaskDetails)
        {
            if (r.Failed > 0) o.WriteLine("  (per-task errors not kept for a graph this large; rerun with --nodes)");
            return;
        }
        var failures = r.Failures.Take(20).ToList();
        if (failures.Count > 0)
        {
            o.WriteLine("  failures:");
            foreach (var f in failures)
                o.WriteLine($"    {f.Id} [{f.Status}, {f.Attempts} attempt(s)]: {f.Error}");
            if (r.Failed > failures.Count) o.WriteLine($"    ... and {r.Failed - failures.Count} more");
        }
        if (r.Skipped > 0)
        {
            var skipped = r.Tasks.Where(t => t.Outcome == TaskOutcome.Skipped).Take(10).ToList();
            o.WriteLine($"  skipped: {string.Join(", ", skipped.Select(s => $"{s.Id} (because {s.SkippedBecause} failed)"))}{(r.Skipped > skipped.Count ? ", ..." : "")}");
        }
    }
}
