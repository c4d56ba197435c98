using System.Collections.Concurrent;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

/// <summary>
/// Layers that take their attempts in batches (<see cref="ExecutionLayer.TakesBatches"/>): many
/// attempts to one call, never more in flight than the layer's slots, each ended once; the engine's
/// own timeouts and cancellation (the layer told through <see cref="ExecutionLayer.StopAttempt"/>,
/// a late answer ignored); retries and failures as on any layer.
/// </summary>
public sealed class BatchLayerTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Answers on a loop of its own, by the task's arguments: <c>x</c> → x; <c>fail</c> → a failure;
    /// <c>fail_first</c> → a failure on attempt 1, then x; <c>never</c> → no answer; <c>late_first</c> →
    /// no answer on attempt 1, and on attempt 2 first a confidence reported late for attempt 1, then x.
    /// </summary>
    private sealed class Batching : ExecutionLayer, IDisposable
    {
        private readonly System.Threading.Channels.Channel<LayerAttempt> _queue = System.Threading.Channels.Channel.CreateUnbounded<LayerAttempt>();
        private readonly Task _loop;
        private int _inFlight;

        public Batching(int capacity, bool endTogether = false) : base(capacity)
        {
            _endTogether = endTogether;
            _loop = Task.Run(LoopAsync);
        }

        private readonly bool _endTogether;   // answer what is waiting in one go, inside LayerAttempt.EndTogether

        public override string Name => "batching";
        public override bool TakesBatches => true;
        public bool ThrowOnStart { get; set; }
        public ConcurrentQueue<int> BatchSizes { get; } = new();
        public ConcurrentQueue<LayerAttempt> Stopped { get; } = new();
        public ConcurrentQueue<LayerAttempt> Held { get; } = new();
        public int MostInFlight;
        public int Started;

        public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct) => throw new NotSupportedException();

        public override void StartAttempts(ReadOnlySpan<LayerAttempt> attempts)
        {
            if (ThrowOnStart) throw new InvalidOperationException("the layer is broken");
            BatchSizes.Enqueue(attempts.Length);
            foreach (var a in attempts)
            {
                Interlocked.Increment(ref Started);
                int now = Interlocked.Increment(ref _inFlight);
                int most;
                while (now > (most = Volatile.Read(ref MostInFlight)) && Interlocked.CompareExchange(ref MostInFlight, now, most) != most) { }
                _queue.Writer.TryWrite(a);
            }
        }

        public override void StopAttempt(LayerAttempt attempt)
        {
            Interlocked.Decrement(ref _inFlight);
            Stopped.Enqueue(attempt);
        }

        private async Task LoopAsync()
        {
            if (_endTogether)
            {
                var batch = new List<LayerAttempt>();
                while (await _queue.Reader.WaitToReadAsync())
                {
                    while (batch.Count < 256 && _queue.Reader.TryRead(out var next)) batch.Add(next);
                    using (LayerAttempt.EndTogether())
                    {
                        using var nested = LayerAttempt.EndTogether();   // an inner scope gives nothing back by itself
                        foreach (var a in batch)
                        {
                            Interlocked.Decrement(ref _inFlight);
                            if (a.Invocation.Args.TryGetProperty("fail", out _)) a.Fail(new InvalidOperationException("asked to fail"));
                            else a.Succeed(a.Invocation.Args.GetProperty("x").GetInt32());
                        }
                    }
                    batch.Clear();
                }
                return;
            }
            await foreach (var a in _queue.Reader.ReadAllAsync())
            {
                var args = a.Invocation.Args;
                bool lateFirst = args.ValueKind == JsonValueKind.Object && args.TryGetProperty("late_first", out _);
                if (args.ValueKind == JsonValueKind.Object && args.TryGetProperty("never", out _) || lateFirst && a.Invocation.Context.Attempt == 1)
                {
                    Held.Enqueue(a);
                    continue;
                }
                if (lateFirst)
                    foreach (var held in Held)
                        if (held.Invocation.Context.Id == a.Invocation.Context.Id) held.Invocation.Context.ReportConfidence(0.1);
                Interlocked.Decrement(ref _inFlight);
                if (args.ValueKind != JsonValueKind.Object) a.Succeed(null);
                else if (args.TryGetProperty("fail", out _)) a.Fail(new InvalidOperationException("asked to fail"));
                else if (args.TryGetProperty("fail_first", out _) && a.Invocation.Context.Attempt == 1) a.Fail(new InvalidOperationException("first attempts fail"));
                else a.Succeed(args.GetProperty("x").GetInt32());
            }
        }

        public void Dispose()
        {
            _queue.Writer.TryComplete();
            _loop.Wait(Limit);
        }
    }

    private static TaskEngineAndLayer Engine(int capacity, bool endTogether = false)
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryAttempts = 0 });
        var layer = new Batching(capacity, endTogether);
        engine.AddLayer(layer);
        engine.Router = new FixedLayerRouter(layer.Name);
        return new(engine, layer);
    }

    private sealed record TaskEngineAndLayer(TaskMeshEngine Engine, Batching Layer) : IDisposable
    {
        public void Dispose() => Layer.Dispose();
    }

    [Fact]
    public async Task ABatchingLayer_GetsManyAttemptsToACall_NeverMoreThanItsSlots_AndEveryTaskEndsWithItsAnswer()
    {
        using var e = Engine(capacity: 64);
        var b = new GraphBuilder("many");
        for (int i = 0; i < 3000; i++) b.Task($"t{i}", "noop", new { x = i });
        var result = await e.Engine.RunAsync(b.Build(), new RunOptions { KeepOutputs = true }).WaitAsync(Limit);

        Assert.Equal(RunStatus.Succeeded, result.Status);
        Assert.Equal(3000, result.Tasks.Count(t => t.Outcome == TaskOutcome.Succeeded && t.Layer == "batching"));
        Assert.Equal(1234, result.OutputOf(result.Tasks.Single(t => t.Id == "t1234").Index));
        Assert.Equal(3000, e.Layer.Started);
        Assert.InRange(e.Layer.MostInFlight, 2, 64);
        Assert.Contains(e.Layer.BatchSizes, n => n > 1);
        Assert.Empty(e.Layer.Stopped);
        Assert.Equal((0, 0), (e.Layer.Running, e.Layer.QueueDepth));
    }

    [Fact]
    public async Task AttemptsEndedTogether_GiveTheirSlotsBackWhenTheScopeCloses_AndEveryTaskEndsWithItsAnswer()
    {
        // Few slots, many tasks: a run whose slots were not all given back would never end.
        using var e = Engine(capacity: 8, endTogether: true);
        var b = new GraphBuilder("together");
        for (int i = 0; i < 2000; i++)
        {
            var t = b.Task($"t{i}", "noop", i % 100 == 7 ? new { fail = true } : (object)new { x = i });
            if (i >= 8) t.DependsOn($"t{i - 8}", EdgeKind.Soft);   // each after one ended before: the slots turn over
        }
        var result = await e.Engine.RunAsync(b.Build(), new RunOptions { KeepOutputs = true }).WaitAsync(Limit);

        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.Equal(20, result.Tasks.Count(t => t.Outcome == TaskOutcome.Failed));
        Assert.Equal(1980, result.Tasks.Count(t => t.Outcome == TaskOutcome.Succeeded && t.Layer == "batching"));
        Assert.Equal(1234, result.OutputOf(result.Tasks.Single(t => t.Id == "t1234").Index));
        Assert.InRange(e.Layer.MostInFlight, 1, 8);
        Assert.Equal((0, 0), (e.Layer.Running, e.Layer.QueueDepth));
    }

    [Fact]
    public async Task ABatchingLayersAttempts_FailRetryTimeOutAndAreCancelled_AsAnyLayers_AndALateAnswerIsIgnored()
    {
        using var e = Engine(capacity: 16);
        await using var run = e.Engine.Open();
        TaskRequest On(string args, double? timeout = null, int? retries = null)
            => new("noop") { Spec = new TaskSpec { Args = JsonDocument.Parse(args).RootElement.Clone(), TimeoutSeconds = timeout, Retries = retries } };
        var ok = run.Submit(On("""{"x": 7}"""));
        var failed = run.Submit(On("""{"fail": 1}"""));
        var retried = run.Submit(On("""{"fail_first": 1, "x": 9}""", retries: 1));
        var slow = run.Submit(On("""{"never": 1}""", timeout: 0.2));
        var waiting = run.Submit(On("""{"never": 1}"""));

        var r = await ok.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Succeeded, (object?)7, "batching", 1), (r.Outcome, r.Output, r.Layer, r.Attempts));
        var f = await failed.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Failed, f.Outcome);
        Assert.Contains("asked to fail", f.Error);
        var again = await retried.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Succeeded, (object?)9, 2), (again.Outcome, again.Output, again.Attempts));

        var t = await slow.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.TimedOut, t.Outcome);
        Assert.Equal("timed out after 0.2s", t.Error);
        var stopped = Assert.Single(e.Layer.Stopped);
        Assert.Equal(slow.Id, stopped.Invocation.Context.Id);
        Assert.True(stopped.IsEnded);
        Assert.True(stopped.Token.IsCancellationRequested);   // made after the end: born cancelled
        Assert.False(stopped.Succeed(1));                      // too late: ignored
        Assert.False(stopped.Fail(new InvalidOperationException("too late")));

        Assert.True(waiting.Cancel());
        var c = await waiting.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Cancelled, c.Outcome);
        Assert.Equal(2, e.Layer.Stopped.Count);
        run.Complete();
        Assert.Equal(RunStatus.Failed, (await run.Completion.WaitAsync(Limit)).Status);
        Assert.Equal((0, 0), (e.Layer.Running, e.Layer.QueueDepth));
    }

    [Fact]
    public async Task AConfidenceReportedForAnAttemptAfterItTimedOut_IsNotTakenAsTheNextAttempts()
    {
        using var e = Engine(capacity: 4);
        await using var run = e.Engine.Open();
        var task = run.Submit(new TaskRequest("noop")
        {
            Spec = new TaskSpec { Args = JsonDocument.Parse("""{"late_first": 1, "x": 5}""").RootElement.Clone(), TimeoutSeconds = 0.2, Retries = 1 },
        });
        var r = await task.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Succeeded, (object?)5, 2), (r.Outcome, r.Output, r.Attempts));
        Assert.Single(e.Layer.Stopped);   // attempt 1 timed out; its late report came while attempt 2 ran
        Assert.Null(r.Confidence);        // attempt 2 reported none: the 0.1 was attempt 1's
    }

    [Fact]
    public async Task CancellingARun_EndsTheAttemptsItsBatchingLayerHolds_AndTellsTheLayer()
    {
        using var e = Engine(capacity: 8);
        var b = new GraphBuilder("held");
        for (int i = 0; i < 20; i++) b.Task($"t{i}", "noop", new { never = 1 });
        var handle = e.Engine.Start(b.Build());
        var until = DateTime.UtcNow + Limit;
        while (e.Layer.Held.Count < 8 && DateTime.UtcNow < until) await Task.Delay(10);
        Assert.Equal(8, e.Layer.Held.Count);   // its slots, and no more

        var token = e.Layer.Held.First().Token;   // a token handed out before the end is cancelled by it
        handle.Cancel();
        var result = await handle.Completion.WaitAsync(Limit);
        Assert.Equal(RunStatus.Cancelled, result.Status);
        Assert.True(token.IsCancellationRequested);
        Assert.Equal(8, e.Layer.Stopped.Count);
        Assert.All(e.Layer.Held, a => Assert.True(a.IsEnded));
        Assert.Equal(20, result.Tasks.Count(t => t.Outcome == TaskOutcome.Cancelled));
        Assert.Equal((0, 0), (e.Layer.Running, e.Layer.QueueDepth));
    }

    [Fact]
    public async Task ALayerThatThrowsWhenGivenABatch_FailsItsAttempts_WithItsReason()
    {
        using var e = Engine(capacity: 4);
        e.Layer.ThrowOnStart = true;
        var b = new GraphBuilder("broken");
        for (int i = 0; i < 10; i++) b.Task($"t{i}", "noop", new { x = i });
        var result = await e.Engine.RunAsync(b.Build()).WaitAsync(Limit);
        Assert.Equal(RunStatus.Failed, result.Status);
        Assert.All(result.Tasks, t =>
        {
            Assert.Equal(TaskOutcome.Failed, t.Outcome);
            Assert.Contains("the layer is broken", t.Error);
        });
    }
}
