using System.Text;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// Topological levels, width per level and the critical path of a graph. Durations come from
/// a per-task estimate (the handlers' own, where they have one) plus edge weights as transfer
/// costs. Linear in tasks plus edges.
/// </summary>
public sealed class GraphAnalysis
{
    private readonly TaskGraph _graph;
    private readonly int[] _order;
    private readonly double[] _finish, _estimate;
    private double[]? _slack, _upward;

    private GraphAnalysis(TaskGraph graph, int[] order, double[] finish, double[] estimate, int[] level, int[] widths, int[] criticalPath, double criticalPathMicros)
    {
        _graph = graph;
        _order = order;
        _finish = finish;
        _estimate = estimate;
        Levels = level;
        Widths = widths;
        CriticalPath = criticalPath;
        CriticalPathMicros = criticalPathMicros;
    }

    /// <summary>
    /// Each task's upward rank in microseconds, as HEFT defines it: its estimate plus the longest
    /// estimated path from its end to the end of the graph (edge weights included). Ordering ready
    /// tasks by it starts first those with the most work still behind them. Computed on first use
    /// (one backward pass).
    /// </summary>
    public IReadOnlyList<double> UpwardRankMicros
    {
        get
        {
            if (Volatile.Read(ref _upward) is { } done) return done;
            var g = _graph;
            var tail = new double[g.Count];
            for (int k = _order.Length - 1; k >= 0; k--)
            {
                int v = _order[k];
                double below = 0;
                for (int e = g.SuccStart[v]; e < g.SuccStart[v + 1]; e++)
                    below = Math.Max(below, (g.SuccWeight is null ? 0 : g.SuccWeight[e] * 1000.0) + tail[g.Succ[e]]);
                tail[v] = _estimate[v] + below;
            }
            Interlocked.CompareExchange(ref _upward, tail, null);
            return _upward;
        }
    }

    /// <summary>
    /// Each task's slack in microseconds: how much later than its earliest start it could start
    /// without lengthening the critical path (0 on the critical path). Computed on first use.
    /// </summary>
    public IReadOnlyList<double> SlackMicros
    {
        get
        {
            if (Volatile.Read(ref _slack) is { } done) return done;
            var tail = UpwardRankMicros;
            var slack = new double[_graph.Count];
            for (int i = 0; i < slack.Length; i++)
                slack[i] = Math.Max(0, CriticalPathMicros - (_finish[i] - _estimate[i]) - tail[i]);
            Interlocked.CompareExchange(ref _slack, slack, null);
            return _slack;
        }
    }

    /// <summary>Level of each task: 0 for roots, else 1 + the deepest predecessor's.</summary>
    public IReadOnlyList<int> Levels { get; }

    /// <summary>Number of tasks at each level.</summary>
    public IReadOnlyList<int> Widths { get; }

    /// <summary>The tasks of the longest path, from a root to a sink.</summary>
    public IReadOnlyList<int> CriticalPath { get; }

    /// <summary>Length of the critical path in microseconds: task estimates plus edge weights (see <see cref="Analyze"/>).</summary>
    public double CriticalPathMicros { get; }

    public double CriticalPathMs => CriticalPathMicros / 1000.0;

    /// <summary>Analyses an acyclic graph.</summary>
    /// <param name="graph">The graph.</param>
    /// <param name="estimateMicros">Predicted duration of a task in microseconds (unknown tasks: 0).</param>
    /// <remarks>An edge's <c>weight</c> is a transfer cost in milliseconds added along that edge.</remarks>
    public static GraphAnalysis Analyze(TaskGraph graph, Func<int, double> estimateMicros)
    {
        int n = graph.Count;
        var order = graph.TopologicalOrder() ?? throw new InvalidOperationException("the graph has a cycle");
        var level = new int[n];
        var finish = new double[n];   // longest path ending at i, including i
        var estimate = new double[n];
        var via = new int[n];
        Array.Fill(via, -1);
        int maxLevel = 0;
        var pred = graph.Pred;
        foreach (int v in order)
        {
            double start = 0;
            int lv = 0;
            for (int e = pred.Start[v]; e < pred.Start[v + 1]; e++)
            {
                int p = pred.Tasks[e];
                lv = Math.Max(lv, level[p] + 1);
                double w = WeightOf(graph, p, v);
                if (finish[p] + w > start || via[v] < 0 && finish[p] + w >= start)
                {
                    start = finish[p] + w;
                    via[v] = p;
                }
            }
            level[v] = lv;
            maxLevel = Math.Max(maxLevel, lv);
            estimate[v] = Math.Max(0, estimateMicros(v));
            finish[v] = start + estimate[v];
        }
        var widths = new int[n == 0 ? 0 : maxLevel + 1];
        foreach (var l in level) widths[l]++;

        int end = -1;
        double best = -1;
        for (int i = 0; i < n; i++)
            if (finish[i] > best) { best = finish[i]; end = i; }
        var path = new List<int>();
        for (int x = end; x >= 0; x = via[x]) path.Add(x);
        path.Reverse();
        return new GraphAnalysis(graph, order, finish, estimate, level, widths, path.ToArray(), Math.Max(0, best));
    }

