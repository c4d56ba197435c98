using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Routing;

/// <summary>
/// Where a run of a graph would send each task, and why — what <see cref="TaskMeshEngine.Plan"/>
/// returns, made by the same routing a started run makes (so <c>taskmesh predict</c> shows the plan
/// a run would use). Nothing ran to make it.
/// </summary>
public sealed class RunPlan
{
    private readonly string[] _layers;
    private readonly Dictionary<int, RouteDecision>? _escalated;
    private readonly Dictionary<int, ManualEscalation>? _manual;
    private readonly Lazy<double> _criticalPathMs;

    internal RunPlan(PreparedGraph graph, RunOptions options, Layers.ExecutionLayer[] layers, byte[] route, RouteDetails? details, List<(int Task, RouteDecision Decision)>? escalations,
        Dictionary<int, string>? refused, List<(int Task, ManualEscalation Move)>? manual, ReadyPlan ready, Func<double> criticalPathMs)
    {
        Graph = graph;
        Options = options;
        LayerArray = layers;
        _layers = Array.ConvertAll(layers, l => l.Name);
        Routes = route;
        Details = details;
        RoutedEscalations = escalations;
        Refused = refused;
        Manual = manual;
        Ready = ready;
        _criticalPathMs = new Lazy<double>(criticalPathMs);
        _escalated = escalations?.ToDictionary(e => e.Task, e => e.Decision);
        _manual = manual?.ToDictionary(m => m.Task, m => m.Move);
    }

    // What the executor takes (TaskMeshEngine.Start(RunPlan)).
    internal Layers.ExecutionLayer[] LayerArray { get; }
    internal byte[] Routes { get; }
    internal RouteDetails? Details { get; }
    internal List<(int Task, RouteDecision Decision)>? RoutedEscalations { get; }
    internal Dictionary<int, string>? Refused { get; }
    internal List<(int Task, ManualEscalation Move)>? Manual { get; }
    internal ReadyPlan Ready { get; }

    /// <summary>The options the plan was made with (and a run of it takes).</summary>
    public RunOptions Options { get; }

    /// <summary>The order ready tasks will take free slots in (<c>fifo</c>, <c>critical_path</c>).</summary>
    public string ReadyOrder => Ready.Name;

    /// <summary>The graph planned.</summary>
    public PreparedGraph Graph { get; }

    /// <summary>The critical path by the run's estimates (ms).</summary>
    public double CriticalPathMs => _criticalPathMs.Value;

    /// <summary>The layer task <paramref name="task"/> would run on.</summary>
    public string LayerOf(int task) => _layers[Routes[task] == RouteTable.Inline ? RouteTable.Local : Routes[task]];

    /// <summary>Whether the task would run inline on a scheduler worker (a tiny inline handler on <c>local</c>).</summary>
    public bool IsInline(int task) => Routes[task] == RouteTable.Inline;

    /// <summary>The router's decision for the task, when the router made one for it (not for forced layers or a handler's preferred layer).</summary>
    public RouteDecision? DecisionOf(int task) => Details is not null && Details.TryGet(task, out var d) ? d : null;

    /// <summary>Why the task would fail without running (over a budget, say), or null.</summary>
    public string? RefusalOf(int task) => Refused?.GetValueOrDefault(task);

    /// <summary>Why the task is where it is, in words: the router's reason, a rule that moved it, an operator's move, a forced layer or a handler's preference.</summary>
    public string ReasonOf(int task)
    {
        if (RefusalOf(task) is { } refused) return $"refused: {refused}";
        if (_manual?.GetValueOrDefault(task) is { } m) return $"moved by an operator from {m.From}: {m.Reason}";
        if (_escalated?.GetValueOrDefault(task) is { } e) return e.Reason ?? $"{e.Trigger} rule: {e.EscalatedFrom} → {e.Layer}";
        if (DecisionOf(task) is { } d) return d.Reason ?? "the router's choice";
        if (Graph.Graph.ForcedLayerOf(task) is { } forced) return $"forced by the graph ({forced})";
        if (Graph.HandlerOf(task).PreferredLayer is { } p && p == LayerOf(task)) return $"handler {Graph.HandlerOf(task).Name} prefers {p}";
        return "the router's choice";
    }
}
