using System.Diagnostics;
using System.Text;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Bench.Dag;

/// <summary>
/// <c>bench -- load [--tasks 1000000] --json out.json</c>: writes a graph file of that many tasks
/// (random_dag edges, ids, args), then times load + validation and the moment the first task
/// starts, as <c>taskmesh run</c> does it.
/// </summary>
internal static class LoadSuite
{
    public static int Run(string[] args)
    {
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "1000000");
        string? json = DagSuite.Opt(args, "--json");
        var path = Path.Combine(Path.GetTempPath(), $"taskmesh-load-{tasks}.json");
        WriteGraph(path, tasks);
        long bytes = new FileInfo(path).Length;

        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 2 });
        long firstStart = 0;
        engine.Handlers.RegisterInline("probe", _ =>
        {
            if (Volatile.Read(ref firstStart) == 0) Interlocked.CompareExchange(ref firstStart, Stopwatch.GetTimestamp(), 0);
            return null;
        });

        GC.Collect();
        long t0 = Stopwatch.GetTimestamp();
        var builder = GraphLoader.LoadFile(path);
        double loadMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        var graph = engine.Prepare(builder, path);
        double validatedMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        var result = engine.RunAsync(graph, new RunOptions { CollectTaskDetails = false }).GetAwaiter().GetResult();
        double totalMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        double firstMs = Stopwatch.GetElapsedTime(t0, firstStart).TotalMilliseconds;
        File.Delete(path);
        if (result.Succeeded != tasks) throw new InvalidOperationException($"ran {result.Succeeded} of {tasks}");

        var rec = new { suite = "load", tasks, file_mb = Math.Round(bytes / 1048576.0, 1), parse_ms = Math.Round(loadMs, 1),
            validated_ms = Math.Round(validatedMs, 1), first_task_started_ms = Math.Round(firstMs, 1), finished_ms = Math.Round(totalMs, 1) };
        Console.WriteLine($"{tasks} tasks, {rec.file_mb} MB: parsed {rec.parse_ms} ms, validated {rec.validated_ms} ms, first task started {rec.first_task_started_ms} ms, all done {rec.finished_ms} ms");
        if (json is not null) File.WriteAllText(json, JsonSerializer.Serialize(new[] { rec }, new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }

    private static void WriteGraph(string path, int n)
    {
        var rnd = new Random(42);
        using var w = new StreamWriter(path, false, new UTF8Encoding(false), 1 << 20);
        w.Write("{\"name\":\"load\",\"tasks\":[\n");
        for (int i = 0; i < n; i++)
        {
            w.Write("{\"id\":\"t"); w.Write(i); w.Write("\",\"handler\":\"probe\"");
            int k = i == 0 ? 0 : rnd.Next(0, 5);
            if (k > 0)
            {
                w.Write(",\"dependsOn\":[");
                var seen = new HashSet<int>();
                for (int j = 0; j < k; j++)
                {
                    int p = rnd.Next(0, i);
                    if (!seen.Add(p)) continue;
                    if (seen.Count > 1) w.Write(',');
                    w.Write("\"t"); w.Write(p); w.Write('"');
                }
                w.Write(']');
            }
            w.Write(i + 1 < n ? "},\n" : "}\n");
        }
        w.Write("]}\n");
    }
}
