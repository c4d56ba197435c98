using TaskMesh.QuantumSim.Noise;

namespace TaskMesh.QuantumSim;

/// <summary>How <see cref="Simulator"/> runs a circuit. Validated once by <see cref="Validate"/>.</summary>
public sealed record SimulatorOptions
{
    /// <summary>Default largest fused gate (qubits).</summary>
    public const int DefaultFusion = 3;

    /// <summary>Largest fusion setting.</summary>
    public const int MaxFusion = 5;

    /// <summary>Most shots one run may sample.</summary>
    public const int MaxShots = 100_000_000;

    /// <summary>Default single-precision norm drift |1 - ‖ψ‖²| that triggers a double-precision re-run.</summary>
    public const double DefaultNormTolerance = 1e-4;

    /// <summary>Most entries listed in <see cref="SimulationResult.Probabilities"/> when the state has more than 2^16 basis states.</summary>
    public const int DefaultTopK = 4096;

    /// <summary>Most qubits a noisy (trajectory) run may have: it keeps a probability accumulator beside the state.</summary>
    public const int MaxNoisyQubits = 26;

    /// <summary>Amplitude precision. Default <see cref="Precision.Double"/>.</summary>
    public Precision Precision { get; init; } = Precision.Double;

    /// <summary>Largest fused gate in qubits, 1..5; 0 turns fusion off. Default <see cref="DefaultFusion"/>.</summary>
    public int Fusion { get; init; } = DefaultFusion;

    /// <summary>Kernel width. Default <see cref="SimdWidth.Auto"/>.</summary>
    public SimdWidth Width { get; init; } = SimdWidth.Auto;

    /// <summary>Threads per sweep; 0 = all cores. Default 0.</summary>
    public int Threads { get; init; }

    /// <summary>Measurement shots to sample; 0 = exact probabilities only. Default 0.</summary>
    public int Shots { get; init; }

    /// <summary>Seed for sampling and noise. Default null: a random seed, reported in the result.</summary>
    public int? Seed { get; init; }

    /// <summary>Most bytes one state vector may take. Default <see cref="MemoryAdmission.NoCap"/>.</summary>
    public long MemoryCapBytes { get; init; } = MemoryAdmission.NoCap;

    /// <summary>Norm drift beyond which a single-precision run is repeated in double. Default <see cref="DefaultNormTolerance"/>.</summary>
    public double NormTolerance { get; init; } = DefaultNormTolerance;

    /// <summary>Whether a drifting single-precision run is repeated in double precision. Default true.</summary>
    public bool EscalateOnDrift { get; init; } = true;

    /// <summary>Noise by trajectories; null = ideal. Default null.</summary>
    public NoiseModel? Noise { get; init; }

    /// <summary>Pauli strings whose expectation values to report. Default none.</summary>
    public IReadOnlyList<PauliString> Observables { get; init; } = [];

    /// <summary>Most qubits a marginal may keep (its table has 2^k entries).</summary>
    public const int MaxMarginalQubits = 20;

    /// <summary>Qubits to keep in an exact marginal distribution (<see cref="SimulationResult.Marginal"/>); null for none. Default null.</summary>
    public IReadOnlyList<int>? MarginalQubits { get; init; }

    /// <summary>Entries listed when the state has more than 2^16 basis states, or always when <see cref="ListAllSmallStates"/> is false. Default <see cref="DefaultTopK"/>.</summary>
    public int TopK { get; init; } = DefaultTopK;

    /// <summary>List every nonzero probability of states with at most 2^16 basis states (else only the top <see cref="TopK"/>). Default true.</summary>
    public bool ListAllSmallStates { get; init; } = true;

    /// <summary>Every problem with these options, empty when valid.</summary>
    public List<string> Problems()
    {
        var p = new List<string>();
        if (Fusion is < 0 or > MaxFusion) p.Add($"fusion must be 0..{MaxFusion}, got {Fusion}");
        if (Threads < 0) p.Add($"threads must be >= 0, got {Threads}");
        if (Shots is < 0 or > MaxShots) p.Add($"shots must be 0..{MaxShots}, got {Shots}");
        if (MemoryCapBytes <= 0) p.Add("the memory cap must be positive");
        if (!(NormTolerance > 0)) p.Add($"the norm tolerance must be positive, got {NormTolerance}");
        if (TopK < 1) p.Add($"top-k must be at least 1, got {TopK}");
        if (Seed is < 0) p.Add($"seed must be non-negative, got {Seed}");
        if (MarginalQubits is { } m)
        {
            if (m.Count is 0 or > MaxMarginalQubits) p.Add($"a marginal keeps 1..{MaxMarginalQubits} qubits, got {m.Count}");
            if (m.Any(q => q < 0)) p.Add("marginal qubits must be non-negative");
            if (m.Distinct().Count() != m.Count) p.Add("a marginal names a qubit twice");
        }
        return p;
    }

    /// <summary>Throws when <see cref="Problems"/> is not empty.</summary>
    /// <exception cref="ArgumentException">All problems, one per line.</exception>
    public void Validate()
    {
        var p = Problems();
        if (p.Count > 0) throw new ArgumentException(string.Join(Environment.NewLine, p));
    }
}
