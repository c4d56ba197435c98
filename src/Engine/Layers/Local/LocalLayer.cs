namespace TaskMesh.Engine.Layers.Local;

/// <summary>Runs handlers on this process's thread pool, <see cref="Capacity"/> at a time.</summary>
public sealed class LocalLayer : ExecutionLayer
{
    public const string LayerName = "local";

    /// <summary>Creates the layer with <paramref name="maxParallelTasks"/> slots.</summary>
    public LocalLayer(int maxParallelTasks) : base(maxParallelTasks) { }

    public override string Name => LayerName;

    public override ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        var h = invocation.Handler;
        if (h.Inline is { } inline)
            return new ValueTask<object?>(inline(invocation.Context));
        return h.Async!(invocation.Context, invocation.Args, ct);
    }
}
