using System.Threading.Tasks.Dataflow;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Bench.Dag;

/// <summary>One way of running a shape: build (timed), then run (timed). Every task body increments one shared counter.</summary>
internal abstract class DagSystem
{
    protected static long s_counter;

    public abstract string Name { get; }

    /// <summary>Builds the graph through the system's own API; returns an object holding it.</summary>
    public abstract object Build(Shape shape);

    /// <summary>Runs what <see cref="Build"/> returned, to the end.</summary>
    public abstract void Run(object built, Shape shape);

    /// <summary>Managed bytes allocated by the hot path alone, when the system can tell (TaskMesh does).</summary>
    public virtual long? SteadyStateAllocatedBytes => null;

    /// <summary>How long each task body keeps its thread busy after the increment, in Stopwatch ticks (0: nothing more).</summary>
    public static long BodyTicks;

    /// <summary>The task body of every system: one shared counter increment, then <see cref="BodyTicks"/> of spinning.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    protected static void Body()
    {
        Interlocked.Increment(ref s_counter);
        if (BodyTicks == 0) return;
        long until = System.Diagnostics.Stopwatch.GetTimestamp() + BodyTicks;
        while (System.Diagnostics.Stopwatch.GetTimestamp() < until) Thread.SpinWait(20);
    }

    public static long Counter => Interlocked.Read(ref s_counter);
    public static void ResetCounter() => Interlocked.Exchange(ref s_counter, 0);
}

/// <summary>The engine through its library API: anonymous inline tasks, hard edges, 2 worker threads.</summary>
internal sealed class TaskMeshSystem : DagSystem
{
    private readonly TaskMeshEngine _engine;
    private long? _steady;

    public TaskMeshSystem(int workers)
    {
        _engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = workers, MaxParallelTasks = workers });
        _engine.Handlers.RegisterInline("inc", static _ => { Body(); return null; });
    }

    public override string Name => "taskmesh";

    internal TaskMeshEngine Engine => _engine;

    /// <summary>The index-based builder (no per-task objects), then structural checks and preparation for the engine.</summary>
    public override object Build(Shape shape)
    {
        var g = new GraphBuilder(shape.Name).EnsureCapacity(shape.Tasks, shape.Source.Length);
        g.AddTasks(shape.Tasks, "inc");
        var source = shape.Source;
        var target = shape.Target;
        for (int e = 0; e < source.Length; e++) g.AddEdge(source[e], target[e]);
        return _engine.Prepare(g);
    }

    public override void Run(object built, Shape shape)
    {
        var result = _engine.RunAsync((PreparedGraph)built, new RunOptions { CollectTaskDetails = false }).GetAwaiter().GetResult();
        if (result.Succeeded != shape.Tasks) throw new InvalidOperationException($"taskmesh ran {result.Succeeded} of {shape.Tasks}");
        _steady = result.SteadyStateAllocatedBytes;
    }

    public override long? SteadyStateAllocatedBytes => _steady;
}

/// <summary>
/// The engine as <c>taskmesh run</c> uses it: the same as <see cref="TaskMeshSystem"/>, with the run
/// recorded into a run store (one SQLite file for the system's records, opened once, as a command
/// opens it once). The run phase includes the recorder and waiting until the store committed
/// everything of the run.
/// </summary>
internal sealed class TaskMeshStoreSystem : DagSystem, IDisposable
{
    private readonly TaskMeshSystem _inner;
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-bench-store-").FullName;
    private readonly TaskMesh.Engine.Store.RunStore _store;
    private long? _steady;

    public TaskMeshStoreSystem(int workers)
    {
        _inner = new TaskMeshSystem(workers);
        _store = TaskMesh.Engine.Store.RunStore.Open(Path.Combine(_dir, "bench.db"));
    }

    public override string Name => "taskmesh_store";

    public override object Build(Shape shape) => _inner.Build(shape);

