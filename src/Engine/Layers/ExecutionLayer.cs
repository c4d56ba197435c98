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

    /// <summary>Price of one slot-second, for the cost model (0 for local work).</summary>
    public virtual double PricePerSecond => 0;

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

    internal void AddQueued(int delta) => Interlocked.Add(ref _queued, delta);
    internal void AddRunning(int delta) => Interlocked.Add(ref _running, delta);
}
