using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;
using TaskMesh.QuantumSim.Noise;
using TaskMesh.QuantumSim.Qasm;
using Xunit;

namespace TaskMesh.Tests.QuantumSim;

public sealed class SimulatorTests
{
    private static SimulationResult Run(Circuit c, SimulatorOptions? o = null) => Simulator.Run(c, o ?? new SimulatorOptions());

    [Fact]
    public void Sampling_FollowsTheExactDistribution_ChiSquare()
    {
        // A skewed 4-qubit distribution: 16 outcomes, 15 degrees of freedom.
        var c = Circuit.WithQubits(4).Gate("ry", [0.7], 0).Gate("ry", [1.9], 1).Gate("cx", 1, 2).Gate("ry", [2.4], 3).Gate("crx", [1.2], 3, 0);
        const int shots = 200_000;
        var r = Run(c, new SimulatorOptions { Shots = shots, Seed = 42 });
        using var s = Simulator.Simulate(c, new SimulatorOptions());
        var p = s.Probabilities();
        Assert.Equal(shots, r.Counts!.Values.Sum());
        double chi2 = 0;
        int dof = -1;
        for (int i = 0; i < p.Length; i++)
        {
            if (p[i] < 1e-12) { Assert.False(r.Counts.ContainsKey(i), $"outcome {i} has probability 0 but was sampled"); continue; }
            double expected = p[i] * shots, observed = r.Counts.GetValueOrDefault(i);
            chi2 += (observed - expected) * (observed - expected) / expected;
            dof++;
        }
        // 99.9th percentile of chi-square with <= 15 degrees of freedom is 37.7.
        Assert.True(chi2 < 37.7, $"chi-square {chi2:F1} with {dof} degrees of freedom");
    }

    [Fact]
    public void Sampling_IsReproducibleWithASeed()
    {
        var c = RandomCircuits.Make(6, 40, 1);
        var a = Run(c, new SimulatorOptions { Shots = 5000, Seed = 7 });
        var b = Run(c, new SimulatorOptions { Shots = 5000, Seed = 7 });
        Assert.Equal(a.Counts!.OrderBy(kv => kv.Key), b.Counts!.OrderBy(kv => kv.Key));
        Assert.Equal(7, a.Seed);
    }

    [Fact]
    public void MillionShots_OnALargeState_AreOnePass()
    {
        var c = Circuit.WithQubits(18);
        for (int q = 0; q < 18; q++) c.Gate("h", q);
        var r = Run(c, new SimulatorOptions { Shots = 1_000_000, Seed = 3 });
        Assert.Equal(1_000_000, r.Counts!.Values.Sum());
        Assert.True(r.Counts.Count > 200_000); // 2^18 equally likely outcomes
        Assert.True(r.ProbabilitiesTruncated);
        Assert.Equal(SimulatorOptions.DefaultTopK, r.Probabilities.Count);
    }

    [Theory]
    [InlineData("Z0", 0.0)]
    [InlineData("Z0 Z1", 1.0)]
    [InlineData("X0 X1", 1.0)]
    [InlineData("Y0 Y1", -1.0)]
    [InlineData("X0", 0.0)]
    [InlineData("Z2", -1.0)]
    [InlineData("Y3", 1.0)]
    [InlineData("X4", 1.0)]
    [InlineData("I", 1.0)]
    public void PauliExpectation_OnKnownStates(string pauli, double expected)
    {
        // q0,q1: Bell pair; q2: |1>; q3: |+i>; q4: |+>.
        var c = Circuit.WithQubits(5).Gate("h", 0).Gate("cx", 0, 1).Gate("x", 2).Gate("h", 3).Gate("s", 3).Gate("h", 4);
        var r = Run(c, new SimulatorOptions { Observables = [PauliString.Parse(pauli)] });
        Assert.Equal(expected, r.Expectations.Single().Value, 12);
    }

    [Fact]
    public void Marginal_SumsOverTheOtherQubits()
    {
        // q0,q1: Bell pair; q2: ry(θ) with P(1) = sin²(θ/2); q3: |1>.
        double theta = 1.1;
        var c = Circuit.WithQubits(4).Gate("h", 0).Gate("cx", 0, 1).Gate("ry", [theta], 2).Gate("x", 3);
        var r = Run(c, new SimulatorOptions { MarginalQubits = [2, 0] });
        double p1 = Math.Pow(Math.Sin(theta / 2), 2);
        // Bit 0 of a marginal index is qubit 2, bit 1 is qubit 0.
        Assert.Equal([(1 - p1) / 2, p1 / 2, (1 - p1) / 2, p1 / 2], r.Marginal!.Select(x => Math.Round(x, 12)), new ToleranceComparer(1e-12));
        var single = Run(c, new SimulatorOptions { MarginalQubits = [3] });
        Assert.Equal(1.0, single.Marginal![1], 12);
        Assert.Contains("marginal qubit 7", Assert.Throws<ArgumentException>(() => Run(c, new SimulatorOptions { MarginalQubits = [7] })).Message);
        Assert.Contains("twice", Assert.Throws<ArgumentException>(() => Run(c, new SimulatorOptions { MarginalQubits = [1, 1] })).Message);
        using var doc = System.Text.Json.JsonDocument.Parse(r.ToJson());
        Assert.Equal(p1 / 2, doc.RootElement.GetProperty("marginal").GetProperty("probabilities").GetProperty("01").GetDouble(), 12);
    }