    public override void Run(object built, Shape shape)
    {
        var result = _inner.Engine.RunAsync((PreparedGraph)built, new RunOptions { CollectTaskDetails = false, Observers = [new TaskMesh.Engine.Store.RunRecorder(_store)] })
            .GetAwaiter().GetResult();
        _store.FlushAsync().GetAwaiter().GetResult();
        if (result.Succeeded != shape.Tasks) throw new InvalidOperationException($"taskmesh_store ran {result.Succeeded} of {shape.Tasks}");
        if (_store.CompletedCount(result.RunId) != shape.Tasks) throw new InvalidOperationException("the store missed completions");
        _steady = result.SteadyStateAllocatedBytes;
    }

    public override long? SteadyStateAllocatedBytes => _steady;

    public void Dispose()
    {
        _store.Dispose();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>
/// The engine with its Prometheus metrics: <c>taskmesh_metrics</c> records them (the metrics
/// observer, nothing served); <c>taskmesh_scraped</c> also serves them from Kestrel on 127.0.0.1
/// and a client scrapes <c>/metrics</c> every 100 ms from the run's start to its end (the scrapes
/// made are counted and checked). Build is the same as <see cref="TaskMeshSystem"/>'s.
/// </summary>
internal sealed class TaskMeshMetricsSystem : DagSystem, IDisposable
{
    /// <summary>How often the client scrapes (<c>--scrape-ms</c>; default 100 ms).</summary>
    public static TimeSpan ScrapeInterval = TimeSpan.FromMilliseconds(100);

    private readonly TaskMeshSystem _inner;
    private readonly TaskMesh.Engine.Observability.TaskMeshMetrics _metrics = new();
    private readonly TaskMesh.Host.Web.TaskMeshWebHost? _web;
    private readonly HttpClient? _http;
    private long? _steady;

    public TaskMeshMetricsSystem(int workers, bool scraped)
    {
        _inner = new TaskMeshSystem(workers);
        _metrics.Watch(_inner.Engine);
        if (scraped)
        {
            _web = TaskMesh.Host.Web.TaskMeshWebHost.StartAsync("127.0.0.1", 0, _metrics).GetAwaiter().GetResult();
            _http = new HttpClient { Timeout = TimeSpan.FromSeconds(10) };
        }
    }

    public override string Name => _web is null ? "taskmesh_metrics" : "taskmesh_scraped";

    /// <summary>Scrapes made during the runs since <see cref="ResetScrapes"/>, all of them complete and checked.</summary>
    public int TotalScrapes { get; private set; }

    public void ResetScrapes() => TotalScrapes = 0;

    public override object Build(Shape shape) => _inner.Build(shape);

    public override void Run(object built, Shape shape)
    {
        using var stop = new CancellationTokenSource();
        int scrapes = 0;
        var scraper = _web is null ? Task.CompletedTask : Task.Run(async () =>
        {
            using var timer = new PeriodicTimer(ScrapeInterval);
            do
            {
                var text = await _http!.GetStringAsync(_web.MetricsUri, stop.Token);
                if (!text.Contains("taskmesh_tasks_total", StringComparison.Ordinal)) throw new InvalidOperationException("a scrape without the task counters");
                scrapes++;
            }
            while (await timer.WaitForNextTickAsync(stop.Token));
        });
        var result = _inner.Engine.RunAsync((PreparedGraph)built, new RunOptions { CollectTaskDetails = false, Observers = [_metrics] }).GetAwaiter().GetResult();
        stop.Cancel();
        try { scraper.GetAwaiter().GetResult(); } catch (OperationCanceledException) { }
        TotalScrapes += scrapes;
        if (result.Succeeded != shape.Tasks) throw new InvalidOperationException($"{Name} ran {result.Succeeded} of {shape.Tasks}");
        _steady = result.SteadyStateAllocatedBytes;
    }

    public override long? SteadyStateAllocatedBytes => _steady;

    public void Dispose()
    {
        _http?.Dispose();
        _web?.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }
}

/// <summary>
/// What a .NET developer writes with TPL Dataflow: one <see cref="ActionBlock{T}"/> per task; a
/// task's block posts to each successor whose count of unfinished predecessors reaches zero.
/// </summary>
internal sealed class DataflowSystem : DagSystem
{
    public override string Name => "tpl_dataflow";

    private sealed class Built(ActionBlock<int>[] blocks, int[] pending, int[] roots, CountdownEvent done)
    {
        public readonly ActionBlock<int>[] Blocks = blocks;
        public readonly int[] Pending = pending;
        public readonly int[] Roots = roots;
        public readonly CountdownEvent Done = done;
    }

    public override object Build(Shape shape)
    {
        int n = shape.Tasks;
        var (start, succ) = Csr(shape);
        var pending = new int[n];
        foreach (var t in shape.Target) pending[t]++;
        var blocks = new ActionBlock<int>[n];
        var done = new CountdownEvent(n);
        for (int i = 0; i < n; i++)
        {
            int me = i;
            blocks[i] = new ActionBlock<int>(_ =>
            {
                Body();
                for (int e = start[me]; e < start[me + 1]; e++)
                    if (Interlocked.Decrement(ref pending[succ[e]]) == 0) blocks[succ[e]].Post(0);
                done.Signal();
            });
        }
        var roots = Enumerable.Range(0, n).Where(i => pending[i] == 0).ToArray();
        return new Built(blocks, pending, roots, done);
    }

    public override void Run(object built, Shape shape)
    {
        var b = (Built)built;
        foreach (var r in b.Roots) b.Blocks[r].Post(0);
        b.Done.Wait();
        foreach (var block in b.Blocks) block.Complete();
    }

    internal static (int[] start, int[] succ) Csr(Shape shape)
    {
        var start = new int[shape.Tasks + 1];
        foreach (var s in shape.Source) start[s + 1]++;
        for (int i = 0; i < shape.Tasks; i++) start[i + 1] += start[i];
        var fill = (int[])start.Clone();
        var succ = new int[shape.Source.Length];
        for (int e = 0; e < shape.Source.Length; e++) succ[fill[shape.Source[e]]++] = shape.Target[e];
        return (start, succ);
    }
}

/// <summary>
/// What a .NET developer writes with tasks: one <see cref="Task"/> per task, created cold for
/// roots and with <see cref="TaskFactory.ContinueWhenAll(Task[], Action{Task[]})"/> (or
/// ContinueWith for one predecessor) for the rest.
/// </summary>
internal sealed class TasksSystem : DagSystem
{
    public override string Name => "tpl_tasks";

    private sealed record Built(Task[] Tasks, Task[] Roots);

    public override object Build(Shape shape)
    {
        int n = shape.Tasks;
        var predCount = new int[n + 1];
        foreach (var t in shape.Target) predCount[t + 1]++;
        for (int i = 0; i < n; i++) predCount[i + 1] += predCount[i];
        var fill = (int[])predCount.Clone();
        var preds = new int[shape.Source.Length];
        for (int e = 0; e < shape.Source.Length; e++) preds[fill[shape.Target[e]]++] = shape.Source[e];

        // Every edge points from a smaller to a larger index in these shapes, so index order is topological.
        var tasks = new Task[n];
        var roots = new List<Task>();
        Action body = static () => Body();
        for (int i = 0; i < n; i++)
        {
            int k = predCount[i + 1] - predCount[i];
            if (k == 0)
            {
                tasks[i] = new Task(body);
                roots.Add(tasks[i]);
            }
            else if (k == 1)
                tasks[i] = tasks[preds[predCount[i]]].ContinueWith(static _ => Body(), TaskContinuationOptions.None);
            else
            {
                var before = new Task[k];
                for (int j = 0; j < k; j++) before[j] = tasks[preds[predCount[i] + j]];
                tasks[i] = Task.Factory.ContinueWhenAll(before, static _ => Body());
            }
        }
        return new Built(tasks, roots.ToArray());
    }

    public override void Run(object built, Shape shape)
    {
        var b = (Built)built;
        foreach (var r in b.Roots) r.Start();
        Task.WaitAll(b.Tasks);
    }
}
