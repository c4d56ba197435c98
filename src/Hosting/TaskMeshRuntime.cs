using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Escalation;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;

namespace TaskMesh.Hosting;

/// <summary>
/// A configured TaskMesh — the composition root's product: one engine (its layers from the
/// provider table, the escalation rules in force), the run store, the trained models, the metrics,
/// and <see cref="Prepare"/>, which makes what a run needs (its router with its own budget, its
/// duration estimates, the recorder, the log, the cache, what a resumed run reuses). The command
/// line's <c>run</c>, <c>resume</c>, <c>escalate</c> and <c>predict</c>, the service, the bench and
/// a program that embeds TaskMesh take their runs from here instead of assembling them.
/// <para>
/// One runtime serves many runs at once: per-run state (a budget counted as tasks are placed, the
/// graph's features) lives in each run's <see cref="RunSetup"/>, never in the engine.
/// </para>
/// </summary>
public sealed class TaskMeshRuntime : IDisposable
{
    private readonly TaskMeshOptions _options;
    private readonly ILogger? _runLog;
    private readonly object _modelsLock = new();
    private (int Version, TrainedModels? Models, string? Problem) _models = (-1, null, null);

    /// <summary>Builds the runtime from validated options (the composition root resolves it; a program may make one directly).</summary>
    /// <exception cref="OptionsValidationException">The options have problems (every one listed).</exception>
    /// <exception cref="StoreException">The store cannot be opened (the message says why).</exception>
    public TaskMeshRuntime(IOptions<TaskMeshOptions> options, ILoggerFactory? logs = null, TaskMeshMetrics? metrics = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        _options = options.Value;
        var check = new TaskMeshOptionsValidator().Validate(null, _options);
        if (check.Failed) throw new OptionsValidationException(nameof(TaskMeshOptions), typeof(TaskMeshOptions), check.Failures);
        Config = _options.Config;
        Metrics = metrics;
        _runLog = logs?.CreateLogger("TaskMesh.Run");
        if (_options.StorePath is { } path)
            Store = RunStore.Open(path, _options.StoreReadOnly, TimeSpan.FromSeconds(Config.StoreLockTimeoutSeconds));
        try
        {
            Engine = new TaskMeshEngine(Config.ToEngineOptions());
            (_rules, _rulesSource) = RulesInForce.Of(Config, Store);
            // The engine's policy was built from the config's rules (or the defaults): the store's
            // replace them. Runs decide through one that ReplaceRulesAsync can swap while they go.
            _policy = new LiveRulesPolicy(RulesSource == RulesInForce.FromStore
                ? new RuleEscalationPolicy(Rules, () => Engine.Layers, Config.MaxEscalationsPerTask)
                : Engine.EscalationPolicy);
            Engine.EscalationPolicy = _policy;
            if (metrics is not null)
            {
                metrics.Watch(Engine);
                if (Store is not null) metrics.Watch(Store);
            }
        }
        catch
        {
            Store?.Dispose();
            throw;
        }
    }

    /// <summary>The configuration.</summary>
    public TaskMeshConfig Config { get; }

    /// <summary>The engine every run of this runtime goes through.</summary>
    public TaskMeshEngine Engine { get; }

    /// <summary>The run store, or null when runs are not recorded.</summary>
    public RunStore? Store { get; }

    private volatile IReadOnlyList<EscalationRule> _rules;
    private volatile string _rulesSource;
    private readonly LiveRulesPolicy _policy;
    private readonly SemaphoreSlim _rulesLock = new(1, 1);

    /// <summary>The escalation rules in force.</summary>
    public IReadOnlyList<EscalationRule> Rules => _rules;

    /// <summary>Where <see cref="Rules"/> come from (<see cref="RulesInForce"/>: <c>config</c>, <c>store</c>, <c>defaults</c>).</summary>
    public string RulesSource => _rulesSource;

