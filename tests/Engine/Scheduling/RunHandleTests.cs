using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

public sealed class RunHandleTests
{
    [Fact]
    public async Task Running_CountsTheRunsOwnTasks_NotOthersOnTheSameLayers()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 8 });
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        engine.Handlers.Register("hold", async (ctx, args, ct) => { await release.Task.WaitAsync(ct); return null; });
        GraphBuilder Holds(int n)
        {
            var g = new GraphBuilder();
            for (int i = 0; i < n; i++) g.Task($"h{i}", "hold");
            return g;
        }
        var a = engine.Start(engine.Prepare(Holds(3)));
        var b = engine.Start(engine.Prepare(Holds(2)));
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        while (engine.Layers[0].Running < 5) await Task.Delay(10, cts.Token);
        Assert.Equal((3, 2), (a.Running, b.Running));
        release.SetResult();
        await Task.WhenAll(a.Completion, b.Completion).WaitAsync(cts.Token);
        Assert.Equal((0, 0), (a.Running, b.Running));
    }
}
