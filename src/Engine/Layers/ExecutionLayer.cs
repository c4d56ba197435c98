using System.Text.Json;
using TaskMesh.Engine.Handlers;

namespace TaskMesh.Engine.Layers;

/// <summary>Whether a layer takes new work.</summary>
public enum LayerStatus
{
    Active,
    /// <summary>Finishes what it has, takes nothing new.</summary>
    Draining,
    Down,
}

/// <summary>What a layer can run, for the router.</summary>
/// <param name="MaxQubits">Largest circuit the layer can hold (0: no circuits).</param>
/// <param name="Handlers">Handlers the layer can run; null means every registered handler.</param>
public sealed record LayerCapabilities(int MaxQubits = 0, IReadOnlyList<string>? Handlers = null)
{
    public static readonly LayerCapabilities Any = new();
}

/// <summary>One call of a handler, as a layer receives it.</summary>
public readonly struct LayerInvocation
{
    internal LayerInvocation(HandlerDescriptor handler, TaskContext context)
    {
        Handler = handler;
        Context = context;
    }

    public HandlerDescriptor Handler { get; }
    public TaskContext Context { get; }
    public JsonElement Args => Context.Args;
}

/// <summary>
/// A place where tasks run: <c>local</c> (this process), <c>quantum</c> (the simulator),
/// <c>cluster</c> (remote workers). The scheduler feeds each layer through a bounded Dataflow
/// block of <see cref="Capacity"/> slots and keeps the backlog, by priority, in front of it.
/// </summary>
public abstract class ExecutionLayer
{
    private int _queued;
    private int _running;
    private int _capacity;

    /// <summary>Creates a layer with <paramref name="capacity"/> slots.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is below 1.</exception>
    protected ExecutionLayer(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _capacity = capacity;
    }

    /// <summary>The layer's name as graphs and configs spell it.</summary>
    public abstract string Name { get; }

    /// <summary>Tasks the layer runs at once. May change while runs go on (see <see cref="SetCapacity"/>).</summary>
    public int Capacity => Volatile.Read(ref _capacity);

    /// <summary>
    /// Changes the number of slots (a cluster layer grows and shrinks with its workers). Running
    /// runs follow at once: more slots admit queued tasks; fewer let running tasks finish and admit
    /// no new ones until the count is below the new capacity.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="capacity"/> is negative.</exception>
    public void SetCapacity(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(capacity);
        int old = Interlocked.Exchange(ref _capacity, capacity);
        if (old != capacity) CapacityChanged?.Invoke(capacity - old);
    }

    /// <summary>Raised with the change in slots; the dispatchers of running runs listen.</summary>
    internal event Action<int>? CapacityChanged;

    public virtual LayerStatus Status => LayerStatus.Active;

    private double _price;
    private int _rank;
    private IReadOnlyList<string> _tags = [];

    /// <summary>The layer's kind (<c>local</c>, <c>quantum</c>, …): several layers may share one, with different settings.</summary>
    public virtual string Kind => GetType().Name.Replace("Layer", "", StringComparison.Ordinal).ToLowerInvariant();

    /// <summary>Price of one slot-second, for the cost model (0 unless configured: see <see cref="Configure"/>).</summary>
    public virtual double PricePerSecond => Volatile.Read(ref _price);

    /// <summary>Capability order among the layers: higher is more capable; escalation moves up.</summary>
    public int Rank => Volatile.Read(ref _rank);

    /// <summary>Capability tags (e.g. <c>gpu</c>): a task that <c>requires</c> tags runs only where all of them are.</summary>
    public IReadOnlyList<string> Tags => Volatile.Read(ref _tags);

    /// <summary>True when the layer runs handler <paramref name="handler"/> (by its handler list; every handler when it has none).</summary>
    public bool Runs(string handler) => RunsHandlers is not { } only || only.Contains(handler);

    /// <summary>
    /// True when this layer can take a task of <paramref name="handler"/> that requires
    /// <paramref name="requires"/>: it runs the handler (a local-only one only on <c>local</c>, one
    /// with <see cref="HandlerDescriptor.OnlyOn"/> only on layers of that kind) and has every tag required.
    /// </summary>
    public bool CanRun(HandlerDescriptor handler, IReadOnlyList<string>? requires = null)
        => (!handler.LocalOnly || Name == Local.LocalLayer.LayerName) && (handler.OnlyOn is null || Kind == handler.OnlyOn) && Runs(handler.Name) && Covers(requires);

