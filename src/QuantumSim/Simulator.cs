using System.Diagnostics;
using System.Numerics;
using TaskMesh.QuantumSim.Circuits;
using TaskMesh.QuantumSim.Noise;
using TaskMesh.QuantumSim.Simulation;

namespace TaskMesh.QuantumSim;

/// <summary>Runs circuits on a state vector and summarises the result.</summary>
public static class Simulator
{
    /// <summary>Probability below which a basis state counts as zero.</summary>
    public const double ZeroProbability = 1e-14;

    /// <summary>Basis states up to which every nonzero probability is listed.</summary>
    public const int ListAllUpToQubits = 16;

    /// <summary>
    /// Runs a circuit and returns probabilities, counts, expectations and confidence. A
    /// single-precision run whose norm drifts beyond <see cref="SimulatorOptions.NormTolerance"/>
    /// is repeated in double precision and the escalation recorded.
    /// </summary>
    /// <exception cref="ArgumentException">Invalid options, or an observable names a qubit the circuit lacks.</exception>
    /// <exception cref="AdmissionException">The state vector does not fit.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired between gates.</exception>
    public static SimulationResult Run(Circuit circuit, SimulatorOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(circuit);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (circuit.Qubits == 0) throw new ArgumentException("the circuit declares no qubits");
        if (options.MarginalQubits?.FirstOrDefault(q => q >= circuit.Qubits, -1) is int bad and >= 0)
            throw new ArgumentException($"marginal qubit {bad} is out of range: the circuit has {circuit.Qubits} qubit(s)");
        foreach (var o in options.Observables)
            if (o.MaxQubit >= circuit.Qubits)
                throw new ArgumentException($"observable '{o}' names qubit {o.MaxQubit} but the circuit has {circuit.Qubits} qubit(s)");
        bool noisy = options.Noise is { HasGateNoise: true };
        if (noisy && circuit.Qubits > SimulatorOptions.MaxNoisyQubits)
            throw new ArgumentException($"noisy simulation keeps a probability accumulator beside the state and supports at most {SimulatorOptions.MaxNoisyQubits} qubits; the circuit has {circuit.Qubits}");

        int seed = options.Seed ?? Random.Shared.Next();
        var sw = Stopwatch.StartNew();
        var run = RunOnce(circuit, options, options.Precision, seed, ct);
        PrecisionEscalation? escalation = null;
        string? refused = null;
        if (options.Precision == Precision.Single && options.EscalateOnDrift && run.Drift > options.NormTolerance)
        {
            string reason = $"norm drift {run.Drift:E2} exceeds the tolerance {options.NormTolerance:E2}";
            // Admission for the double-precision state is checked before the single one is freed,
            // so a refusal keeps the single-precision result instead of losing both.
            long doubleBytes = StateVector.RequiredBytes(circuit.Qubits, Precision.Double);
            long held = run.State?.ByteCount ?? 0;
            try
            {
                MemoryAdmission.Check(circuit.Qubits, Precision.Double, options.MemoryCapBytes, alreadyReservedBytes: -held);
                run.State?.Dispose();
                run = RunOnce(circuit, options, Precision.Double, seed, ct);
                escalation = new PrecisionEscalation("single", "double", "low_confidence", reason);
            }
            catch (AdmissionException e)
            {
                refused = $"{reason}, but the double-precision re-run ({MemoryAdmission.FormatBytes(doubleBytes)}) was refused: {e.Message}";
            }
        }
        var result = Summarise(circuit, options, run, seed, refused);
        result.ElapsedMs = sw.Elapsed.TotalMilliseconds;
        result.Escalation = escalation;
        return result;
    }

    /// <summary>
    /// Applies the circuit's gates (fused as the options say) to a fresh |0…0⟩ and returns the
    /// state; the caller disposes it. Noise and shots are ignored.
    /// </summary>
    /// <exception cref="AdmissionException">The state vector does not fit.</exception>
    public static StateVector Simulate(Circuit circuit, SimulatorOptions options, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(circuit);
        ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        return Simulate(circuit, options, Plan(circuit, options.Fusion), ct);
    }

