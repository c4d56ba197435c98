using System.Diagnostics;
using System.Text.Json;
using System.Threading.Channels;
using System.Threading.Tasks.Dataflow;
using TaskMesh.Bench.Dag;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Bench.Stream;

/// <summary>One measured (shape, system) pair: medians over the repeats; the peak over them.</summary>
internal sealed record StreamRecord(string shape, string system, int tasks, int runs, double ns_per_task, double alloc_bytes_per_task, double peak_rss_mb,
    int? max_pending = null, int? retain_tasks = null);

/// <summary>
/// <c>bench -- stream [--tasks N] [--shape independent,chain,window8] [--systems …] [--repeat R] [--max-pending P[,P…]] [--retain R] --json out.json</c>:
/// tasks submitted from one producer thread while the run goes. Every system runs the same task
/// body (one shared counter increment, checked after each run) on two threads, and its time
/// covers submitting (or building) and running every task, to the last one's end.
/// </summary>
internal static class StreamSuite
{
    private static long s_counter;
    private const int Workers = 2;

    public static int Run(string[] args)
    {
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "1000000");
        int repeat = int.Parse(DagSuite.Opt(args, "--repeat") ?? "3");
        int retain = int.Parse(DagSuite.Opt(args, "--retain") ?? OpenRunOptions.DefaultRetainTasks.ToString());
        var pendings = (DagSuite.Opt(args, "--max-pending") ?? OpenRunOptions.DefaultMaxPending.ToString()).Split(',').Select(int.Parse).ToArray();
        var shapes = (DagSuite.Opt(args, "--shape") ?? "independent,chain,window8").Split(',');
        var systems = (DagSuite.Opt(args, "--systems") ?? "taskmesh_open,taskmesh,tpl_dataflow,tpl_tasks,channels").Split(',');
        string? json = DagSuite.Opt(args, "--json");
        ThreadPool.GetMinThreads(out _, out int minIo);
        ThreadPool.SetMinThreads(Workers, minIo);
        ThreadPool.SetMaxThreads(Math.Max(Workers, Environment.ProcessorCount), Math.Max(minIo, Workers));

        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = Workers });
        engine.Handlers.RegisterInline("inc", static _ => { Interlocked.Increment(ref s_counter); return null; });
        // --open-workers N: the open run's worker threads (default: the same two; the producer is a third thread).
        int openWorkers = int.Parse(DagSuite.Opt(args, "--open-workers") ?? Workers.ToString());
        var openEngine = openWorkers == Workers ? engine : new TaskMeshEngine(new EngineOptions { WorkerThreads = openWorkers });
        if (!ReferenceEquals(openEngine, engine)) openEngine.Handlers.RegisterInline("inc", static _ => { Interlocked.Increment(ref s_counter); return null; });

        Console.WriteLine($"stream bench: {tasks:N0} tasks from one producer, {Workers} workers, {repeat} repeat(s), median reported");
        Console.WriteLine($"{"shape",-12} {"system",-22} {"tasks",10} {"ns/task",9} {"alloc B/t",10} {"peak MB",8}");
        var records = new List<StreamRecord>();
        foreach (var shape in shapes)
        {
            if (shape is not ("independent" or "chain" or "window8")) throw new ArgumentException($"unknown shape '{shape}' (independent, chain, window8)");
            foreach (var system in systems)
            {
                if (system == "channels" && shape != "independent") continue;   // a channel has no dependencies
                foreach (int maxPending in system == "taskmesh_open" ? pendings : [0])
                {
                    Action<int> run = system switch
                    {
                        "taskmesh_open" => n => RunOpen(openEngine, shape, n, maxPending, retain),
                        "taskmesh" => n => RunStatic(engine, shape, n),
                        "tpl_dataflow" => n => RunDataflow(shape, n),
                        "tpl_tasks" => n => RunTasks(shape, n),
                        "channels" => RunChannel,
                        _ => throw new ArgumentException($"unknown system '{system}'"),
                    };
                    // Warm: tiered JIT settles on small runs, then one run of the full size (the heap and the
                    // threads grown to it), so no cell is measured cold, the first of the process included.
                    for (int w = 0; w < 3; w++) Checked(run, Math.Min(tasks, 20_000));
                    Checked(run, tasks);
                    var rec = Measure(shape, system, tasks, repeat, run) with
                    {
                        max_pending = system == "taskmesh_open" ? maxPending : null,
                        retain_tasks = system == "taskmesh_open" ? retain : null,
                    };
                    records.Add(rec);
                    string label = system == "taskmesh_open" && pendings.Length > 1 ? $"{system}/{maxPending}" : system;
                    Console.WriteLine($"{shape,-12} {label,-22} {tasks,10:N0} {rec.ns_per_task,9:0.0} {rec.alloc_bytes_per_task,10:0.0} {rec.peak_rss_mb,8:0}");
                }
            }
            var baseline = records.FirstOrDefault(r => r.shape == shape && r.system == "taskmesh");
            foreach (var r in records.Where(r => r.shape == shape && r.system != "taskmesh" && baseline is not null))
                Console.WriteLine($"  {r.system}{(r.max_pending is int p ? $"/{p}" : "")} / taskmesh: {r.ns_per_task / baseline!.ns_per_task:0.00}x");
        }
        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    private static void Checked(Action<int> run, int n)
    {
        Interlocked.Exchange(ref s_counter, 0);
        run(n);
        if (Interlocked.Read(ref s_counter) != n) throw new InvalidOperationException($"{s_counter} task bodies ran, expected {n}");
    }

    private static StreamRecord Measure(string shape, string system, int n, int repeat, Action<int> run)
    {
        var ns = new List<double>();
        var alloc = new List<double>();
        long peak = 0;
        for (int r = 0; r < repeat; r++)
        {
            GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
            GC.WaitForPendingFinalizers();
            long allocBefore = GC.GetTotalAllocatedBytes(precise: true);
            using var sampler = new DagSuite.WorkingSetSampler();
            var sw = Stopwatch.StartNew();
            Checked(run, n);
            double elapsed = sw.Elapsed.TotalNanoseconds;
            alloc.Add((double)(GC.GetTotalAllocatedBytes(precise: true) - allocBefore) / n);
            ns.Add(elapsed / n);
            peak = Math.Max(peak, sampler.Stop());
        }
        return new StreamRecord(shape, system, n, repeat, Math.Round(Median(ns), 1), Math.Round(Median(alloc), 1), Math.Round(peak / 1048576.0, 1));
    }

    private static double Median(List<double> xs)
    {
        var s = xs.Order().ToList();
        return s.Count % 2 == 1 ? s[s.Count / 2] : (s[s.Count / 2 - 1] + s[s.Count / 2]) / 2;
    }

    private static int Window(string shape) => shape switch { "chain" => 1, "window8" => 8, _ => 0 };

    // ---------------------------------------------------------------- systems

    private static void RunOpen(TaskMeshEngine engine, string shape, int n, int maxPending, int retain)
    {
        int window = Window(shape);
        var run = engine.Open(new OpenRunOptions { MaxPending = maxPending, RetainTasks = retain });
        var last = new SubmittedTask[Math.Max(window, 1)];
        var request = new TaskRequest("inc");
        var requests = new TaskRequest[window + 1];
        for (int k = 0; k <= window; k++)
            requests[k] = k == 0 ? request : new TaskRequest("inc") { DependsOn = new TaskDependency[k] };
        for (int i = 0; i < n; i++)
        {
            int d = Math.Min(i, window);
            var r = requests[d];
            if (d > 0)
            {
                var list = (TaskDependency[])r.DependsOn!;
                for (int k = 0; k < d; k++) list[k] = last[(i - 1 - k) % window];
            }
            var t = run.Submit(r);
            if (window > 0) last[i % window] = t;
        }
        run.Complete();
        var summary = run.Completion.GetAwaiter().GetResult();
        if (summary.Succeeded != n) throw new InvalidOperationException($"open run: {summary.Succeeded} of {n} succeeded");
    }

    private static void RunStatic(TaskMeshEngine engine, string shape, int n)
    {
        int window = Window(shape);
        var b = new GraphBuilder("stream");
        b.AddTasks(n, "inc");
        for (int i = 1; i < n; i++)
            for (int k = 1; k <= Math.Min(i, window); k++) b.AddEdge(i - k, i);
        var result = engine.RunAsync(engine.Prepare(b)).GetAwaiter().GetResult();
        if (result.Status != Engine.Scheduling.RunStatus.Succeeded) throw new InvalidOperationException("static run failed");
    }

    /// <summary>One <see cref="ActionBlock{T}"/> runs the bodies; each task's unfinished dependencies are counted, and a task that ends posts the dependents it released.</summary>
    private static void RunDataflow(string shape, int n)
    {
        int window = Window(shape);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int remaining = n;
        var pending = window > 0 ? new int[n] : null;
        var ended = window > 0 ? new bool[n] : null;
        var dependents = window > 0 ? new List<int>?[n] : null;
        ActionBlock<int>? block = null;
        block = new ActionBlock<int>(i =>
        {
            Interlocked.Increment(ref s_counter);
            if (dependents is not null)
            {
                List<int>? ds;
                lock (dependents) { ended![i] = true; ds = dependents[i]; dependents[i] = null; }
                if (ds is not null)
                    foreach (var d in ds)
                        if (Interlocked.Decrement(ref pending![d]) == 0) block!.Post(d);
            }
            if (Interlocked.Decrement(ref remaining) == 0) done.TrySetResult();
        }, new ExecutionDataflowBlockOptions { MaxDegreeOfParallelism = Workers, EnsureOrdered = false });
        for (int i = 0; i < n; i++)
        {
            if (pending is null) { block.Post(i); continue; }
            pending[i] = 1;
            lock (dependents!)
                for (int k = 1; k <= Math.Min(i, window); k++)
                    if (!ended![i - k]) { (dependents[i - k] ??= new List<int>(2)).Add(i); pending[i]++; }
            if (Interlocked.Decrement(ref pending[i]) == 0) block.Post(i);
        }
        done.Task.GetAwaiter().GetResult();
        block.Complete();
    }

    /// <summary><c>Task.Run</c> for a task without dependencies, <c>ContinueWith</c> for one, <c>ContinueWhenAll</c> for several.</summary>
    private static void RunTasks(string shape, int n)
    {
        int window = Window(shape);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        int remaining = n;
        var last = new Task[Math.Max(window, 1)];
        var deps = new Task[window];
        Action body = () =>
        {
            Interlocked.Increment(ref s_counter);
            if (Interlocked.Decrement(ref remaining) == 0) done.TrySetResult();
        };
        for (int i = 0; i < n; i++)
        {
            int d = Math.Min(i, window);
            Task t;
            if (d == 0) t = Task.Run(body);
            else if (d == 1) t = last[(i - 1) % window].ContinueWith(_ => body(), TaskScheduler.Default);
            else
            {
                var set = new Task[d];
                for (int k = 0; k < d; k++) set[k] = last[(i - 1 - k) % window];
                t = Task.Factory.ContinueWhenAll(set, _ => body(), CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
            }
            if (window > 0) last[i % window] = t;
        }
        done.Task.GetAwaiter().GetResult();
    }

    /// <summary>A bounded channel and two reader loops (independent tasks only).</summary>
    private static void RunChannel(int n)
    {
        var channel = Channel.CreateBounded<int>(new BoundedChannelOptions(OpenRunOptions.DefaultMaxPending) { SingleWriter = true, FullMode = BoundedChannelFullMode.Wait });
        var readers = Enumerable.Range(0, Workers).Select(_ => Task.Run(async () =>
        {
            await foreach (var _ in channel.Reader.ReadAllAsync()) Interlocked.Increment(ref s_counter);
        })).ToArray();
        for (int i = 0; i < n; i++)
            if (!channel.Writer.TryWrite(i)) channel.Writer.WriteAsync(i).AsTask().GetAwaiter().GetResult();
        channel.Writer.Complete();
        Task.WaitAll(readers);
    }
}
