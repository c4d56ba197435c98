using System.Diagnostics;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TaskMesh.Bench.Dag;
using TaskMesh.Cluster;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Hosting;

namespace TaskMesh.Bench.Cluster;

/// <summary>One measured figure.</summary>
internal sealed record ClusterRecord(string metric, double value, string unit);

/// <summary>
/// <c>bench -- cluster [--workers 2] [--tasks 200000] [--requests 2000] [--seconds 5] [--only ceiling,floor,batched,latency,failover,unbatched] --json out.json</c>: the
/// coordinator in this process (the engine of the composition root, no store) and N worker processes
/// (<c>taskmesh worker</c>) on loopback — no-op tasks through the whole engine to the workers, batched
/// and one per grain call; one task's round trip; the time to declare a frozen (SIGSTOP) worker dead and
/// to queue its tasks again. Orleans' own figures in the same run, as the floor: grain calls to a
/// worker that do nothing, one at a time and 128 in flight, and 512 keys to a call.
/// </summary>
internal static class ClusterSuite
{
    public static int Run(string[] args) => RunAsync(args).GetAwaiter().GetResult();

    private static async Task<int> RunAsync(string[] args)
    {
        int workers = int.Parse(DagSuite.Opt(args, "--workers") ?? "2");
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "200000");
        int requests = int.Parse(DagSuite.Opt(args, "--requests") ?? "2000");
        double seconds = double.Parse(DagSuite.Opt(args, "--seconds") ?? "5", System.Globalization.CultureInfo.InvariantCulture);
        string? json = DagSuite.Opt(args, "--json");
        // --only ceiling,floor,batched,latency,failover,unbatched: the groups of figures to measure (default: all).
        var only = DagSuite.Opt(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string[] groups = ["ceiling", "floor", "batched", "latency", "failover", "unbatched"];
        if (only?.FirstOrDefault(g => !groups.Contains(g)) is { } unknown)
        {
            Console.Error.WriteLine($"--only takes {string.Join(", ", groups)}; got '{unknown}'");
            return 2;
        }
        bool Measures(string group) => only is null || only.Contains(group);
        var records = new List<ClusterRecord>();
        void Add(string metric, double value, string unit)
        {
            records.Add(new ClusterRecord(metric, Math.Round(value, 4), unit));
            Console.WriteLine($"{metric,-40} {value,14:N4} {unit}");
        }
        Console.WriteLine($"cluster bench: coordinator in this process, {workers} worker processes on loopback; {tasks:N0} tasks per throughput figure, {requests:N0} round trips");

        // The engine's own ceiling for a layer that is not local, in this process: the same graph to a
        // layer that answers attempts in batches at once (no Orleans, no workers). No cluster can pass
        // it: every remote attempt takes this path on the coordinator. Measured both ways a layer can
        // take attempts: in batches (the cluster's and the external workers' layers) and one
        // ExecuteAsync call each (a task, a timer and two cancellation sources per attempt).
        foreach (bool batches in new[] { false, true })
        {
            if (!Measures("ceiling")) break;
            var services = new ServiceCollection();
            services.AddTaskMesh(TaskMeshConfig.Parse("[store]\nenabled = false\n"));
            await using var provider = services.BuildServiceProvider();
            var engine = provider.GetRequiredService<TaskMeshRuntime>().Engine;
            using var layer = new AnswerAtOnceLayer(batches);
            engine.AddLayer(layer);
            engine.Router = new FixedLayerRouter(layer.Name);
            var graph = NoOps(tasks);
            async Task<TimeSpan> Once()
            {
                long t0 = Stopwatch.GetTimestamp();
                var result = await engine.RunAsync(graph, new RunOptions { CollectTaskDetails = false });
                if (result.Status != RunStatus.Succeeded) throw new InvalidOperationException($"the run {result.Status}");
                return Stopwatch.GetElapsedTime(t0);
            }
            Add(batches ? "engine_ceiling_tasks_per_s" : "engine_ceiling_per_call_tasks_per_s", tasks / (await Steady(seconds, Once)).TotalSeconds, "tasks/s");
        }

        var batched = new ClusterSettings { Port = 0, BatchSize = 1024, Prefetch = 8192 };
        if (Measures("floor") || Measures("batched") || Measures("latency"))
        await using (var c = await Coordinator.StartAsync(batched, workers))
        {
            // Orleans alone: grain calls to a worker that do nothing.
            var grain = c.Grain(0);
            if (Measures("floor"))
            {
                await Repeat(seconds, async () => await grain.Cancel([]));                     // warm
                var one = await Latencies(requests, async () => await grain.Cancel([]));
                Add("orleans_call_p50_ms", Percentile(one, 0.50), "ms");
                Add("orleans_call_p99_ms", Percentile(one, 0.99), "ms");
                Add("orleans_calls_per_s", await InFlight(seconds, 128, () => grain.Cancel([])), "calls/s");
                var keys = new long[512];
                Add("orleans_batched_keys_per_s", 512 * await InFlight(seconds, 16, () => grain.Cancel(keys)), "keys/s");
            }

            // The engine to the workers, batched.
            if (Measures("batched"))
            {
                var graph = NoOps(tasks);
                await c.RunAsync(NoOps(20_000));
                Add("throughput_tasks_per_s", tasks / (await Steady(seconds, () => c.RunAsync(graph))).TotalSeconds, "tasks/s");
            }

            // One task's round trip through the whole engine (plan, dispatch, worker, outcome, run end).
            if (Measures("latency"))
            {
                var single = NoOps(1);
                await Repeat(seconds, () => c.RunAsync(single));
                var trips = await Latencies(requests, () => c.RunAsync(single));
                Add("latency_p50_ms", Percentile(trips, 0.50), "ms");
                Add("latency_p99_ms", Percentile(trips, 0.99), "ms");
            }
        }

        // A frozen worker: declared dead, its attempts queued again (the default prefetch: a worker holds its slots and 64 more).
        if (Measures("failover"))
        await using (var c = await Coordinator.StartAsync(new ClusterSettings { Port = 0 }, workers))
        {
            var (detection, requeue, resent, held) = await c.FreezeOneAsync();
            Add("detection_s", detection, "s");
            Add("failover_s", requeue, "s");
            Add("failover_resent_s", resent, "s");
            Console.WriteLine($"  (the frozen worker held {held} attempts; sent again once the other worker had credit for them)");
        }

        // One task to a grain call, each way.
        var unbatched = new ClusterSettings { Port = 0, BatchSize = 1, Prefetch = 256 };
        if (Measures("unbatched"))
        await using (var c = await Coordinator.StartAsync(unbatched, workers))
        {
            int n = Math.Max(20_000, tasks / 10);
            var graph = NoOps(n);
            Add("throughput_unbatched_tasks_per_s", n / (await Steady(seconds, () => c.RunAsync(graph))).TotalSeconds, "tasks/s");
        }

        if (json is not null)
        {
            await using var f = File.Create(json);
            await JsonSerializer.SerializeAsync(f, records, new JsonSerializerOptions { WriteIndented = true });
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    /// <summary>
    /// A layer that answers every attempt at once, in batches on a loop of its own (as the cluster
    /// layer ends the attempts of a worker's report): the engine's per-attempt path alone. Takes its
    /// attempts in batches (<see cref="TaskMesh.Engine.Layers.LayerAttempt"/>) or, cooperative, one
    /// <c>ExecuteAsync</c> call each.
    /// </summary>
    private sealed class AnswerAtOnceLayer : TaskMesh.Engine.Layers.ExecutionLayer, IDisposable
    {
        private readonly System.Threading.Channels.Channel<object> _queue =
            System.Threading.Channels.Channel.CreateUnbounded<object>(new() { SingleReader = true });
        private readonly Task _loop;
        private readonly bool _batches;

        public AnswerAtOnceLayer(bool batches) : base(8192)
        {
            _batches = batches;
            _loop = Task.Run(LoopAsync);
        }

        public override string Name => "at_once";

        public override bool Cooperative => true;

        public override bool TakesBatches => _batches;

        public override void StartAttempts(ReadOnlySpan<TaskMesh.Engine.Layers.LayerAttempt> attempts)
        {
            foreach (var a in attempts) _queue.Writer.TryWrite(a);
        }

        public override async ValueTask<object?> ExecuteAsync(TaskMesh.Engine.Layers.LayerInvocation invocation, CancellationToken ct)
        {
            var done = new TaskCompletionSource<object?>(TaskCreationOptions.RunContinuationsAsynchronously);
            _queue.Writer.TryWrite(done);
            return await done.Task.ConfigureAwait(false);
        }

        private async Task LoopAsync()
        {
            var batch = new List<object>(1024);
            while (await _queue.Reader.WaitToReadAsync().ConfigureAwait(false))
            {
                while (batch.Count < 1024 && _queue.Reader.TryRead(out var d)) batch.Add(d);
                foreach (var d in batch)
                    if (d is TaskMesh.Engine.Layers.LayerAttempt a) a.Succeed(null);
                    else ((TaskCompletionSource<object?>)d).TrySetResult(null);
                batch.Clear();
            }
        }

        public void Dispose()
        {
            _queue.Writer.TryComplete();
            _loop.Wait(TimeSpan.FromSeconds(10));
        }
    }

    private static TaskGraph NoOps(int n)
    {
        var b = new GraphBuilder("noops");
        for (int i = 0; i < n; i++) b.Task($"t{i}", "noop");
        return b.Build();
    }

    /// <summary>The median time of five runs of <paramref name="run"/> (a throughput figure: one run of a few hundred milliseconds is at the mercy of a collection).</summary>
    private static async Task<TimeSpan> Median(Func<Task<TimeSpan>> run)
    {
        var times = new TimeSpan[5];
        for (int i = 0; i < times.Length; i++) times[i] = await run();
        Array.Sort(times);
        return times[times.Length / 2];
    }

    /// <summary>
    /// A throughput cell, warmed until it is steady: the same work for <paramref name="seconds"/>, then
    /// medians of five runs until two in a row agree within 5 % and at least <see cref="MinWarm"/> has
    /// passed (at most <see cref="MaxWarm"/>); the last median. On two busy cores the JIT's tiering of
    /// the coordinator and of fresh worker processes takes tens of seconds: measured after 5 s, one
    /// attempt to a grain call gave 28–44 k tasks/s, after 10–20 s 128–205 k.
    /// </summary>
    private static async Task<TimeSpan> Steady(double seconds, Func<Task<TimeSpan>> run)
    {
        long start = Stopwatch.GetTimestamp();
        await Repeat(seconds, run);
        var last = await Median(run);
        while (Stopwatch.GetElapsedTime(start) < MaxWarm)
        {
            var next = await Median(run);
            bool agree = Math.Abs(next.TotalSeconds - last.TotalSeconds) <= 0.05 * last.TotalSeconds;
            last = next;
            if (agree && Stopwatch.GetElapsedTime(start) >= MinWarm) break;
        }
        Console.WriteLine($"  (steady after {Stopwatch.GetElapsedTime(start).TotalSeconds:0} s)");
        return last;
    }

    private static readonly TimeSpan MinWarm = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan MaxWarm = TimeSpan.FromSeconds(60);

    /// <summary>Does <paramref name="work"/> over and over for <paramref name="seconds"/>.</summary>
    private static async Task Repeat(double seconds, Func<Task> work)
    {
        var until = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        do await work(); while (Stopwatch.GetTimestamp() < until);
    }

    private static async Task<double[]> Latencies(int count, Func<Task> work)
    {
        var ms = new double[count];
        for (int i = 0; i < count; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            await work();
            ms[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        }
        Array.Sort(ms);
        return ms;
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Min(sorted.Length - 1, (int)(p * sorted.Length))];

    /// <summary>Calls per second with <paramref name="inFlight"/> calls kept going for <paramref name="seconds"/>.</summary>
    private static async Task<double> InFlight(double seconds, int inFlight, Func<Task> call)
    {
        long calls = 0;
        var until = Stopwatch.GetTimestamp() + (long)(seconds * Stopwatch.Frequency);
        var sw = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, inFlight).Select(async _ =>
        {
            while (Stopwatch.GetTimestamp() < until)
            {
                await call();
                Interlocked.Increment(ref calls);
            }
        }));
        return calls / sw.Elapsed.TotalSeconds;
    }

    /// <summary>A coordinator with its engine and N local workers.</summary>
    private sealed class Coordinator : IAsyncDisposable
    {
        private readonly ServiceProvider _provider;
        private readonly TaskMeshEngine _engine;
        private readonly ClusterCoordinator _cluster;
        private readonly LocalWorkers _workers;
        private readonly string _configFile;

        private Coordinator(ServiceProvider provider, TaskMeshEngine engine, ClusterCoordinator cluster, LocalWorkers workers, string configFile)
            => (_provider, _engine, _cluster, _workers, _configFile) = (provider, engine, cluster, workers, configFile);

        public static async Task<Coordinator> StartAsync(ClusterSettings settings, int workers)
        {
            var services = new ServiceCollection();
            services.AddTaskMesh(TaskMeshConfig.Parse("[store]\nenabled = false\n"));
            var provider = services.BuildServiceProvider();
            var engine = provider.GetRequiredService<TaskMeshRuntime>().Engine;
            var cluster = await ClusterCoordinator.StartAsync(engine, settings);
            engine.Router = new FixedLayerRouter(cluster.Layer.Name);
            // The workers report in batches of the same size (their config), one slot each per core share.
            var config = Path.Combine(Path.GetTempPath(), $"taskmesh-bench-cluster-{Environment.ProcessId}-{settings.BatchSize}.toml");
            File.WriteAllText(config, $"[cluster]\nbatch_size = {settings.BatchSize}\n");
            var local = LocalWorkers.Start(workers, cluster.Endpoint, Math.Max(1, Environment.ProcessorCount / workers), null,
                ["dotnet", Path.Combine(AppContext.BaseDirectory, "taskmesh.dll")], ["--config", config]);
            if (!await cluster.WaitForWorkersAsync(workers, TimeSpan.FromSeconds(60)))
                throw new InvalidOperationException($"only {cluster.Workers.Count} of {workers} workers joined");
            return new Coordinator(provider, engine, cluster, local, config);
        }

        public IWorkerGrain Grain(int worker)
        {
            var endpoint = _cluster.Workers[worker].Endpoint;
            return _cluster.GrainOf(endpoint);
        }

        public async Task<TimeSpan> RunAsync(TaskGraph graph)
        {
            long t0 = Stopwatch.GetTimestamp();
            var result = await _engine.RunAsync(graph, new RunOptions { CollectTaskDetails = false });
            var elapsed = Stopwatch.GetElapsedTime(t0);
            if (result.Status != RunStatus.Succeeded) throw new InvalidOperationException($"the run {result.Status}");
            return elapsed;
        }

        /// <summary>
        /// Freezes the first worker (SIGSTOP) while a run keeps both busy with attempts of 2 ms; returns
        /// the seconds to its death being declared, to its attempts queued again, and to their being
        /// sent to the other worker; and how many it held.
        /// </summary>
        public async Task<(double Detection, double Requeue, double Resent, int Held)> FreezeOneAsync()
        {
            var b = new GraphBuilder("freeze");
            for (int i = 0; i < 20_000; i++) b.Task($"s{i}", "sleep", new { millis = 2 });
            var running = _engine.RunAsync(b.Build(), new RunOptions { CollectTaskDetails = false });
            var victim = _cluster.Workers[0];
            var pid = victim.ProcessId;
            while (_cluster.Workers.FirstOrDefault(w => w.ProcessId == pid)?.InFlight is not > 0) await Task.Delay(1);
            var lost = new TaskCompletionSource<(WorkerLoss Loss, long At)>(TaskCreationOptions.RunContinuationsAsynchronously);
            _cluster.WorkerLost += l => lost.TrySetResult((l, Stopwatch.GetTimestamp()));
            long frozen = Stopwatch.GetTimestamp();
            Signal(pid, "STOP");
            try
            {
                var (loss, at) = await lost.Task.WaitAsync(TimeSpan.FromSeconds(120));
                while (_cluster.Queued > 0) await Task.Delay(1);
                double resent = Stopwatch.GetElapsedTime(at).TotalSeconds + loss.RequeueMs / 1000;
                var result = await running;
                if (result.Status != RunStatus.Succeeded) throw new InvalidOperationException($"the run {result.Status}");
                return (Stopwatch.GetElapsedTime(frozen, at).TotalSeconds - loss.RequeueMs / 1000, loss.RequeueMs / 1000, resent, loss.Requeued);
            }
            finally
            {
                Signal(pid, "CONT");
            }
        }

        private static void Signal(int pid, string signal)
        {
            using var kill = Process.Start("kill", [$"-{signal}", pid.ToString()])!;
            kill.WaitForExit();
        }

        public async ValueTask DisposeAsync()
        {
            await _workers.DisposeAsync();
            await _cluster.DisposeAsync();
            await _provider.DisposeAsync();
            File.Delete(_configFile);
        }
    }
}