    private static StateVector Simulate(Circuit circuit, SimulatorOptions options, List<MatrixGate> plan, CancellationToken ct)
    {
        MemoryAdmission.Check(circuit.Qubits, options.Precision, options.MemoryCapBytes);
        var state = new StateVector(circuit.Qubits, options.Precision, options.Width, options.Threads);
        try
        {
            Apply(state, plan, ct);
            return state;
        }
        catch
        {
            state.Dispose();
            throw;
        }
    }

    /// <summary>
    /// Applies planned gates. When the state is larger than a cache block, gates are first
    /// reordered (within what commutes) so that gates below <see cref="StateVector.BlockQubits"/>
    /// form long runs; runs of two or more go block by block through the cache
    /// (<see cref="StateVector.ApplyBlocked"/>), the other gates sweep the whole state.
    /// </summary>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired between gates.</exception>
    public static void Apply(StateVector state, IReadOnlyList<MatrixGate> plan, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(state);
        ArgumentNullException.ThrowIfNull(plan);
        int local = state.BlockQubits;
        bool blocking = state.Qubits > local;
        if (blocking)
        {
            var grouped = LocalityScheduler.GroupLocal(plan, local);
            if (LocalityScheduler.Passes(grouped, local) < LocalityScheduler.Passes(plan, local)) plan = grouped;
        }
        for (int i = 0; i < plan.Count;)
        {
            ct.ThrowIfCancellationRequested();
            int j = i;
            if (blocking)
                while (j < plan.Count && plan[j].MaxQubit < local) j++;
            if (j - i >= 2)
            {
                state.ApplyBlocked(plan.Skip(i).Take(j - i).ToArray());
                i = j;
            }
            else state.Apply(plan[i++]);
        }
    }

    /// <summary>The sweeps a circuit becomes after fusion.</summary>
    public static List<MatrixGate> Plan(Circuit circuit, int fusion) => GateFuser.Fuse(circuit.MatrixGates().ToList(), fusion);

    /// <summary>What one run leaves behind for the summary: a live state or averaged probabilities.</summary>
    private sealed class RunOutput
    {
        public StateVector? State;
        public double[]? Averaged;
        public double[]? AveragedExpectations;
        public double Drift;
        public int Sweeps;
        public Precision Precision;
        public SimdWidth Width;
    }

    private static RunOutput RunOnce(Circuit circuit, SimulatorOptions o, Precision precision, int seed, CancellationToken ct)
    {
        var noise = o.Noise;
        if (noise is { HasGateNoise: true }) return RunNoisy(circuit, o, precision, noise, seed, ct);
        var plan = Plan(circuit, o.Fusion);
        var state = Simulate(circuit, o with { Precision = precision }, plan, ct);
        return new RunOutput
        {
            State = state,
            Drift = Math.Abs(1 - state.NormSquared()),
            Sweeps = plan.Count,
            Precision = precision,
            Width = state.Width,
        };
    }

    private static RunOutput RunNoisy(Circuit circuit, SimulatorOptions o, Precision precision, NoiseModel noise, int seed, CancellationToken ct)
    {
        int n = circuit.Qubits;
        long len = 1L << n;
        // The accumulator is a double per basis state beside the state vector.
        MemoryAdmission.Check(n, precision, o.MemoryCapBytes, alreadyReservedBytes: len * sizeof(double));
        var gates = circuit.MatrixGates().ToList();
        var avg = new double[len];
        var expect = new double[o.Observables.Count];
        var buf = new double[Math.Min(len, 1 << 16)];
        var rng = new Random(seed);
        double maxDrift = 0;
        using var state = new StateVector(n, precision, o.Width, o.Threads);
        for (int t = 0; t < noise.Trajectories; t++)
        {
            ct.ThrowIfCancellationRequested();
            state.SetBasisState(0);
            foreach (var g in gates)
            {
                state.Apply(g);
                ApplyNoise(state, g, noise, rng);
            }
            double norm = state.NormSquared();
            maxDrift = Math.Max(maxDrift, Math.Abs(1 - norm));
            for (long start = 0; start < len; start += buf.Length)
            {
                var span = buf.AsSpan(0, (int)Math.Min(buf.Length, len - start));
                state.CopyProbabilities(start, span);
                for (int k = 0; k < span.Length; k++) avg[start + k] += span[k] / norm;
            }
            for (int i = 0; i < expect.Length; i++) expect[i] += state.Expectation(o.Observables[i]) / norm;
        }
        for (long i = 0; i < len; i++) avg[i] /= noise.Trajectories;
        for (int i = 0; i < expect.Length; i++) expect[i] /= noise.Trajectories;
        return new RunOutput
        {
            Averaged = avg,
            AveragedExpectations = expect,
            Drift = maxDrift,
            Sweeps = gates.Count,
            Precision = precision,
            Width = state.Width,
        };
    }

