namespace TaskMesh.QuantumSim.Simulation;

/// <summary>A gate whose kernel coefficients are built for one width and precision, ready to apply many times.</summary>
internal abstract class PreparedGate
{
    /// <summary>The highest qubit the gate touches.</summary>
    public int MaxQubit { get; init; }
}
