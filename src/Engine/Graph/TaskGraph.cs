using System.Runtime.InteropServices;
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
}

/// <summary>
/// An immutable, compiled task graph. Tasks are dense indices; per-task state lives in small
/// parallel arrays and edges in compressed sparse rows (successors and predecessors), so a
/// million-task graph is a handful of arrays rather than a million objects.
/// </summary>
public sealed class TaskGraph
{
    internal readonly string?[] Ids;
    internal readonly ushort[] HandlerOf;
    internal readonly string[] HandlerNames;
    internal readonly byte[] Priorities;
    internal readonly TaskSpec?[] Specs;
    internal readonly int[]? Lines;      // 1-based line of each task in its file, or null
    internal readonly NodeFlags[] Flags;
    internal readonly int[] SuccStart;   // successors of i: Succ[SuccStart[i] .. SuccStart[i+1])
    internal readonly int[] Succ;
    internal readonly byte[] SuccKind;
    internal readonly float[]? SuccWeight;
    internal readonly int[] PredStart;   // predecessors of i: Pred[PredStart[i] .. PredStart[i+1])
    internal readonly int[] Pred;
    internal readonly byte[] PredKind;
    internal readonly int[] PoolCapacity;
    internal readonly string[] PoolNames;
    internal readonly int[]?[]? PoolsOf; // pool indices a task uses, sorted; null when the graph has no pools
    private Dictionary<string, int>? _byId;

    private TaskGraph(GraphBuilder b)
    {
        Name = b.Name;
        Defaults = b.Defaults;
        Document = b.Document;
        int n = b.Ids.Count;
        int m = b.EdgeSource.Count;
        Ids = b.Ids.ToArray();
        HandlerOf = b.HandlerOf.ToArray();
        HandlerNames = b.HandlerNames.ToArray();
        Priorities = b.Priorities.ToArray();
        Specs = b.Specs.ToArray();
        Lines = b.Lines?.ToArray();
        Flags = new NodeFlags[n];

        var src = CollectionsMarshal.AsSpan(b.EdgeSource);
        var dst = CollectionsMarshal.AsSpan(b.EdgeTarget);
        var kind = CollectionsMarshal.AsSpan(b.EdgeKinds);
        var weight = b.EdgeWeights is null ? default : CollectionsMarshal.AsSpan(b.EdgeWeights);

        // Counting sort of the edge list into both CSR directions: O(n + m), no comparisons.
        SuccStart = new int[n + 1];
        PredStart = new int[n + 1];
        for (int e = 0; e < m; e++)
        {
            SuccStart[src[e] + 1]++;
            PredStart[dst[e] + 1]++;
        }
        for (int i = 0; i < n; i++)
        {
            SuccStart[i + 1] += SuccStart[i];
            PredStart[i + 1] += PredStart[i];
        }
        Succ = new int[m];
        SuccKind = new byte[m];
        SuccWeight = weight.IsEmpty ? null : new float[m];
        Pred = new int[m];
        PredKind = new byte[m];
        // Place each edge at its row's cursor (the row start, advanced as it fills); afterwards
        // each cursor sits at the next row's start, so shifting by one row restores the starts.
        for (int e = 0; e < m; e++)
        {
            int s = src[e], t = dst[e];
            int si = SuccStart[s]++;
            Succ[si] = t;
            SuccKind[si] = kind[e];
            if (SuccWeight is not null) SuccWeight[si] = weight[e];
            int pi = PredStart[t]++;
            Pred[pi] = s;
            PredKind[pi] = kind[e];
            if (kind[e] == (byte)EdgeKind.Data)
            {
                Flags[s] |= NodeFlags.HasDataSuccessor;
                Flags[t] |= NodeFlags.HasDataPredecessor;
                HasDataEdges = true;
            }
        }
        for (int i = n; i > 0; i--)
        {
            SuccStart[i] = SuccStart[i - 1];
            PredStart[i] = PredStart[i - 1];
        }
        SuccStart[0] = 0;
        PredStart[0] = 0;

        PoolNames = b.Resources.Keys.ToArray();
        PoolCapacity = b.Resources.Values.ToArray();
        PoolsOf = PoolNames.Length == 0 ? null : new int[]?[n];
        for (int i = 0; PoolsOf is not null && i < n; i++)
        {
            if (Specs[i]?.Uses is { Length: > 0 } uses)
            {
                var idx = uses.Select(u => Array.IndexOf(PoolNames, u)).Where(x => x >= 0).Distinct().Order().ToArray();
                if (idx.Length > 0)
                {
                    PoolsOf[i] = idx;
                    Flags[i] |= NodeFlags.UsesResources;
                }
            }
        }
    }

    internal static TaskGraph Compile(GraphBuilder builder) => new(builder);

    /// <summary>The graph's name.</summary>
    public string Name { get; }

    /// <summary>Graph-wide defaults.</summary>
    public GraphDefaults Defaults { get; }

    /// <summary>Number of tasks.</summary>
    public int Count => Ids.Length;

    /// <summary>Number of edges.</summary>
    public int EdgeCount => Succ.Length;

    /// <summary>True when any edge is a data edge (outputs must be kept).</summary>
    public bool HasDataEdges { get; }

    internal JsonDocument? Document { get; }

    /// <summary>The id of task <paramref name="index"/> (<c>#index</c> for anonymous tasks).</summary>
    public string IdOf(int index) => Ids[index] ?? "#" + index;

    /// <summary>The handler name of task <paramref name="index"/>.</summary>
    public string HandlerOfTask(int index) => HandlerNames[HandlerOf[index]];

    /// <summary>The priority of task <paramref name="index"/>.</summary>
    public TaskPriority PriorityOf(int index) => (TaskPriority)Priorities[index];

    /// <summary>The optional settings of task <paramref name="index"/>, or null when it sets none.</summary>
    public TaskSpec? SpecOf(int index) => Specs[index];

    internal int? LineOf(int index) => Lines is not null && Lines[index] > 0 ? Lines[index] : null;

    /// <summary>Finds a task by id.</summary>
    public bool TryGetIndex(string id, out int index)
    {
        _byId ??= BuildIndex();
        return _byId.TryGetValue(id, out index);
    }

    private Dictionary<string, int> BuildIndex()
    {
        var d = new Dictionary<string, int>(Ids.Length, StringComparer.Ordinal);
        for (int i = 0; i < Ids.Length; i++)
            if (Ids[i] is string id) d.TryAdd(id, i);
        return d;
    }

    /// <summary>Successor indices of a task.</summary>
    public ReadOnlySpan<int> SuccessorsOf(int index) => Succ.AsSpan(SuccStart[index], SuccStart[index + 1] - SuccStart[index]);

    /// <summary>Predecessor indices of a task.</summary>
    public ReadOnlySpan<int> PredecessorsOf(int index) => Pred.AsSpan(PredStart[index], PredStart[index + 1] - PredStart[index]);

    /// <summary>Kahn's order; returns null when the graph has a cycle.</summary>
    /// <param name="ignoreSelfLoops">Treat self-loops as absent (they are reported on their own).</param>
    internal int[]? TopologicalOrder(bool ignoreSelfLoops = false)
    {
        int n = Count;
        var indeg = new int[n];
        for (int v = 0; v < n; v++)
            for (int e = SuccStart[v]; e < SuccStart[v + 1]; e++)
                if (!ignoreSelfLoops || Succ[e] != v) indeg[Succ[e]]++;
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
