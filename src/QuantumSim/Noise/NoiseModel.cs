using System.Globalization;

namespace TaskMesh.QuantumSim.Noise;

/// <summary>
/// Noise applied by Monte-Carlo trajectories: after every gate, each channel acts on the gate's
/// qubits with its probability; readout error flips measured bits. Written as
/// <c>depolarizing=0.01,depolarizing2=0.02,bit_flip=0.001,phase_flip=0.001,amplitude_damping=0.002,readout=0.01,trajectories=200</c>.
/// </summary>
public sealed class NoiseModel
{
    /// <summary>Trajectories when the spec does not say.</summary>
    public const int DefaultTrajectories = 100;

    /// <summary>Most trajectories a spec may ask for.</summary>
    public const int MaxTrajectories = 100_000;

    /// <summary>1-qubit depolarizing probability after each 1-qubit gate (X, Y or Z each with p/3). Default 0.</summary>
    public double Depolarizing { get; init; }

    /// <summary>2-qubit depolarizing probability after each multi-qubit gate, on its first two qubits (each of the 15 non-identity Pauli pairs with p/15). Default 0.</summary>
    public double Depolarizing2 { get; init; }

    /// <summary>X with this probability on every qubit a gate touched. Default 0.</summary>
    public double BitFlip { get; init; }

    /// <summary>Z with this probability on every qubit a gate touched. Default 0.</summary>
    public double PhaseFlip { get; init; }

    /// <summary>Amplitude damping γ on every qubit a gate touched. Default 0.</summary>
    public double AmplitudeDamping { get; init; }

    /// <summary>Probability that a read-out bit is flipped. Default 0.</summary>
    public double Readout { get; init; }

    /// <summary>Number of trajectories averaged. Default <see cref="DefaultTrajectories"/>.</summary>
    public int Trajectories { get; init; } = DefaultTrajectories;

    /// <summary>True when some channel acts on the state (readout alone needs no trajectories).</summary>
    public bool HasGateNoise => Depolarizing > 0 || Depolarizing2 > 0 || BitFlip > 0 || PhaseFlip > 0 || AmplitudeDamping > 0;

    /// <summary>Parses a spec of <c>name=value</c> pairs separated by commas.</summary>
    /// <exception cref="FormatException">An unknown channel, a malformed number or a probability outside [0, 1].</exception>
    public static NoiseModel Parse(string spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        double dep = 0, dep2 = 0, bit = 0, phase = 0, damp = 0, readout = 0;
        int traj = DefaultTrajectories;
        foreach (var part in spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            int eq = part.IndexOf('=');
            if (eq <= 0) throw new FormatException($"noise '{spec}': '{part}' is not name=value");
            string name = part[..eq].Trim().ToLowerInvariant(), value = part[(eq + 1)..].Trim();
            if (name == "trajectories")
            {
                if (!int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out traj) || traj < 1 || traj > MaxTrajectories)
                    throw new FormatException($"noise '{spec}': trajectories must be an integer 1..{MaxTrajectories}, got '{value}'");
                continue;
            }
            if (!double.TryParse(value, NumberStyles.Float, CultureInfo.InvariantCulture, out double p) || !(p >= 0 && p <= 1))
                throw new FormatException($"noise '{spec}': {name} must be a probability between 0 and 1, got '{value}'");
            switch (name)
            {
                case "depolarizing" or "depolarizing1": dep = p; break;
                case "depolarizing2": dep2 = p; break;
                case "bit_flip" or "bitflip": bit = p; break;
                case "phase_flip" or "phaseflip": phase = p; break;
                case "amplitude_damping": damp = p; break;
                case "readout": readout = p; break;
                default:
                    throw new FormatException($"noise '{spec}': unknown channel '{name}' (expected depolarizing, depolarizing2, bit_flip, phase_flip, amplitude_damping, readout, trajectories)");
            }
        }
        return new NoiseModel { Depolarizing = dep, Depolarizing2 = dep2, BitFlip = bit, PhaseFlip = phase, AmplitudeDamping = damp, Readout = readout, Trajectories = traj };
    }

    /// <inheritdoc />
    public override string ToString()
    {
        var parts = new List<string>();
        void Add(string n, double v) { if (v > 0) parts.Add($"{n}={v.ToString("R", CultureInfo.InvariantCulture)}"); }
        Add("depolarizing", Depolarizing);
        Add("depolarizing2", Depolarizing2);
        Add("bit_flip", BitFlip);
        Add("phase_flip", PhaseFlip);
        Add("amplitude_damping", AmplitudeDamping);
        Add("readout", Readout);
        parts.Add($"trajectories={Trajectories}");
        return string.Join(',', parts);
    }
}
