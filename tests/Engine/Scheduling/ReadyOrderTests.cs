using System.Collections.Concurrent;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

/// <summary>The order in which a layer's scarce slots go to ready tasks (<c>[execution] ready_order</c>).</summary>
public class ReadyOrderTests
{
    [Fact]
    public void UpwardRanks_AreEachTasksEstimatePlusTheLongestEstimatedPathBelowIt_EdgeWeightsIncluded()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("ranks");
        var a = g.Task("a", "noop").WithEstimate(10);
        var b = g.Task("b", "noop").WithEstimate(20).DependsOn(a);
        var c = g.Task("c", "noop").WithEstimate(40).DependsOn(a, EdgeKind.Soft, weight: 2);
        g.Task("d", "noop").WithEstimate(5).DependsOn(b).DependsOn(c);
        g.Task("alone", "sleep", new { millis = 7 });                 // the handler's estimate
        var ranks = engine.Analyze(engine.Prepare(g)).UpwardRankMicros;

        Assert.Equal(5_000, ranks[3]);                                  // d
        Assert.Equal(25_000, ranks[1]);                                 // b: 20 + d
        Assert.Equal(45_000, ranks[2]);                                 // c: 40 + d
        Assert.Equal(10_000 + 2_000 + 45_000, ranks[0]);                // a: 10 + max(b, weight 2 + c)
        Assert.Equal(7_000, ranks[4]);
    }

    /// <summary>
    /// a(10) → a2(50); b(30); c(5) → c2(100); d(1), all roots ready at once: upward ranks
    /// a 60, a2 50, b 30, c 105, c2 100, d 1.
    /// </summary>
    private static GraphBuilder Crafted(bool estimates = true, bool urgentD = false)
    {
        var g = new GraphBuilder("crafted");
        TaskRef T(string id, double ms) { var t = g.Task(id, "record"); return estimates ? t.WithEstimate(ms) : t; }
        var a = T("a", 10);
        T("a2", 50).DependsOn(a);
        T("b", 30);
        var c = T("c", 5);
        T("c2", 100).DependsOn(c);
        var d = T("d", 1);
        if (urgentD) d.WithPriority(TaskPriority.High);
        return g;
    }

    private static async Task<(List<string> Order, RunResult Result)> RunOneSlot(GraphBuilder g, ReadyOrder order, IDurationEstimator? learned = null)
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 1, WorkerThreads = 1, ReadyOrder = order }) { DurationEstimator = learned };
        var started = new ConcurrentQueue<string>();
        engine.Handlers.Register("record", async (ctx, args, ct) => { started.Enqueue(ctx.Id); await Task.Delay(1, ct); return null; });
        var result = await engine.RunAsync(engine.Prepare(g)).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal(6, result.Succeeded);
        return (started.ToList(), result);
    }

    [Theory]
    [InlineData(ReadyOrder.Auto)]
    [InlineData(ReadyOrder.CriticalPath)]
    public async Task OneSlot_KnownEstimates_StartsTasksInUpwardRankOrder(ReadyOrder order)
    {
        var (started, result) = await RunOneSlot(Crafted(), order);
        Assert.Equal(["c", "c2", "a", "a2", "b", "d"], started);
        Assert.Equal("critical_path", result.Record.ReadyOrder);
        var buffer = new System.IO.MemoryStream();
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer)) result.Record.WriteJson(w);
        Assert.Contains("\"ready_order\":\"critical_path\"", System.Text.Encoding.UTF8.GetString(buffer.ToArray()));
    }

    /// <summary>A learned duration model, as the engine sees one: the crafted graph's estimates by task id.</summary>
    private sealed class ByIdEstimator : IDurationEstimator
    {
        public readonly List<string> Layers = new();

        public double? EstimateMs(PreparedGraph graph, int task, string layer)
        {
            lock (Layers) Layers.Add(layer);
            return graph.Graph.IdOf(task) switch { "a" => 10, "a2" => 50, "b" => 30, "c" => 5, "c2" => 100, "d" => 1, _ => null };
        }
    }

    [Fact]
    public async Task ALearnedEstimate_OrdersTasksThatStateNone_OnTheLayerTheyAreRoutedTo()
    {
        var learned = new ByIdEstimator();
        var (started, result) = await RunOneSlot(Crafted(estimates: false), ReadyOrder.Auto, learned);
        Assert.Equal(["c", "c2", "a", "a2", "b", "d"], started);
        Assert.Equal("critical_path", result.Record.ReadyOrder);
        Assert.All(learned.Layers, l => Assert.Equal("local", l));
        Assert.Equal(105, result.Record.CriticalPathMs, 3);   // c → c2 by the learned estimates
    }

    [Fact]
    public async Task Fifo_ReproducesTheArrivalOrderOfARunWithoutEstimates()
    {
        var (fifo, fifoResult) = await RunOneSlot(Crafted(estimates: true), ReadyOrder.Fifo);
        var (plain, plainResult) = await RunOneSlot(Crafted(estimates: false), ReadyOrder.Auto);
        Assert.Equal(plain, fifo);
        Assert.NotEqual(["c", "c2", "a", "a2", "b", "d"], fifo);
        Assert.Equal(("fifo", "fifo"), (fifoResult.Record.ReadyOrder, plainResult.Record.ReadyOrder));
    }

    [Fact]
    public async Task ExplicitPriorities_StillComeBeforeRanks()
    {
        var (started, _) = await RunOneSlot(Crafted(urgentD: true), ReadyOrder.CriticalPath);
        Assert.Equal(["d", "c", "c2", "a", "a2", "b"], started);
    }

    [Fact]
    public async Task Auto_WithMoreSlotsThanTasks_KeepsArrivalOrder()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 8, WorkerThreads = 1 });
        engine.Handlers.Register("record", async (ctx, args, ct) => { await Task.Delay(1, ct); return null; });
        var result = await engine.RunAsync(engine.Prepare(Crafted())).WaitAsync(TimeSpan.FromSeconds(60));
        Assert.Equal("fifo", result.Record.ReadyOrder);
    }
}

public class PreciseTimerTests
{
    [Fact]
    public async Task Delay_NeverEndsEarly_EndsInOrder_AndCancels()
    {
        var ended = new System.Collections.Concurrent.ConcurrentQueue<int>();
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var waits = new[] { 30, 5, 18, 1 }.Select(async ms =>
        {
            var start = sw.Elapsed;
            await PreciseTimer.Delay(TimeSpan.FromMilliseconds(ms));
            Assert.True(sw.Elapsed - start >= TimeSpan.FromMilliseconds(ms), $"a {ms} ms delay ended after {(sw.Elapsed - start).TotalMilliseconds} ms");
            ended.Enqueue(ms);
        }).ToArray();
        await Task.WhenAll(waits).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.Equal([1, 5, 18, 30], ended);

        using var cts = new CancellationTokenSource();
        var long_ = PreciseTimer.Delay(TimeSpan.FromHours(1), cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => long_.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.True(PreciseTimer.Delay(TimeSpan.Zero).IsCompleted);
    }
}