    private static readonly Complex[] s_x = [0, 1, 1, 0];
    private static readonly Complex[] s_y = [0, -Complex.ImaginaryOne, Complex.ImaginaryOne, 0];
    private static readonly Complex[] s_z = [1, 0, 0, -1];

    private static void Pauli(StateVector s, int qubit, int which)
    {
        if (which == 0) return;
        s.Apply(new MatrixGate([qubit], which == 1 ? s_x : which == 2 ? s_y : s_z));
    }

    private static void ApplyNoise(StateVector s, MatrixGate g, NoiseModel noise, Random rng)
    {
        var qubits = g.Qubits.ToArray();
        if (qubits.Length == 1 && noise.Depolarizing > 0 && rng.NextDouble() < noise.Depolarizing)
            Pauli(s, qubits[0], 1 + rng.Next(3));
        if (qubits.Length >= 2 && noise.Depolarizing2 > 0 && rng.NextDouble() < noise.Depolarizing2)
        {
            int r = 1 + rng.Next(15);
            Pauli(s, qubits[0], r & 3);
            Pauli(s, qubits[1], r >> 2);
        }
        foreach (int q in qubits)
        {
            if (noise.BitFlip > 0 && rng.NextDouble() < noise.BitFlip) Pauli(s, q, 1);
            if (noise.PhaseFlip > 0 && rng.NextDouble() < noise.PhaseFlip) Pauli(s, q, 3);
            if (noise.AmplitudeDamping > 0)
            {
                double gamma = noise.AmplitudeDamping;
                double norm = s.NormSquared();
                double p1 = s.ProbabilityOfOne(q) / norm;
                double jump = gamma * p1;
                if (rng.NextDouble() < jump)
                {
                    // K1 = sqrt(γ)|0><1|: the excitation decays.
                    s.Apply(new MatrixGate([q], [0, 1, 0, 0]));
                    s.Scale(1 / Math.Sqrt(p1 * norm));
                }
                else
                {
                    s.Apply(new MatrixGate([q], [1, 0, 0, Math.Sqrt(1 - gamma)]));
                    s.Scale(1 / Math.Sqrt((1 - jump) * norm));
                }
            }
        }
    }

    /// <summary>Readout error: each measured bit (every qubit when nothing is measured) flips with probability p.</summary>
    private static void ApplyReadout(double[] probs, Circuit circuit, double p)
    {
        var qubits = circuit.Measurements.Count > 0 ? circuit.Measurements.Select(m => m.Qubit) : Enumerable.Range(0, circuit.Qubits);
        foreach (int q in qubits)
        {
            long bit = 1L << q;
            for (long i = 0; i < probs.Length; i++)
            {
                if ((i & bit) != 0) continue;
                double a = probs[i], b = probs[i | bit];
                probs[i] = (1 - p) * a + p * b;
                probs[i | bit] = (1 - p) * b + p * a;
            }
        }
    }