    /// <summary>
    /// Replaces the store's escalation rules with <paramref name="rules"/> (none: the defaults) and
    /// puts them in force at once: every run, those going included, decides its next retry or
    /// escalation by them, and runs started from now on are routed with them (complexity rules).
    /// The rules stay for the next process (they are the store's).
    /// </summary>
    /// <exception cref="InvalidOperationException">The config declares the rules (they are edited there), or there is no writable store.</exception>
    /// <exception cref="ArgumentException">A rule is malformed (the message says which and why).</exception>
    public async Task ReplaceRulesAsync(IReadOnlyList<EscalationRule> rules, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(rules);
        if (RulesSource == RulesInForce.FromConfig)
            throw new InvalidOperationException($"the escalation rules are the config's ([[escalation.rules]] in {Config.Source ?? "the config"}): change them there");
        if (Store is not { IsReadOnly: false } store) throw new InvalidOperationException("rules changed while running are kept in the run store, and there is none (or it is read-only)");
        var policy = new RuleEscalationPolicy(rules.Count == 0 ? EscalationRule.Defaults : rules, () => Engine.Layers, Config.MaxEscalationsPerTask);
        await _rulesLock.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            store.RecordRules(rules);
            await store.FlushAsync(ct).ConfigureAwait(false);
            (_rules, _rulesSource) = RulesInForce.Of(Config, store);
            _policy.Inner = policy;
        }
        finally
        {
            _rulesLock.Release();
        }
    }

    /// <summary>The policy every run of the engine decides through: the rules in force now.</summary>
    private sealed class LiveRulesPolicy(IEscalationPolicy inner) : IEscalationPolicy
    {
        private volatile IEscalationPolicy _inner = inner;

        public IEscalationPolicy Inner { get => _inner; set => _inner = value; }

        public EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context) => _inner.Decide(attempt, context);
    }

    /// <summary>The metrics runs report to, when there are any.</summary>
    public TaskMeshMetrics? Metrics { get; }

    /// <summary>
    /// The store's newest model version and its models (null models with the reason when they cannot
    /// be read; version 0 when there is none). Read again when a newer version appears, so a
    /// long-lived runtime routes with what the trainer last published.
    /// </summary>
    public (int Version, TrainedModels? Models, string? Problem) CurrentModels()
    {
        var latest = Store?.Models() is { Count: > 0 } versions ? versions[0] : default;
        lock (_modelsLock)
        {
            if (latest.Version == _models.Version) return _models;
            if (latest.Folder is null) return _models = (0, null, null);
            var models = TrainedModels.Load(latest.Folder, out var problem);
            _models = (latest.Version, models, problem);
            if (Metrics is not null && models is not null)
                foreach (var a in models.Accuracy) Metrics.RecordModel(latest.Version, a.Layer, a.DurationMaeMs, a.DurationR2, a.SuccessAuc, a.CalibrationError);
            return _models;
        }
    }

    /// <summary>Loads and prepares a graph file for this runtime's engine; also the SHA-256 of its bytes.</summary>
    /// <exception cref="GraphValidationException">With every problem in the file.</exception>
    public (PreparedGraph Graph, string Hash) LoadGraph(string path, CancellationToken ct = default) => GraphFiles.Load(Engine, path, ct);

    /// <summary>
    /// Opens a run that takes tasks while it goes (<see cref="OpenRun"/>) on this runtime's engine,
    /// with the config's <c>[open_runs]</c> settings and the budget today's daily cost limit leaves,
    /// recorded in the runtime's store when it has one. <paramref name="resume"/> takes over an
    /// interrupted open run of the store: tasks it completed, resubmitted with the same id and
    /// options, are answered from the store.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="resume"/> names no open run of the store, or the runtime has no store.</exception>
    /// <exception cref="InvalidOperationException">The run to resume is still going in a live process.</exception>
    /// <param name="emitEvents">Publish the run's events on <see cref="OpenRun.Events"/> (each task's end, each escalation).</param>
    public OpenRun Open(string name = "open", double? budget = null, string? resume = null, bool emitEvents = false)
        => Open(name, budget, resume, emitEvents, record: true);

    /// <summary>As <see cref="Open(string, double?, string?, bool)"/>; with <paramref name="record"/> false the run is kept in memory alone, never in the store.</summary>
    public OpenRun Open(string name, double? budget, string? resume, bool emitEvents, bool record)
    {
        double? limit = BudgetOf(budget);
        return Engine.Open(new OpenRunOptions
        {
            Name = name,
            // A store opened for reading only records nothing: the run is kept in memory alone.
            Store = record && Store is { IsReadOnly: false } recording ? recording : null,
            Resume = resume,
            // The learned router a run would use: each task is routed as a graph of itself (its kind, its features).
            Router = RouterFor(null, null, limit, out _, out _, out _),
            MaxPending = Config.OpenMaxPending,
            RetainTasks = Config.OpenRetainTasks,
            RetainBytes = Config.OpenRetainBytes,
            EmitEvents = emitEvents,
            Budget = limit,
            Observers = [.. OpenRunObservers()],
            Cache = Store is { IsReadOnly: false } store ? new StoreTaskCache(store) : null,
        });
    }

    private IEnumerable<IOpenRunObserver> OpenRunObservers()
    {
        if (_runLog is not null) yield return new RunLogObserver(_runLog);
        if (Metrics is not null) yield return Metrics;
    }

    /// <summary>
    /// The budget of a run: <paramref name="budget"/>, bounded by what today's figures leave of the
    /// config's daily cost limit; null when neither limits it.
    /// </summary>
    public double? BudgetOf(double? budget)
    {
        if (Config.RoutingDailyCostLimit is not double daily) return budget;
        string today = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
        double spent = Store?.DailyMetrics(1).Where(d => d.Day == today).Sum(d => d.Cost) ?? 0;
        return Math.Min(budget ?? double.MaxValue, Math.Max(0, daily - spent));
    }

    /// <summary>
    /// The router of a run of <paramref name="graph"/>: a learned router of its own (its budget, the
    /// graph's features) when the options, the config, the request or the store's models call for
    /// one; null for the engine's fixed routing. <paramref name="features"/> is the graph's extractor.
    /// </summary>
    public LearnedRouter? RouterFor(PreparedGraph graph, FeatureExtractor features, string? objective, double? budget, out TrainedModels? models, out string modelNote, out string? modelProblem)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(features);
        return RouterFor(features, objective, budget, out models, out modelNote, out modelProblem);
    }

    // Features null: the router makes them for each graph it routes (an open run's tasks, one graph each).
    private LearnedRouter? RouterFor(FeatureExtractor? features, string? objective, double? budget, out TrainedModels? models, out string modelNote, out string? modelProblem)
    {
        var (version, loaded, problem) = CurrentModels();
        models = loaded;
        modelNote = version == 0 ? "no trained model: cold-start rules"
            : loaded is null ? $"model version {version} cannot be read ({problem}): cold-start rules" : $"model version {version}";
        modelProblem = loaded is null && version > 0 ? $"model version {version} not used, the router falls back to its cold-start rules: {problem}" : null;
        objective ??= _options.Objective;
        bool complexityRules = Rules.Any(r => r.Active && r.Trigger == EscalationTriggers.Complexity);
        bool wanted = _options.Routing switch
        {
            LearnedRouting.Always => true,
            LearnedRouting.Never => false,
            _ => Config.RoutingConfigured || objective is not null || version > 0 || complexityRules || budget is not null,
        };
        if (!wanted) return null;
        return new LearnedRouter(loaded, new RoutingOptions
        {
            Objective = objective ?? Config.RoutingObjective,
            MinConfidence = Config.RoutingMinConfidence,
            FailurePenalty = Config.RoutingFailurePenalty,
            Exploration = Config.RoutingExploration,
            Bands = Config.RoutingBands.Select(b => new ComplexityBand(b.UpTo, b.Layer)).ToList(),
            Rules = Rules,
            Budget = budget,
            Features = features,
        });
    }

    /// <summary>
    /// Everything a run of <paramref name="graph"/> needs, made the way every run of this runtime is
    /// made: its router (learned or fixed) and budget, duration estimates from the models, the
    /// recorder into the store, the metrics and the run log, the result cache, and — for a resumed
    /// or escalated run — what it reuses. Start it with <see cref="RunSetup.Start"/>.
    /// </summary>
    /// <exception cref="RunRequestException">A resume or escalation that cannot be carried out (the field and the reason named).</exception>
    /// <exception cref="StoreException">The stored run cannot be used: still going in another process, its graph or an input file changed.</exception>
    public RunSetup Prepare(PreparedGraph graph, RunRequest request)
    {
        ArgumentNullException.ThrowIfNull(graph);
        ArgumentNullException.ThrowIfNull(request);
        // One feature extractor for the router and the recorder: the graph is analysed once.
        var features = new FeatureExtractor(graph);
        var inputs = graph.InputFiles();   // the files the tasks read: kept with the run, checked on resume
        double? budget = BudgetOf(request.Budget);
        var router = RouterFor(graph, features, request.Objective, budget, out var models, out var modelNote, out var modelProblem);
        var setup = new RunSetup(this, graph)
        {
            Budget = budget,
            Router = router,
            ModelNote = modelNote,
            ModelProblem = router is null ? null : modelProblem,
        };
        if (router is not null && models is not null) setup.Options.DurationEstimator = new LearnedDurationEstimator(models, features);
        if (router is not null) setup.Options.Router = router;

        if (request.ResumeFrom is { } resume) PrepareResume(setup, graph, features, inputs, request, resume);

        var observers = new List<IRunObserver>();
        if (_runLog is not null) observers.Add(new RunLogObserver(_runLog));
        if (Store is { IsReadOnly: false } store)
        {
            store.RecordLayers(Engine.Layers);
            // The config's rules are mirrored into the store; the store's own are already there.
            if (RulesSource == RulesInForce.FromConfig) store.RecordRules(Rules);
            // Each kept row carries the task's complexity score and feature vector, what the models train on.
            setup.Recorder = new RunRecorder(store, request.GraphPath, request.GraphHash, Config.Text, setup.ResumedFrom, Config.Journal,
                complexity: t => features.Complexity(t), features: t => features.Extract(t), inputs: inputs)
            {
                ArgumentFeatures = features.ArgumentFeaturesJson,   // the numbers its arguments state, which the trainer picks features from
            };
            observers.Add(setup.Recorder);
            setup.Options.Cache = new StoreTaskCache(store);
        }
        if (Metrics is not null) observers.Add(Metrics);
        observers.AddRange(request.Observers);
        setup.Options.Observers = observers;
        setup.Options.BaseDirectory = request.GraphPath is { } gp ? Path.GetDirectoryName(Path.GetFullPath(gp)) : graph.BaseDirectory;
        setup.Options.CollectTaskDetails = request.CollectTaskDetails;
        setup.Options.Budget = budget;
        return setup;
    }

    private void PrepareResume(RunSetup setup, PreparedGraph graph, FeatureExtractor features, IReadOnlyList<(string TaskId, string Path, string Sha256)> inputs,
        RunRequest request, string resume)
    {
        var store = Store ?? throw new RunRequestException(RunRequestFields.Store, "resuming a run needs the run store (it is disabled by the config's store.enabled = false; give a store)");
        string from = store.ResolveRunId(resume);
        // A run still going in a live process is that process's: a second one would run its tasks again beside it.
        if (store.LiveOwnerOf(from) is { } live)
            throw new StoreException(live.RunId == from
                ? $"run {from} is still going ({live.Owner}); wait for it to end, or stop that process, then {(request.Escalate is null ? "resume" : "escalate")} it"
                : $"run {from} is being resumed by run {live.RunId} ({live.Owner}); wait for that run to end");
        var (storedPath, storedHash) = store.GraphOf(from);
        if (storedHash is not null && request.GraphHash is { } hash && storedHash != hash)
            throw new StoreException($"'{request.GraphPath ?? storedPath}' changed since run {from} (its SHA-256 was {storedHash[..12]}…, now {hash[..12]}…): resuming would mix two graphs; run it anew instead");
        // So may a file a task reads (a circuit): the stored outputs were made from the old content.
        if (RunInputs.Changed(store.GetRun(from).Inputs, inputs, from) is { } changed)
            throw new StoreException($"{changed}: resuming would restore outputs made from the old content; run the graph anew instead");
        var restored = store.LoadRestored(from, graph.Graph);
        setup.ResumedFrom = from;
        setup.Options.Restored = restored;
        if (request.Escalate is not { } esc)
        {
            setup.Notice = $"resuming run {from}: {restored.Count} of {graph.Count} tasks finished there and are not run again";
            return;
        }
        // The task runs again on its new layer, and so does every task that reads its output over
        // data edges (theirs change with it); everything else is reused.
        if (!graph.Graph.TryGetIndex(esc.Task, out int task))
            throw new RunRequestException(RunRequestFields.EscalateTask, $"run {from} (graph '{TaskMesh.Engine.IO.TerminalText.Safe(graph.Graph.Name)}') has no task '{GraphLimits.Printable(esc.Task)}'");
        if (Engine.WhyCannotRun(graph, task, esc.Layer) is { } why) throw new RunRequestException(RunRequestFields.EscalateLayer, why);
        // Where it ran: its row's layer; a task answered from the cache or restored has none, and is
        // where it would be routed: the plan of this run before the move — made with a router of its
        // own, as a budgeted router counts what it places.
        string before = store.TasksOf(from).FirstOrDefault(t => t.Index == task)?.Layer
            ?? Engine.Plan(graph, new RunOptions { Router = RouterFor(graph, features, request.Objective, setup.Budget, out _, out _, out _), Restored = setup.Options.Restored }).LayerOf(task);
        if (before == esc.Layer)
            throw new RunRequestException(RunRequestFields.EscalateLayer, $"task '{GraphLimits.Printable(esc.Task)}' already ran on {esc.Layer} in run {from}; escalate it to another layer");
        var rerun = graph.Graph.DataDescendantsOf(task);
        restored.Remove(task);
        foreach (int d in rerun) restored.Remove(d);
        setup.Options.ManualEscalations = [new ManualEscalation(esc.Task, esc.Layer, before, esc.Reason)];
        setup.Notice = $"escalating task {TaskMesh.Engine.IO.TerminalText.Safe(esc.Task)} of run {from} from {before} to {esc.Layer}: it and {rerun.Count} task(s) reading its output run again; {restored.Count} of {graph.Count} are reused";
    }

    /// <summary>
    /// After a run: everything it recorded committed, then a new model version trained when one is
    /// due (never during the run). Returns what the trainer published, if anything.
    /// </summary>
    /// <exception cref="StoreException">The store failed (the message says why).</exception>
    public async Task<(PublishedModels Models, string Why)?> AfterRunAsync(RunResult result, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(result);
        if (Store is not { IsReadOnly: false } store) return null;
        await store.FlushAsync(CancellationToken.None);
        if (!_options.TrainAfterRuns || result.Status == RunStatus.Cancelled) return null;
        return await ModelPublisher.TrainIfDueAsync(store, Config, Metrics, ct);
    }

    /// <summary>Flushes and closes the store.</summary>
    public void Dispose() => Store?.Dispose();
}

