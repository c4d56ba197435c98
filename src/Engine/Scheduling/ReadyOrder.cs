namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// How a layer whose slots are scarce picks the next ready task within a priority class
/// (<c>[execution] ready_order</c>). Explicit priorities always come first.
/// </summary>
public enum ReadyOrder
{
    /// <summary>
    /// <see cref="CriticalPath"/> on the layers that have more tasks routed to them than slots,
    /// when the run has estimates (a task's <c>estimateMs</c>, its handler's estimator, or a learned
    /// duration model); otherwise <see cref="Fifo"/>. Decided when the run is made: a graph without
    /// estimates, or whose tasks all run inline, keeps the arrival-order path untouched.
    /// </summary>
    Auto,

    /// <summary>Arrival order: the first task to become ready gets the first free slot.</summary>
    Fifo,

    /// <summary>
    /// The task with the longest estimated path from its start to the end of the graph (its
    /// upward rank, as HEFT orders tasks) gets the first free slot; ties in arrival order.
    /// </summary>
    CriticalPath,
}

/// <summary>The names of <see cref="ReadyOrder"/> in configs, summaries and the store.</summary>
public static class ReadyOrders
{
    public const string Auto = "auto", Fifo = "fifo", CriticalPath = "critical_path";

    public static string NameOf(ReadyOrder order) => order switch
    {
        ReadyOrder.Fifo => Fifo,
        ReadyOrder.CriticalPath => CriticalPath,
        _ => Auto,
    };

    public static bool TryParse(string? name, out ReadyOrder order)
    {
        (bool ok, order) = name switch
        {
            Auto => (true, ReadyOrder.Auto),
            Fifo => (true, ReadyOrder.Fifo),
            CriticalPath => (true, ReadyOrder.CriticalPath),
            _ => (false, ReadyOrder.Auto),
        };
        return ok;
    }
}

/// <summary>
/// How a run orders its ready tasks, decided when the run is made: for each layer (by dispatcher
/// index) whether it orders by upward rank, and the ranks (µs, by task) when any does.
/// </summary>
internal sealed record ReadyPlan(double[]? Ranks, bool[] RankedLayers)
{
    /// <summary>What the run's summary and store say ran: <c>critical_path</c> when any layer ordered by rank, else <c>fifo</c>.</summary>
    public string Name => Ranks is not null ? ReadyOrders.CriticalPath : ReadyOrders.Fifo;

    /// <summary>The ranks a layer orders by, or null for arrival order.</summary>
    public double[]? RanksFor(int layer) => Ranks is not null && layer < RankedLayers.Length && RankedLayers[layer] ? Ranks : null;

    public static ReadyPlan Fifo { get; } = new(null, []);
}
