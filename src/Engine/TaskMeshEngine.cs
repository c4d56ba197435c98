using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Local;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine;

/// <summary>
/// The engine: handlers, layers and a router. Validate a graph against it, then run it.
/// <code>
/// var engine = new TaskMeshEngine();
/// engine.Handlers.Register("fetch", async (ctx, args, ct) => await FetchAsync(ct));
/// var result = await engine.RunAsync(graph, ct);
/// </code>
/// </summary>
public sealed class TaskMeshEngine
{
    private readonly EngineOptions _options;
    private readonly RetryPolicy _retry;
    private readonly object _lock = new();
    private ExecutionLayer[] _layers = [];
    private IRunObserver[] _observers = [];
    private ILayerRouter _router = FixedLayerRouter.Local;
    private IEscalationPolicy _escalation = DefaultEscalationPolicy.Instance;

    /// <summary>
    /// Creates an engine with the built-in handlers and the layers of <see cref="EngineOptions.Layers"/>:
    /// <c>local</c> and <c>quantum</c> by default, and whatever the provider table adds.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options (every problem listed).</exception>
    public TaskMeshEngine(EngineOptions? options = null)
    {
        _options = (options ?? new EngineOptions()).Validated();
        _retry = new RetryPolicy(_options.RetryBaseDelay, _options.RetryMaxDelay,
            _options.RandomSeed is int seed ? (ulong)seed : (ulong)Random.Shared.NextInt64());
        Handlers = HandlerRegistry.CreateWithBuiltIns(_options.ShellEnabled);
        QuantumHandler.Register(Handlers, _options.Quantum);
        if (_options.EscalationRules is { } rules)
            _escalation = new Escalation.RuleEscalationPolicy(rules, () => Layers, _options.MaxEscalationsPerTask);
        if (_options.Layers is not { Count: > 0 } specs)
        {
            AddLayer(new LocalLayer(_options.MaxParallelTasks));
            AddLayer(new QuantumLayer(_options.Quantum));
            Layers[1].Configure(0, LayerKinds.DefaultRank(LayerKinds.Quantum));
            return;
        }
        // The provider table: local first (configured by its row, if any), then the others in order.
        var local = specs.FirstOrDefault(l => l.Name == LocalLayer.LayerName);
        AddLayer(new LocalLayer(local?.Capacity ?? _options.MaxParallelTasks));
        Layers[0].Configure(local?.PricePerSecond ?? 0, local?.EffectiveRank ?? 0, local?.Capabilities);
        if (!specs.Any(l => l.Name == QuantumLayer.LayerName))
        {
            AddLayer(new QuantumLayer(_options.Quantum));
            Layers[^1].Configure(0, LayerKinds.DefaultRank(LayerKinds.Quantum));
        }
        foreach (var spec in specs)
        {
            if (!spec.Enabled || spec.Name == LocalLayer.LayerName) continue;
            ExecutionLayer layer = spec.Kind switch
            {
                LayerKinds.Local => new LocalLayer(spec.Capacity ?? _options.MaxParallelTasks, spec.Name),
                _ => new QuantumLayer(spec.Quantum is { } q ? q with { MaxConcurrentCircuits = spec.Capacity ?? q.MaxConcurrentCircuits }
                        : _options.Quantum with { MaxConcurrentCircuits = spec.Capacity ?? _options.Quantum.MaxConcurrentCircuits },
                    spec.Name, spec.Precision),
            };
            layer.Configure(spec.PricePerSecond, spec.EffectiveRank, spec.Capabilities);
            AddLayer(layer);
        }
        LinkQuantumCascades();
    }

    /// <summary>
    /// A single-precision quantum layer escalates a drifting circuit to the double-precision quantum
    /// layer of the next higher rank, when there is one (an ordinary escalation between layers).
    /// </summary>
    private void LinkQuantumCascades()
    {
        var quantum = Layers.OfType<QuantumLayer>().ToList();
        foreach (var q in quantum)
        {
            if (q.Precision == QuantumSim.Precision.Double) continue;
            q.EscalatesTo = quantum.Where(d => d.Precision == QuantumSim.Precision.Double && d.Rank > q.Rank)
                .OrderBy(d => d.Rank).ThenBy(d => d.Name, StringComparer.Ordinal).FirstOrDefault()?.Name;
        }
    }

    /// <summary>The engine's settings (a validated copy).</summary>
    public EngineOptions Options => _options;

