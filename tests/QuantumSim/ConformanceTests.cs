using System.Text.Json;
using Xunit;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Qasm;

namespace TaskMesh.Tests.QuantumSim;

/// <summary>Every QASMBench circuit in tests/Data/qasm against its reference probabilities (see its README).</summary>
public sealed class ConformanceTests
{
    private static readonly string s_root = Path.Combine(AppContext.BaseDirectory, "Data", "qasm");

    public static TheoryData<string, Precision, int> Cases()
    {
        var data = new TheoryData<string, Precision, int>();
        foreach (var file in Directory.GetFiles(Path.Combine(s_root, "circuits"), "*.qasm").Order())
        {
            var name = Path.GetFileNameWithoutExtension(file);
            data.Add(name, Precision.Double, 0);
            data.Add(name, Precision.Double, 4);
            data.Add(name, Precision.Single, 0);
            data.Add(name, Precision.Single, 3);
        }
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Circuit_MatchesReference(string name, Precision precision, int fusion)
    {
        var circuit = QasmParser.ParseFile(Path.Combine(s_root, "circuits", name + ".qasm"));
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(s_root, "reference", name + ".json")));
        var reference = doc.RootElement;
        Assert.Equal(reference.GetProperty("num_qubits").GetInt32(), circuit.Qubits);
        double tol = precision == Precision.Double ? 1e-10 : 1e-4;

        using var state = Simulator.Simulate(circuit, new SimulatorOptions { Precision = precision, Fusion = fusion });
        var probs = state.Probabilities();
        foreach (var top in reference.GetProperty("top_states").EnumerateArray())
        {
            long index = top.GetProperty("index").GetInt64();
            double expected = top.GetProperty("prob").GetDouble();
            Assert.True(Math.Abs(probs[index] - expected) <= tol,
                $"{name} state {top.GetProperty("bits").GetString()}: {probs[index]} vs reference {expected} (tolerance {tol})");
        }
        Assert.InRange(probs.Sum(), reference.GetProperty("sum_probs").GetDouble() - tol * 10, reference.GetProperty("sum_probs").GetDouble() + tol * 10);
        if (precision == Precision.Double)
            Assert.Equal(reference.GetProperty("num_nonzero_amplitudes").GetInt64(), probs.LongCount(p => p > 1e-14));

        // The distribution over classical bits, keyed as Qiskit prints counts.
        var measured = new Dictionary<string, double>();
        if (circuit.Measurements.Count > 0)
        {
            for (long i = 0; i < probs.Length; i++)
            {
                if (probs[i] == 0) continue;
                var key = SimulationResult.FormatClbits(circuit, i);
                measured[key] = measured.GetValueOrDefault(key) + probs[i];
            }
            foreach (var o in reference.GetProperty("measured").GetProperty("top_outcomes").EnumerateArray())
            {
                var key = o.GetProperty("clbits").GetString()!;
                Assert.True(Math.Abs(measured.GetValueOrDefault(key) - o.GetProperty("prob").GetDouble()) <= tol * 10,
                    $"{name} outcome {key}: {measured.GetValueOrDefault(key)} vs {o.GetProperty("prob").GetDouble()}");
            }
        }
    }

    [Fact]
    public void SatN11_WithoutHeader_IsReadWithAWarning()
    {
        var circuit = QasmParser.ParseFile(Path.Combine(s_root, "circuits", "sat_n11.qasm"));
        Assert.Contains(circuit.Warnings, w => w.Contains("no 'OPENQASM 2.0;' header"));
    }
}
