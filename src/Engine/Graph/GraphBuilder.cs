using System.Runtime.InteropServices;
using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// Builds a <see cref="TaskGraph"/> from code or from a graph file.
/// <code>
/// var g = new GraphBuilder("etl");
/// var a = g.Task("a", "spin", new { micros = 100 });
/// g.Task("b", "hash", new { bytes = 4096 }).DependsOn(a);
/// TaskGraph graph = g.Build();
/// </code>
/// Every step is linear in the number of tasks and edges; dependencies named by id are
/// resolved once, in <see cref="Build"/>.
/// </summary>
public sealed class GraphBuilder
{
    internal readonly List<string?> Ids = new();
    internal readonly List<ushort> HandlerOf = new();
    internal readonly List<string> HandlerNames = new();
    private readonly Dictionary<string, ushort> _handlerIndex = new(StringComparer.Ordinal);
    internal readonly List<byte> Priorities = new();
    internal readonly List<TaskSpec?> Specs = new();
    private readonly Dictionary<string, int> _byId = new(StringComparer.Ordinal);
    private string? _lastHandler;
    private bool _tooManyHandlers;
    private ushort _lastHandlerIndex;

    // Edges as parallel lists: source, target, kind, and a weight list kept only once a weight is set.
    internal readonly List<int> EdgeSource = new();
    internal readonly List<int> EdgeTarget = new();
    internal readonly List<byte> EdgeKinds = new();
    internal List<float>? EdgeWeights;

    // Dependencies named by id, resolved in Build once every id is known.
    private readonly List<PendingDependency> _named = new();
    private readonly List<GraphError> _errors = new();

    private readonly record struct PendingDependency(int Target, string SourceId, EdgeKind Kind, float Weight, int Line);

    public GraphBuilder(string name = "graph") => Name = name;

    /// <summary>The graph's name, shown in summaries.</summary>
    public string Name { get; set; }

    /// <summary>Defaults that tasks inherit.</summary>
    public GraphDefaults Defaults { get; } = new();

    /// <summary>Resource pools by name, with their capacity (tasks at once).</summary>
    public Dictionary<string, int> Resources { get; } = new(StringComparer.Ordinal);

    /// <summary>The JSON document that the tasks' arguments point into, kept alive with the graph.</summary>
    internal JsonDocument? Document { get; set; }

    /// <summary>Number of tasks added so far.</summary>
    public int Count => Ids.Count;

    /// <summary>Adds a task with an id, a handler name and optional arguments (any object System.Text.Json can serialize).</summary>
    public TaskRef Task(string id, string handler, object? args = null)
    {
        ArgumentNullException.ThrowIfNull(id);
        var r = Add(id, handler, line: 0);
        if (args is not null)
            r.WithArgs(args as JsonElement? ?? JsonSerializer.SerializeToElement(args));
        return r;
    }

    /// <summary>Adds an anonymous task (its id is <c>#index</c>); the cheapest way to build very large graphs.</summary>
    public TaskRef Task(string handler) => Add(null, handler, line: 0);

    /// <summary>Reserves capacity for <paramref name="tasks"/> tasks and <paramref name="edges"/> edges.</summary>
    public GraphBuilder EnsureCapacity(int tasks, int edges)
    {
        Ids.EnsureCapacity(tasks);
        HandlerOf.EnsureCapacity(tasks);
        Priorities.EnsureCapacity(tasks);
        Specs.EnsureCapacity(tasks);
        EdgeSource.EnsureCapacity(edges);
        EdgeTarget.EnsureCapacity(edges);
        EdgeKinds.EnsureCapacity(edges);
        return this;
    }

