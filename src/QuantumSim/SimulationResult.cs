using System.Globalization;
using System.Text;
using System.Text.Json;
using TaskMesh.QuantumSim.Circuits;

namespace TaskMesh.QuantumSim;

/// <summary>An expectation value with the half-width of its 95% interval from the shot count (0 when exact).</summary>
public sealed record ObservableValue(string Observable, double Value, double HalfWidth95);

/// <summary>A precision escalation the simulator made: <c>low_confidence</c>, single → double.</summary>
public sealed record PrecisionEscalation(string From, string To, string Trigger, string Reason);

/// <summary>
/// How far to trust a result. <see cref="Score"/> (0..1) is the smaller of a numerical part
/// (1 while the norm drift is within tolerance, tolerance/drift beyond it) and a statistical part
/// (1 minus the widest 95% half-width among the most probable outcome and the observables; 1
/// without shots).
/// </summary>
public sealed record Confidence(double Score, double NormDrift, double NormTolerance, double? TopOutcomeHalfWidth95, double? ObservableHalfWidth95);

/// <summary>What a simulation produced.</summary>
public sealed class SimulationResult
{
    internal SimulationResult() { }

    /// <summary>Qubits simulated.</summary>
    public int Qubits { get; internal init; }

    /// <summary>Gates in the circuit (after user gates are expanded; barriers and measurements excluded).</summary>
    public int Gates { get; internal init; }

    /// <summary>Sweeps over the state vector after fusion (per trajectory for noisy runs).</summary>
    public int Sweeps { get; internal set; }

    /// <summary>The precision of the reported result (double after an escalation).</summary>
    public Precision Precision { get; internal set; }

    /// <summary>The largest fused gate used (0 = unfused).</summary>
    public int Fusion { get; internal init; }

    /// <summary>"simd" or "scalar", and the width.</summary>
    public SimdWidth Kernel { get; internal set; }

    /// <summary>Wall time of the simulation including any re-run.</summary>
    public double ElapsedMs { get; internal set; }

    /// <summary>‖ψ‖² (the sum of all probabilities) at the end.</summary>
    public double Norm { get; internal set; }

    /// <summary>Basis states with probability above 1e-14.</summary>
    public long NonzeroStates { get; internal set; }

    /// <summary>
    /// (basis index, probability), most probable first: every state above 1e-14 when the state has
    /// at most 2^16 basis states, else the top-k.
    /// </summary>
    public IReadOnlyList<(long Index, double Probability)> Probabilities { get; internal set; } = [];

    /// <summary>True when <see cref="Probabilities"/> lists only the top-k.</summary>
    public bool ProbabilitiesTruncated { get; internal set; }

    /// <summary>Shots sampled (0 = none).</summary>
    public int Shots { get; internal init; }

    /// <summary>The seed used for sampling and noise.</summary>
    public int Seed { get; internal init; }

    /// <summary>Sampled counts by basis index (null without shots).</summary>
    public IReadOnlyDictionary<long, int>? Counts { get; internal set; }

    /// <summary>Sampled counts over the classical bits, keyed as Qiskit prints them (null without shots or measurements); built on first use.</summary>
    public IReadOnlyDictionary<string, int>? MeasuredCounts => _measured ??= BuildMeasuredCounts();

    private Dictionary<string, int>? _measured;

    internal Circuit? Circuit { get; init; }

