using System.Threading.Channels;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Local;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine;

/// <summary>Chooses the layer of tasks that do not force one.</summary>
public interface ILayerRouter
{
    /// <summary>Name of the layer for task <paramref name="task"/> of <paramref name="graph"/>; called once per task per run.</summary>
    string Route(TaskGraph graph, int task);
}

/// <summary>Routes every task that does not force a layer to <c>local</c> (until a learned router is plugged in).</summary>
public sealed class LocalRouter : ILayerRouter
{
    public static readonly LocalRouter Instance = new();
    public string Route(TaskGraph graph, int task) => LocalLayer.LayerName;
}

/// <summary>A run in progress: its events, progress and completion.</summary>
public sealed class RunHandle
{
    private readonly RunState _state;

    internal RunHandle(RunState state, Task<RunResult> completion)
    {
        _state = state;
        Completion = completion;
    }

    public string RunId => _state.RunId;

    /// <summary>The run's events (only with <see cref="RunOptions.EmitEvents"/>; otherwise an empty stream).</summary>
    public ChannelReader<RunEvent> Events => _state.Events ?? s_empty;

    /// <summary>Tasks ended so far (updated in batches while running).</summary>
    public int Completed => _state.Completed;

    public int Failed => _state.FailedSoFar;

    public int Running => _state.Running;

    public int Total => _state.Graph.Count;

    /// <summary>Completes with the summary once every task ended or the run was cancelled.</summary>
    public Task<RunResult> Completion { get; }

    /// <summary>Stops dispatch and cancels running handlers.</summary>
    public void Cancel() => _state.Cancel();

    private static readonly ChannelReader<RunEvent> s_empty = CreateEmpty();

