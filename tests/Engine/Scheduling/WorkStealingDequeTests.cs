using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

public class WorkStealingDequeTests
{
    [Fact]
    public void PushPop_Owner_IsLastInFirstOut()
    {
        var d = new WorkStealingDeque(16);
        for (int i = 0; i < 100; i++) d.Push(i);   // grows past its first array
        for (int i = 99; i >= 0; i--)
        {
            Assert.True(d.TryPop(out int x));
            Assert.Equal(i, x);
        }
        Assert.False(d.TryPop(out _));
    }

    [Fact]
    public async Task Steal_ConcurrentThieves_TakeEveryItemExactlyOnce()
    {
        const int items = 200_000;
        var d = new WorkStealingDeque(16);
        var taken = new int[items];
        using var stop = new CancellationTokenSource();
        var thieves = Enumerable.Range(0, 3).Select(_ => Task.Run(() =>
        {
            while (!stop.IsCancellationRequested || d.Count > 0)
                if (d.TrySteal(out int x)) Interlocked.Increment(ref taken[x]);
        })).ToArray();
        for (int i = 0; i < items; i++)
        {
            d.Push(i);
            if (i % 3 == 0 && d.TryPop(out int x)) Interlocked.Increment(ref taken[x]);
        }
        while (d.TryPop(out int x)) Interlocked.Increment(ref taken[x]);
        stop.Cancel();
        await Task.WhenAll(thieves).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.All(taken, t => Assert.Equal(1, t));
    }
}
