namespace TaskMesh.Engine.Layers.Local;

/// <summary>Runs handlers on this process's thread pool, <see cref="ExecutionLayer.Capacity"/> at a time.</summary>
public sealed class LocalLayer : ExecutionLayer
{
    public const string LayerName = "local";

    private readonly string _name;

    /// <summary>Creates the layer with <paramref name="maxParallelTasks"/> slots; <paramref name="name"/> for a second local layer of other settings.</summary>
    public LocalLayer(int maxParallelTasks, string name = LayerName) : base(maxParallelTasks) => _name = name;

    public override string Name => _name;

    public override string Kind => LayerKinds.Local;

    public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        var h = invocation.Handler;
        if (h.Inline is { } inline)
            return new ValueTask<object?>(inline(invocation.Context));
        return h.Async!(invocation.Context, invocation.Args, ct);
    }
}
