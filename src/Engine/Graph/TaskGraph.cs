using System.Runtime.CompilerServices;
using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>Per-task facts that the scheduler reads on its hot path, packed in one byte.</summary>
[Flags]
internal enum NodeFlags : byte
{
    None = 0,
    /// <summary>At least one successor takes this task's output over a data edge.</summary>
    HasDataSuccessor = 1,
    /// <summary>At least one predecessor hands its output over a data edge.</summary>
    HasDataPredecessor = 2,
    /// <summary>The task holds resource pools while it runs.</summary>
    UsesResources = 4,
    /// <summary>The task may be answered from the result cache (its <c>cache</c>, or its graph's default).</summary>
    Cached = 8,
}

/// <summary>
/// An immutable, compiled task graph. Tasks are dense indices; per-task state lives in small
/// parallel arrays — each one only when some task needs it (ids, handlers beyond the first,
/// priorities, options, lines) — and edges in compressed sparse rows: successors at once,
/// predecessors when first asked for. A million-task graph is a handful of arrays rather than a
/// million objects.
/// </summary>
public sealed class TaskGraph
{
    private readonly int _count;
    private readonly string?[]? _ids;
    internal readonly string[] HandlerNames;
    private readonly ushort[]? _handlerOf;   // null: every task has handler 0
    private readonly byte[]? _priorities;    // null: every task is normal
    private readonly TaskSpec?[]? _specs;    // null: no task sets an option
    private readonly int[]? _lines;          // 1-based line of each task in its file, or null
    private readonly NodeFlags[]? _flags;    // null: no data edges and no pools
    internal readonly int[] SuccStart;       // successors of i: Succ[SuccStart[i] .. SuccStart[i+1])
    internal readonly int[] Succ;
    internal readonly byte[]? SuccKind;      // null: every edge is hard
    internal readonly float[]? SuccWeight;   // null: no edge has a weight
    internal readonly int[] InDegree;
    internal readonly int[] PoolCapacity;
    internal readonly string[] PoolNames;
    internal readonly int[]?[]? PoolsOf;     // pool indices a task uses, sorted; null when the graph has no pools
    private Predecessors? _pred;
    private Dictionary<string, int>? _byId;

    // Compiled fully optimised at once: called once per graph, its loops run over every edge.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private TaskGraph(GraphBuilder b)
    {
        Name = b.Name;
        Defaults = b.Defaults.Clone();
        Document = b.Document;
        var c = b.ShareColumns();
        int n = _count = c.Count;
        int m = EdgeCount = c.EdgeCount;
        _ids = c.Ids;
        HandlerNames = c.HandlerNames;
        _handlerOf = c.HandlerOf;
        _priorities = c.Priorities;
        _specs = c.Specs;
        _lines = c.Lines;

        var src = c.EdgeSource.AsSpan(0, m);
        var dst = c.EdgeTarget.AsSpan(0, m);
        // Counting sort of the edge list into successor rows, in-degrees in the same pass: O(n + m).
        SuccStart = new int[n + 1];
        InDegree = new int[n];
        bool grouped = true;
        int previous = 0;
        for (int e = 0; e < m; e++)
        {
            int s = src[e];
            SuccStart[s + 1]++;
            InDegree[dst[e]]++;
            grouped &= s >= previous;
            previous = s;
        }
        for (int i = 0; i < n; i++) SuccStart[i + 1] += SuccStart[i];
        if (grouped)
        {
            // Edges added source by source (any graph built in task order): the builder's target
            // list already is the successor array.
            Succ = c.EdgeTarget;
            SuccKind = c.EdgeKinds;
            SuccWeight = c.EdgeWeights;
        }
        else
        {
            Succ = new int[m];
            SuccKind = c.EdgeKinds is null ? null : new byte[m];
            SuccWeight = c.EdgeWeights is null ? null : new float[m];
            var cursor = SuccStart.AsSpan(0, n).ToArray();
            for (int e = 0; e < m; e++)
            {
                int at = cursor[src[e]]++;
                Succ[at] = dst[e];
                if (SuccKind is not null) SuccKind[at] = c.EdgeKinds![e];
                if (SuccWeight is not null) SuccWeight[at] = c.EdgeWeights![e];
            }
        }

        if (SuccKind is not null)
        {
            for (int v = 0; v < n; v++)
            {
                for (int e = SuccStart[v]; e < SuccStart[v + 1]; e++)
                {
                    if (SuccKind[e] != (byte)EdgeKind.Data) continue;
                    _flags ??= new NodeFlags[n];
                    _flags[v] |= NodeFlags.HasDataSuccessor;
                    _flags[Succ[e]] |= NodeFlags.HasDataPredecessor;
                    HasDataEdges = true;
                }
            }
        }

        if (_specs is not null || Defaults.Cache == true)
        {
            for (int i = 0; i < n; i++)
            {
                if ((_specs is null ? null : _specs[i]?.Cache) ?? Defaults.Cache ?? false)
                {
                    _flags ??= new NodeFlags[n];
                    _flags[i] |= NodeFlags.Cached;
                    HasCachedTasks = true;
                }
                if (_specs?[i] is { } spec)
                {
                    if (spec.EstimateMs is not null) HasEstimates = true;
                    if (spec.MinConfidence is not null || spec.Requires is not null) HasRoutingNeeds = true;
                }
            }
        }

        PoolNames = b.Resources.Keys.ToArray();
        PoolCapacity = b.Resources.Values.ToArray();
        PoolsOf = PoolNames.Length == 0 || _specs is null ? null : new int[]?[n];
        for (int i = 0; PoolsOf is not null && i < n; i++)
        {
            if (_specs![i]?.Uses is { Length: > 0 } uses)
            {
                var idx = uses.Select(u => Array.IndexOf(PoolNames, u)).Where(x => x >= 0).Distinct().Order().ToArray();
                if (idx.Length > 0)
                {
                    PoolsOf[i] = idx;
                    _flags ??= new NodeFlags[n];
                    _flags[i] |= NodeFlags.UsesResources;
                }
            }
        }
    }