    // Weights live on successor rows; a predecessor has few successors, so a short scan finds it.
    private static double WeightOf(TaskGraph g, int from, int to)
    {
        if (g.SuccWeight is null) return 0;
        for (int e = g.SuccStart[from]; e < g.SuccStart[from + 1]; e++)
            if (g.Succ[e] == to) return g.SuccWeight[e] * 1000.0;
        return 0;
    }

    /// <summary>Graphviz DOT of the graph with the critical path in red and bold.</summary>
    public string ToDot(TaskGraph graph) => ToDot(graph, null);

    /// <summary>
    /// Graphviz DOT with the critical path in red and bold, and, with <paramref name="statusOf"/>
    /// (a task's status in a run: <c>succeeded</c>, <c>failed</c>, <c>timed_out</c>, <c>skipped</c>,
    /// <c>cancelled</c>, or null when unknown), each node filled by its outcome.
    /// </summary>
    public string ToDot(TaskGraph graph, Func<int, string?>? statusOf)
    {
        var onPath = new HashSet<int>(CriticalPath);
        var pathEdges = new HashSet<(int, int)>();
        for (int i = 1; i < CriticalPath.Count; i++) pathEdges.Add((CriticalPath[i - 1], CriticalPath[i]));
        var sb = new StringBuilder();
        sb.Append("digraph \"").Append(Escape(graph.Name)).AppendLine("\" {");
        sb.AppendLine("  rankdir=LR;");
        sb.AppendLine("  node [shape=box, style=rounded, fontname=\"Helvetica\"];");
        for (int i = 0; i < graph.Count; i++)
        {
            sb.Append("  \"").Append(Escape(graph.IdOf(i))).Append("\" [label=\"")
              .Append(Escape(graph.IdOf(i))).Append("\\n").Append(Escape(graph.HandlerOfTask(i))).Append('"');
            if (onPath.Contains(i)) sb.Append(", color=red, penwidth=2");
            if (statusOf?.Invoke(i) is string status)
                sb.Append(", style=\"rounded,filled\", fillcolor=\"").Append(status switch
                {
                    "succeeded" => "#c8e6c9",
                    "failed" or "timed_out" => "#ffcdd2",
                    "skipped" => "#eeeeee",
                    "cancelled" => "#fff9c4",
                    _ => "#ffffff",
                }).Append("\", tooltip=\"").Append(status).Append('"');
            sb.AppendLine("];");
        }
        for (int v = 0; v < graph.Count; v++)
        {
            for (int e = graph.SuccStart[v]; e < graph.SuccStart[v + 1]; e++)
            {
                int t = graph.Succ[e];
                var kind = graph.KindOfSucc(e);
                sb.Append("  \"").Append(Escape(graph.IdOf(v))).Append("\" -> \"").Append(Escape(graph.IdOf(t))).Append('"');
                var attrs = new List<string>();
                if (kind == EdgeKind.Soft) attrs.Add("style=dashed");
                if (kind == EdgeKind.Data) attrs.Add("arrowhead=diamond");
                if (graph.SuccWeight is { } w && w[e] != 0) attrs.Add($"label=\"{w[e]:0.###}\"");
                if (pathEdges.Contains((v, t))) attrs.Add("color=red, penwidth=2");
                if (attrs.Count > 0) sb.Append(" [").Append(string.Join(", ", attrs)).Append(']');
                sb.AppendLine(";");
            }
        }
        sb.AppendLine("}");
        return sb.ToString();
    }

    // A DOT string: backslashes and quotes escaped, and control characters written as escapes
    // (a name's line break or ESC must neither end the statement nor reach a terminal).
    private static string Escape(string s) => IO.TerminalText.Safe(s.Replace("\\", "\\\\").Replace("\"", "\\\""));
}
