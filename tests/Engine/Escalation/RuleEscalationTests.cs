using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Escalation;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Tests.Engine.Observability;
using Xunit;

namespace TaskMesh.Tests.Engine.Escalation;

public sealed class RuleEscalationTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-rules-").FullName;

    public void Dispose()
    {
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>local (rank 0), strong (10, price 2), strongest (20, price 5, tag "big"); handlers that fail, time out or doubt on chosen layers.</summary>
    private static TaskMeshEngine Engine(IReadOnlyList<EscalationRule>? rules = null, int maxPerTask = 3)
    {
        var engine = new TaskMeshEngine(new EngineOptions
        {
            RetryBaseDelay = TimeSpan.FromMilliseconds(1),
            CancelGracePeriod = TimeSpan.FromMilliseconds(50),
            EscalationRules = rules ?? EscalationRule.Defaults,
            MaxEscalationsPerTask = maxPerTask,
        });
        var strong = new TestLayer("strong", 2);
        strong.Configure(2, 10);
        var strongest = new TestLayer("strongest", 2);
        strongest.Configure(5, 20, ["big"]);
        engine.AddLayer(strong);
        engine.AddLayer(strongest);
        // Fails until its third attempt.
        engine.Handlers.Register("flaky", (ctx, a, ct) => ctx.Attempt < 3 ? throw new TaskFailedException($"attempt {ctx.Attempt} failed") : new ValueTask<object?>("ok"));
        // Never returns in time.
        engine.Handlers.Register("stuck", async (ctx, a, ct) => { await Task.Delay(10_000, ct); return null; });
        // Unsure on its first attempt.
        engine.Handlers.Register("unsure", (ctx, a, ct) => { ctx.ReportConfidence(ctx.Attempt == 1 ? 0.5 : 0.95); return new ValueTask<object?>(ctx.Attempt); });
        return engine;
    }

    private static async Task<RunResult> Run(TaskMeshEngine engine, GraphBuilder g, params TaskMesh.Engine.Observability.IRunObserver[] observers)
    {
        var run = engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true, Observers = observers });
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60))) == run, "the run did not end");
        return await run;
    }

    private static (string From, string To, string Trigger)[] EscalationsOf(RunResult r, string id)
        => r.Escalations.Where(e => e.TaskId == id).Select(e => (e.From, e.To, e.Trigger)).ToArray();

    [Fact]
    public async Task Error_AfterTheRetriesOnALayer_EscalatesToTheNextRank()
    {
        var engine = Engine();
        var g = new GraphBuilder("e");
        g.Task("flaky", "flaky").WithRetries(1);
        var r = await Run(engine, g);
        Assert.Equal(RunStatus.Succeeded, r.Status);
        Assert.Equal([("local", "strong", "error")], EscalationsOf(r, "flaky"));   // attempts 1 and 2 on local, 3 on strong
        var t = r.TaskResultOf(0);
        Assert.Equal((3, "local", "strong"), (t.Attempts, t.InitialLayer, t.Layer));
        Assert.Contains("failed on local with no retries left: attempt 2 failed (rule * → next on error)", r.Escalations.Single().Reason);
    }

    [Fact]
    public async Task Budget_RefusesARetryOrEscalationThatWouldPassIt_AndTheTaskSaysWhy()
    {
        static TaskMeshEngine Slow()
        {
            var engine = Engine();
            // 60 ms an attempt, failing until the third.
            engine.Handlers.Register("slow-flaky", async (ctx, a, ct) =>
            {
                await Task.Delay(60, ct);
                return ctx.Attempt < 3 ? throw new TaskFailedException($"attempt {ctx.Attempt} failed") : "ok";
            });
            return engine;
        }
        async Task<RunResult> RunWith(double? budget, Action<GraphBuilder> build)
        {
            var engine = Slow();
            var g = new GraphBuilder("b");
            build(g);
            var run = engine.RunAsync(engine.Prepare(g), new RunOptions { CollectTaskDetails = true, Budget = budget });
            return await run.WaitAsync(TimeSpan.FromSeconds(60));
        }

        // On strong (price 2) an attempt costs about 0.12: a budget of 0.15 pays for one, not a retry.
        var r = await RunWith(0.15, g => g.Task("t", "slow-flaky").OnLayer("strong").WithRetries(3));
        Assert.Equal(RunStatus.Failed, r.Status);
        Assert.Equal(1, r.TaskResultOf(0).Attempts);
        // (The figure is the attempt's measured cost: 0.12 or more on a loaded machine.)
        Assert.Matches(@"attempt 1 failed; retry to strong refused: it would cost about 0\.\d+", r.TaskResultOf(0).Error);
        Assert.Contains("of the run's budget of 0.15 is left", r.TaskResultOf(0).Error);

        // Failing on free local, the escalation to strong would cost about 0.12: refused under 0.05.
        r = await RunWith(0.05, g => g.Task("t", "slow-flaky"));
        Assert.Equal((1, "local"), (r.TaskResultOf(0).Attempts, r.TaskResultOf(0).Layer));
        Assert.Empty(r.Escalations);
        Assert.Contains("escalation to strong refused", r.TaskResultOf(0).Error);

        // With room, the same retries run and the task succeeds.
        r = await RunWith(10, g => g.Task("t", "slow-flaky").OnLayer("strong").WithRetries(3));
        Assert.Equal((RunStatus.Succeeded, 3), (r.Status, r.TaskResultOf(0).Attempts));
        r = await RunWith(null, g => g.Task("t", "slow-flaky").OnLayer("strong").WithRetries(3));
        Assert.Equal(RunStatus.Succeeded, r.Status);
    }

    [Fact]
    public async Task Timeout_EscalatesRankByRank_UpToTheCap()
    {
        var g = new GraphBuilder("t");
        g.Task("stuck", "stuck").WithTimeout(TimeSpan.FromMilliseconds(50));

        var r = await Run(Engine(), g);
        Assert.Equal([("local", "strong", "timeout"), ("strong", "strongest", "timeout")], EscalationsOf(r, "stuck"));
        Assert.Equal((TaskOutcome.TimedOut, "strongest"), (r.TaskResultOf(0).Outcome, r.TaskResultOf(0).Layer));   // nothing above strongest

        r = await Run(Engine(maxPerTask: 1), g);
        Assert.Equal([("local", "strong", "timeout")], EscalationsOf(r, "stuck"));   // the cap holds
        Assert.Equal("strong", r.TaskResultOf(0).Layer);
    }

    [Fact]
    public async Task LowConfidence_BelowTheThreshold_Escalates_UnlessTheTasksMinConfidenceIsMet()
    {
        var g = new GraphBuilder("c");
        g.Task("unsure", "unsure");
        g.Task("content", "unsure").WithMinConfidence(0.4);
        var r = await Run(Engine(), g);
        Assert.Equal([("local", "strong", "low_confidence")], EscalationsOf(r, "unsure"));
        Assert.Empty(EscalationsOf(r, "content"));
        Assert.Contains("confidence 0.5 is below 0.7 on local", r.Escalations.Single().Reason);
        Assert.Equal((2, "strong"), (r.TaskResultOf(0).Attempts, r.TaskResultOf(0).Layer));
        Assert.Equal((1, "local"), (r.TaskResultOf(1).Attempts, r.TaskResultOf(1).Layer));
    }

    [Fact]
    public async Task Rules_ByPriority_ANamedTarget_Requires_AndInactiveRules()
    {
        var rules = new[]
        {
            new EscalationRule("local", "strongest", EscalationTriggers.Error, Priority: 5),
            new EscalationRule("*", "next", EscalationTriggers.Error),
            new EscalationRule("*", "strong", EscalationTriggers.Timeout, Priority: 9, Active: false),
        };
        var g = new GraphBuilder("p");
        g.Task("flaky", "flaky").WithRetries(1);
        g.Task("stuck", "stuck").WithTimeout(TimeSpan.FromMilliseconds(50));
        var r = await Run(Engine(rules), g);
        Assert.Equal([("local", "strongest", "error")], EscalationsOf(r, "flaky"));   // the higher priority rule, straight to strongest
        Assert.Empty(EscalationsOf(r, "stuck"));                                    // the only timeout rule is inactive

        // "next" passes over a layer that lacks what the task requires.
        var needsBig = new GraphBuilder("big");
        needsBig.Task("flaky", "flaky").WithRetries(1).Requires("big");
        var engine = Engine();
        engine.Layers[0].Configure(0, 0, ["big"]);
        r = await Run(engine, needsBig);
        Assert.Equal([("local", "strongest", "error")], EscalationsOf(r, "flaky"));
    }

    [Fact]
    public async Task Escalations_AreStoredAndAudited_WithTheRule()
    {
        using var store = RunStore.Open(Path.Combine(_dir, "s.db"));
        var g = new GraphBuilder("stored");
        g.Task("flaky", "flaky").WithRetries(1);
        var r = await Run(Engine(), g, new RunRecorder(store));
        await store.FlushAsync();
        var stored = Assert.Single(store.EscalationsOf(r.RunId));
        Assert.Equal(("flaky", "local", "strong", "error"), (stored.TaskId, stored.From, stored.To, stored.Trigger));
        Assert.Contains("rule * → next on error", stored.Reason);
        Assert.Equal("attempt 2 failed", stored.PreviousOutputSummary);   // what the attempt it left gave
        Assert.Contains(store.AuditOf(r.RunId, "flaky", AuditCategory.Escalation), a => a.Detail.Contains("\"trigger\":\"error\""));
    }

    [Theory]
    [InlineData("[[escalation.rules]]\nfrom = \"local\"\n", "t.toml:1: [[escalation.rules]] needs a trigger")]
    [InlineData("[[escalation.rules]]\ntrigger = \"bored\"\n", "t.toml:1: [[escalation.rules]]: trigger is 'bored'; it must be one of low_confidence, error, timeout, complexity, manual")]
    [InlineData("[[escalation.rules]]\ntrigger = \"low_confidence\"\nthreshold = 2\n", "a low_confidence threshold is a confidence between 0 and 1")]
    [InlineData("[[escalation.rules]]\ntrigger = \"error\"\nthreshold = 0.5\n", "a rule on error takes no threshold")]
    [InlineData("[[escalation.rules]]\ntrigger = \"complexity\"\n", "a complexity rule needs a threshold between 0 and 100")]
    [InlineData("[[escalation.rules]]\ntrigger = \"error\"\nwhen = 1\n", "t.toml:3: key 'escalation.rules.when' is not a rule setting")]
    [InlineData("[escalation]\nmax_per_task = 9\n", "t.toml:2: key 'escalation.max_per_task' is 9; it must be between 0 and 8")]
    public void Config_BadRules_AreRefused_NamingTheLine(string toml, string expected)
    {
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse(toml, "t.toml"));
        Assert.Contains(expected, ex.Message);
    }

    [Fact]
    public void Config_Rules_AreReadInOrder_AndNoneMeansTheDefaults()
    {
        var config = TaskMeshConfig.Parse("""
            [escalation]
            max_per_task = 2

            [layers.quantum-double]
            kind = "quantum"
            rank = 20

            [[escalation.rules]]
            from = "quantum"
            to = "quantum-double"
            trigger = "low_confidence"
            threshold = 0.9
            priority = 3

            [[escalation.rules]]
            trigger = "timeout"
            active = false
            """);
        Assert.Equal([new EscalationRule("quantum", "quantum-double", "low_confidence", 0.9, 3), new EscalationRule("*", "next", "timeout", null, 0, false)], config.EscalationRules);
        Assert.Equal(2, config.ToEngineOptions().MaxEscalationsPerTask);
        Assert.Equal(EscalationRule.Defaults, TaskMeshConfig.Parse("").ToEngineOptions().EscalationRules);
    }
}
