using System.Diagnostics;
using System.Text.Json;

namespace TaskMesh.Bench.Dag;

/// <summary>One measured (shape, system) pair: medians over the repeats.</summary>
internal sealed record DagRecord(
    string shape, string system, int tasks, int edges, int runs,
    double build_ms, double run_ms, double ns_per_task, double run_ns_per_task,
    double alloc_bytes_per_task, double? steady_alloc_bytes_per_task, double graph_bytes_per_task,
    double peak_working_set_mb, double working_set_growth_mb, double task_ms = 0, int? scrapes = null, double? scrape_ms = null);

/// <summary>
/// <c>bench -- dag --shape all|NAME [--repeat R] [--workers W] [--systems a,b] [--task-ms M] [--scrape-ms S] --json out.json</c>:
/// every shape on the engine and the two TPL baselines, in one process, with the same
/// shapes, task bodies (one shared counter increment) and thread count. With <c>--task-ms M</c>
/// each body also spins for M ms, on shapes of about 2,000 tasks (records carry <c>task_ms</c>).
/// </summary>
internal static class DagSuite
{
    public static int Run(string[] args)
    {
        string shapeArg = Opt(args, "--shape") ?? "all";
        int repeat = int.Parse(Opt(args, "--repeat") ?? "3");
        int workers = int.Parse(Opt(args, "--workers") ?? "2");
        string? json = Opt(args, "--json");
        var systems = (Opt(args, "--systems") ?? "taskmesh,taskmesh_store,taskmesh_metrics,taskmesh_scraped,tpl_tasks,tpl_dataflow").Split(',');
        var shapes = shapeArg == "all" ? Shape.All : shapeArg.Split(',');
        double taskMs = double.Parse(Opt(args, "--task-ms") ?? "0", System.Globalization.CultureInfo.InvariantCulture);
        long bodyTicks = (long)(taskMs * System.Diagnostics.Stopwatch.Frequency / 1000);
        if (Opt(args, "--scrape-ms") is { } scrapeMs)
            TaskMeshMetricsSystem.ScrapeInterval = TimeSpan.FromMilliseconds(double.Parse(scrapeMs, System.Globalization.CultureInfo.InvariantCulture));

        // Two worker threads for everyone: the engine's own, and a thread pool capped at two for the baselines.
        ThreadPool.GetMinThreads(out _, out int minIo);
        ThreadPool.SetMinThreads(workers, minIo);
        if (!ThreadPool.SetMaxThreads(Math.Max(workers, Environment.ProcessorCount), Math.Max(minIo, workers)))
            Console.Error.WriteLine("warning: could not cap the thread pool");

        var records = new List<DagRecord>();
        Console.WriteLine($"dag bench: {workers} workers, {repeat} repeat(s), median reported; processors={Environment.ProcessorCount}");
        Console.WriteLine($"{"shape",-22} {"system",-13} {"tasks",9} {"build ms",10} {"run ms",10} {"ns/task",9} {"run ns/t",9} {"alloc B/t",10} {"steady B/t",10} {"graph B/t",10} {"peak MB",8} {"grow MB",8}");
        foreach (var name in shapes)
        {
            var shape = taskMs > 0 ? Shape.CreateForSlowTasks(name) : Shape.Create(name);
            foreach (var sys in systems)
            {
                DagSystem system = sys switch
                {
                    "taskmesh" => new TaskMeshSystem(workers),
                    "taskmesh_store" => new TaskMeshStoreSystem(workers),
                    "taskmesh_metrics" => new TaskMeshMetricsSystem(workers, scraped: false),
                    "taskmesh_scraped" => new TaskMeshMetricsSystem(workers, scraped: true),
                    "tpl_dataflow" => new DataflowSystem(),
                    "tpl_tasks" => new TasksSystem(),
                    _ => throw new ArgumentException($"unknown system '{sys}'"),
                };
                // Warm-up on a small version of the shape, so tiered JIT settles before timing.
                var small = Shape.Create(name, small: true);
                DagSystem.BodyTicks = 0;
                for (int w = 0; w < 3; w++) { DagSystem.ResetCounter(); system.Run(system.Build(small), small); }
                DagSystem.BodyTicks = bodyTicks;
                (system as TaskMeshMetricsSystem)?.ResetScrapes();
                var rec = Measure(system, shape, repeat) with { task_ms = taskMs, scrapes = (system as TaskMeshMetricsSystem)?.TotalScrapes,
                    scrape_ms = system is TaskMeshMetricsSystem { Name: "taskmesh_scraped" } ? TaskMeshMetricsSystem.ScrapeInterval.TotalMilliseconds : null };
                (system as IDisposable)?.Dispose();
                records.Add(rec);
                Console.WriteLine($"{rec.shape,-22} {rec.system,-13} {rec.tasks,9} {rec.build_ms,10:0.0} {rec.run_ms,10:0.0} {rec.ns_per_task,9:0.0} {rec.run_ns_per_task,9:0.0} {rec.alloc_bytes_per_task,10:0.0} {rec.steady_alloc_bytes_per_task,10:0.00} {rec.graph_bytes_per_task,10:0.0} {rec.peak_working_set_mb,8:0} {rec.working_set_growth_mb,8:0}");
            }
            PrintRatios(records.Where(r => r.shape == name).ToList());
        }
        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    private static void PrintRatios(List<DagRecord> rs)
    {
        var tm = rs.FirstOrDefault(r => r.system == "taskmesh");
        if (tm is null) return;
        foreach (var r in rs.Where(r => r.system != "taskmesh"))
            Console.WriteLine(r.system is "taskmesh_store" or "taskmesh_metrics" or "taskmesh_scraped"
                ? $"  {r.system} / taskmesh: build+run {r.ns_per_task / tm.ns_per_task:0.000}x, run {r.run_ns_per_task / tm.run_ns_per_task:0.000}x"
                : $"  {r.system} / taskmesh: build+run {r.ns_per_task / tm.ns_per_task:0.0}x, run {r.run_ns_per_task / tm.run_ns_per_task:0.0}x");
    }

    private static DagRecord Measure(DagSystem system, Shape shape, int repeat)
    {
        var builds = new List<double>();
        var runs = new List<double>();
        var allocs = new List<double>();
        var steady = new List<double>();
        var graphBytes = new List<double>();
        long peak = 0, growth = 0;
        object? built = null;
        for (int r = 0; r < repeat; r++)
        {
            built = null; // the previous repetition's graph must not count in this one's heap
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            long heapBefore = GC.GetTotalMemory(true);
            DagSystem.ResetCounter();
            long workingSetBefore = Environment.WorkingSet;
            using var sampler = new WorkingSetSampler();

            var sw = Stopwatch.StartNew();
            built = system.Build(shape);
            double buildMs = sw.Elapsed.TotalMilliseconds;

            long heapGraph = GC.GetTotalMemory(true);   // the built graph alone (the builder is garbage now)
            long allocBefore = GC.GetTotalAllocatedBytes(precise: true);
            sw.Restart();
            system.Run(built, shape);
            double runMs = sw.Elapsed.TotalMilliseconds;
            long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocBefore;

            if (DagSystem.Counter != shape.Tasks)
                throw new InvalidOperationException($"{system.Name} on {shape.Name}: {DagSystem.Counter} task bodies ran, expected {shape.Tasks}");
            builds.Add(buildMs);
            runs.Add(runMs);
            allocs.Add((double)allocated / shape.Tasks);
            if (system.SteadyStateAllocatedBytes is long s) steady.Add((double)s / shape.Tasks);
            graphBytes.Add((double)(heapGraph - heapBefore) / shape.Tasks);
            long recordPeak = sampler.Stop();
            peak = Math.Max(peak, recordPeak);
            growth = Math.Max(growth, recordPeak - workingSetBefore);
            GC.KeepAlive(built);
        }
        double b = Median(builds), ru = Median(runs);
        return new DagRecord(shape.Name, system.Name, shape.Tasks, shape.Source.Length, repeat,
            Math.Round(b, 3), Math.Round(ru, 3),
            Math.Round((b + ru) * 1e6 / shape.Tasks, 2), Math.Round(ru * 1e6 / shape.Tasks, 2),
            Math.Round(Median(allocs), 2), steady.Count > 0 ? Math.Round(Median(steady), 4) : null,
            Math.Round(Median(graphBytes), 1), Math.Round(peak / 1048576.0, 1), Math.Round(growth / 1048576.0, 1));
    }

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    internal static string? Opt(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }

    /// <summary>Samples the process working set every 5 ms; the peak of a record is its own, not the process's lifetime peak.</summary>
    internal sealed class WorkingSetSampler : IDisposable
    {
        private readonly Thread _thread;
        private volatile bool _stop;
        private long _peak;

        public WorkingSetSampler()
        {
            _peak = Environment.WorkingSet;
            _thread = new Thread(() =>
            {
                while (!_stop)
                {
                    _peak = Math.Max(_peak, Environment.WorkingSet);
                    Thread.Sleep(5);
                }
            }) { IsBackground = true };
            _thread.Start();
        }

        public long Stop()
        {
            _stop = true;
            _thread.Join();
            return Math.Max(_peak, Environment.WorkingSet);
        }

        public void Dispose() => Stop();
    }
}
