namespace TaskMesh.Engine.Scheduling;

/// <summary>The byte per task that says where it runs: a dispatcher index, or inline on the worker.</summary>
internal static class RouteTable
{
    /// <summary>The local layer's dispatcher: always the first.</summary>
    public const byte Local = 0;

    /// <summary>An inline handler in the local layer with no pools to take: it runs on the scheduler worker itself.</summary>
    public const byte Inline = byte.MaxValue;

    /// <summary>Layers a run can address (every byte but <see cref="Inline"/>).</summary>
    public const int MaxLayers = byte.MaxValue;
}
