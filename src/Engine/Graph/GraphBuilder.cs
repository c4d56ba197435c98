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
    // Per-task columns, materialised only when some task differs from the default.
    private int _count;
    private int _capacity;
    private Column<string?> _ids = new(null);
    private Column<ushort> _handlerOf = new(0);
    private Column<byte> _priorities = new((byte)TaskPriority.Normal);
    private Column<TaskSpec?> _specs = new(null);
    private Column<int> _lines = new(0);
    internal readonly List<string> HandlerNames = new();
    private readonly Dictionary<string, ushort> _handlerIndex = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int> _byId = new(StringComparer.Ordinal);
    private string? _lastHandler;
    private bool _tooManyHandlers;
    private ushort _lastHandlerIndex;

    // Edges: source and target always; kinds and weights only once a non-hard edge or a weight appears.
    private IntList _edgeSource = new();
    private IntList _edgeTarget = new();
    private Column<byte> _edgeKinds = new((byte)EdgeKind.Hard);
    private Column<float> _edgeWeights = new(0f);

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
    public int Count => _count;

    /// <summary>Number of edges added so far (dependencies named by id count once resolved).</summary>
    public int EdgeCount => _edgeSource.Count;

    /// <summary>Adds a task with an id, a handler name and optional arguments (any object System.Text.Json can serialize).</summary>
    public TaskRef Task(string id, string handler, object? args = null)
    {
        ArgumentNullException.ThrowIfNull(id);
        var r = Add(id, handler, line: 0);
        if (args is not null)
            r.WithArgs(args as JsonElement? ?? JsonSerializer.SerializeToElement(args));
        return r;
    }

    /// <summary>Adds an anonymous task (its id is <c>#index</c>).</summary>
    public TaskRef Task(string handler) => Add(null, handler, line: 0);

    /// <summary>
    /// Adds <paramref name="count"/> anonymous tasks with one handler and returns the index of the
    /// first; they are numbered consecutively. Keeps nothing per task: the cheapest way to build
    /// very large graphs (with <see cref="AddEdge(int, int)"/>).
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="count"/> is negative or the graph would pass int.MaxValue tasks.</exception>
    public int AddTasks(int count, string handler)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(count, Array.MaxLength - _count);
        int first = _count;
        if (count == 0) return first;
        ushort h = HandlerIndex(handler, null, 0);
        Reserve(first + count);
        _count += count;
        _handlerOf.Fill(first, count, h, _capacity);
        if (_lines.Items is not null) _lines.Fill(first, count, 0, _capacity);
        return first;
    }

    /// <summary>Adds a hard edge: task <paramref name="to"/> runs after task <paramref name="from"/> succeeded.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An index that names no task.</exception>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void AddEdge(int from, int to)
    {
        if ((uint)from >= (uint)_count) ThrowNoTask(nameof(from), from);
        if ((uint)to >= (uint)_count) ThrowNoTask(nameof(to), to);
        AddEdge(from, to, EdgeKind.Hard, 0f);
    }

    /// <summary>Adds an edge of <paramref name="kind"/> with a transfer cost of <paramref name="weight"/> ms.</summary>
    /// <exception cref="ArgumentOutOfRangeException">An index that names no task.</exception>
    public void AddEdge(int from, int to, EdgeKind kind, double weight = 0)
    {
        if ((uint)from >= (uint)_count) ThrowNoTask(nameof(from), from);
        if ((uint)to >= (uint)_count) ThrowNoTask(nameof(to), to);
        AddEdge(from, to, kind, (float)weight);
    }

    [System.Diagnostics.CodeAnalysis.DoesNotReturn]
    private void ThrowNoTask(string name, int index)
        => throw new ArgumentOutOfRangeException(name, index, $"task {index} does not exist (the graph has {_count})");

    /// <summary>Reserves capacity for <paramref name="tasks"/> tasks and <paramref name="edges"/> edges.</summary>
    public GraphBuilder EnsureCapacity(int tasks, int edges)
    {
        Reserve(tasks);
        _edgeSource.EnsureCapacity(edges);
        _edgeTarget.EnsureCapacity(edges);
        return this;
    }

    private void Reserve(int tasks)
    {
        if (tasks <= _capacity) return;
        _capacity = Math.Max(tasks, _capacity * 2);
        _ids.EnsureCapacity(_capacity);
        _handlerOf.EnsureCapacity(_capacity);
        _priorities.EnsureCapacity(_capacity);
        _specs.EnsureCapacity(_capacity);
        _lines.EnsureCapacity(_capacity);
    }

    internal TaskRef Add(string? id, string handler, int line)
    {
        ArgumentNullException.ThrowIfNull(handler);
        int index = _count;
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
        ushort h = HandlerIndex(handler, id, line);
        Reserve(index + 1);
        _count++;
        _ids.Set(index, id, _capacity);
        _handlerOf.Set(index, h, _capacity);
        _lines.Set(index, line, _capacity);
        return new TaskRef(this, index);
    }

    private ushort HandlerIndex(string handler, string? id, int line)
    {
        // Large graphs name the same handler string again and again: skip the hash lookup then.
        if (ReferenceEquals(handler, _lastHandler)) return _lastHandlerIndex;
        if (!_handlerIndex.TryGetValue(handler, out ushort h))
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
        return h;
    }

    internal int? LineAt(int index) => _lines.Get(index) is > 0 and int line ? line : null;

    /// <summary>Index of an already added task by id, without allocating a string (loader fast path).</summary>
    internal bool TryGetIndex(ReadOnlySpan<char> id, out int index)
        => _byId.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(id, out index);

    /// <summary>Gives the task a copy of <paramref name="spec"/> as its options.</summary>
    internal void SetSpec(int index, TaskSpec spec) => _specs.Set(index, spec.Clone(), _capacity);

    /// <summary>The task's options, created (or, once shared with a built graph, copied) for writing.</summary>
    internal TaskSpec SpecOf(int index)
    {
        var spec = _specs.Get(index);
        if (spec is not null && index < _specsSharedBelow && (_specsCopied ??= new()).Add(index))
        {
            // A built graph holds this spec: change a copy.
            spec = spec.Clone();
            _specs.Set(index, spec, _capacity);
        }
        if (spec is null)
        {
            spec = new TaskSpec();
            _specs.Set(index, spec, _capacity);
        }
        return spec;
    }

    // Specs of tasks below this index were handed to a built graph; those already copied since are in _specsCopied.
    private int _specsSharedBelow;
    private HashSet<int>? _specsCopied;

    internal TaskSpec? SpecAt(int index) => _specs.Get(index);

    internal void SetPriority(int index, TaskPriority priority) => _priorities.Set(index, (byte)priority, _capacity);

    /// <summary>Problems found while building (ids, handlers, the loader's schema errors).</summary>
    internal IReadOnlyList<GraphError> Errors => _errors;

    /// <summary>Edges from a task to itself (flagged as they are added).</summary>
    internal int SelfLoops { get; private set; }

    /// <summary>True while every edge points from an earlier task to a later one: then there is no cycle.</summary>
    internal bool AllEdgesForward { get; private set; } = true;

    internal ReadOnlySpan<int> EdgeSources => _edgeSource.AsSpan();
    internal ReadOnlySpan<int> EdgeTargets => _edgeTarget.AsSpan();
    internal byte[]? EdgeKindItems => _edgeKinds.Items;
    internal float[]? EdgeWeightItems => _edgeWeights.Items;

    // Optimised from its first call: a graph of a million edges is built in a few ms, long before
    // tiered compilation would replace unoptimised code (measured: the 1M-edge shapes' build phase).
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal void AddEdge(int source, int target, EdgeKind kind, float weight)
    {
        if (source >= target)
        {
            AllEdgesForward = false;
            if (source == target) SelfLoops++;
        }
        int e = _edgeSource.Count;
        _edgeSource.Add(source);
        _edgeTarget.Add(target);
        _edgeKinds.Set(e, (byte)kind, Math.Max(16, e * 2));
        _edgeWeights.Set(e, weight, Math.Max(16, e * 2));
    }

    /// <summary>What a compiled graph takes over: the columns as they are (no copies).</summary>
    internal GraphColumns ShareColumns()
    {
        var specs = _specs.Share();
        _specsSharedBelow = _count;
        _specsCopied = null;
        return new GraphColumns(_count, _ids.Share(), HandlerNames.ToArray(), _handlerOf.Share(), _priorities.Share(), specs, _lines.Share(),
            _edgeSource.Count, _edgeSource.Share(), _edgeTarget.Share(), _edgeKinds.Share(), _edgeWeights.Share());
    }

    internal void AddNamedDependency(int target, string sourceId, EdgeKind kind, float weight, int line)
        => _named.Add(new PendingDependency(target, sourceId, kind, weight, line));

    internal void AddError(GraphError error) => _errors.Add(error);

    internal string DisplayId(int index) => _ids.Get(index) ?? "#" + index;

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
        _builder.SetPriority(Index, priority);
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

    /// <summary>States how long the task is expected to run (<c>estimateMs</c>), ahead of its handler's estimate.</summary>
    public TaskRef WithEstimate(double ms)
    {
        _builder.SpecOf(Index).EstimateMs = ms;
        return this;
    }

    /// <summary>Names the resource pools the task holds while it runs.</summary>
    public TaskRef Uses(params string[] pools)
    {
        _builder.SpecOf(Index).Uses = pools;
        return this;
    }

    /// <summary>Reuse a stored successful execution of the same handler, version, arguments and inputs (see <see cref="Handlers.HandlerDescriptor.Cacheable"/>).</summary>
    public TaskRef WithCache(bool cache = true)
    {
        _builder.SpecOf(Index).Cache = cache;
        return this;
    }

    /// <summary>Capability tags the task needs: it runs only on a layer that has them all.</summary>
    public TaskRef Requires(params string[] capabilities)
    {
        _builder.SpecOf(Index).Requires = capabilities;
        return this;
    }

    public TaskRef WithTags(params string[] tags)
    {
        _builder.SpecOf(Index).Tags = tags;
        return this;
    }
}

/// <summary>The columns a builder hands to the graph it compiles.</summary>
internal readonly record struct GraphColumns(
    int Count, string?[]? Ids, string[] HandlerNames, ushort[]? HandlerOf, byte[]? Priorities, TaskSpec?[]? Specs, int[]? Lines,
    int EdgeCount, int[] EdgeSource, int[] EdgeTarget, byte[]? EdgeKinds, float[]? EdgeWeights);
