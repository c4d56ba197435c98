using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using Xunit;

namespace TaskMesh.Tests.Engine.Scheduling;

public sealed class OpenRunTests
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    private static TaskRequest Task(string handler, string? id = null, params TaskDependency[] deps)
        => new(handler) { Id = id, DependsOn = deps.Length == 0 ? null : deps };

    private static TaskSpec Args(string json) => new() { Args = JsonDocument.Parse(json).RootElement.Clone() };

    /// <summary>A layer handler that waits for its gate, and counts the runs it started.</summary>
    private sealed class Gate
    {
        public readonly TaskCompletionSource Open = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int Started;

        public void Register(TaskMeshEngine engine, string name = "gate")
            => engine.Handlers.Register(name, async (ctx, args, ct) =>
            {
                Interlocked.Increment(ref Started);
                await Open.Task.WaitAsync(ct);
                return ctx.Id;
            });
    }

    [Fact]
    public async Task TasksThatSetOnlyArguments_EachRunsOnItsOwn_AndBadOnesAreRefusedWithTheHandlersReason()
    {
        // The second and later such tasks of a handler share the first one's validated graph and
        // route; each must still see its own arguments: raw, parsed, and in its graph of itself.
        var engine = new TaskMeshEngine();
        engine.Handlers.Register(new TaskMesh.Engine.Handlers.HandlerDescriptor("scale", ctx =>
            $"{ctx.ParsedArgs<int[]>()![0]}/{ctx.Args.GetProperty("x").GetInt32()}/{ctx.Graph.Spec(0)!.Args.GetProperty("x").GetInt32()}/{ctx.Id}")
        {
            Validate = a => a.TryGetProperty("x", out var x) && x.ValueKind == JsonValueKind.Number
                ? (new[] { x.GetInt32() * 10 }, [])
                : (null, ["x must be a number"]),
        });
        await using var run = engine.Open();
        var tasks = new List<SubmittedTask>();
        for (int i = 1; i <= 5; i++) tasks.Add(run.Submit(new TaskRequest("scale") { Spec = Args($$"""{"x": {{i}}}""") }));
        var refused = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("scale") { Id = "bad", Spec = Args("""{"x": "seven"}""") }));
        var error = Assert.Single(refused.Errors);
        Assert.Equal(GraphErrorCodes.BadArgs, error.Code);
        Assert.Equal("bad", error.TaskId);
        Assert.Equal("handler 'scale': x must be a number", error.Message);
        tasks.Add(run.Submit(new TaskRequest("scale") { Spec = Args("""{"x": 6}""") }));   // the run went on
        run.Complete();
        await run.Completion.WaitAsync(Limit);
        for (int i = 0; i < tasks.Count; i++)
        {
            var result = await tasks[i].Completion;
            Assert.Equal(TaskOutcome.Succeeded, result.Outcome);
            Assert.Equal($"{(i + 1) * 10}/{i + 1}/{i + 1}/{tasks[i].Id}", result.Output);
        }
    }

    [Fact]
    public async Task DependenciesOnFinishedRunningAndQueuedTasks_AllRunAfterThem_AndDataEdgesReadOutputs()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 1 });
        engine.Handlers.RegisterInline("out", ctx => "out-of-" + ctx.Id);
        engine.Handlers.RegisterInline("read", ctx => string.Join(",", ctx.Inputs.Select(i => $"{i.Key}={i.Value}")));
        var gate = new Gate();
        gate.Register(engine);
        await using var run = engine.Open();

        var done = run.Submit(Task("out", "done"));
        Assert.Equal(TaskOutcome.Succeeded, (await done.Completion.WaitAsync(Limit)).Outcome);
        var running = run.Submit(Task("gate", "running"));
        var queued = run.Submit(Task("gate", "queued"));   // one slot: waits behind 'running'
        while (Volatile.Read(ref gate.Started) < 1) await System.Threading.Tasks.Task.Delay(5);
        var reader = run.Submit(new TaskRequest("read")
        {
            Id = "reader",
            DependsOn = [new TaskDependency("done", EdgeKind.Data), new TaskDependency(running, EdgeKind.Data), new TaskDependency("queued", EdgeKind.Data)],
        });
        Assert.False(reader.IsEnded);
        gate.Open.SetResult();
        var result = await reader.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Succeeded, result.Outcome);
        Assert.Equal("done=out-of-done,running=running,queued=queued", result.Output);
        Assert.Equal("local", result.Layer);
        Assert.Equal(1, result.Attempts);
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal((RunStatus.Succeeded, 4L, 4L), (summary.Status, summary.Submitted, summary.Succeeded));
    }

    [Fact]
    public async Task AWaitingTask_ChangesItsPriorityAndArgs_AndRunsWithThem_WhileAStartedOneRefusesWithTheReason()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 1 });
        engine.Handlers.RegisterInline("echo", ctx => ctx.Args.GetProperty("x").GetInt32());
        var gate = new Gate();
        gate.Register(engine);
        await using var run = engine.Open();

        var first = run.Submit(Task("gate", "first"));
        var waiting = run.Submit(new TaskRequest("echo") { Id = "waiting", Spec = Args("""{"x": 1}"""), DependsOn = [first] });
        while (Volatile.Read(ref gate.Started) < 1) await System.Threading.Tasks.Task.Delay(5);

        // Invalid arguments are refused with the reason, and change nothing.
        var bad = Assert.Throws<TaskRefusedException>(() => waiting.Change(args: JsonDocument.Parse("[1]").RootElement));
        Assert.Equal("waiting", bad.Errors.Single().TaskId);
        waiting.Change(TaskPriority.Critical, JsonDocument.Parse("""{"x": 2}""").RootElement);
        var running = Assert.Throws<InvalidOperationException>(() => first.Change(TaskPriority.Low));
        Assert.Contains("running", running.Message);

        gate.Open.SetResult();
        var result = await waiting.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Succeeded, result.Outcome);
        Assert.Equal(2, result.Output);
        Assert.Equal((byte)TaskPriority.Critical, waiting.Priority);
        var ended = Assert.Throws<InvalidOperationException>(() => waiting.Change(TaskPriority.Low));
        Assert.Contains("ended", ended.Message);
        run.Complete();
        Assert.Equal(RunStatus.Succeeded, (await run.Completion.WaitAsync(Limit)).Status);
    }

    [Fact]
    public async Task ChangesRacingTheLastDependencysEnd_NeitherLoseTheTaskNorRunItTwice()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        int runs = 0;
        engine.Handlers.RegisterInline("count", ctx => { Interlocked.Increment(ref runs); return ctx.Args.GetProperty("x").GetInt32(); });
        await using var run = engine.Open();
        var changed = 0;
        var tasks = new List<SubmittedTask>();
        for (int i = 0; i < 2000; i++)
        {
            var dep = run.Submit(new TaskRequest("noop"));
            var t = run.Submit(new TaskRequest("count") { Spec = Args("""{"x": 1}"""), DependsOn = [dep] });
            tasks.Add(t);
            try
            {
                t.Change(TaskPriority.High, JsonDocument.Parse("""{"x": 2}""").RootElement);
                changed++;
            }
            catch (InvalidOperationException) { }   // it became ready first
        }
        var results = await System.Threading.Tasks.Task.WhenAll(tasks.Select(t => t.Completion)).WaitAsync(Limit);
        Assert.All(results, r => Assert.Equal(TaskOutcome.Succeeded, r.Outcome));
        Assert.Equal(changed, results.Count(r => (int)r.Output! == 2));
        Assert.Equal(2000, Volatile.Read(ref runs));
    }

    [Fact]
    public async Task TasksOfOneHandlerThatSetOnlyArguments_EachRunWithTheirOwn_AndBadOnesAreRefusedAsTheFirstIs()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("echo", ctx => ctx.Args.GetProperty("x").GetInt32());
        await using var run = engine.Open();
        // The first such task of a handler is validated and routed as a graph of itself; the rest share that.
        var tasks = Enumerable.Range(0, 50).Select(i => run.Submit(new TaskRequest("echo") { Spec = Args($$"""{"x": {{i}}}""") })).ToList();
        var results = await System.Threading.Tasks.Task.WhenAll(tasks.Select(t => t.Completion)).WaitAsync(Limit);
        Assert.Equal(Enumerable.Range(0, 50), results.Select(r => (int)r.Output!));

        // A handler's validator judges every task's arguments, first or not.
        var first = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("sleep") { Id = "s0", Spec = Args("""{"millis": -1}""") }));
        run.Submit(new TaskRequest("sleep") { Spec = Args("""{"millis": 1}""") });
        var later = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("sleep") { Id = "s1", Spec = Args("""{"millis": -1}""") }));
        Assert.Equal((first.Errors.Single().Code, "s1"), (later.Errors.Single().Code, later.Errors.Single().TaskId));
        Assert.Equal(first.Errors.Single().Message, later.Errors.Single().Message);
        run.Complete();
        Assert.Equal(RunStatus.Succeeded, (await run.Completion.WaitAsync(Limit)).Status);
    }

    /// <summary>A layer that answers when told, honours its token, and says so (<see cref="TaskMesh.Engine.Layers.ExecutionLayer.Cooperative"/>).</summary>
    private sealed class Answering : TaskMesh.Engine.Layers.ExecutionLayer
    {
        public Answering() : base(16) { }
        public override string Name => "answering";
        public override bool Cooperative => true;
        public override async ValueTask<object?> ExecuteAsync(TaskMesh.Engine.Layers.LayerInvocation invocation, CancellationToken ct)
        {
            var args = invocation.Context.Args;
            if (args.TryGetProperty("fail", out _)) throw new InvalidOperationException("asked to fail");
            if (args.TryGetProperty("never", out _)) await System.Threading.Tasks.Task.Delay(Timeout.Infinite, ct);
            await System.Threading.Tasks.Task.Yield();
            return args.GetProperty("x").GetInt32();
        }
    }

    [Fact]
    public async Task ACooperativeLayersAttempts_SucceedFailAndTimeOut_AsAnyLayers()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryAttempts = 0 });
        engine.AddLayer(new Answering());
        engine.EscalationPolicy = TaskMesh.Engine.Scheduling.Attempts.DefaultEscalationPolicy.Instance;
        await using var run = engine.Open();
        TaskRequest On(string args, double? timeout = null) => new("noop") { Spec = new TaskSpec { Args = JsonDocument.Parse(args).RootElement.Clone(), Layer = "answering", TimeoutSeconds = timeout } };
        var ok = run.Submit(On("""{"x": 7}"""));
        var failed = run.Submit(On("""{"fail": 1}"""));
        var slow = run.Submit(On("""{"never": 1}""", timeout: 0.2));
        var waiting = run.Submit(On("""{"never": 1}"""));
        Assert.Equal((TaskOutcome.Succeeded, (object?)7, "answering"), ((await ok.Completion.WaitAsync(Limit)).Outcome, (await ok.Completion).Output, (await ok.Completion).Layer));
        var f = await failed.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Failed, f.Outcome);
        Assert.Contains("asked to fail", f.Error);
        var t = await slow.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.TimedOut, t.Outcome);
        Assert.Contains("timed out", t.Error);
        Assert.True(waiting.Cancel());
        Assert.Equal(TaskOutcome.Cancelled, (await waiting.Completion.WaitAsync(Limit)).Outcome);
        run.Complete();
        await run.Completion.WaitAsync(Limit);
    }

    [Fact]
    public async Task RefusedSubmissions_SayWhy_AndTheRunGoesOn()
    {
        var engine = new TaskMeshEngine();
        await using var run = engine.Open();
        var a = run.Submit(Task("noop", "a"));

        TaskRefusedException Refused(TaskRequest r) => Assert.Throws<TaskRefusedException>(() => run.Submit(r));
        var unknown = Refused(Task("noop", "b", "nope"));
        Assert.Equal(GraphErrorCodes.UnknownDependency, unknown.Errors.Single().Code);
        Assert.Contains("'nope'", unknown.Message);
        Assert.Equal("b", unknown.Errors.Single().TaskId);
        Assert.Equal(GraphErrorCodes.DuplicateId, Refused(Task("noop", "a")).Errors.Single().Code);
        Assert.Equal(GraphErrorCodes.SelfLoop, Refused(Task("noop", "self", "self")).Errors.Single().Code);
        Assert.Equal(GraphErrorCodes.UnknownHandler, Refused(Task("no-such-handler", "h")).Errors.Single().Code);
        var badArgs = Refused(new TaskRequest("sleep") { Id = "s", Spec = Args("""{"millis": -5}""") });
        Assert.Equal(GraphErrorCodes.BadArgs, badArgs.Errors.Single().Code);
        Assert.Equal("s", badArgs.Errors.Single().TaskId);
        Assert.Contains("millis", badArgs.Message);
        Assert.Equal(GraphErrorCodes.BadValue, Refused(new TaskRequest("noop") { Id = "t", Spec = new TaskSpec { Retries = -1 } }).Errors.Single().Code);
        Assert.Equal(GraphErrorCodes.BadId, Refused(Task("noop", "#7")).Errors.Single().Code);

        // The run took none of them and goes on.
        var b = run.Submit(Task("noop", "b", a));
        Assert.Equal(TaskOutcome.Succeeded, (await b.Completion.WaitAsync(Limit)).Outcome);
        Assert.Equal(2, run.Submitted);
        var anonymous = run.Submit(Task("noop"));
        Assert.Equal("#2", anonymous.Id);
        Assert.True(run.TryGetTask("#2", out var found) && ReferenceEquals(found, anonymous));
        run.Complete();
        Assert.Equal(RunStatus.Succeeded, (await run.Completion.WaitAsync(Limit)).Status);
    }

    [Fact]
    public async Task CancellingAQueuedTask_SkipsItsDependents_ButNotSoftOnes()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 1 });
        var gate = new Gate();
        gate.Register(engine);
        await using var run = engine.Open();
        var first = run.Submit(Task("gate", "first"));
        var queued = run.Submit(Task("gate", "queued"));
        var hard = run.Submit(Task("noop", "hard", "queued"));
        var after = run.Submit(Task("noop", "after", "hard"));
        var soft = run.Submit(new TaskRequest("noop") { Id = "soft", DependsOn = [new TaskDependency("queued", EdgeKind.Soft)] });
        while (Volatile.Read(ref gate.Started) < 1) await System.Threading.Tasks.Task.Delay(5);

        Assert.True(run.Cancel("queued"));
        var q = await queued.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Cancelled, 0, (string?)null), (q.Outcome, q.Attempts, q.Layer));
        var h = await hard.Completion.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Skipped, h.Outcome);
        Assert.Contains("'queued'", h.Error);
        Assert.Equal(TaskOutcome.Skipped, (await after.Completion.WaitAsync(Limit)).Outcome);
        Assert.Contains("'queued'", (await after.Completion).Error);   // the root cause, not the skipped parent
        Assert.Equal(TaskOutcome.Succeeded, (await soft.Completion.WaitAsync(Limit)).Outcome);

        gate.Open.SetResult();
        Assert.Equal(TaskOutcome.Succeeded, (await first.Completion.WaitAsync(Limit)).Outcome);
        Assert.Equal(1, Volatile.Read(ref gate.Started));   // the cancelled task never ran
        Assert.False(run.Cancel("queued"));                  // it had ended
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal((RunStatus.Failed, 2L, 2L, 1L), (summary.Status, summary.Succeeded, summary.Skipped, summary.Cancelled));
    }

    [Fact]
    public async Task CancellingARunningTask_CancelsItsHandler()
    {
        var engine = new TaskMeshEngine();
        var gate = new Gate();
        gate.Register(engine);
        await using var run = engine.Open();
        var t = run.Submit(Task("gate", "g"));
        while (Volatile.Read(ref gate.Started) < 1) await System.Threading.Tasks.Task.Delay(5);
        Assert.True(t.Cancel());
        var r = await t.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Cancelled, 1), (r.Outcome, r.Attempts));
    }

    [Fact]
    public async Task Backpressure_HoldsAProducerAtMaxPending()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        var gate = new Gate();
        gate.Register(engine);
        await using var run = engine.Open(new OpenRunOptions { MaxPending = 4 });
        for (int i = 0; i < 4; i++) Assert.True(run.TrySubmit(Task("gate"), out _));
        Assert.False(run.TrySubmit(Task("gate"), out var none));
        Assert.Null(none);
        Assert.Equal((4L, 4), (run.Submitted, run.Pending));

        var waiting = run.SubmitAsync(Task("gate")).AsTask();
        await System.Threading.Tasks.Task.Delay(100);
        Assert.False(waiting.IsCompleted);   // held until a task ends
        gate.Open.SetResult();
        var fifth = await waiting.WaitAsync(Limit);
        Assert.Equal(TaskOutcome.Succeeded, (await fifth.Completion.WaitAsync(Limit)).Outcome);
        run.Complete();
        Assert.Equal(5L, (await run.Completion.WaitAsync(Limit)).Succeeded);
    }

    [Fact]
    public async Task EndedTasksAreReleasedBeyondTheRetentionWindow_AndADependencyOnOneIsRefusedWithTheReason()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("value", ctx => ctx.Id);
        await using var run = engine.Open(new OpenRunOptions { RetainTasks = 2 });
        var first = run.Submit(Task("value", "first"));
        await first.Completion.WaitAsync(Limit);
        for (int i = 0; i < 3; i++) await run.Submit(Task("value")).Completion.WaitAsync(Limit);

        Assert.False(run.TryGetTask("first", out _));
        Assert.False(run.TryGetTask("#1", out _));
        Assert.True(run.TryGetTask("#3", out _));
        var gone = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("value") { DependsOn = [new TaskDependency("#1", EdgeKind.Data)] }));
        Assert.Equal(GraphErrorCodes.ReleasedDependency, gone.Errors.Single().Code);
        Assert.Contains("released", gone.Message);
        // Named by the task itself, the same: the run released its output.
        Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("value") { DependsOn = [new TaskDependency(first, EdgeKind.Data)] }));
        // A hard dependency needs no output: it is taken (the task ended well).
        var after = run.Submit(new TaskRequest("value") { DependsOn = [first] });
        Assert.Equal(TaskOutcome.Succeeded, (await after.Completion.WaitAsync(Limit)).Outcome);
        Assert.Equal("first", (await first.Completion).Output);   // what its awaiter got stays theirs
    }

    [Fact]
    public async Task OutputsPastTheByteLimit_ReleaseTheOldestTasks_EvenInsideTheWindow()
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.RegisterInline("text", _ => new string('x', 200));   // estimated 424 bytes each
        await using var run = engine.Open(new OpenRunOptions { RetainTasks = 1_000, RetainBytes = 1_000 });
        for (int i = 0; i < 5; i++) await run.Submit(Task("text")).Completion.WaitAsync(Limit);

        // Each submission sweeps while the outputs kept pass 1,000 bytes: the third output made it
        // 1,272, so the fourth and the fifth submission each released the oldest task.
        Assert.False(run.TryGetTask("#0", out _));
        Assert.False(run.TryGetTask("#1", out _));
        Assert.True(run.TryGetTask("#2", out var kept));
        Assert.Equal(200, ((string)(await kept.Completion).Output!).Length);
        var gone = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("text") { DependsOn = [new TaskDependency("#1", EdgeKind.Data)] }));
        Assert.Equal(GraphErrorCodes.ReleasedDependency, gone.Errors.Single().Code);
    }

    [Fact]
    public async Task WholeChunksLeavingTheWindow_ReleaseTheirTasksAndIds_ButNotOneStillRead()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        engine.Handlers.RegisterInline("value", ctx => ctx.Id);
        engine.Handlers.RegisterInline("read", ctx => ctx.Inputs.Single().Value);
        var blocker = new Gate();
        blocker.Register(engine, "blocker");
        await using var run = engine.Open(new OpenRunOptions { RetainTasks = 10 });
        var source = run.Submit(Task("value", "source"));
        await source.Completion.WaitAsync(Limit);
        run.Submit(Task("blocker", "hold"));
        var reader = run.Submit(new TaskRequest("read") { DependsOn = [new TaskDependency(source, EdgeKind.Data), "hold"] });
        // Three chunks of tasks with ids of their own go by (the window keeps ten).
        const int n = 3 * 4096;
        var passing = new Task<TaskResult>[n];
        for (int i = 0; i < n; i++) passing[i] = run.Submit(Task("value", $"t{i}")).Completion;
        await System.Threading.Tasks.Task.WhenAll(passing).WaitAsync(Limit);
        run.Submit(Task("value", "one-more"));   // a submission after they all ended sweeps again

        Assert.False(run.TryGetTask("t0", out _));
        Assert.False(run.TryGetTask("t5000", out _));
        Assert.True(run.TryGetTask($"t{n - 1}", out _));
        Assert.Throws<TaskRefusedException>(() => run.Submit(Task("value", "late", "t5000")));
        Assert.True(run.TryGetTask("source", out _));   // read by a pending task: kept
        Assert.True(run.TryGetTask("hold", out _));     // still running
        blocker.Open.SetResult();
        Assert.Equal("source", (await reader.Completion.WaitAsync(Limit)).Output);
        Assert.False(run.TryGetTask("source", out _));  // its last reader ended: released
        Assert.False(run.TryGetTask("hold", out _));
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal(RunStatus.Succeeded, summary.Status);
    }

    [Fact]
    public async Task AnOutputStaysWhileAPendingTaskReadsIt_EvenOutsideTheWindow()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 2 });
        engine.Handlers.RegisterInline("value", ctx => ctx.Id);
        engine.Handlers.RegisterInline("read", ctx => ctx.Inputs.Single().Value);
        var before = new Gate();
        before.Register(engine, "before");
        var blocker = new Gate();
        blocker.Register(engine, "blocker");
        await using var run = engine.Open(new OpenRunOptions { RetainTasks = 0 });
        run.Submit(Task("before", "b"));
        var source = run.Submit(Task("value", "source", "b"));
        run.Submit(Task("blocker", "hold"));
        var reader = run.Submit(new TaskRequest("read") { DependsOn = [new TaskDependency("source", EdgeKind.Data), "hold"] });
        before.Open.SetResult();
        await source.Completion.WaitAsync(Limit);
        Assert.True(run.TryGetTask("source", out _));   // read by a pending task: kept
        blocker.Open.SetResult();
        Assert.Equal("source", (await reader.Completion.WaitAsync(Limit)).Output);
        Assert.False(run.TryGetTask("source", out _));  // no reader left, window 0: released
    }

    [Fact]
    public async Task ATaskOnALayer_IsRetriedAndRoutedAsInAGraph()
    {
        var engine = new TaskMeshEngine(new EngineOptions { RetryBaseDelay = TimeSpan.FromMilliseconds(1), RetryMaxDelay = TimeSpan.FromMilliseconds(2) });
        await using var run = engine.Open();
        var flaky = run.Submit(new TaskRequest("fail") { Id = "flaky", Spec = new TaskSpec { Retries = 2, Args = Args("""{"attempts": 2}""").Args } });
        var r = await flaky.Completion.WaitAsync(Limit);
        Assert.Equal((TaskOutcome.Succeeded, 3, "local"), (r.Outcome, r.Attempts, r.Layer));
        var forced = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("noop") { Id = "elsewhere", Spec = new TaskSpec { Layer = "nowhere" } }));
        Assert.Contains("registered layer", forced.Message);
        var quantum = run.Submit(new TaskRequest("noop") { Id = "q", Spec = new TaskSpec { Layer = "local" } });
        Assert.Equal("local", (await quantum.Completion.WaitAsync(Limit)).Layer);
    }

    [Fact]
    public async Task CompletingAnIdleRun_EndsIt_AndItTakesNoMoreTasks()
    {
        var engine = new TaskMeshEngine();
        var run = engine.Open();
        await System.Threading.Tasks.Task.Delay(50);
        Assert.False(run.Completion.IsCompleted);   // an idle open run stays open
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal((RunStatus.Succeeded, 0L), (summary.Status, summary.Submitted));
        Assert.Throws<InvalidOperationException>(() => run.Submit(Task("noop")));
    }

    [Fact]
    public async Task ChainsAndFanIns_RunInDependencyOrder()
    {
        var engine = new TaskMeshEngine();
        var order = new System.Collections.Concurrent.ConcurrentQueue<int>();
        engine.Handlers.RegisterInline("mark", ctx => { order.Enqueue(ctx.Index); return null; });
        await using var run = engine.Open(new OpenRunOptions { MaxPending = 64 });
        SubmittedTask? previous = null;
        var window = new Queue<SubmittedTask>();
        const int n = 5_000;
        for (int i = 0; i < n; i++)
        {
            var deps = window.Select(t => new TaskDependency(t)).ToArray();
            var t = run.Submit(new TaskRequest("mark") { DependsOn = deps });
            window.Enqueue(t);
            if (window.Count > 8) window.Dequeue();
            previous = t;
        }
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal((RunStatus.Succeeded, (long)n), (summary.Status, summary.Succeeded));
        Assert.Equal(Enumerable.Range(0, n), order.ToArray());   // each after the 8 before it: one order only
    }

    [Fact]
    public async Task RandomGraphsSubmittedWhileTheyRun_RunEachTaskAfterItsDependencies_AndSkipTheDependentsOfFailures()
    {
        // Many dependents per task (the list a task's end walks), failures, soft edges, a small
        // pending bound (producers held and woken) and a small retention window, on two workers.
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, RetryAttempts = 0 });
        const int n = 20_000;
        var stamps = new long[n];
        long clock = 0;
        engine.Handlers.RegisterInline("ok", ctx => { stamps[ctx.Index] = Interlocked.Increment(ref clock); return null; });
        engine.Handlers.RegisterInline("bad", ctx => { stamps[ctx.Index] = Interlocked.Increment(ref clock); throw new InvalidOperationException("bad"); });
        var random = new Random(7);
        var deps = new List<(int Task, EdgeKind Kind)>[n];
        var expected = new TaskOutcome[n];
        var tasks = new SubmittedTask[n];
        await using var run = engine.Open(new OpenRunOptions { MaxPending = 256, RetainTasks = 100 });
        for (int i = 0; i < n; i++)
        {
            deps[i] = [];
            int k = i == 0 ? 0 : random.Next(0, 5);
            for (int j = 0; j < k; j++)
            {
                int d = Math.Max(0, i - 1 - random.Next(0, 50));
                if (deps[i].Any(x => x.Task == d)) continue;
                deps[i].Add((d, random.Next(4) == 0 ? EdgeKind.Soft : EdgeKind.Hard));
            }
            bool bad = random.Next(100) == 0;
            expected[i] = bad ? TaskOutcome.Failed : TaskOutcome.Succeeded;
            if (deps[i].Any(x => x.Kind == EdgeKind.Hard && expected[x.Task] != TaskOutcome.Succeeded)) expected[i] = TaskOutcome.Skipped;
            tasks[i] = await run.SubmitAsync(new TaskRequest(bad ? "bad" : "ok")
            {
                DependsOn = deps[i].Select(x => new TaskDependency(tasks[x.Task], x.Kind)).ToArray(),
            });
        }
        run.Complete();
        var summary = await run.Completion.WaitAsync(Limit);
        Assert.Equal(0, run.Pending);
        for (int i = 0; i < n; i++)
        {
            var result = await tasks[i].Completion.WaitAsync(Limit);
            Assert.True(expected[i] == result.Outcome, $"task {i}: {result.Outcome}, expected {expected[i]} ({result.Error})");
            if (result.Outcome == TaskOutcome.Skipped) Assert.Equal(0, stamps[i]);
            else
                foreach (var (d, _) in deps[i])
                    Assert.True(stamps[d] == 0 || stamps[d] < stamps[i], $"task {i} ran before its dependency {d}");
        }
        Assert.Equal(expected.Count(o => o == TaskOutcome.Succeeded), summary.Succeeded);
        Assert.Equal(expected.Count(o => o == TaskOutcome.Failed), summary.Failed);
        Assert.Equal(expected.Count(o => o == TaskOutcome.Skipped), summary.Skipped);
        Assert.Equal(RunStatus.Failed, summary.Status);
    }

    [Fact]
    public async Task TenMillionSubmittedTasks_KeepMemoryFlat()
    {
        var engine = new TaskMeshEngine();
        long ran = 0;
        engine.Handlers.RegisterInline("inc", _ => { Interlocked.Increment(ref ran); return null; });
        await using var run = engine.Open(new OpenRunOptions { RetainTasks = 10_000 });
        var request = new TaskRequest("inc");
        long heapAtOneMillion = 0;
        var deadline = DateTime.UtcNow.AddMinutes(3);
        for (int i = 1; i <= 10_000_000; i++)
        {
            run.Submit(request);
            if (i == 1_000_000) heapAtOneMillion = GC.GetTotalMemory(forceFullCollection: true);
            if ((i & 0xFFFF) == 0) Assert.True(DateTime.UtcNow < deadline, $"only {i:N0} tasks submitted in 3 minutes");
        }
        long heapAtTenMillion = GC.GetTotalMemory(forceFullCollection: true);
        run.Complete();
        var summary = await run.Completion.WaitAsync(TimeSpan.FromMinutes(1));
        Assert.Equal(10_000_000L, summary.Succeeded);
        Assert.Equal(10_000_000L, Interlocked.Read(ref ran));
        // Flat: nine million more tasks may not leave more than 64 MB behind (a task kept would be ~200 bytes: 1.8 GB).
        Assert.True(heapAtTenMillion - heapAtOneMillion < 64L << 20,
            $"heap after 1M tasks {heapAtOneMillion / 1048576.0:0.0} MB, after 10M {heapAtTenMillion / 1048576.0:0.0} MB");
    }

    private sealed class MemoryCache : ITaskCache
    {
        public readonly System.Collections.Concurrent.ConcurrentDictionary<string, object?> Entries = new();
        public bool TryGet(string key, out object? output) => Entries.TryGetValue(key, out output);
        public void Put(string key, string handler, string taskId, object? output) => Entries[key] = output;
    }

    [Fact]
    public async Task CacheEnabledTasks_AreAnsweredByTheResultCache_KeyedByArgumentsAndInputs()
    {
        var engine = new TaskMeshEngine();
        int ran = 0;
        engine.Handlers.Register(new TaskMesh.Engine.Handlers.HandlerDescriptor("square", ctx =>
        {
            Interlocked.Increment(ref ran);
            long x = ctx.Args.GetProperty("x").GetInt64();
            return x * x;
        }) { Cacheable = true });
        var cache = new MemoryCache();
        await using var run = engine.Open(new OpenRunOptions { Cache = cache });
        TaskRequest Square(string id, int x) => new("square") { Id = id, Spec = new TaskSpec { Cache = true, Args = JsonSerializer.SerializeToElement(new { x }) } };
        var first = await run.Submit(Square("a", 7)).Completion.WaitAsync(Limit);
        var again = await run.Submit(Square("b", 7)).Completion.WaitAsync(Limit);
        var other = await run.Submit(Square("c", 8)).Completion.WaitAsync(Limit);
        Assert.Equal((49L, 49L, 64L), ((long)first.Output!, (long)again.Output!, (long)other.Output!));
        Assert.Equal(2, ran);   // "b" was answered by the cache
        Assert.Equal((1, 0, "answered from the result cache"), (first.Attempts, again.Attempts, again.Error));
        Assert.Equal(2, cache.Entries.Count);
    }

    [Fact]
    public async Task TasksThatUseAPool_HoldItAtMostItsCapacityAtOnce_AndAParkedOneCanBeCancelled()
    {
        var engine = new TaskMeshEngine(new EngineOptions { MaxParallelTasks = 8 });
        int holding = 0, peak = 0;
        var gate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        engine.Handlers.Register("hold", async (ctx, args, ct) =>
        {
            int now = Interlocked.Increment(ref holding);
            int seen;
            while ((seen = Volatile.Read(ref peak)) < now && Interlocked.CompareExchange(ref peak, now, seen) != seen) { }
            await gate.Task.WaitAsync(ct);
            Interlocked.Decrement(ref holding);
            return null;
        });
        await using var run = engine.Open(new OpenRunOptions { Resources = new Dictionary<string, int> { ["gpu"] = 2 } });
        var tasks = Enumerable.Range(0, 6).Select(i => run.Submit(new TaskRequest("hold") { Id = $"h{i}", Spec = new TaskSpec { Uses = ["gpu"] } })).ToList();
        var unknown = Assert.Throws<TaskRefusedException>(() => run.Submit(new TaskRequest("hold") { Spec = new TaskSpec { Uses = ["tpu"] } }));
        Assert.Equal(GraphErrorCodes.UnknownResource, unknown.Errors.Single().Code);
        while (Volatile.Read(ref holding) < 2) await System.Threading.Tasks.Task.Delay(5);
        await System.Threading.Tasks.Task.Delay(50);
        Assert.Equal(2, Volatile.Read(ref holding));     // four wait for the pool, though slots are free
        Assert.True(run.Cancel("h5"));                    // parked: ends at once
        Assert.Equal(TaskOutcome.Cancelled, (await tasks[5].Completion.WaitAsync(Limit)).Outcome);
        gate.SetResult();
        foreach (var t in tasks.Take(5)) Assert.Equal(TaskOutcome.Succeeded, (await t.Completion.WaitAsync(Limit)).Outcome);
        Assert.Equal(2, Volatile.Read(ref peak));
    }

    [Fact]
    public async Task ADependencyOnATaskTheRunReleased_IsReadFromTheStore_AlsoAfterTheRunIsResumed()
    {
        var dir = Directory.CreateTempSubdirectory("taskmesh-open-store-").FullName;
        try
        {
            using var store = TaskMesh.Engine.Store.RunStore.Open(Path.Combine(dir, "s.db"));
            var engine = new TaskMeshEngine();
            engine.Handlers.RegisterInline("value", ctx => "value of " + ctx.Id);
            engine.Handlers.RegisterInline("read", ctx => string.Join(",", ctx.Inputs.Select(i => i.Value)));
            string runId;
            await using (var run = engine.Open(new OpenRunOptions { Store = store, RetainTasks = 0 }))
            {
                runId = run.RunId;
                await run.Submit(Task("value", "a")).Completion.WaitAsync(Limit);
                await run.Submit(Task("fail", "f")).Completion.WaitAsync(Limit);
                await run.Submit(Task("noop", "filler")).Completion.WaitAsync(Limit);
                Assert.False(run.TryGetTask("a", out _));   // out of the window: released
                var b = run.Submit(new TaskRequest("read") { Id = "b", DependsOn = [new TaskDependency("a", EdgeKind.Data)] });
                Assert.Equal("value of a", (await b.Completion.WaitAsync(Limit)).Output);
                var c = run.Submit(Task("noop", "c", "f"));
                var skipped = await c.Completion.WaitAsync(Limit);
                Assert.Equal(TaskOutcome.Skipped, skipped.Outcome);
                Assert.Contains("'f' failed", skipped.Error);
                run.Complete();
                await run.Completion.WaitAsync(Limit);
            }
            // A later life of the run reads what the earlier one kept, never resubmitted.
            await using (var resumed = engine.Open(new OpenRunOptions { Store = store, Resume = runId }))
            {
                Assert.Equal(runId, resumed.RunId);
                var d = resumed.Submit(new TaskRequest("read") { Id = "d", DependsOn = [new TaskDependency("a", EdgeKind.Data), new TaskDependency("b", EdgeKind.Data)] });
                Assert.Equal("value of a,value of a", (await d.Completion.WaitAsync(Limit)).Output);
                Assert.Throws<TaskRefusedException>(() => resumed.Submit(Task("noop", "e", "never-submitted")));
                resumed.Complete();
                await resumed.Completion.WaitAsync(Limit);
            }
            Assert.Equal("succeeded", store.GetRun(runId).Status);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    [Fact]
    public async Task Events_TellEachTasksEnd_AndCompleteWithTheRun()
    {
        var engine = new TaskMeshEngine();
        await using var run = engine.Open(new OpenRunOptions { EmitEvents = true });
        var reading = System.Threading.Tasks.Task.Run(async () =>
        {
            var seen = new List<RunEvent>();
            await foreach (var e in run.Events.ReadAllAsync()) seen.Add(e);
            return seen;
        });
        Assert.True(run.PublishEvents);
        var a = run.Submit(Task("noop", "a"));
        var bad = run.Submit(new TaskRequest("fail") { Id = "f", Spec = new TaskSpec { Retries = 0 } });
        var after = run.Submit(Task("noop", "after-f", bad));
        await System.Threading.Tasks.Task.WhenAll(a.Completion, bad.Completion, after.Completion).WaitAsync(Limit);   // each written before it completes
        // Turned off (nobody to pass them to): task ends meanwhile are not written.
        run.PublishEvents = false;
        await run.Submit(Task("noop", "unheard")).Completion.WaitAsync(Limit);
        run.PublishEvents = true;
        run.Complete();
        await run.Completion.WaitAsync(Limit);
        var events = await reading.WaitAsync(Limit);   // the stream completed with the run
        Assert.Equal(3, events.Count);
        Assert.DoesNotContain(events, e => e.TaskId == "unheard");
        var byId = events.ToDictionary(e => e.TaskId);
        Assert.Equal((RunEventKind.Succeeded, 0, "local"), (byId["a"].Kind, byId["a"].Task, byId["a"].Layer));
        Assert.Equal((RunEventKind.Failed, 1), (byId["f"].Kind, byId["f"].Attempt));
        Assert.Contains("failed on purpose", byId["f"].Message);
        Assert.Equal(RunEventKind.Skipped, byId["after-f"].Kind);
        Assert.Equal(0, run.DroppedEvents);
        // Without EmitEvents: an empty stream, already complete.
        var quiet = engine.Open();
        Assert.True(quiet.Events.Completion.IsCompleted);
        Assert.False(quiet.PublishEvents);
        await quiet.DisposeAsync();
    }
}
