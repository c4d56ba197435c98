using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Bench.Micro;

/// <summary><c>bench -- micro [BenchmarkDotNet options]</c>: hot-path micro benchmarks with MemoryDiagnoser.</summary>
internal static class MicroSuite
{
    public static int Run(string[] args)
    {
        // In-process: the bench assembly's name differs from its project file's, which the
        // out-of-process toolchain needs; in-process also halves the suite's time.
        if (!args.Contains("--inProcess")) args = [.. args, "--inProcess"];
        BenchmarkSwitcher.FromTypes([typeof(SchedulerBenchmarks), typeof(DequeBenchmarks)]).Run(args);
        return 0;
    }
}

/// <summary>Running prepared 10,000-task graphs (and a 10-task one); the baseline is one Task per node (ContinueWith) in the same class.</summary>
[MemoryDiagnoser]
public class SchedulerBenchmarks
{
    private const int N = 10_000;
    private static long s_counter;
    private TaskMeshEngine _engine = null!;
    private PreparedGraph _chain = null!;
    private PreparedGraph _fan = null!;
    private PreparedGraph _tiny = null!;

    [GlobalSetup]
    public void Setup()
    {
        _engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 2 });
        _engine.Handlers.RegisterInline("inc", static _ => { Interlocked.Increment(ref s_counter); return null; });
        var chain = new GraphBuilder("chain");
        var prev = chain.Task("inc");
        for (int i = 1; i < N; i++) prev = chain.Task("inc").DependsOn(prev);
        _chain = _engine.Prepare(chain);
        var fan = new GraphBuilder("fan");
        var root = fan.Task("inc");
        for (int i = 1; i < N; i++) fan.Task("inc").DependsOn(root);
        _fan = _engine.Prepare(fan);
        var tiny = new GraphBuilder("tiny");
        tiny.AddTasks(Tiny, "inc");
        for (int i = 1; i < Tiny; i++) tiny.AddEdge(i - 1, i);
        _tiny = _engine.Prepare(tiny);
    }

    private const int Tiny = 10;

    [Benchmark(Baseline = true, OperationsPerInvoke = N)]
    public void TasksChain()
    {
        var first = new Task(static () => Interlocked.Increment(ref s_counter));
        Task t = first;
        for (int i = 1; i < N; i++) t = t.ContinueWith(static _ => Interlocked.Increment(ref s_counter));
        first.Start();
        t.Wait();
    }

    [Benchmark(OperationsPerInvoke = N)]
    public RunStatus TaskMeshChain() => _engine.RunAsync(_chain, new RunOptions { CollectTaskDetails = false }).GetAwaiter().GetResult().Status;

    /// <summary>A 10-task chain: the per-run fixed cost (run state, scheduler threads, completion), per task.</summary>
    [Benchmark(OperationsPerInvoke = Tiny)]
    public RunStatus TaskMeshTinyChain() => _engine.RunAsync(_tiny, new RunOptions { CollectTaskDetails = false }).GetAwaiter().GetResult().Status;

    [Benchmark(OperationsPerInvoke = N)]
    public RunStatus TaskMeshFanOut() => _engine.RunAsync(_fan, new RunOptions { CollectTaskDetails = false }).GetAwaiter().GetResult().Status;
}

/// <summary>The work-stealing deque's owner path.</summary>
[MemoryDiagnoser]
public class DequeBenchmarks
{
    private readonly WorkStealingDeque _deque = new(4096);

    [Benchmark(OperationsPerInvoke = 1024)]
    public int PushPop()
    {
        int sum = 0;
        for (int i = 0; i < 1024; i++) _deque.Push(i);
        while (_deque.TryPop(out int x)) sum += x;
        return sum;
    }
}