    internal static TaskGraph Compile(GraphBuilder builder) => new(builder);

    /// <summary>
    /// This graph of one task with <paramref name="spec"/> — options that set arguments and nothing
    /// else — as its task's: what an open run's task becomes when it differs from its handler's
    /// earlier task only in its arguments, without building a graph again.
    /// </summary>
    internal TaskGraph WithArgumentsOnly(TaskSpec spec)
    {
        if (_count != 1 || !spec.SetsArgumentsOnly) throw new InvalidOperationException("only a graph of one task takes options of arguments only");
        return new TaskGraph(this, spec);
    }

    private TaskGraph(TaskGraph g, TaskSpec spec)
    {
        // Arguments change none of the columns derived from options (cache, estimates, routing needs, pools).
        Name = g.Name;
        Defaults = g.Defaults;
        Document = g.Document;
        _count = 1;
        EdgeCount = 0;
        _ids = g._ids;
        HandlerNames = g.HandlerNames;
        _handlerOf = g._handlerOf;
        _priorities = g._priorities;
        _specs = [spec];
        _lines = g._lines;
        _flags = g._flags;
        SuccStart = g.SuccStart;
        Succ = g.Succ;
        SuccKind = g.SuccKind;
        SuccWeight = g.SuccWeight;
        InDegree = g.InDegree;
        PoolCapacity = g.PoolCapacity;
        PoolNames = g.PoolNames;
        PoolsOf = g.PoolsOf;
        HasDataEdges = g.HasDataEdges;
        HasCachedTasks = g.HasCachedTasks;
        HasEstimates = g.HasEstimates;
        HasRoutingNeeds = g.HasRoutingNeeds;
    }

    /// <summary>The graph's name.</summary>
    public string Name { get; }

    /// <summary>Graph-wide defaults (a copy taken when the graph was built).</summary>
    public GraphDefaults Defaults { get; }

    /// <summary>Number of tasks.</summary>
    public int Count => _count;

    /// <summary>Number of edges.</summary>
    public int EdgeCount { get; }

    /// <summary>True when any edge is a data edge (outputs must be kept).</summary>
    public bool HasDataEdges { get; }

    /// <summary>True when some task asks for the result cache.</summary>
    internal bool HasCachedTasks { get; }

    /// <summary>Some task states its <c>estimateMs</c>.</summary>
    internal bool HasEstimates { get; }

    /// <summary>Some task states a <c>minConfidence</c> or <c>requires</c> (a router that sees none skips reading each task's options).</summary>
    public bool HasRoutingNeeds { get; }

    /// <summary>True when some task has a priority other than normal.</summary>
    internal bool HasPriorities => _priorities is not null;

    internal JsonDocument? Document { get; }