    private Dictionary<string, int>? BuildMeasuredCounts()
    {
        if (Counts is null || Circuit is null || Circuit.Measurements.Count == 0) return null;
        var measured = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (i, c) in Counts)
        {
            var key = FormatClbits(Circuit, i);
            measured[key] = measured.GetValueOrDefault(key) + c;
        }
        return measured;
    }

    /// <summary>The qubits of <see cref="Marginal"/> (bit j of its index is qubit MarginalQubits[j]), or null.</summary>
    public IReadOnlyList<int>? MarginalQubits { get; internal init; }

    /// <summary>The exact marginal distribution over <see cref="MarginalQubits"/> (2^k entries, normalised), or null.</summary>
    public IReadOnlyList<double>? Marginal { get; internal init; }

    /// <summary>Requested expectation values.</summary>
    public IReadOnlyList<ObservableValue> Expectations { get; internal set; } = [];

    /// <summary>How far to trust the result.</summary>
    public Confidence Confidence { get; internal set; } = new(1, 0, SimulatorOptions.DefaultNormTolerance, null, null);

    /// <summary>Set when a single-precision run drifted and was repeated in double precision.</summary>
    public PrecisionEscalation? Escalation { get; internal set; }

    /// <summary>The noise model, when the run was noisy.</summary>
    public string? Noise { get; internal init; }

    /// <summary>Reader warnings carried from the circuit.</summary>
    public IReadOnlyList<string> Warnings { get; internal init; } = [];

    /// <summary>Basis index as a bitstring q[n-1] … q[0] (Qiskit's order).</summary>
    public string Bits(long index) => FormatBits(index, Qubits);

    /// <summary>Basis index as an n-character bitstring, q[n-1] first.</summary>
    public static string FormatBits(long index, int qubits)
    {
        return string.Create(qubits, index, static (span, i) =>
        {
            for (int k = 0; k < span.Length; k++) span[span.Length - 1 - k] = ((i >> k) & 1) != 0 ? '1' : '0';
        });
    }

    /// <summary>Classical bits for a basis state, registers in reverse declaration order separated by spaces.</summary>
    internal static string FormatClbits(Circuit circuit, long index)
    {
        var bits = new bool[circuit.Clbits];
        foreach (var (q, c) in circuit.Measurements) bits[c] = ((index >> q) & 1) != 0;
        var sb = new StringBuilder();
        for (int r = circuit.ClassicalRegisters.Count - 1; r >= 0; r--)
        {
            var reg = circuit.ClassicalRegisters[r];
            if (sb.Length > 0) sb.Append(' ');
            for (int k = reg.Size - 1; k >= 0; k--) sb.Append(bits[reg.Offset + k] ? '1' : '0');
        }
        return sb.ToString();
    }

    /// <summary>Writes the result as one JSON object (the <c>taskmesh qsim --json</c> format).</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject();
        w.WriteNumber("qubits", Qubits);
        w.WriteNumber("gates", Gates);
        w.WriteNumber("sweeps", Sweeps);
        w.WriteString("precision", Precision.ToName());
        w.WriteNumber("fusion", Fusion);
        w.WriteString("kernel", Kernel == SimdWidth.Scalar ? "scalar" : "simd");
        w.WriteString("width", Kernel switch { SimdWidth.Vector512 => "vector512", SimdWidth.Vector256 => "vector256", _ => "scalar" });
        w.WriteNumber("elapsed_ms", Math.Round(ElapsedMs, 3));
        w.WriteNumber("norm", Norm);
        w.WriteNumber("nonzero_states", NonzeroStates);
        w.WriteBoolean("probabilities_truncated", ProbabilitiesTruncated);
        w.WriteStartObject("probabilities");
        foreach (var (i, p) in Probabilities) w.WriteNumber(Bits(i), p);
        w.WriteEndObject();
        w.WriteNumber("shots", Shots);
        w.WriteNumber("seed", Seed);
        if (Counts is not null)
        {
            w.WriteStartObject("counts");
            foreach (var (i, c) in Counts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key)) w.WriteNumber(Bits(i), c);
            w.WriteEndObject();
        }
        if (MeasuredCounts is not null)
        {
            w.WriteStartObject("measured_counts");
            foreach (var (k, c) in MeasuredCounts.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)) w.WriteNumber(k, c);
            w.WriteEndObject();
        }
        w.WriteStartObject("expectations");
        foreach (var e in Expectations) w.WriteNumber(e.Observable, e.Value);
        w.WriteEndObject();
        if (Marginal is not null && MarginalQubits is not null)
        {
            // Keyed like the probabilities: the highest listed qubit first, e.g. "q3 q0" -> "10".
            w.WriteStartObject("marginal");
            w.WriteStartArray("qubits");
            foreach (int q in MarginalQubits) w.WriteNumberValue(q);
            w.WriteEndArray();
            w.WriteStartObject("probabilities");
            for (int m = 0; m < Marginal.Count; m++)
                if (Marginal[m] > Simulator.ZeroProbability) w.WriteNumber(FormatBits(m, MarginalQubits.Count), Marginal[m]);
            w.WriteEndObject();
            w.WriteEndObject();
        }
        w.WriteStartObject("confidence");
        w.WriteNumber("score", Confidence.Score);
        w.WriteNumber("norm_drift", Confidence.NormDrift);
        w.WriteNumber("norm_tolerance", Confidence.NormTolerance);
        if (Confidence.TopOutcomeHalfWidth95 is { } t) w.WriteNumber("top_outcome_half_width_95", t);
        if (Confidence.ObservableHalfWidth95 is { } o) w.WriteNumber("observable_half_width_95", o);
        if (Expectations.Count > 0 && Shots > 0)
        {
            w.WriteStartObject("observables_half_width_95");
            foreach (var e in Expectations) w.WriteNumber(e.Observable, e.HalfWidth95);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        if (Escalation is { } esc)
        {
            w.WriteStartObject("escalation");
            w.WriteString("from", esc.From);
            w.WriteString("to", esc.To);
            w.WriteString("trigger", esc.Trigger);
            w.WriteString("reason", esc.Reason);
            w.WriteEndObject();
        }
        if (Noise is not null) w.WriteString("noise", Noise);
        if (Warnings.Count > 0)
        {
            w.WriteStartArray("warnings");
            foreach (var s in Warnings) w.WriteStringValue(s);
            w.WriteEndArray();
        }
        w.WriteEndObject();
    }

    /// <summary>The JSON of <see cref="WriteJson"/> as a string.</summary>
    public string ToJson(bool indented = true)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = indented })) WriteJson(w);
        return Encoding.UTF8.GetString(ms.ToArray());
    }

    internal static string Invariant(double d) => d.ToString("R", CultureInfo.InvariantCulture);
}
