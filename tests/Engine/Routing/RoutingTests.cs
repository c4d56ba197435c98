using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;
using TaskMesh.Tests.Engine.Observability;
using Xunit;

namespace TaskMesh.Tests.Engine.Routing;

public class RoutingTests
{
    /// <summary>Sends spin tasks of 100 µs or more to <c>big</c>, in batches; counts its calls.</summary>
    private sealed class SizeRouter : ILayerRouter
    {
        public int Batches, Tasks;

        public RouteDecision Route(in RoutingContext context, int task) => throw new InvalidOperationException("the batch form is used");

        public void RouteBatch(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions)
        {
            Batches++;
            Tasks += tasks.Length;
            for (int i = 0; i < tasks.Length; i++)
            {
                var args = context.ParsedArgsOf(tasks[i]);
                bool big = context.HandlerOf(tasks[i]).Name == "spin" && args is not null && args.ToString()!.Contains("Micros = 1000");
                decisions[i] = big ? new RouteDecision("big", Confidence: 0.9, PredictedCost: 0.5, Reason: "spin >= 100us") : new RouteDecision("local", Reason: "small");
            }
        }
    }

    [Fact]
    public async Task Router_BatchDecisions_SendTasksToTheirLayer_AndObserversSeeThePrediction()
    {
        var engine = new TaskMeshEngine();
        var big = new TestLayer("big", 2);
        engine.AddLayer(big);
        var router = new SizeRouter();
        engine.Router = router;
        var g = new GraphBuilder();
        for (int i = 0; i < 3000; i++) g.Task($"s{i}", "spin", new { micros = i % 100 == 0 ? 1000 : 1 });
        g.Task("forced", "spin", new { micros = 1000 }).OnLayer("local");
        var o = new RecordingObserver();

        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [o] });

        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(3000, router.Tasks);                 // the forced task never asks the router
        Assert.Equal(3, router.Batches);                  // 1024 at a time
        Assert.Equal(30, big.Executed);
        Assert.Equal(30, result.TasksByLayer["big"]);
        var routed = o.Routed.Where(r => r.Decision.Layer == "big").ToList();
        Assert.Equal(30, routed.Count);
        Assert.All(routed, r => Assert.Equal((0.9, 0.5, "spin >= 100us"), (r.Decision.Confidence!.Value, r.Decision.PredictedCost!.Value, r.Decision.Reason)));
    }

    [Fact]
    public async Task Router_UnknownLayerOrUnfitDecision_FallsBackToLocal()
    {
        var engine = new TaskMeshEngine();
        engine.Router = new FixedLayerRouter("nowhere");
        var g = new GraphBuilder();
        g.Task("a", "spin", new { micros = 1 });
        var result = await engine.RunAsync(engine.Prepare(g));
        Assert.Equal("local", result.TaskResultOf(0).Layer);

        // The quantum layer runs only quantum tasks: a router sending spin there is overruled.
        engine.Router = new FixedLayerRouter("quantum");
        result = await engine.RunAsync(engine.Prepare(g));
        Assert.Equal("local", result.TaskResultOf(0).Layer);
    }

    [Fact]
    public void Layers_AreAnOpenSet_CheckedAgainstTheRegisteredOnes()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder();
        g.Task("a", "noop").OnLayer("gpu-pool");
        var ex = Assert.Throws<GraphValidationException>(() => engine.Prepare(g));
        Assert.Contains(ex.Errors, e => e is { Code: "bad-value", TaskId: "a" } && e.Message.Contains("registered layer (local, quantum)"));

        engine.AddLayer(new TestLayer("gpu-pool", 1));
        var graph = engine.Prepare(g);
        Assert.NotNull(graph);

        Assert.Throws<ArgumentException>(() => engine.AddLayer(new TestLayer("local", 1)));
        Assert.Throws<ArgumentException>(() => engine.AddLayer(new TestLayer("auto", 1)));
        Assert.Throws<ArgumentException>(() => engine.AddLayer(new TestLayer("bad name", 1)));
    }

    [Fact]
    public async Task LayerCapacity_RaisedWhileRunning_AdmitsMoreTasksAtOnce()
    {
        var engine = new TaskMeshEngine();
        var pool = new TestLayer("pool", 1);
        engine.AddLayer(pool);
        int running = 0, peak = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        engine.Handlers.Register("hold", async (ctx, a, ct) =>
        {
            int now = Interlocked.Increment(ref running);
            int p;
            while ((p = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, p) != p) { }
            await release.Task.WaitAsync(ct);
            Interlocked.Decrement(ref running);
            return null;
        });
        var g = new GraphBuilder();
        for (int i = 0; i < 8; i++) g.Task($"h{i}", "hold").OnLayer("pool");
        var run = engine.RunAsync(engine.Prepare(g));

        await WaitUntil(() => Volatile.Read(ref running) == 1);
        await Task.Delay(50);
        Assert.Equal(1, Volatile.Read(ref running));
        pool.SetCapacity(4);
        await WaitUntil(() => Volatile.Read(ref running) == 4);
        release.SetResult();
        var result = await run.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(8, result.Succeeded);
        Assert.Equal(4, peak);
    }

    private static async Task WaitUntil(Func<bool> condition)
    {
        var deadline = DateTime.UtcNow.AddSeconds(20);
        while (!condition())
        {
            Assert.True(DateTime.UtcNow < deadline, "condition not reached in time");
            await Task.Delay(5);
        }
    }

    [Fact]
    public void RetryPolicy_SameSeed_SameDelays_WithinTheExponentialBounds()
    {
        var a = new RetryPolicy(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1), seed: 7);
        var b = new RetryPolicy(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1), seed: 7);
        var c = new RetryPolicy(TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1), seed: 8);
        for (int attempt = 1; attempt <= 6; attempt++)
        {
            double cap = Math.Min(100 * Math.Pow(2, attempt - 1), 1000);
            var d = a.DelayAfter(3, attempt).TotalMilliseconds;
            Assert.Equal(d, b.DelayAfter(3, attempt).TotalMilliseconds);
            Assert.InRange(d, cap / 2, cap);
        }
        Assert.NotEqual(a.DelayAfter(3, 1), c.DelayAfter(3, 1));
        Assert.NotEqual(a.DelayAfter(3, 1), a.DelayAfter(4, 1));
    }
}
