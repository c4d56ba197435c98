using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;

namespace TaskMesh.Engine.Routing;

/// <summary>
/// A router's choice for one task.
/// </summary>
/// <param name="Layer">The layer's name; it must be registered with the engine.</param>
/// <param name="Confidence">The predicted probability (0–1) that the task succeeds there, when the router predicts one.</param>
/// <param name="PredictedCost">The predicted cost there (price × duration), when predicted.</param>
/// <param name="Reason">Why, for the audit trail (e.g. <c>forced</c>, <c>handler prefers quantum</c>, <c>table: spin/≤1ms</c>).</param>
/// <param name="EscalatedFrom">When a rule moved the task up before it ran (a <c>complexity</c> rule): the layer it would have gone to; the run records the move as an escalation.</param>
/// <param name="Trigger">With <paramref name="EscalatedFrom"/>: the rule's trigger.</param>
/// <param name="Refused">True when no layer may take the task (over a budget, say): it fails with <paramref name="Reason"/> when its turn comes, without running.</param>
/// <param name="Rule">With <paramref name="EscalatedFrom"/>: the declared rule that moved the task.</param>
public readonly record struct RouteDecision(string Layer, double? Confidence = null, double? PredictedCost = null, string? Reason = null,
    string? EscalatedFrom = null, string? Trigger = null, bool Refused = false, Escalation.EscalationRule? Rule = null);

/// <summary>
/// Chooses the layer of each task that neither forces a layer nor has a handler with a preferred
/// one. Called once per run, before the first task starts: the decisions are compiled into a
/// byte per task, so the hot path does a table lookup.
/// </summary>
public interface ILayerRouter
{
    /// <summary>
    /// When every task goes to one layer whatever it is, that decision: the engine then makes no
    /// per-task call. Null (the default) when decisions depend on the task.
    /// </summary>
    RouteDecision? FixedDecision => null;

    /// <summary>
    /// True when the router also chooses among the layers a handler prefers (a learned router
    /// choosing between <c>quantum</c> and <c>quantum-double</c>); false (the default) sends such
    /// tasks to their handler's preferred layer without asking.
    /// </summary>
    bool RoutesPreferredHandlers => false;

    /// <summary>
    /// True when, for a graph whose tasks set no options, a task's decision depends on its handler
    /// alone: the engine then asks once per handler (with <see cref="Route"/> on the handler's first
    /// task) and fills the rest — no per-task call on a million tiny tasks.
    /// </summary>
    bool DecidesByHandlerWithoutOptions => false;

    /// <summary>The decision for one task.</summary>
    RouteDecision Route(in RoutingContext context, int task);

    /// <summary>
    /// Decisions for many tasks at once: <paramref name="decisions"/>[i] for <paramref name="tasks"/>[i].
    /// Override to batch model calls or share work between tasks; the default calls
    /// <see cref="Route"/> for each.
    /// </summary>
    void RouteBatch(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions)
    {
        for (int i = 0; i < tasks.Length; i++) decisions[i] = Route(context, tasks[i]);
    }
}

/// <summary>
/// A router whose decision for a task depends on the task's kind alone — what it is, its handler,
/// what it requires — so that routing a task is naming its kind. The engine then takes each kind's
/// decision once and gives every task of the kind the same layer: per task, a kind and a table
/// lookup, no <see cref="RouteDecision"/> copied. Routers whose decisions also vary task by task
/// (an exploration draw, a budget counted in order) say so with <see cref="RoutesByKind"/>.
/// </summary>
public interface IKindRouter : ILayerRouter
{
    /// <summary>Whether <see cref="KindsOf"/> may be used now; false sends the engine to <see cref="ILayerRouter.RouteBatch"/>.</summary>
    bool RoutesByKind { get; }

    /// <summary>
    /// <paramref name="kinds"/>[i]: the kind of <paramref name="tasks"/>[i], a small number valid
    /// for this graph; decisions for kinds not seen before are made here. Tasks of one kind have
    /// one handler and one set of requirements.
    /// </summary>
    void KindsOf(in RoutingContext context, ReadOnlySpan<int> tasks, Span<int> kinds);

    /// <summary>The decision for every task of <paramref name="kind"/> (a kind <see cref="KindsOf"/> named for this context's graph).</summary>
    RouteDecision DecisionOfKind(in RoutingContext context, int kind);
}

