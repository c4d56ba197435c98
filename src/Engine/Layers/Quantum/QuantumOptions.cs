using TaskMesh.QuantumSim;

namespace TaskMesh.Engine.Layers.Quantum;

/// <summary>Settings of the <c>quantum</c> layer (TOML section <c>[quantum]</c>).</summary>
public sealed record QuantumOptions
{
    /// <summary>Circuits run at once (each already uses every core in its kernels). Default 1.</summary>
    public int MaxConcurrentCircuits { get; set; } = 1;

    /// <summary>Most bytes all running state vectors may hold together. Default <see cref="MemoryAdmission.NoCap"/> (available memory decides).</summary>
    public long MemoryCapBytes { get; set; } = MemoryAdmission.NoCap;

    /// <summary>Fusion for tasks that do not set <c>fusion</c>. Default <see cref="SimulatorOptions.DefaultFusion"/>.</summary>
    public int DefaultFusion { get; set; } = SimulatorOptions.DefaultFusion;

    /// <summary>Single-precision norm drift that triggers a double-precision re-run. Default <see cref="SimulatorOptions.DefaultNormTolerance"/>.</summary>
    public double NormTolerance { get; set; } = SimulatorOptions.DefaultNormTolerance;

    /// <summary>Threads per circuit; 0 = all cores. Default 0.</summary>
    public int ThreadsPerCircuit { get; set; }

    /// <summary>Whether a <c>quantum</c> task may name a circuit file outside its graph's folder. Default false.</summary>
    public bool CircuitsOutsideGraphFolder { get; set; }

    internal IEnumerable<string> Problems()
    {
        if (MaxConcurrentCircuits is < 1 or > 64) yield return $"quantum.max_concurrent_circuits is {MaxConcurrentCircuits}; it must be between 1 and 64";
        if (MemoryCapBytes <= 0) yield return "quantum.memory_cap_mb must be positive";
        if (DefaultFusion is < 0 or > SimulatorOptions.MaxFusion) yield return $"quantum.fusion is {DefaultFusion}; it must be between 0 and {SimulatorOptions.MaxFusion}";
        if (!(NormTolerance > 0)) yield return "quantum.norm_tolerance must be positive";
        if (ThreadsPerCircuit is < 0 or > 1024) yield return $"quantum.threads is {ThreadsPerCircuit}; it must be between 0 (all cores) and 1024";
    }
}
