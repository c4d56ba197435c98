using TaskMesh.QuantumSim;

namespace TaskMesh.Engine.Layers;

/// <summary>The kinds of layer a configuration can declare.</summary>
public static class LayerKinds
{
    /// <summary>Runs handlers in this process.</summary>
    public const string Local = "local";

    /// <summary>Runs <c>quantum</c> tasks on the state-vector simulator.</summary>
    public const string Quantum = "quantum";

    public static readonly IReadOnlyList<string> All = [Local, Quantum];

    /// <summary>The rank a layer of <paramref name="kind"/> has when its config gives none.</summary>
    public static int DefaultRank(string kind) => kind == Quantum ? 10 : 0;
}

/// <summary>
/// One row of the provider table (<c>[layers.NAME]</c> in the config): a layer to create, what it
/// costs, how capable it is compared with the others (<see cref="Rank"/>: escalation goes up), and
/// what it offers (<see cref="Capabilities"/>: tags a task's <c>requires</c> must find). Several
/// layers of one kind with different settings form a cascade (e.g. <c>quantum</c>, single
/// precision, then <c>quantum-double</c>).
/// </summary>
public sealed record LayerSpec(string Name, string Kind)
{
    /// <summary>Slots; null: the kind's default (<c>local</c>: the engine's <see cref="EngineOptions.MaxParallelTasks"/>; <c>quantum</c>: its <c>max_concurrent_circuits</c>).</summary>
    public int? Capacity { get; init; }

    /// <summary>Price of one slot-second (the cost model's unit). Default 0.</summary>
    public double PricePerSecond { get; init; }

    /// <summary>Capability order: higher is more capable (escalation moves up). Null: the kind's default (local 0, quantum 10).</summary>
    public int? Rank { get; init; }

    /// <summary>False: the layer is declared but not created (tasks that force it are refused).</summary>
    public bool Enabled { get; init; } = true;

    /// <summary>Tags such as <c>gpu</c> or <c>high-memory</c>: a task that <c>requires</c> tags runs only on a layer that has them all.</summary>
    public IReadOnlyList<string> Capabilities { get; init; } = [];

    /// <summary>Quantum: the precision circuits run at on this layer (a task that asks for double keeps it). Null: as each task says.</summary>
    public Precision? Precision { get; init; }

    /// <summary>Quantum: the layer's own settings (fusion, memory cap, …); null: the engine's <see cref="EngineOptions.Quantum"/>.</summary>
    public Quantum.QuantumOptions? Quantum { get; init; }

    /// <summary>The source line of the section, for messages.</summary>
    public int Line { get; init; }

    /// <summary>The rank in effect.</summary>
    public int EffectiveRank => Rank ?? LayerKinds.DefaultRank(Kind);
}