/// <summary>What a router may look at: the graph, the tasks' handlers and the layers as they stand now.</summary>
public readonly struct RoutingContext
{
    private readonly PreparedGraph _prepared;

    internal RoutingContext(PreparedGraph prepared, IReadOnlyList<ExecutionLayer> layers, double? budget = null)
    {
        _prepared = prepared;
        Layers = layers;
        Budget = budget;
        Ledger = new RoutingLedger();
    }

    /// <summary>A context for routing <paramref name="prepared"/> among <paramref name="layers"/> (what the engine passes; for trying a router out), within <paramref name="budget"/> when one is given.</summary>
    public static RoutingContext For(PreparedGraph prepared, IReadOnlyList<ExecutionLayer> layers, double? budget) => new(prepared, layers, budget);

    /// <summary>A context for routing <paramref name="prepared"/> among <paramref name="layers"/>, with no budget.</summary>
    public static RoutingContext For(PreparedGraph prepared, IReadOnlyList<ExecutionLayer> layers) => new(prepared, layers);

    /// <summary>
    /// The run's budget (<see cref="RunOptions.Budget"/>), or null: a router that prices its choices
    /// places tasks within it, counting in <see cref="Ledger"/> — the run's, so one router may route
    /// several runs at once, each within its own budget.
    /// </summary>
    public double? Budget { get; }

    /// <summary>What this routing pass has placed so far (one per run's routing; a pass routes in order, on one thread).</summary>
    public RoutingLedger Ledger { get; }

    /// <summary>The graph being routed.</summary>
    public TaskGraph Graph => _prepared.Graph;

    /// <summary>The prepared graph being routed (its handlers and parsed arguments).</summary>
    public PreparedGraph Prepared => _prepared;

    /// <summary>The registered layers, with their queue depth, slots, price and capabilities now.</summary>
    public IReadOnlyList<ExecutionLayer> Layers { get; }

    /// <summary>The handler of task <paramref name="task"/>.</summary>
    public HandlerDescriptor HandlerOf(int task) => _prepared.HandlerOf(task);

    /// <summary>The arguments of task <paramref name="task"/> as its handler parsed them during validation (null when it has none).</summary>
    public object? ParsedArgsOf(int task) => _prepared.ParsedArgsOf(task);
}

/// <summary>What one routing pass (one run's) has placed against its budget.</summary>
public sealed class RoutingLedger
{
    /// <summary>Predicted cost of the tasks placed so far in this pass.</summary>
    public double PredictedSpend { get; set; }
}

/// <summary>Sends every task that does not force a layer to one layer (<c>local</c> by default).</summary>
public sealed class FixedLayerRouter : ILayerRouter
{
    private readonly RouteDecision _decision;

    /// <summary>A router that sends everything to <paramref name="layer"/>.</summary>
    public FixedLayerRouter(string layer)
    {
        ArgumentException.ThrowIfNullOrEmpty(layer);
        _decision = new RouteDecision(layer, Reason: "default layer");
    }

    /// <summary>The default: everything to <c>local</c>.</summary>
    public static FixedLayerRouter Local { get; } = new(Layers.Local.LocalLayer.LayerName);

    /// <inheritdoc />
    public RouteDecision? FixedDecision => _decision;

    /// <inheritdoc />
    public RouteDecision Route(in RoutingContext context, int task) => _decision;
}

/// <summary>
/// The router's decisions a run keeps for its observers (the audit's <c>layer_selection</c>): task by
/// task, or — for a router that decides by kind — a kind per task and each kind's decision once.
/// </summary>
internal sealed class RouteDetails(int tasks)
{
    private Dictionary<int, RouteDecision>? _byTask;
    private int[]? _kindOf;                     // kind + 1 per task (0: none)
    private List<RouteDecision>? _kinds;

    public void Set(int task, RouteDecision decision) => (_byTask ??= new())[task] = decision;

    public void SetKind(int task, int kind, RouteDecision decision)
    {
        _kinds ??= new();
        while (_kinds.Count <= kind) _kinds.Add(default);
        _kinds[kind] = decision;
        (_kindOf ??= new int[tasks])[task] = kind + 1;
    }

    public bool TryGet(int task, out RouteDecision decision)
    {
        if (_byTask is not null && _byTask.TryGetValue(task, out decision)) return true;
        if (_kindOf is not null && _kindOf[task] > 0)
        {
            decision = _kinds![_kindOf[task] - 1];
            return true;
        }
        decision = default;
        return false;
    }
}
