using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Bench.Workflows;

/// <summary>One replay of a workflow at a slot count, with the list schedules it is compared to.</summary>
internal sealed record WorkflowRecord(string workflow, int slots, double makespan_s, double lower_bound_s, double fifo_sim_s, double heft_sim_s,
    string ready_order, int tasks, double work_s, double critical_path_s);

/// <summary>
/// <c>bench -- workflows [--dir DIR] [--slots 8,16,32] [--time-scale MS] [--orders auto,fifo] [--repeat 3] --json out.json</c>:
/// every WfFormat instance in the folder (default <c>examples/workflows</c> of the repository) imported as
/// <c>taskmesh import wfformat</c> does (each task sleeps its recorded runtime, <c>--time-scale</c>
/// ms per recorded second, default 10) and run by the engine with <c>--slots</c> local slots, once
/// per ready order (<c>auto</c>: what a user gets without a hint; <c>fifo</c>: arrival order),
/// <c>--repeat</c> times (the median is reported).
/// Each run is compared with two list schedules this file simulates on the same durations —
/// arrival order (<c>fifo_sim_s</c>) and highest upward rank first, as HEFT orders tasks on
/// identical slots (<c>heft_sim_s</c>) — and with the lower bound max(longest path, work / slots).
/// The simulations share no code with the engine.
/// </summary>
internal static class WorkflowSuite
{
    public static int Run(string[] args)
    {
        string? dir = Opt(args, "--dir") ?? DefaultDir();
        if (dir is null || !Directory.Exists(dir))
        {
            Console.Error.WriteLine($"workflows: no folder of WfFormat instances ({dir ?? "examples/workflows not found"}); give --dir DIR");
            return 2;
        }
        var slots = (Opt(args, "--slots") ?? "8,16,32").Split(',').Select(s => int.Parse(s, CultureInfo.InvariantCulture)).ToArray();
        double scale = double.Parse(Opt(args, "--time-scale") ?? "10", CultureInfo.InvariantCulture);
        var orders = (Opt(args, "--orders") ?? "auto,fifo").Split(',');
        int repeat = int.Parse(Opt(args, "--repeat") ?? "3", CultureInfo.InvariantCulture);
        string? json = Opt(args, "--json");
        var files = Directory.GetFiles(dir, "*.json").Where(f => !f.EndsWith(".graph.json", StringComparison.Ordinal)).Order(StringComparer.Ordinal).ToList();
        Console.WriteLine($"workflows bench: {files.Count} instances in {dir}, slots {string.Join(",", slots)}, {scale} ms per recorded second, orders {string.Join(",", orders)}, median of {repeat}");
        Console.WriteLine($"{"workflow",-46} {"slots",5} {"order",-13} {"makespan s",10} {"heft sim",9} {"fifo sim",9} {"bound",7} {"÷ heft",7} {"÷ fifo",7}");
        var records = new List<WorkflowRecord>();
        Warm(files, slots[0]);
        foreach (var file in files)
        {
            WfInstance instance;
            try
            {
                instance = WfFormat.Read(File.ReadAllBytes(file), file);
            }
            catch (GraphValidationException ex)
            {
                Console.Error.WriteLine($"skipped {Path.GetFileName(file)}: {ex.Message.Split('\n')[0]}");
                continue;
            }
            var graphJson = WfFormat.ToGraphJson(instance, scale);
            var graph = GraphLoader.Load(graphJson, file).Build();
            // The durations every schedule uses: what the graph's sleep tasks were given, in seconds.
            var durations = instance.Tasks.Select(t => WfFormat.ScaledMillis(t.RuntimeSeconds, scale) / 1000.0).ToArray();
            var parents = instance.Tasks.Select(t => t.Parents.ToArray()).ToArray();
            var sims = new ListScheduler(durations, parents);
            string name = Path.GetFileNameWithoutExtension(file);
            foreach (int k in slots)
            {
                double bound = Math.Max(sims.LongestPath, durations.Sum() / k);
                double fifo = sims.Makespan(k, byRank: false), heft = sims.Makespan(k, byRank: true);
                foreach (var orderName in orders)
                {
                    if (!ReadyOrders.TryParse(orderName, out var order)) throw new ArgumentException($"--orders: '{orderName}' is not auto, fifo or critical_path");
                    var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = k, ReadyOrder = order });
                    var prepared = engine.Prepare(graph);
                    var times = new List<double>();
                    RunResult? result = null;
                    for (int r = 0; r < Math.Max(1, repeat); r++)
                    {
                        // From a collected heap: a collection earlier runs made due is not this run's.
                        GC.Collect();
                        GC.WaitForPendingFinalizers();
                        var sw = Stopwatch.StartNew();
                        result = engine.RunAsync(prepared).GetAwaiter().GetResult();
                        times.Add(sw.Elapsed.TotalSeconds);
                        if (result.Succeeded != graph.Count) throw new InvalidOperationException($"{name}: {result.Succeeded} of {graph.Count} tasks succeeded");
                    }
                    double makespan = times.Order().ElementAt(times.Count / 2);   // the median
                    var rec = new WorkflowRecord(name, k, Math.Round(makespan, 4), Math.Round(bound, 4), Math.Round(fifo, 4), Math.Round(heft, 4),
                        result!.ReadyOrder, graph.Count, Math.Round(durations.Sum(), 4), Math.Round(sims.LongestPath, 4));
                    records.Add(rec);
                    Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                        $"{name,-46} {k,5} {rec.ready_order,-13} {makespan,10:0.000} {heft,9:0.000} {fifo,9:0.000} {bound,7:0.000} {makespan / heft,7:0.000} {makespan / fifo,7:0.000}"));
                }
            }
        }
        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    /// <summary>
    /// Runs the first instance once, unmeasured, at a hundredth of a millisecond per recorded second
    /// in each order: the engine's code is compiled and the timer thread started before the first
    /// measured run (it was up to 19 % slower than the same run later in the process).
    /// </summary>
    private static void Warm(List<string> files, int slots)
    {
        if (files.Count == 0) return;
        try
        {
            var graph = GraphLoader.Load(WfFormat.ToGraphJson(WfFormat.Read(File.ReadAllBytes(files[0]), files[0]), 0.01), files[0]).Build();
            foreach (var order in new[] { ReadyOrder.Auto, ReadyOrder.Fifo })
            {
                var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = slots, ReadyOrder = order });
                engine.RunAsync(engine.Prepare(graph)).GetAwaiter().GetResult();
            }
        }
        catch (GraphValidationException)
        {
            // reported when the instance's turn comes
        }
    }

    /// <summary><c>examples/workflows</c> of the repository the bench was built in (found upwards from the bench's folder, else from the current folder).</summary>
    private static string? DefaultDir()
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Environment.CurrentDirectory })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "Engine.sln")))
                    return Path.Combine(d.FullName, "examples", "workflows");
        return null;
    }

    private static string? Opt(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

/// <summary>
/// List schedules of a DAG on <c>k</c> identical slots with no transfer costs: whenever a slot is
/// free, the next ready task starts on it — in arrival order (a task is ready when its last parent
/// ends; ties by task index), or highest upward rank first (its duration plus the longest path of
/// durations below it, ties by index), as HEFT orders tasks.
/// </summary>
internal sealed class ListScheduler
{
    private readonly double[] _duration, _rank;
    private readonly int[][] _children;
    private readonly int[] _parentCount;

    public ListScheduler(double[] duration, int[][] parents)
    {
        int n = duration.Length;
        _duration = duration;
        _parentCount = parents.Select(p => p.Length).ToArray();
        var children = Enumerable.Range(0, n).Select(_ => new List<int>()).ToArray();
        for (int v = 0; v < n; v++)
            foreach (int p in parents[v]) children[p].Add(v);
        _children = children.Select(c => c.ToArray()).ToArray();
        // Topological order (Kahn), then ranks from the sinks up and the longest path from the sources down.
        var order = new List<int>(n);
        var left = (int[])_parentCount.Clone();
        var queue = new Queue<int>(Enumerable.Range(0, n).Where(v => left[v] == 0));
        while (queue.Count > 0)
        {
            int v = queue.Dequeue();
            order.Add(v);
            foreach (int c in _children[v])
                if (--left[c] == 0) queue.Enqueue(c);
        }
        if (order.Count != n) throw new InvalidOperationException("the workflow has a cycle");
        _rank = new double[n];
        for (int i = n - 1; i >= 0; i--)
        {
            int v = order[i];
            _rank[v] = duration[v] + (_children[v].Length == 0 ? 0 : _children[v].Max(c => _rank[c]));
        }
        LongestPath = n == 0 ? 0 : _rank.Max();
    }

    /// <summary>The longest path of durations (the makespan with unlimited slots).</summary>
    public double LongestPath { get; }

    public double Makespan(int k, bool byRank)
    {
        int n = _duration.Length;
        var left = (int[])_parentCount.Clone();
        long arrivals = 0;
        // Ready tasks: by arrival, or by rank (highest first); the index breaks ties.
        var ready = new PriorityQueue<int, (double, long, int)>();
        void Ready(int v) => ready.Enqueue(v, byRank ? (-_rank[v], 0, v) : (0, arrivals++, v));
        for (int v = 0; v < n; v++)
            if (left[v] == 0) Ready(v);
        var running = new PriorityQueue<int, (double, int)>();   // by end time, then index
        double now = 0, makespan = 0;
        int free = k, done = 0;
        while (done < n)
        {
            while (free > 0 && ready.TryDequeue(out int v, out _))
            {
                free--;
                running.Enqueue(v, (now + _duration[v], v));
            }
            if (!running.TryDequeue(out int ended, out var at)) throw new InvalidOperationException("nothing runs and tasks are left");
            now = at.Item1;
            makespan = Math.Max(makespan, now);
            free++;
            done++;
            var finished = new List<int> { ended };
            // Everything that ends at the same moment frees its slot before the next choice.
            while (running.TryPeek(out int next, out var when) && when.Item1 == now)
            {
                running.Dequeue();
                finished.Add(next);
                free++;
                done++;
            }
            foreach (int f in finished)
                foreach (int c in _children[f])
                    if (--left[c] == 0) Ready(c);
        }
        return makespan;
    }
}