    private sealed class ToleranceComparer(double tol) : IEqualityComparer<double>
    {
        public bool Equals(double a, double b) => Math.Abs(a - b) <= tol;
        public int GetHashCode(double d) => 0;
    }

    [Fact]
    public void PauliString_RejectsMalformedFactors()
    {
        Assert.Throws<FormatException>(() => PauliString.Parse("Q1"));
        Assert.Throws<FormatException>(() => PauliString.Parse("Z1 X1"));
        var e = Assert.Throws<ArgumentException>(() => Run(Circuit.WithQubits(2), new SimulatorOptions { Observables = [PauliString.Parse("Z5")] }));
        Assert.Contains("qubit 5", e.Message);
    }

    [Fact]
    public void ShotConfidence_ShrinksWithShots()
    {
        var c = Circuit.WithQubits(2).Gate("h", 0).Gate("cx", 0, 1);
        var few = Run(c, new SimulatorOptions { Shots = 100, Seed = 1, Observables = [PauliString.Parse("X0")] });
        var many = Run(c, new SimulatorOptions { Shots = 100_000, Seed = 1, Observables = [PauliString.Parse("X0")] });
        Assert.True(few.Confidence.TopOutcomeHalfWidth95 > many.Confidence.TopOutcomeHalfWidth95);
        Assert.True(few.Confidence.Score < many.Confidence.Score);
        Assert.InRange(many.Confidence.TopOutcomeHalfWidth95!.Value, 0.002, 0.004); // 1.96 * sqrt(0.25 / 1e5) = 0.0031
    }

    [Fact]
    public void SinglePrecisionDrift_EscalatesToDouble()
    {
        var c = RandomCircuits.Make(8, 300, 4);
        var r = Run(c, new SimulatorOptions { Precision = Precision.Single, NormTolerance = 1e-15 });
        Assert.Equal(Precision.Double, r.Precision);
        Assert.NotNull(r.Escalation);
        Assert.Equal("low_confidence", r.Escalation!.Trigger);
        Assert.Equal(("single", "double"), (r.Escalation.From, r.Escalation.To));

        var calm = Run(c, new SimulatorOptions { Precision = Precision.Single });
        Assert.Equal(Precision.Single, calm.Precision);
        Assert.Null(calm.Escalation);
        Assert.True(calm.Confidence.NormDrift < SimulatorOptions.DefaultNormTolerance);
    }

    [Fact]
    public void DriftingRun_WhoseDoubleRerunIsNotAdmitted_KeepsTheSingleResultWithAWarning()
    {
        // 20 qubits: 8 MiB in single precision, 16 MiB in double; a 12 MiB cap admits only the first.
        var c = CircuitLibrary.RandomLayered(20, 2, seed: 3);
        var r = Run(c, new SimulatorOptions { Precision = Precision.Single, NormTolerance = 1e-15, MemoryCapBytes = 12 << 20 });
        Assert.Equal(Precision.Single, r.Precision);
        Assert.Null(r.Escalation);
        Assert.Contains(r.Warnings, w => w.Contains("double-precision re-run (16.0 MiB) was refused"));
        Assert.True(r.Confidence.Score < 1);
    }

    [Fact]
    public void FullDepolarizing_GivesTheUniformDistribution()
    {
        // p = 3/4 makes the 1-qubit depolarizing channel the fully mixing one.
        var c = Circuit.WithQubits(3).Gate("x", 0).Gate("x", 1).Gate("x", 2);
        var r = Run(c, new SimulatorOptions { Seed = 5, Noise = NoiseModel.Parse("depolarizing=0.75,trajectories=4000") });
        Assert.Equal(8, r.Probabilities.Count);
        Assert.All(r.Probabilities, e => Assert.InRange(e.Probability, 0.125 - 0.02, 0.125 + 0.02));
    }