    private static ChannelReader<RunEvent> CreateEmpty()
    {
        var c = Channel.CreateUnbounded<RunEvent>();
        c.Writer.Complete();
        return c.Reader;
    }
}

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
    private readonly List<ExecutionLayer> _layers = new();

    public TaskMeshEngine(EngineOptions? options = null)
    {
        _options = (options ?? new EngineOptions()).Validated();
        Handlers = HandlerRegistry.CreateWithBuiltIns(_options.ShellEnabled);
        _layers.Add(new LocalLayer(_options.MaxParallelTasks));
        QuantumHandler.Register(Handlers, _options.Quantum);
        _layers.Add(new QuantumLayer(_options.Quantum));
    }

    /// <summary>The engine's settings (a validated copy).</summary>
    public EngineOptions Options => _options;

    public HandlerRegistry Handlers { get; }

    /// <summary>Routes tasks that do not force a layer; <see cref="LocalRouter"/> by default.</summary>
    public ILayerRouter Router { get; set; } = LocalRouter.Instance;

    /// <summary>The registered layers; <c>local</c> is always first.</summary>
    public IReadOnlyList<ExecutionLayer> Layers => _layers;

    /// <summary>Adds (or replaces by name) a layer.</summary>
    public void AddLayer(ExecutionLayer layer)
    {
        ArgumentNullException.ThrowIfNull(layer);
        if (layer.Name == LocalLayer.LayerName)
            throw new ArgumentException("the local layer is built in", nameof(layer));
        _layers.RemoveAll(l => l.Name == layer.Name);
        _layers.Add(layer);
    }

    /// <summary>
    /// Checks a built graph against this engine: handlers exist, their arguments are valid
    /// (parsed once and kept for every attempt), forced layers exist and can run the handler.
    /// </summary>
    public List<GraphError> Validate(TaskGraph graph) => Validate(graph, null);

    /// <summary>Validates <paramref name="graph"/>; relative paths in args resolve against <paramref name="baseDirectory"/> (default: the current directory).</summary>
    public List<GraphError> Validate(TaskGraph graph, string? baseDirectory)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var context = new ValidationContext(baseDirectory ?? Environment.CurrentDirectory);
        // Capabilities may be computed (the quantum layer reads free memory): once per validation.
        var layerHandlers = _layers.ToDictionary(l => l.Name, l => l.Capabilities.Handlers, StringComparer.Ordinal);
        var errors = new List<GraphError>();
        var handlers = ResolveHandlers(graph, errors);
        // Tasks without arguments share one parse per handler.
        var sharedParsed = new object?[handlers.Length];
        var sharedProblems = new IReadOnlyList<string>?[handlers.Length];
        for (int i = 0; i < graph.Count; i++)
        {
            var h = handlers[graph.HandlerOf[i]];
            if (h is null) continue;
            var spec = graph.Specs[i];
            string? forced = spec?.Layer ?? graph.Defaults.Layer;
            if (forced is not null && forced != "auto")
            {
                if (!layerHandlers.TryGetValue(forced, out var only))
                    errors.Add(new GraphError("unknown-layer", $"layer '{forced}' is not available here (available: {string.Join(", ", _layers.Select(l => l.Name))})", graph.IdOf(i), graph.LineOf(i)));
                else if (h.LocalOnly && forced != LocalLayer.LayerName)
                    errors.Add(new GraphError("bad-layer", $"handler '{h.Name}' runs only in the local layer", graph.IdOf(i), graph.LineOf(i)));
                else if (only is not null && !only.Contains(h.Name))
                    errors.Add(new GraphError("bad-layer", $"layer '{forced}' runs only {string.Join(", ", only)}, not handler '{h.Name}'", graph.IdOf(i), graph.LineOf(i)));
            }
            if (h.ValidateWithContext is { } withContext)
            {
                var (parsed, problems) = withContext(spec?.Args ?? default, context);
                foreach (var p in problems)
                    errors.Add(new GraphError("bad-args", $"handler '{h.Name}': {p}", graph.IdOf(i), graph.LineOf(i)));
                if (problems.Count == 0) (graph.Specs[i] ??= new TaskSpec()).ParsedArgs = parsed;
                continue;
            }
            if (h.Validate is null) continue;
            if (spec is null || spec.Args.ValueKind == System.Text.Json.JsonValueKind.Undefined)
            {
                int hi = graph.HandlerOf[i];
                if (sharedProblems[hi] is null)
                    (sharedParsed[hi], sharedProblems[hi]) = h.Validate(default);
                foreach (var p in sharedProblems[hi]!)
                    errors.Add(new GraphError("bad-args", $"handler '{h.Name}': {p}", graph.IdOf(i), graph.LineOf(i)));
                if (sharedProblems[hi]!.Count == 0)
                    (graph.Specs[i] ??= new TaskSpec()).ParsedArgs = sharedParsed[hi];
                continue;
            }
            var (p2, problems2) = h.Validate(spec.Args);
            foreach (var p in problems2)
                errors.Add(new GraphError("bad-args", $"handler '{h.Name}': {p}", graph.IdOf(i), graph.LineOf(i)));
            spec.ParsedArgs = p2;
        }
        graph.ValidatedBy = errors.Count == 0 ? this : null;
        return errors;
    }

    private HandlerDescriptor?[] ResolveHandlers(TaskGraph graph, List<GraphError>? errors)
    {
        var result = new HandlerDescriptor?[graph.HandlerNames.Length];
        for (int h = 0; h < result.Length; h++)
        {
            if (Handlers.TryGet(graph.HandlerNames[h], out var d)) result[h] = d;
            else if (errors is not null)
            {
                // Report each task that names it, so every line is listed.
                for (int i = 0; i < graph.Count; i++)
                {
                    if (graph.HandlerOf[i] != h) continue;
                    var name = graph.HandlerNames[h];
                    errors.Add(new GraphError("unknown-handler",
                        name.Length == 0 ? "has no handler" : $"handler '{name}' is not registered (known: {string.Join(", ", Handlers.Names)})",
                        graph.IdOf(i), graph.LineOf(i)));
                    if (errors.Count > 10_000) break;
                }
            }
        }
        return result;
    }

    /// <summary>Builds, validates and runs a graph; throws <see cref="GraphValidationException"/> with every problem found.</summary>
    public Task<RunResult> RunAsync(GraphBuilder builder, CancellationToken ct = default)
        => RunAsync(Prepare(builder), null, ct);

    /// <summary>Builds a graph and validates it against this engine.</summary>
    /// <exception cref="GraphValidationException">With every structural and handler problem found.</exception>
    public TaskGraph Prepare(GraphBuilder builder, string? file = null)
    {
        var graph = builder.TryBuild(out var errors);
        if (graph is null)
        {
            // Handler problems are reported too, so the user sees everything at once.
            var partial = TaskGraph.Compile(builder);
            errors.AddRange(Validate(partial, BaseDirectoryOf(file)));
            throw new GraphValidationException(Sort(errors), file);
        }
        var more = Validate(graph, BaseDirectoryOf(file));
        if (more.Count > 0) throw new GraphValidationException(Sort(more), file);
        return graph;
    }

    private static string? BaseDirectoryOf(string? file) => file is null ? null : Path.GetDirectoryName(Path.GetFullPath(file));

    private static List<GraphError> Sort(List<GraphError> errors)
        => errors.OrderBy(e => e.Line ?? int.MaxValue).ThenBy(e => e.Column ?? 0).ToList();

    /// <summary>Runs a validated graph to the end (or until <paramref name="ct"/> cancels it).</summary>
    public Task<RunResult> RunAsync(TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
        => Start(graph, options, ct).Completion;

    /// <summary>Starts a validated graph and returns a handle with its events and progress.</summary>
    public RunHandle Start(TaskGraph graph, RunOptions? options = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(graph);
        options ??= new RunOptions();
        if (!ReferenceEquals(graph.ValidatedBy, this))
        {
            // Arguments are parsed by validation; a graph built elsewhere is checked here once.
            var errors = Validate(graph);
            if (errors.Count > 0) throw new GraphValidationException(errors);
        }
        var handlers = ResolveHandlers(graph, null);
        var layers = _layers.ToArray();
        var route = ComputeRoutes(graph, handlers!, layers);
        var state = new RunState(graph, _options, handlers!, route, layers, options);
        var analysis = CriticalPathMs(graph, handlers!);
        var completion = RunAndSummarize(state, analysis, ct);
        return new RunHandle(state, completion);
    }

    private static async Task<RunResult> RunAndSummarize(RunState state, double criticalPathMs, CancellationToken ct)
    {
        var result = await state.RunAsync(ct).ConfigureAwait(false);
        result.CriticalPathMs = criticalPathMs;
        return result;
    }

    private byte[] ComputeRoutes(TaskGraph graph, HandlerDescriptor[] handlers, ExecutionLayer[] layers)
    {
        var route = new byte[graph.Count];
        var index = new Dictionary<string, byte>(StringComparer.Ordinal);
        for (int l = 0; l < layers.Length; l++) index[layers[l].Name] = (byte)l;
        bool customRouter = Router is not LocalRouter;
        var inline = new bool[handlers.Length];
        for (int h = 0; h < handlers.Length; h++) inline[h] = handlers[h].IsInline;
        for (int i = 0; i < graph.Count; i++)
        {
            string? forced = graph.Specs[i]?.Layer ?? graph.Defaults.Layer;
            byte li = 0; // local: the common case needs no lookup
            if (forced is not null && forced != "auto")
                li = index.GetValueOrDefault(forced);
            else if (handlers[graph.HandlerOf[i]].PreferredLayer is { } preferred && index.TryGetValue(preferred, out byte pi))
                li = pi;
            else if (customRouter)
                li = index.GetValueOrDefault(Router.Route(graph, i));
            // Inline: an inline handler in the local layer with no pools to take.
            route[i] = li == 0 && inline[graph.HandlerOf[i]] && (graph.Flags[i] & NodeFlags.UsesResources) == 0
                ? RunState.RouteInline
                : li;
        }
        return route;
    }

    private static double CriticalPathMs(TaskGraph graph, HandlerDescriptor[] handlers)
    {
        // Linear, but not free: skip it for huge graphs of estimate-less handlers.
        if (graph.Count > 200_000 && handlers.All(h => h.EstimateMicros is null) && graph.SuccWeight is null) return 0;
        var analysis = GraphAnalysis.Analyze(graph, i => EstimateMicros(graph, handlers, i));
        return analysis.CriticalPathMs;
    }

    /// <summary>A task's predicted duration in microseconds from its handler's estimate (0 when unknown).</summary>
    private static double EstimateMicros(TaskGraph graph, HandlerDescriptor?[] handlers, int task)
    {
        var h = handlers[graph.HandlerOf[task]];
        var parsed = graph.Specs[task]?.ParsedArgs;
        return h?.EstimateMicros is null || parsed is null ? 0 : h.EstimateMicros(parsed);
    }

    /// <summary>Analysis (levels, widths, critical path by the handlers' estimates) of a validated graph.</summary>
    public GraphAnalysis Analyze(TaskGraph graph)
    {
        var handlers = ResolveHandlers(graph, null);
        return GraphAnalysis.Analyze(graph, i => EstimateMicros(graph, handlers, i));
    }
}
