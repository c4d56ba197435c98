using System.Buffers;
using TaskMesh.Engine;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Cluster;

/// <summary>What a worker does with an attempt it is sent: run it once, on this engine's layers, outside any run.</summary>
public sealed class DetachedTasksTests
{
    private static readonly TaskMeshEngine Engine = new();
    private static readonly TimeSpan Second = TimeSpan.FromSeconds(1);

    private static ValueTask<DetachedOutcome> Run(string handler, string? args = null, int attempt = 1, TimeSpan? timeout = null,
        KeyValuePair<string, string>[]? inputs = null, string id = "t")
        => new DetachedTasks(Engine).RunAsync(new DetachedTask(id, handler, args, attempt, null, inputs, timeout ?? TimeSpan.FromSeconds(10)), CancellationToken.None);

    [Fact]
    public async Task TheAttemptNumberAndTheArguments_AreTheRunsOwn()
    {
        var first = await Run("fail", """{ "attempts": 1 }""", attempt: 1);
        Assert.False(first.Succeeded);
        var second = await Run("fail", """{ "attempts": 1 }""", attempt: 2);
        Assert.True(second.Succeeded);
        Assert.Equal("\"succeeded on attempt 2\"", second.OutputJson);
    }

    [Fact]
    public async Task GivenInputs_ReachTheHandler_AndTheOutputComesBackAsJson()
    {
        var o = await Run("best", """{ "metric": "objective" }""", inputs:
        [
            new("a", """{ "objective": 1.5, "meta": { "n": 1 } }"""),
            new("b", """{ "objective": 0.5, "meta": { "n": 2 } }"""),
        ]);
        Assert.True(o.Succeeded, o.Error);
        var json = o.OutputJson!.Replace(" ", "");
        Assert.Contains("\"candidates\":2", json);
        Assert.Matches("\"value\":(1.5|0.5)", json);
    }

    [Fact]
    public async Task BadArguments_AHandlerThatThrows_AndATimeout_AreOutcomesNotExceptions()
    {
        var bad = await Run("sleep", """{ "ms": 5 }""");
        Assert.False(bad.Succeeded);
        Assert.Contains("missing argument 'millis'", bad.Error);
        var failed = await Run("fail", """{ "message": "boom" }""");
        Assert.Equal((false, "boom"), (failed.Succeeded, failed.Error));
        var slow = await Run("sleep", """{ "millis": 5000 }""", timeout: TimeSpan.FromMilliseconds(50));
        Assert.True(slow.TimedOut);
        var unknown = await Run("nope");
        Assert.False(unknown.Succeeded);
    }

    [Fact]
    public async Task ALocalOnlyHandler_IsNeverRunForAnotherProcess_EvenWhereItIsEnabled()
    {
        var withShell = new TaskMeshEngine(new EngineOptions { ShellEnabled = true });
        var marker = Path.Combine(Path.GetTempPath(), $"taskmesh-shell-{Guid.NewGuid():N}");
        var o = await new DetachedTasks(withShell).RunAsync(new DetachedTask("t", "shell", $$"""{ "command": "touch", "args": ["{{marker}}"] }""", 1, null, null,
            TimeSpan.FromSeconds(10)), CancellationToken.None);
        Assert.False(o.Succeeded);
        Assert.Contains("handler 'shell' runs only on the local layer", o.Error);
        Assert.False(File.Exists(marker));
    }

    [Fact]
    public async Task AHash_IsTheSameWhateverThePooledBufferHeld()
    {
        // Sizes that are not a multiple of 8: the pattern covers the tail too.
        var first = await Run("hash", """{ "bytes": 1003 }""");
        var dirty = ArrayPool<byte>.Shared.Rent(64 * 1024);
        Array.Fill(dirty, (byte)0xAB);
        ArrayPool<byte>.Shared.Return(dirty);
        var second = await Run("hash", """{ "bytes": 1003 }""");
        Assert.Equal(first.OutputJson, second.OutputJson);
    }
}