/// <summary>One run as <see cref="TaskMeshRuntime.Prepare"/> made it: its options (router, estimates, observers, cache, what it reuses) and what a caller reports.</summary>
public sealed class RunSetup
{
    internal RunSetup(TaskMeshRuntime runtime, PreparedGraph graph)
    {
        Runtime = runtime;
        Graph = graph;
    }

    /// <summary>The runtime it belongs to.</summary>
    public TaskMeshRuntime Runtime { get; }

    /// <summary>The graph it runs.</summary>
    public PreparedGraph Graph { get; }

    /// <summary>The run's options (its router, estimates, observers, cache, restored tasks, manual escalations, budget).</summary>
    public RunOptions Options { get; } = new();

    /// <summary>The run's budget (the request's, bounded by today's share of the daily limit), or null.</summary>
    public double? Budget { get; internal set; }

    /// <summary>The run's learned router, or null when it is routed by the engine's fixed rules.</summary>
    public LearnedRouter? Router { get; internal set; }

    /// <summary>Which models route it (<c>model version 3</c>, or why none).</summary>
    public string ModelNote { get; internal set; } = "";

    /// <summary>Why the store's newest models do not route it although it is routed by the learned router (they cannot be read), or null.</summary>
    public string? ModelProblem { get; internal set; }

    /// <summary>The recorder into the store, or null without a store.</summary>
    public RunRecorder? Recorder { get; internal set; }

    /// <summary>The stored run this one resumes (an id), or null.</summary>
    public string? ResumedFrom { get; internal set; }

    /// <summary>What a resume or an escalation reuses and reruns, in a line, or null.</summary>
    public string? Notice { get; internal set; }

    private Engine.Routing.RunPlan? _plan;

    /// <summary>
    /// What the run does (its routes, ready order, estimates), without running it; made once — a
    /// budgeted router counts what it places — and <see cref="Start"/> then runs this very plan.
    /// </summary>
    public Engine.Routing.RunPlan Plan() => _plan ??= Runtime.Engine.Plan(Graph, Options);

    /// <summary>Starts the run (the plan made by <see cref="Plan"/>, when there is one).</summary>
    public RunHandle Start(CancellationToken ct = default) => _plan is { } plan ? Runtime.Engine.Start(plan, ct) : Runtime.Engine.Start(Graph, Options, ct);
}
