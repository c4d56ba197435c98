using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

/// <summary>The critical path a run measured (the chain it waited on), beside the one its estimates gave.</summary>
public class MeasuredCriticalPathTests
{
    /// <summary>Estimates that point the wrong way: `looks-long` is estimated at 5 s and takes 10 ms, `looks-short` at 1 ms and takes 300 ms.</summary>
    private static GraphBuilder Misjudged()
    {
        var g = new GraphBuilder("misjudged");
        var a = g.Task("a", "noop");
        var looksLong = g.Task("looks-long", "sleep", new { millis = 10 }).WithEstimate(5000).DependsOn(a);
        var looksShort = g.Task("looks-short", "sleep", new { millis = 300 }).WithEstimate(1).DependsOn(a);
        g.Task("z", "noop").DependsOn(looksLong).DependsOn(looksShort);
        g.Task("aside", "noop");   // on no path to the end
        return g;
    }

    [Fact]
    public async Task ARunWithTaskDetails_MeasuresThePathItWaitedOn_NotTheEstimatedOne()
    {
        var engine = new TaskMeshEngine();
        var result = await engine.RunAsync(engine.Prepare(Misjudged()), new RunOptions { CollectTaskDetails = true });

        var g = result.Record;
        Assert.Equal(["a", "looks-short", "z"], g.MeasuredCriticalPath!.Select(i => result.TaskResultOf(i).Id));
        Assert.InRange(g.MeasuredCriticalPathMs!.Value, 290, result.Wall.TotalMilliseconds + 1);
        Assert.True(g.CriticalPathMs >= 5000, $"the estimates' path is {g.CriticalPathMs} ms");   // through looks-long
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new Utf8JsonWriter(buffer)) g.WriteJson(w);
        using var doc = JsonDocument.Parse(buffer.WrittenMemory);
        Assert.Equal(g.MeasuredCriticalPathMs.Value, doc.RootElement.GetProperty("critical_path_measured_ms").GetDouble(), 3);
    }

    [Fact]
    public async Task ARunWithoutTaskDetails_HasNoMeasuredPath()
    {
        var engine = new TaskMeshEngine();
        var result = await engine.RunAsync(engine.Prepare(Misjudged()), new RunOptions { CollectTaskDetails = false });
        Assert.Null(result.Record.MeasuredCriticalPath);
        Assert.Null(result.Record.MeasuredCriticalPathMs);
    }

    [Fact]
    public async Task ASkippedTask_IsOnNoMeasuredPath()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("skips");
        var a = g.Task("a", "sleep", new { millis = 50 });
        var bad = g.Task("bad", "fail", new { message = "no" });
        g.Task("after", "noop").DependsOn(bad);
        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true });
        Assert.Equal(["a"], result.Record.MeasuredCriticalPath!.Select(i => result.TaskResultOf(i).Id));
    }
}