    /// <summary>The handler index (into the graph's handler names) of task <paramref name="index"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ushort HandlerIndex(int index) => _handlerOf is null ? (ushort)0 : _handlerOf[index];

    /// <summary>The priority of task <paramref name="index"/> as a byte (<see cref="TaskPriority"/>).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte PriorityByte(int index) => _priorities is null ? (byte)TaskPriority.Normal : _priorities[index];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal NodeFlags FlagsOf(int index) => _flags is null ? NodeFlags.None : _flags[index];

    /// <summary>The options of task <paramref name="index"/>, or null (the common case).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal TaskSpec? Spec(int index) => _specs is null ? null : _specs[index];

    /// <summary>True when no task sets an option.</summary>
    internal bool HasNoSpecs => _specs is null;

    /// <summary>The id of task <paramref name="index"/> (<c>#index</c> for anonymous tasks).</summary>
    public string IdOf(int index) => (_ids is null ? null : _ids[index]) ?? "#" + index;

    /// <summary>The handler name of task <paramref name="index"/>.</summary>
    public string HandlerOfTask(int index) => HandlerNames[HandlerIndex(index)];

    /// <summary>The priority of task <paramref name="index"/>.</summary>
    public TaskPriority PriorityOf(int index) => (TaskPriority)PriorityByte(index);

    /// <summary>The optional settings of task <paramref name="index"/>, or null when it sets none.</summary>
    public TaskSpec? SpecOf(int index) => Spec(index);

    internal int? LineOf(int index) => _lines is not null && _lines[index] > 0 ? _lines[index] : null;

    /// <summary>Finds a task by id.</summary>
    public bool TryGetIndex(string id, out int index)
    {
        var byId = Volatile.Read(ref _byId);
        if (byId is null)
        {
            byId = BuildIndex();
            Volatile.Write(ref _byId, byId);
        }
        return byId.TryGetValue(id, out index);
    }

    private Dictionary<string, int> BuildIndex()
    {
        var d = new Dictionary<string, int>(_ids is null ? 0 : _count, StringComparer.Ordinal);
        for (int i = 0; _ids is not null && i < _count; i++)
            if (_ids[i] is string id) d.TryAdd(id, i);
        return d;
    }

    /// <summary>Successor indices of a task.</summary>
    /// <summary>The layer task <paramref name="index"/> is forced to run on (its own <c>layer</c>, else the graph's default), or null when the router chooses.</summary>
    public string? ForcedLayerOf(int index)
        => (Spec(index)?.Layer ?? Defaults.Layer) is string l && l != GraphNames.AutoLayer ? l : null;

    /// <summary>
    /// The tasks that read <paramref name="index"/>'s output over data edges, and those that read
    /// theirs, and so on (not <paramref name="index"/> itself), in breadth-first order.
    /// </summary>
    public IReadOnlyList<int> DataDescendantsOf(int index)
    {
        var found = new List<int>();
        var seen = new HashSet<int> { index };
        var queue = new Queue<int>();
        queue.Enqueue(index);
        while (queue.Count > 0)
        {
            int v = queue.Dequeue();
            for (int e = SuccStart[v]; e < SuccStart[v + 1]; e++)
            {
                if (SuccKind is null || SuccKind[e] != (byte)EdgeKind.Data) continue;
                int s = Succ[e];
                if (seen.Add(s))
                {
                    found.Add(s);
                    queue.Enqueue(s);
                }
            }
        }
        return found;
    }

    public ReadOnlySpan<int> SuccessorsOf(int index) => Succ.AsSpan(SuccStart[index], SuccStart[index + 1] - SuccStart[index]);

    /// <summary>Predecessor indices of a task.</summary>
    public ReadOnlySpan<int> PredecessorsOf(int index)
    {
        var p = Pred;
        return p.Tasks.AsSpan(p.Start[index], p.Start[index + 1] - p.Start[index]);
    }

    /// <summary>The kind of the edge from task <paramref name="index"/> to its <paramref name="k"/>th successor (in <see cref="SuccessorsOf"/>'s order).</summary>
    public EdgeKind SuccessorKind(int index, int k) => KindOfSucc(SuccStart[index] + k);

    /// <summary>The edge kind of successor slot <paramref name="e"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal EdgeKind KindOfSucc(int e) => SuccKind is null ? EdgeKind.Hard : (EdgeKind)SuccKind[e];