    internal TaskRef Add(string? id, string handler, int line)
    {
        ArgumentNullException.ThrowIfNull(handler);
        int index = Ids.Count;
        if (id is not null)
        {
            if (id.Length == 0)
                _errors.Add(new GraphError(GraphErrorCodes.MissingId, "task has an empty id", null, line));
            else if (GraphLimits.IdProblem(id) is string problem)
            {
                _errors.Add(new GraphError(GraphErrorCodes.BadId, $"id '{GraphLimits.Printable(id)}' {problem}", null, line));
                id = null;   // never handed on raw to terminals, DOT files or the store
            }
            else if (!_byId.TryAdd(id, index))
                _errors.Add(new GraphError(GraphErrorCodes.DuplicateId, $"id '{id}' is used by more than one task", id, line));
        }
        Ids.Add(id);
        // Large graphs name the same handler string again and again: skip the hash lookup then.
        ushort h;
        if (ReferenceEquals(handler, _lastHandler)) h = _lastHandlerIndex;
        else if (!_handlerIndex.TryGetValue(handler, out h))
        {
            if (HandlerNames.Count == GraphLimits.MaxHandlers - 1)
            {
                // Out of handler indices: the last one stands for every further name, and the
                // graph is refused (once; the loader goes on so other problems are reported too).
                if (!_tooManyHandlers)
                    _errors.Add(new GraphError(GraphErrorCodes.Limit, $"the graph uses more than {GraphLimits.MaxHandlers - 1:N0} distinct handler names", DisplayIdOrNull(id), line));
                _tooManyHandlers = true;
                h = (ushort)(HandlerNames.Count - 1);
            }
            else
            {
                h = (ushort)HandlerNames.Count;
                HandlerNames.Add(handler);
                _handlerIndex.Add(handler, h);
            }
        }
        _lastHandler = handler;
        _lastHandlerIndex = h;
        HandlerOf.Add(h);
        Priorities.Add((byte)TaskPriority.Normal);
        Specs.Add(null);
        if (line > 0 || Lines is not null)
        {
            if (Lines is null)
            {
                Lines = new List<int>(Ids.Capacity);
                for (int i = 0; i < index; i++) Lines.Add(0);
            }
            Lines.Add(line);
        }
        return new TaskRef(this, index);
    }

    /// <summary>1-based line of each task in its graph file; null for graphs built in code.</summary>
    internal List<int>? Lines;

    internal int? LineAt(int index) => Lines is not null && Lines[index] > 0 ? Lines[index] : null;

    /// <summary>Index of an already added task by id, without allocating a string (loader fast path).</summary>
    internal bool TryGetIndex(ReadOnlySpan<char> id, out int index)
        => _byId.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(id, out index);

    internal TaskSpec SpecOf(int index) => Specs[index] ??= new TaskSpec();

    /// <summary>Problems found while building (ids, handlers, the loader's schema errors).</summary>
    internal IReadOnlyList<GraphError> Errors => _errors;

    /// <summary>Edges from a task to itself (flagged as they are added).</summary>
    internal int SelfLoops { get; private set; }

    /// <summary>True while every edge points from an earlier task to a later one: then there is no cycle.</summary>
    internal bool AllEdgesForward { get; private set; } = true;

    internal void AddEdge(int source, int target, EdgeKind kind, float weight)
    {
        if (source >= target)
        {
            AllEdgesForward = false;
            if (source == target) SelfLoops++;
        }
        EdgeSource.Add(source);
        EdgeTarget.Add(target);
        EdgeKinds.Add((byte)kind);
        if (weight != 0f || EdgeWeights is not null)
        {
            if (EdgeWeights is null)
            {
                EdgeWeights = new List<float>(EdgeSource.Capacity);
                for (int i = 0; i < EdgeSource.Count - 1; i++) EdgeWeights.Add(0f);
            }
            EdgeWeights.Add(weight);
        }
    }

    internal void AddNamedDependency(int target, string sourceId, EdgeKind kind, float weight, int line)
        => _named.Add(new PendingDependency(target, sourceId, kind, weight, line));

    internal void AddError(GraphError error) => _errors.Add(error);

    internal string DisplayId(int index) => Ids[index] ?? "#" + index;

    private static string? DisplayIdOrNull(string? id) => id is null ? null : GraphLimits.Printable(id);

    /// <summary>
    /// Resolves named dependencies, checks structure (ids, self-loops, unknown dependencies,
    /// cycles, resource pools, value ranges) and compiles the graph.
    /// </summary>
    /// <exception cref="GraphValidationException">With every structural problem found.</exception>
    public TaskGraph Build()
    {
        var graph = TryBuild(out var errors);
        if (errors.Count > 0)
            throw new GraphValidationException(errors);
        return graph!;
    }