    public HandlerRegistry Handlers { get; }

    /// <summary>Routes tasks that neither force a layer nor have a handler that prefers one; everything to <c>local</c> by default.</summary>
    public ILayerRouter Router
    {
        get => _router;
        set => _router = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>
    /// A learned duration estimate (the duration models of the learning component), the last of a
    /// task's estimates after its own <c>estimateMs</c> and its handler's. Null (the default): none.
    /// Used for the critical path and, when <see cref="EngineOptions.ReadyOrder"/> asks, the order of ready tasks.
    /// </summary>
    public IDurationEstimator? DurationEstimator { get; set; }

    /// <summary>Decides retries and escalations after each attempt; <see cref="DefaultEscalationPolicy"/> by default.</summary>
    public IEscalationPolicy EscalationPolicy
    {
        get => _escalation;
        set => _escalation = value ?? throw new ArgumentNullException(nameof(value));
    }

    /// <summary>The back-off of retries (from <see cref="EngineOptions.RetryBaseDelay"/>, <see cref="EngineOptions.RetryMaxDelay"/> and <see cref="EngineOptions.RandomSeed"/>).</summary>
    public RetryPolicy RetryPolicy => _retry;

    /// <summary>The registered layers; <c>local</c> is always first.</summary>
    public IReadOnlyList<ExecutionLayer> Layers => Volatile.Read(ref _layers);

    /// <summary>Observers attached to every run started from now on (a run's own come from <see cref="RunOptions.Observers"/>).</summary>
    public IReadOnlyList<IRunObserver> Observers => Volatile.Read(ref _observers);

    /// <summary>
    /// Registers a layer, or replaces the one of the same name. The first layer registered is
    /// <c>local</c> (the engine does it); it cannot be replaced. Runs already started keep their layers.
    /// </summary>
    /// <exception cref="ArgumentException">The layer is named <c>local</c> or <c>auto</c>, its name is not a valid layer name, or too many layers are registered.</exception>
    public void AddLayer(ExecutionLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        lock (_lock)
        {
            var name = layer.Name;
            if (!GraphNames.IsValidLayerName(name))
                throw new ArgumentException($"'{name}' is not a valid layer name (letters, digits, '-', '_' and '.', at most {GraphNames.MaxLayerNameLength} characters)", nameof(layer));
            if (name == GraphNames.AutoLayer)
                throw new ArgumentException("'auto' is not a layer: it leaves the choice to the router", nameof(layer));
            if (name is Escalation.EscalationRule.NextLayer or "none")
                throw new ArgumentException($"'{name}' is a reserved word (a rule's \"next\" rank; the metrics' layer=\"none\"), not a layer name", nameof(layer));
            if (_layers.Length > 0 && name == LocalLayer.LayerName)
                throw new ArgumentException("the local layer is built in", nameof(layer));
            var list = _layers.Where(l => l.Name != name).ToList();
            list.Add(layer);
            if (list.Count >= RouteTable.MaxLayers)
                throw new ArgumentException($"at most {RouteTable.MaxLayers - 1} layers can be registered", nameof(layer));
            Volatile.Write(ref _layers, list.ToArray());
        }
    }

    /// <summary>Attaches an observer to every run started from now on.</summary>
    public void AddObserver(IRunObserver observer)
    {
        ArgumentNullException.ThrowIfNull(observer);
        lock (_lock) Volatile.Write(ref _observers, [.. _observers, observer]);
    }

    /// <summary>Detaches an observer from runs started from now on; true when it was attached.</summary>
    public bool RemoveObserver(IRunObserver observer)
    {
        lock (_lock)
        {
            int i = Array.IndexOf(_observers, observer);
            if (i < 0) return false;
            Volatile.Write(ref _observers, _observers.Where((_, k) => k != i).ToArray());
            return true;
        }
    }

    /// <summary>
    /// Checks a built graph against this engine (handlers exist, their arguments are valid, forced
    /// layers exist and can run the handler) and returns every problem; the graph is not changed.
    /// </summary>
    public List<GraphError> Validate(TaskGraph graph, string? baseDirectory = null)
    {
        TryPrepare(graph, baseDirectory, out _, out var errors);
        return errors;
    }

    /// <summary>Prepares a built graph for this engine: handlers resolved, arguments parsed once for every run.</summary>
    /// <param name="graph">The graph.</param>
    /// <param name="baseDirectory">Folder that relative paths in arguments resolve against (default: the current directory).</param>
    /// <param name="prepared">The prepared graph, when there were no problems.</param>
    /// <param name="errors">Every problem found.</param>
    public bool TryPrepare(TaskGraph graph, string? baseDirectory, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out PreparedGraph? prepared, out List<GraphError> errors)
    {
        ArgumentNullException.ThrowIfNull(graph);
        errors = new List<GraphError>();
        prepared = GraphValidator.Prepare(graph, this, Handlers, Layers, new ValidationContext(baseDirectory ?? Environment.CurrentDirectory), errors);
        return prepared is not null;
    }

    /// <summary>Prepares a built graph for this engine.</summary>
    /// <exception cref="GraphValidationException">With every problem found.</exception>
    public PreparedGraph Prepare(TaskGraph graph, string? baseDirectory = null)
        => TryPrepare(graph, baseDirectory, out var prepared, out var errors) ? prepared : throw new GraphValidationException(Sort(errors));

    /// <summary>Builds, validates and runs a graph; throws <see cref="GraphValidationException"/> with every problem found.</summary>
    public Task<RunResult> RunAsync(GraphBuilder builder, CancellationToken ct = default)
        => RunAsync(Prepare(builder), null, ct);

    /// <summary>Builds a graph and prepares it for this engine.</summary>
    /// <param name="builder">The graph being built.</param>
    /// <param name="file">The file it came from: relative paths in arguments resolve against its folder, and it is never overwritten by a task.</param>
    /// <param name="ct">Cancels a long validation (large circuits to parse, say).</param>
    /// <exception cref="GraphValidationException">With every structural and handler problem found.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired.</exception>
    public PreparedGraph Prepare(GraphBuilder builder, string? file = null, CancellationToken ct = default)
    {
        var graph = builder.TryBuild(out var errors);
        var context = new ValidationContext(BaseDirectoryOf(file) ?? Environment.CurrentDirectory)
        {
            InputFiles = file is null ? [] : [Path.GetFullPath(file)],
            CancellationToken = ct,
        };
        // Handler problems are reported beside structural ones, so the user sees everything at once.
        var prepared = GraphValidator.Prepare(graph ?? TaskGraph.Compile(builder), this, Handlers, Layers, context, errors);
        if (graph is null || prepared is null) throw new GraphValidationException(Sort(errors), file);
        return prepared;
    }

    private static string? BaseDirectoryOf(string? file) => file is null ? null : Path.GetDirectoryName(Path.GetFullPath(file));

    private static List<GraphError> Sort(List<GraphError> errors)
        => errors.OrderBy(e => e.Line ?? int.MaxValue).ThenBy(e => e.Column ?? 0).ToList();

    /// <summary>Prepares and runs a graph to the end (or until <paramref name="ct"/> cancels it).</summary>
    /// <exception cref="GraphValidationException">The graph has problems.</exception>
    public Task<RunResult> RunAsync(TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => Start(Prepare(graph, options?.BaseDirectory), options, ct).Completion;

    /// <summary>Runs a prepared graph to the end (or until <paramref name="ct"/> cancels it).</summary>
    public Task<RunResult> RunAsync(PreparedGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => Start(graph, options, ct).Completion;

    /// <summary>Prepares and starts a graph.</summary>
    /// <exception cref="GraphValidationException">The graph has problems.</exception>
    public RunHandle Start(TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => Start(Prepare(graph, options?.BaseDirectory), options, ct);

    /// <summary>Starts a prepared graph and returns a handle with its events and progress.</summary>
    /// <remarks>A graph prepared by another engine is prepared again for this one.</remarks>
    public RunHandle Start(PreparedGraph graph, RunOptions? options = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(graph);
        options ??= new RunOptions();
        var observers = ObserversOf(options);
        // Routes kept per task only when someone watches (the audit's layer_selection).
        return Execute(MakePlan(graph, options, keepDetails: observers.Length > 0 || options.EmitEvents), observers, ct);
    }

    /// <summary>Runs a plan made by <see cref="Plan"/>: the run does exactly what the plan says (its routes, ready order, estimates).</summary>
    /// <exception cref="ArgumentException">The plan was made by another engine.</exception>
    public RunHandle Start(RunPlan plan, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(plan);
        if (!ReferenceEquals(plan.Graph.Engine, this)) throw new ArgumentException("the plan was made by another engine", nameof(plan));
        return Execute(plan, ObserversOf(plan.Options), ct);
    }

    // The engine's observers, then the run's own.
    private IRunObserver[] ObserversOf(RunOptions options)
        => options.Observers is { Count: > 0 } own ? [.. Observers, .. own] : [.. Observers];

    /// <summary>
    /// What a run of <paramref name="graph"/> with <paramref name="options"/> would do, without
    /// running anything: each task's layer and the router's decision behind it (the same routing a
    /// run makes: forced layers, handlers' preferred layers, the router, manual escalations,
    /// refusals), the escalations routing makes, the ready order and the critical path by the run's
    /// estimates. <see cref="Start(RunPlan, CancellationToken)"/> runs it as it is.
    /// </summary>
    /// <exception cref="ArgumentException">A manual escalation names an unknown task or layer, or a layer that cannot run the task.</exception>
    public RunPlan Plan(PreparedGraph graph, RunOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(graph);
        return MakePlan(graph, options ?? new RunOptions(), keepDetails: true);
    }

    // Planning, made before the executor starts (as Taskflow keeps the graph apart from the
    // executor): routes, manual moves, estimates and the ready order — one place for a run and a plan.
    private RunPlan MakePlan(PreparedGraph graph, RunOptions options, bool keepDetails)
    {
        if (options.EventCapacity < 1) throw new ArgumentOutOfRangeException(nameof(options), "RunOptions.EventCapacity must be at least 1");
        if (options.Restored is { } restored && restored.TaskCount != graph.Count)
            throw new ArgumentException($"RunOptions.Restored was made for {restored.TaskCount} tasks; the graph has {graph.Count}", nameof(options));
        if (!ReferenceEquals(graph.Engine, this)) graph = Prepare(graph.Graph, graph.BaseDirectory);
        LinkQuantumCascades();   // layers may have been added or re-ranked since
        var layers = Layers.ToArray();
        var route = ComputeRoutes(graph, layers, options.Router ?? _router, options.Budget, keepDetails, out var details, out var escalations, out var refused);
        var manual = ApplyManualEscalations(graph, layers, route, options.ManualEscalations, options.Restored);
        var estimator = options.DurationEstimator ?? DurationEstimator;
        var ready = ReadyPlanOf(graph, layers, route, estimator, out var analysis);
        return new RunPlan(graph, options, layers, route, details, escalations, refused, manual, ready,
            () => analysis?.CriticalPathMs ?? CriticalPathMs(graph, layers, route, estimator));
    }

    /// <summary>
    /// Opens a run that takes tasks while it goes (<see cref="OpenRun"/>): each submitted task is
    /// validated as a task of a graph file is, routed by this engine's router (or
    /// <see cref="OpenRunOptions.Router"/>), and run on this engine's layers under its retry and
    /// escalation policies once its dependencies ended.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException">Invalid options.</exception>
    public OpenRun Open(OpenRunOptions? options = null)
    {
        options ??= new OpenRunOptions();
        options.Check();
        LinkQuantumCascades();
        var events = options.EmitEvents ? new OpenRunEvents(options.EventCapacity, _options.TimeProvider) : null;
        // The event stream is not an observer: the run writes to it directly, and only while someone listens.
        var observers = Observers.OfType<IOpenRunObserver>().Concat(options.Observers ?? []).Distinct();
        return new OpenRun(new Scheduling.Open.OpenRunState(this, _options, Layers.ToArray(), options, _escalation, _retry, observers.ToArray()) { Events = events });
    }

    /// <summary>
    /// The route of the one task of <paramref name="prepared"/> (an open run's task, validated as a
    /// graph of itself), decided as for a task of a run: forced layer, handler's preference, router.
    /// </summary>
    internal (byte Route, RouteDecision? Decision, RouteDecision? Moved, string? Refused) RouteOne(PreparedGraph prepared, ExecutionLayer[] layers, ILayerRouter? router, double? budget)
    {
        var route = ComputeRoutes(prepared, layers, router ?? _router, budget, keepDetails: true, out var details, out var escalations, out var refused);
        RouteDecision? decision = details is not null && details.TryGet(0, out var d) ? d : null;
        RouteDecision? moved = escalations is { Count: > 0 } ? escalations[0].Decision : null;
        string? why = refused is not null && refused.TryGetValue(0, out var r) ? r : null;
        return (route[0], decision, moved, why);
    }

    private RunHandle Execute(RunPlan plan, IRunObserver[] observers, CancellationToken ct)
    {
        var state = new RunState(plan.Graph, _options, plan.Routes, plan.LayerArray, plan.Options, observers, _escalation, _retry,
            () => plan.CriticalPathMs, plan.Ready);
        state.SetRouteDetails(plan.Details);
        state.SetManualEscalations(plan.Manual);
        state.SetRoutedEscalations(plan.RoutedEscalations);
        state.SetRefused(plan.Refused);
        return new RunHandle(state, state.RunAsync(ct));
    }

    /// <summary>Routes each manually escalated task to its layer; returns them by task index.</summary>
    /// <exception cref="ArgumentException">An unknown task or layer, or a layer that cannot run the task (the message says which).</exception>
    private static List<(int Task, ManualEscalation Move)>? ApplyManualEscalations(PreparedGraph graph, ExecutionLayer[] layers, byte[] route, IReadOnlyList<ManualEscalation>? moves,
        RestoredTasks? restored)
    {
        if (moves is not { Count: > 0 }) return null;
        var list = new List<(int, ManualEscalation)>();
        foreach (var m in moves)
        {
            if (!graph.Graph.TryGetIndex(m.TaskId, out int task)) throw new ArgumentException($"no task '{GraphLimits.Printable(m.TaskId)}' in graph '{graph.Graph.Name}'");
            if (restored?.Contains(task) == true) throw new ArgumentException($"task '{m.TaskId}' is both restored and escalated: take it out of RunOptions.Restored to run it again");
            int li = Array.FindIndex(layers, l => l.Name == m.Layer);
            if (li < 0) throw new ArgumentException($"no layer '{GraphLimits.Printable(m.Layer)}' (layers: {string.Join(", ", layers.Select(l => l.Name))})");
            if (WhyCannotRun(graph, task, layers[li], li == RouteTable.Local) is { } why) throw new ArgumentException(why);
            route[task] = (byte)li;   // through the layer's dispatcher, even for an inline handler
            list.Add((task, m));
        }
        return list;
    }

    /// <summary>Why <paramref name="layer"/> cannot run task <paramref name="task"/> of <paramref name="graph"/>, or null when it can.</summary>
    public string? WhyCannotRun(PreparedGraph graph, int task, string layer)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var layers = Layers;
        for (int i = 0; i < layers.Count; i++)
            if (layers[i].Name == layer) return WhyCannotRun(graph, task, layers[i], i == RouteTable.Local);
        return $"no layer '{GraphLimits.Printable(layer)}' (layers: {string.Join(", ", layers.Select(l => l.Name))})";
    }

    // The reasons behind ExecutionLayer.CanRun (the one rule), in words that name the task.
    private static string? WhyCannotRun(PreparedGraph graph, int task, ExecutionLayer layer, bool isLocal)
    {
        var h = graph.HandlerOf(task);
        var requires = graph.Graph.Spec(task)?.Requires;
        if (layer.CanRun(h, requires)) return null;
        string id = graph.Graph.IdOf(task);
        if (h.LocalOnly && !isLocal) return $"handler '{h.Name}' of task '{id}' runs only in the local layer";
        if (h.OnlyOn is { } kind && layer.Kind != kind) return $"handler '{h.Name}' of task '{id}' runs only on layers of kind {kind}, and '{layer.Name}' is {layer.Kind}";
        if (!layer.Runs(h.Name)) return $"layer '{layer.Name}' runs only {string.Join(", ", layer.RunsHandlers!)}, not handler '{h.Name}' of task '{id}'";
        return $"layer '{layer.Name}' lacks what task '{id}' requires ({string.Join(", ", requires ?? [])})";
    }

    /// <summary>Tasks handed to the router at once.</summary>
    private const int RouteBatchSize = 1024;

    /// <summary>
    /// The byte per task that says where it runs. Forced layers and handlers' preferred layers
    /// come first; the router decides the rest — once for all when it has a fixed decision, in
    /// batches otherwise. A decision the layer cannot honour (unknown layer, a handler it does
    /// not run) falls back to <c>local</c>.
    /// </summary>
    private byte[] ComputeRoutes(PreparedGraph prepared, ExecutionLayer[] layers, ILayerRouter router, double? budget, bool keepDetails,
        out RouteDetails? details, out List<(int Task, RouteDecision Decision)>? escalations, out Dictionary<int, string>? refused)
    {
        escalations = null;
        refused = null;
        Dictionary<int, string>? refusals = null;
        List<(int, RouteDecision)>? moved = null;
        var graph = prepared.Graph;
        var handlers = prepared.Handlers;
        var route = new byte[graph.Count];
        var index = new Dictionary<string, byte>(StringComparer.Ordinal);
        for (int l = 0; l < layers.Length; l++) index[layers[l].Name] = (byte)l;
        RouteDetails? kept = null;
        var context = new RoutingContext(prepared, layers, budget);
        byte fixedRoute = RouteTable.Local;
        bool hasFixed = router.FixedDecision is { } fixedDecision;
        if (hasFixed) fixedRoute = Accept(router.FixedDecision!.Value, -1);

        var inline = new bool[handlers.Length];
        for (int h = 0; h < handlers.Length; h++) inline[h] = handlers[h].IsInline;

        // Decided at construction: with no task options and no default layer, a task's route
        // depends on its handler alone — one decision per handler, then a fill.
        if (graph.HasNoSpecs && graph.Defaults.Layer is null or GraphNames.AutoLayer
            && (hasFixed || !router.RoutesPreferredHandlers && handlers.All(h => h.PreferredLayer is { } p && index.ContainsKey(p))))
        {
            var byHandler = new byte[handlers.Length];
            for (int h = 0; h < handlers.Length; h++)
            {
                byte li = handlers[h].PreferredLayer is { } p && index.TryGetValue(p, out byte pi) ? pi : fixedRoute;
                if (!FitsHandler(li, handlers[h])) li = RouteTable.Local;
                byHandler[h] = li == RouteTable.Local && inline[h] ? RouteTable.Inline : li;   // no options: no pools held
            }
            if (handlers.Length == 1) Array.Fill(route, byHandler[0]);
            else for (int i = 0; i < route.Length; i++) route[i] = byHandler[graph.HandlerIndex(i)];
            details = null;
            escalations = moved;
            refused = refusals;
            return route;
        }
        // A router that decides by handler for tasks without options: one call per handler, on its
        // first task, then a fill.
        // (Not within a budget: it is counted task by task, in order.)
        if (graph.HasNoSpecs && graph.Defaults.Layer is null or GraphNames.AutoLayer && router.DecidesByHandlerWithoutOptions && budget is null && graph.Count > 0)
        {
            var first = new int[handlers.Length];
            Array.Fill(first, -1);
            int found = 0;
            for (int i = 0; i < graph.Count && found < handlers.Length; i++)
                if (first[graph.HandlerIndex(i)] < 0) { first[graph.HandlerIndex(i)] = i; found++; }
            var byHandler = new byte[handlers.Length];
            var decided = new RouteDecision[handlers.Length];
            for (int h = 0; h < handlers.Length; h++)
            {
                if (first[h] < 0) continue;
                decided[h] = router.Route(context, first[h]);
                byte li = Accept(decided[h], first[h]);
                byHandler[h] = Final(li, first[h]);
            }
            bool[] movedByHandler = new bool[handlers.Length];
            if (moved is not null) foreach (var (t, _) in moved) movedByHandler[graph.HandlerIndex(t)] = true;
            moved = null;
            for (int i = 0; i < route.Length; i++)
            {
                int h = graph.HandlerIndex(i);
                route[i] = byHandler[h];
                if (movedByHandler[h]) (moved ??= new()).Add((i, decided[h]));
                // Decisions to keep (for the audit) are the same for every task of a handler.
                if (keepDetails && byHandler[h] != RouteTable.Inline && (decided[h].Confidence is not null || decided[h].PredictedCost is not null || decided[h].Reason is not null))
                    (kept ??= new(graph.Count)).Set(i, decided[h]);
            }
            details = kept;
            escalations = moved;
            refused = refusals;
            return route;
        }
        var batch = new int[Math.Min(RouteBatchSize, Math.Max(1, graph.Count))];
        var decisions = new RouteDecision[batch.Length];
        // A router that decides by kind names each task's kind; each kind's decision is taken once.
        var byKind = budget is null && router is IKindRouter { RoutesByKind: true } kr ? kr : null;
        var kinds = byKind is null ? null : new int[batch.Length];
        var kindRoute = new List<int>();                    // by kind: the layer its decision gives (-1: not taken yet)
        var kindDecision = new List<RouteDecision>();       // by kind: its decision
        int pending = 0;
        for (int i = 0; i < graph.Count; i++)
        {
            string? forced = graph.Spec(i)?.Layer ?? graph.Defaults.Layer;
            byte li;
            if (forced is not null && forced != GraphNames.AutoLayer)
                li = index.GetValueOrDefault(forced, RouteTable.Local);
            else if (!router.RoutesPreferredHandlers && handlers[graph.HandlerIndex(i)].PreferredLayer is { } preferred && index.TryGetValue(preferred, out byte pi))
                li = Fits(pi, i) ? pi : Fallback(i);
            else if (hasFixed)
                li = Fits(fixedRoute, i) ? fixedRoute : Fallback(i);
            else
            {
                batch[pending++] = i;
                if (pending == batch.Length) Flush();
                continue;
            }
            route[i] = Final(li, i);
        }
        if (pending > 0) Flush();
        details = kept;
        escalations = moved;
        refused = refusals;
        return route;

        void Flush()
        {
            if (byKind is not null)
            {
                byKind.KindsOf(context, batch.AsSpan(0, pending), kinds.AsSpan(0, pending));
                for (int k = 0; k < pending; k++)
                {
                    int task = batch[k], kind = kinds![k];
                    while (kindRoute.Count <= kind)
                    {
                        kindRoute.Add(-1);
                        kindDecision.Add(default);
                    }
                    // Tasks of a kind share handler and requirements: the layer is the kind's. What is
                    // kept per task (escalations, details) is only there for decisions that carry it.
                    byte li;
                    RouteDecision d;
                    if (kindRoute[kind] < 0)
                    {
                        kindDecision[kind] = d = byKind.DecisionOfKind(context, kind);
                        kindRoute[kind] = li = Accept(d, task, kind);
                    }
                    else
                    {
                        li = (byte)kindRoute[kind];
                        d = kindDecision[kind];
                        if (d.EscalatedFrom is not null || keepDetails) Note(d, li, task, kind);
                    }
                    route[task] = Final(li, task);
                }
                pending = 0;
                return;
            }
            router.RouteBatch(context, batch.AsSpan(0, pending), decisions.AsSpan(0, pending));
            for (int k = 0; k < pending; k++)
            {
                int task = batch[k];
                route[task] = Final(Accept(decisions[k], task), task);
            }
            pending = 0;
        }

        byte Accept(RouteDecision d, int task, int kind = -1)
        {
            if (task >= 0 && d.Refused)
            {
                // Through the local dispatcher (never inline), which fails it with the reason.
                (refusals ??= new())[task] = d.Reason ?? "refused by the router";
                return RouteTable.Local;
            }
            byte li = d.Layer is not null && index.TryGetValue(d.Layer, out byte x) ? x : RouteTable.Local;
            if (task >= 0 && !Fits(li, task)) li = Fallback(task);
            if (task >= 0) Note(d, li, task, kind);
            return li;
        }

        // What a task's decision leaves beside its route: the escalation a rule made as it was
        // routed, and the decision itself for observers (when the layer is the one decided) —
        // by kind when the router decides by kind, not copied per task.
        void Note(in RouteDecision d, byte li, int task, int kind)
        {
            if (d.EscalatedFrom is not null && d.Trigger is not null && layers[li].Name == d.Layer) (moved ??= new()).Add((task, d));
            if (!keepDetails || d.Confidence is null && d.PredictedCost is null && d.Reason is null || layers[li].Name != d.Layer) return;
            kept ??= new(graph.Count);
            if (kind >= 0) kept.SetKind(task, kind, d);
            else kept.Set(task, d);
        }

        bool Fits(byte li, int task) => layers[li].CanRun(handlers[graph.HandlerIndex(task)], graph.Spec(task)?.Requires);

        // A task the chosen layer cannot take: local when it can, else the least capable (then
        // cheapest) layer that runs its handler and has what it requires (validation saw one exists).
        byte Fallback(int task)
        {
            if (Fits(RouteTable.Local, task)) return RouteTable.Local;
            int best = -1;
            for (int l = 1; l < layers.Length; l++)
                if (Fits((byte)l, task) && (best < 0 || ExecutionLayer.LessCapable(layers[l], layers[best]))) best = l;
            return best < 0 ? RouteTable.Local : (byte)best;
        }

        bool FitsHandler(byte li, HandlerDescriptor h) => layers[li].CanRun(h);

        // Inline: an inline handler in the local layer with no pools to take.
        byte Final(byte li, int task)
            => li == RouteTable.Local && inline[graph.HandlerIndex(task)] && (graph.FlagsOf(task) & NodeFlags.UsesResources) == 0
                && refusals?.ContainsKey(task) != true ? RouteTable.Inline : li;
    }

    private static double CriticalPathMs(PreparedGraph graph, ExecutionLayer[] layers, byte[] route, IDurationEstimator? estimator)
    {
        // Without an estimate anywhere and a weight on any edge, every path is 0 long: skip the
        // analysis (linear, but not free on a million tasks).
        if (!HasEstimates(graph, estimator)) return 0;
        return GraphAnalysis.Analyze(graph.Graph, i => EstimateMicros(graph, i, layers, route, estimator)).CriticalPathMs;
    }

    /// <summary>Whether any task of the graph can have an estimate or any edge a weight.</summary>
    private static bool HasEstimates(PreparedGraph graph, IDurationEstimator? estimator)
        => graph.Graph.SuccWeight is not null || estimator is not null || graph.Handlers.Any(h => h.EstimateMicros is not null) || graph.Graph.HasEstimates;

    /// <summary>
    /// A task's expected duration in µs: its own <c>estimateMs</c>, else its handler's estimate,
    /// else the learned estimate on the layer it is routed to (<paramref name="route"/> null: the
    /// first two only); 0 when none speaks.
    /// </summary>
    private static double EstimateMicros(PreparedGraph graph, int task, ExecutionLayer[]? layers = null, byte[]? route = null, IDurationEstimator? estimator = null)
    {
        if (graph.Graph.Spec(task)?.EstimateMs is double ms) return ms * 1000;
        var h = graph.HandlerOf(task);
        var parsed = graph.ParsedArgsOf(task);
        if (h.EstimateMicros is not null && parsed is not null && h.EstimateMicros(parsed) is double us && us > 0 && double.IsFinite(us))
            return us;
        if (estimator is null || layers is null || route is null) return 0;
        byte r = route[task];
        string layer = r == RouteTable.Inline ? LocalLayer.LayerName : layers[r].Name;
        return estimator.EstimateMs(graph, task, layer) is double learned && learned > 0 && double.IsFinite(learned) ? learned * 1000 : 0;
    }

    /// <summary>
    /// The run's ready order (<see cref="EngineOptions.ReadyOrder"/>), decided before it starts: a
    /// layer orders its waiting tasks by upward rank when it has more tasks routed to it than slots
    /// (any task, under <c>critical_path</c>) and, under <c>auto</c>, the run has estimates. Counting
    /// the routes is a vectorised pass over a byte per task; a run whose tasks all run inline, or
    /// that asks for <c>fifo</c>, computes nothing and keeps the lock-free arrival-order queues.
    /// </summary>
    private ReadyPlan ReadyPlanOf(PreparedGraph graph, ExecutionLayer[] layers, byte[] route, IDurationEstimator? estimator, out GraphAnalysis? analysis)
    {
        analysis = null;
        var order = _options.ReadyOrder;
        if (order == ReadyOrder.Fifo) return ReadyPlan.Fifo;
        var ranked = new bool[layers.Length];
        bool any = false;
        for (int l = 0; l < layers.Length; l++)
        {
            int count = route.AsSpan().Count((byte)l);
            ranked[l] = count > 0 && (order == ReadyOrder.CriticalPath || count > layers[l].Capacity);
            any |= ranked[l];
        }
        if (!any || order == ReadyOrder.Auto && !HasEstimates(graph, estimator)) return ReadyPlan.Fifo;
        analysis = GraphAnalysis.Analyze(graph.Graph, i => EstimateMicros(graph, i, layers, route, estimator));
        var ranks = (double[])analysis.UpwardRankMicros;
        // Under auto, ranks that are all 0 (no estimate spoke) order nothing: keep arrival order.
        if (order == ReadyOrder.Auto && Array.TrueForAll(ranks, r => r == 0)) return ReadyPlan.Fifo;
        return new ReadyPlan(ranks, ranked);
    }

    /// <summary>Analysis (levels, widths, upward ranks, critical path by the tasks' <c>estimateMs</c>, else their handlers' estimates) of a prepared graph.</summary>
    public GraphAnalysis Analyze(PreparedGraph graph)
    {
        ArgumentNullException.ThrowIfNull(graph);
        return GraphAnalysis.Analyze(graph.Graph, i => EstimateMicros(graph, i, null, null, null));
    }
}