    /// <summary>Predecessor rows, built on first use (the scheduler never needs them; analysis and data inputs do).</summary>
    internal Predecessors Pred
    {
        get
        {
            var p = Volatile.Read(ref _pred);
            if (p is not null) return p;
            p = Predecessors.Build(this);
            return Interlocked.CompareExchange(ref _pred, p, null) ?? p;
        }
    }

    /// <summary>Predecessors in compressed rows: of task i, Tasks[Start[i] .. Start[i+1]), with their edge kinds.</summary>
    internal sealed class Predecessors(int[] start, int[] tasks, byte[]? kinds)
    {
        public readonly int[] Start = start;
        public readonly int[] Tasks = tasks;
        public readonly byte[]? Kinds = kinds;

        public EdgeKind KindAt(int e) => Kinds is null ? EdgeKind.Hard : (EdgeKind)Kinds[e];

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public static Predecessors Build(TaskGraph g)
        {
            int n = g.Count;
            var start = new int[n + 1];
            for (int i = 0; i < n; i++) start[i + 1] = start[i] + g.InDegree[i];
            var tasks = new int[start[n]];
            var kinds = g.SuccKind is null ? null : new byte[start[n]];
            var cursor = start.AsSpan(0, n).ToArray();
            for (int v = 0; v < n; v++)
            {
                for (int e = g.SuccStart[v]; e < g.SuccStart[v + 1]; e++)
                {
                    int at = cursor[g.Succ[e]]++;
                    tasks[at] = v;
                    if (kinds is not null) kinds[at] = g.SuccKind![e];
                }
            }
            return new Predecessors(start, tasks, kinds);
        }
    }

    /// <summary>Kahn's order; returns null when the graph has a cycle.</summary>
    /// <param name="ignoreSelfLoops">Treat self-loops as absent (they are reported on their own).</param>
    internal int[]? TopologicalOrder(bool ignoreSelfLoops = false)
    {
        int n = Count;
        var indeg = (int[])InDegree.Clone();
        if (ignoreSelfLoops)
            for (int v = 0; v < n; v++)
                for (int e = SuccStart[v]; e < SuccStart[v + 1]; e++)
                    if (Succ[e] == v) indeg[v]--;
        var order = new int[n];
        int head = 0, tail = 0;
        for (int i = 0; i < n; i++) if (indeg[i] == 0) order[tail++] = i;
        while (head < tail)
        {
            int v = order[head++];
            for (int e = SuccStart[v]; e < SuccStart[v + 1]; e++)
            {
                int w = Succ[e];
                if ((!ignoreSelfLoops || w != v) && --indeg[w] == 0) order[tail++] = w;
            }
        }
        return tail == n ? order : null;
    }

    /// <summary>Returns one cycle as a closed list of tasks (first == last), or null when the graph is acyclic.</summary>
    internal int[]? FindCycle()
    {
        // Kahn's pass over flat arrays is cheap and settles the common, acyclic case; only a
        // cyclic graph pays for the depth-first search that extracts one cycle to print.
        if (TopologicalOrder(ignoreSelfLoops: true) is not null) return null;
        int n = Count;
        // Iterative DFS with colours: 0 unseen, 1 on the stack, 2 done. Linear time, no recursion.
        var colour = new byte[n];
        var parentEdge = new int[n];
        var stackNode = new Stack<(int node, int nextEdge)>();
        for (int root = 0; root < n; root++)
        {
            if (colour[root] != 0) continue;
            stackNode.Push((root, SuccStart[root]));
            colour[root] = 1;
            while (stackNode.Count > 0)
            {
                var (v, e) = stackNode.Pop();
                if (e == SuccStart[v + 1])
                {
                    colour[v] = 2;
                    continue;
                }
                stackNode.Push((v, e + 1));
                int w = Succ[e];
                if (w == v) continue; // self-loops are reported on their own
                if (colour[w] == 0)
                {
                    colour[w] = 1;
                    parentEdge[w] = v;
                    stackNode.Push((w, SuccStart[w]));
                }
                else if (colour[w] == 1)
                {
                    // Back edge v -> w: the cycle is w -> ... -> v -> w along the DFS stack.
                    var path = new List<int> { v };
                    for (int x = v; x != w; ) { x = parentEdge[x]; path.Add(x); }
                    path.Reverse();
                    path.Add(w);
                    return path.ToArray();
                }
            }
        }
        return null;
    }
}