    /// <summary>Like <see cref="Build"/>, but returns the problems instead of throwing; the graph is null when there are any.</summary>
    public TaskGraph? TryBuild(out List<GraphError> errors)
    {
        // Named dependencies are resolved once, into edges (or into lasting errors); the checks
        // below are recomputed on every call, so calling this twice reports the same problems.
        foreach (var d in _named)
        {
            if (_byId.TryGetValue(d.SourceId, out int source))
                AddEdge(source, d.Target, d.Kind, d.Weight);
            else
                _errors.Add(new GraphError(GraphErrorCodes.UnknownDependency, $"depends on '{GraphLimits.Printable(d.SourceId)}', which is not a task of this graph", DisplayId(d.Target), d.Line));
        }
        _named.Clear();

        errors = new List<GraphError>();
        var graph = TaskGraph.Compile(this);
        GraphValidator.CheckStructure(this, graph, errors);
        return errors.Count == 0 ? graph : null;
    }

}

/// <summary>A handle on a task being built; chain its methods to set options and dependencies.</summary>
public readonly struct TaskRef
{
    private readonly GraphBuilder _builder;

    internal TaskRef(GraphBuilder builder, int index)
    {
        _builder = builder;
        Index = index;
    }

    /// <summary>Position of the task in the graph (dense, from 0).</summary>
    public int Index { get; }

    /// <summary>The task's id (<c>#index</c> for anonymous tasks).</summary>
    public string Id => _builder.DisplayId(Index);

    /// <summary>This task runs after <paramref name="source"/> (a hard edge unless <paramref name="kind"/> says otherwise).</summary>
    public TaskRef DependsOn(TaskRef source, EdgeKind kind = EdgeKind.Hard, double weight = 0)
    {
        if (!ReferenceEquals(source._builder, _builder))
            throw new ArgumentException("the source task belongs to another graph", nameof(source));
        _builder.AddEdge(source.Index, Index, kind, (float)weight);
        return this;
    }

    /// <summary>This task runs after every one of <paramref name="sources"/> (hard edges).</summary>
    public TaskRef DependsOn(params ReadOnlySpan<TaskRef> sources)
    {
        foreach (var s in sources) DependsOn(s);
        return this;
    }

    /// <summary>This task runs after the task named <paramref name="sourceId"/>, resolved when the graph is built.</summary>
    public TaskRef DependsOn(string sourceId, EdgeKind kind = EdgeKind.Hard, double weight = 0)
    {
        _builder.AddNamedDependency(Index, sourceId, kind, (float)weight, _builder.LineAt(Index) ?? 0);
        return this;
    }

    public TaskRef WithPriority(TaskPriority priority)
    {
        _builder.Priorities[Index] = (byte)priority;
        return this;
    }

    public TaskRef WithArgs(JsonElement args)
    {
        _builder.SpecOf(Index).Args = args;
        return this;
    }

    public TaskRef WithTimeout(TimeSpan timeout)
    {
        _builder.SpecOf(Index).TimeoutSeconds = timeout.TotalSeconds;
        return this;
    }

    public TaskRef WithRetries(int retries)
    {
        _builder.SpecOf(Index).Retries = retries;
        return this;
    }

    /// <summary>Forces a layer (<c>local</c>, <c>cluster</c>, <c>quantum</c>); <c>auto</c> leaves it to the router.</summary>
    public TaskRef OnLayer(string layer)
    {
        _builder.SpecOf(Index).Layer = layer;
        return this;
    }

    public TaskRef WithMinConfidence(double confidence)
    {
        _builder.SpecOf(Index).MinConfidence = confidence;
        return this;
    }

    /// <summary>Names the resource pools the task holds while it runs.</summary>
    public TaskRef Uses(params string[] pools)
    {
        _builder.SpecOf(Index).Uses = pools;
        return this;
    }

    public TaskRef WithTags(params string[] tags)
    {
        _builder.SpecOf(Index).Tags = tags;
        return this;
    }
}