    [Fact]
    public void NoiseChannels_KnownLimits()
    {
        var x = Circuit.WithQubits(1).Gate("x", 0);
        // Certain bit flip after X brings the qubit back to |0>.
        Assert.Equal(0, Run(x, new SimulatorOptions { Seed = 1, Noise = NoiseModel.Parse("bit_flip=1,trajectories=10") }).Probabilities.Single().Index);
        // Full amplitude damping relaxes |1> to |0>.
        Assert.Equal(0, Run(x, new SimulatorOptions { Seed = 1, Noise = NoiseModel.Parse("amplitude_damping=1,trajectories=10") }).Probabilities.Single().Index);
        // Damping of a superposition: P(1) = (1-γ)/2 on average.
        var h = Circuit.WithQubits(1).Gate("h", 0);
        var d = Run(h, new SimulatorOptions { Seed = 2, Noise = NoiseModel.Parse("amplitude_damping=0.5,trajectories=20000") });
        Assert.InRange(d.Probabilities.Single(e => e.Index == 1).Probability, 0.25 - 0.015, 0.25 + 0.015);
        // Phase flips leave Z-basis probabilities alone but kill <X>.
        var pf = Run(h, new SimulatorOptions { Seed = 3, Observables = [PauliString.Parse("X0")], Noise = NoiseModel.Parse("phase_flip=0.5,trajectories=4000") });
        Assert.InRange(pf.Expectations.Single().Value, -0.05, 0.05);
        // Readout error 1/2 makes every reading a coin flip, exactly.
        var ro = Run(x, new SimulatorOptions { Noise = NoiseModel.Parse("readout=0.5") });
        Assert.All(ro.Probabilities, e => Assert.Equal(0.5, e.Probability, 12));
    }

    [Fact]
    public void NoiseSpec_Errors_NameTheProblem()
    {
        Assert.Contains("unknown channel 'foo'", Assert.Throws<FormatException>(() => NoiseModel.Parse("foo=0.1")).Message);
        Assert.Contains("between 0 and 1", Assert.Throws<FormatException>(() => NoiseModel.Parse("bit_flip=1.5")).Message);
        Assert.Contains("trajectories", Assert.Throws<FormatException>(() => NoiseModel.Parse("trajectories=0")).Message);
    }

    [Fact]
    public void Admission_RefusesAStateLargerThanMemory_NamingBothFigures()
    {
        var e = Assert.Throws<AdmissionException>(() => MemoryAdmission.Check(StateVector.MaxQubits, Precision.Double));
        Assert.Contains("16384.0 GiB", e.Message);
        Assert.Contains("available", e.Message);
        Assert.True(e.RequiredBytes > e.AvailableBytes);
    }

    [Fact]
    public void Admission_RefusesAboveTheCap()
    {
        var c = Circuit.WithQubits(20).Gate("h", 0);
        var e = Assert.Throws<AdmissionException>(() => Run(c, new SimulatorOptions { MemoryCapBytes = 1 << 20 }));
        Assert.Contains("16.0 MiB", e.Message);
        Assert.Contains("cap of 1.0 MiB", e.Message);
    }

    [Fact]
    public void Options_ReportEveryProblem()
    {
        var e = Assert.Throws<ArgumentException>(() => Run(Circuit.WithQubits(1), new SimulatorOptions { Fusion = 9, Shots = -1 }));
        Assert.Contains("fusion", e.Message);
        Assert.Contains("shots", e.Message);
    }

    [Fact]
    public void QasmExport_RoundTripsToTheSameState()
    {
        var c = QasmParser.Parse("""
            OPENQASM 2.0;
            include "qelib1.inc";
            qreg a[2];
            qreg b[3];
            creg c[5];
            gate mix(t) x, y { rx(t/2) x; cx x, y; rzz(-t) x, y; }
            h a;
            mix(pi/3) a[0], b[2];
            cu3(0.1, 0.2, 0.3) b[0], a[1];
            barrier a, b;
            measure a -> c[0];
            """.Replace("measure a -> c[0];", "measure a[0] -> c[0];"));
        var text = c.ToQasm();
        var again = QasmParser.Parse(text);
        using var s1 = Simulator.Simulate(c, new SimulatorOptions());
        using var s2 = Simulator.Simulate(again, new SimulatorOptions());
        var (x, y) = (s1.ToArray(), s2.ToArray());
        for (int i = 0; i < x.Length; i++) Assert.True((x[i] - y[i]).Magnitude < 1e-14);
        Assert.Equal(c.Measurements, again.Measurements);
    }

    [Fact]
    public void Result_Json_HasTheDocumentedFields()
    {
        var c = Circuit.WithQubits(3).Gate("h", 0).Gate("cx", 0, 2);
        var r = Run(c, new SimulatorOptions { Shots = 1000, Seed = 9, Observables = [PauliString.Parse("Z0 Z2")] });
        using var doc = System.Text.Json.JsonDocument.Parse(r.ToJson());
        var root = doc.RootElement;
        foreach (var field in new[] { "qubits", "gates", "precision", "elapsed_ms", "norm", "probabilities", "counts", "expectations", "confidence" })
            Assert.True(root.TryGetProperty(field, out _), $"missing {field}");
        Assert.Equal(0.5, root.GetProperty("probabilities").GetProperty("101").GetDouble(), 12);
        Assert.Equal(1.0, root.GetProperty("expectations").GetProperty("Z0 Z2").GetDouble(), 12);
        Assert.Equal(1000, root.GetProperty("counts").EnumerateObject().Sum(p => p.Value.GetInt32()));
    }
}