    /// <summary>The least capable of <paramref name="layers"/>: the lowest rank, then the lowest price (null when there is none).</summary>
    public static ExecutionLayer? LeastCapable(IEnumerable<ExecutionLayer> layers)
    {
        ExecutionLayer? best = null;
        foreach (var l in layers)
            if (best is null || LessCapable(l, best)) best = l;
        return best;
    }

    /// <summary>True when <paramref name="a"/> is less capable than <paramref name="b"/>: a lower rank, or the same rank at a lower price.</summary>
    public static bool LessCapable(ExecutionLayer a, ExecutionLayer b)
        => (a.Rank, a.PricePerSecond).CompareTo((b.Rank, b.PricePerSecond)) < 0;

    /// <summary>True when the layer has every tag of <paramref name="requires"/>.</summary>
    public bool Covers(IReadOnlyList<string>? requires)
    {
        if (requires is null) return true;
        var tags = Tags;
        foreach (var r in requires)
            if (!tags.Contains(r)) return false;
        return true;
    }

    /// <summary>Sets the layer's place in the provider table: price, rank and capability tags.</summary>
    /// <exception cref="ArgumentOutOfRangeException">A negative or non-finite price.</exception>
    public void Configure(double pricePerSecond, int rank, IReadOnlyList<string>? tags = null)
    {
        if (!double.IsFinite(pricePerSecond) || pricePerSecond < 0) throw new ArgumentOutOfRangeException(nameof(pricePerSecond), "a price must be a finite number, 0 or more");
        Volatile.Write(ref _price, pricePerSecond);
        Volatile.Write(ref _rank, rank);
        Volatile.Write(ref _tags, tags is null ? [] : tags.Distinct(StringComparer.Ordinal).ToArray());
    }

    /// <summary>What the layer can run now (may be computed, e.g. from free memory: not for hot paths).</summary>
    public virtual LayerCapabilities Capabilities => LayerCapabilities.Any;

    /// <summary>The handlers this layer runs; null (the default) means every registered handler. Cheap: read per run by routing and validation.</summary>
    public virtual IReadOnlyList<string>? RunsHandlers => null;

    /// <summary>Tasks routed to this layer and waiting for a slot.</summary>
    public int QueueDepth => Volatile.Read(ref _queued);

    /// <summary>Tasks running in this layer now.</summary>
    public int Running => Volatile.Read(ref _running);

    /// <summary>Runs one attempt of a task. Failures surface as exceptions; the scheduler turns them into outcomes.</summary>
    public abstract ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct);

    /// <summary>
    /// True when <see cref="ExecuteAsync"/> never blocks its caller (it returns at once, the work
    /// going on elsewhere) and ends promptly — with an <see cref="OperationCanceledException"/> —
    /// when its token is cancelled. The scheduler then calls it on its own thread and awaits it
    /// directly; otherwise (the default: a handler may block, or ignore its token) each attempt is
    /// started on the thread pool and abandoned after a grace period when it ignores a timeout.
    /// </summary>
    public virtual bool Cooperative => false;

    /// <summary>
    /// True when the layer takes its attempts in batches through <see cref="StartAttempts"/> and
    /// ends each with <see cref="LayerAttempt.Succeed"/> or <see cref="LayerAttempt.Fail"/>, instead
    /// of one <see cref="ExecuteAsync"/> call each: for a layer that sends attempts elsewhere (remote
    /// workers), where a task, a timer and two cancellation sources per attempt would cost more than
    /// the attempt. The engine then watches timeouts and cancellation for it.
    /// </summary>
    public virtual bool TakesBatches => false;

    /// <summary>
    /// Starts <paramref name="attempts"/> (for a layer that <see cref="TakesBatches"/>). Returns at
    /// once: the work goes on elsewhere, and each attempt is ended later, exactly once, from any
    /// thread — or at once, from inside this call. An exception thrown here fails every attempt of
    /// the batch not yet ended. The span is the engine's: keep the attempts, not the span.
    /// </summary>
    public virtual void StartAttempts(ReadOnlySpan<LayerAttempt> attempts)
        => throw new NotSupportedException($"layer '{Name}' does not take attempts in batches");

    /// <summary>
    /// The engine ended <paramref name="attempt"/> before the layer did (its timeout, or the run's or
    /// the task's cancellation): stop its work if that can be done. Whatever the layer reports for it
    /// afterwards is ignored. Called once, on the engine's thread; must return at once.
    /// </summary>
    public virtual void StopAttempt(LayerAttempt attempt) { }

    internal void AddQueued(int delta) => Interlocked.Add(ref _queued, delta);
    internal void AddRunning(int delta) => Interlocked.Add(ref _running, delta);
}