    private static SimulationResult Summarise(Circuit circuit, SimulatorOptions o, RunOutput run, int seed, string? warning)
    {
        int n = circuit.Qubits;
        long len = 1L << n;
        try
        {
            if (run.Averaged is { } avgProbs && o.Noise is { Readout: > 0 } rn) ApplyReadout(avgProbs, circuit, rn.Readout);
            else if (run.State is not null && o.Noise is { Readout: > 0 })
            {
                // Readout noise alone: an exact classical channel on the probabilities.
                var probs = new double[len];
                run.State.CopyProbabilities(0, probs);
                ApplyReadout(probs, circuit, o.Noise.Readout);
                run.Averaged = probs;
                run.AveragedExpectations = o.Observables.Select(obs => run.State.Expectation(obs)).ToArray();
            }

            // One pass over the probabilities: total, nonzero count, top list, sampling.
            // Z-only observables are diagonal: they ride along the probability pass instead of a pass each.
            var diagonal = o.Observables.Select((obs, i) => (obs, i)).Where(x => x.obs.IsDiagonal && run.AveragedExpectations is null).ToArray();
            var scan = new ProbabilityScan(n, o.TopK, o.Shots, seed, o.ListAllSmallStates, diagonal.Select(x => x.obs.ZMask).ToArray(), o.MarginalQubits?.ToArray());
            scan.SetTotal(run.Averaged is { } a ? a.Sum() : run.State!.NormSquared());
            if (run.Averaged is { } avg) scan.Visit(0, avg);
            else
            {
                var buf = new double[Math.Min(len, 1 << 16)];
                for (long start = 0; start < len; start += buf.Length)
                {
                    var span = buf.AsSpan(0, (int)Math.Min(buf.Length, len - start));
                    run.State!.CopyProbabilities(start, span);
                    scan.Visit(start, span);
                }
            }
            scan.Finish();

            var expectations = new List<ObservableValue>();
            for (int i = 0; i < o.Observables.Count; i++)
            {
                int d = Array.FindIndex(diagonal, x => x.i == i);
                double value = run.AveragedExpectations is { } ae ? ae[i]
                    : d >= 0 ? scan.ZSums[d] / scan.Total
                    : run.State!.Expectation(o.Observables[i]) / scan.Total;
                double hw = o.Shots > 0 ? 1.96 * Math.Sqrt(Math.Max(0, 1 - value * value) / o.Shots) : 0;
                expectations.Add(new ObservableValue(o.Observables[i].Text, value, hw));
            }

            double drift = run.Drift;
            double numerical = drift <= o.NormTolerance ? 1 : o.NormTolerance / drift;
            double? topHw = null, obsHw = null;
            if (o.Shots > 0 && scan.Counts!.Count > 0)
            {
                double pTop = scan.Counts.Values.Max() / (double)o.Shots;
                topHw = 1.96 * Math.Sqrt(pTop * (1 - pTop) / o.Shots);
                if (expectations.Count > 0) obsHw = expectations.Max(e => e.HalfWidth95);
            }
            double statistical = 1 - Math.Max(topHw ?? 0, obsHw ?? 0);

            return new SimulationResult
            {
                Qubits = n,
                Gates = circuit.GateCount,
                Sweeps = run.Sweeps,
                Precision = run.Precision,
                Fusion = o.Noise is { HasGateNoise: true } ? 0 : o.Fusion,
                Kernel = run.Width,
                Norm = scan.Total,
                NonzeroStates = scan.Nonzero,
                Probabilities = scan.Top,
                ProbabilitiesTruncated = scan.Truncated,
                Shots = o.Shots,
                Seed = seed,
                Counts = scan.Counts,
                Circuit = circuit,
                MarginalQubits = o.MarginalQubits?.ToArray(),
                Marginal = scan.Marginal?.Select(p => p / scan.Total).ToArray(),
                Expectations = expectations,
                Confidence = new Confidence(Math.Clamp(Math.Min(numerical, statistical), 0, 1), drift, o.NormTolerance, topHw, obsHw),
                Noise = o.Noise?.ToString(),
                Warnings = warning is null ? circuit.Warnings.ToArray() : [.. circuit.Warnings, warning],
            };
        }
        finally
        {
            run.State?.Dispose();
        }
    }
}
