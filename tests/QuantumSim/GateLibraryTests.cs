using System.Numerics;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;
using Xunit;

namespace TaskMesh.Tests.QuantumSim;

public sealed class GateLibraryTests
{
    public static TheoryData<string> Names()
    {
        var d = new TheoryData<string>();
        foreach (var n in GateLibrary.All.Keys.Order(StringComparer.Ordinal)) d.Add(n);
        return d;
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void Matrix_IsUnitary(string name)
    {
        var def = GateLibrary.All[name];
        var rng = new Random(name.Length);
        var m = def.Matrix(Enumerable.Range(0, def.ParameterCount).Select(_ => rng.NextDouble() * 6 - 3).ToArray());
        int dim = 1 << def.TargetCount;
        for (int r = 0; r < dim; r++)
            for (int c = 0; c < dim; c++)
            {
                Complex dot = 0;
                for (int k = 0; k < dim; k++) dot += Complex.Conjugate(m[k * dim + r]) * m[k * dim + c];
                Assert.True((dot - (r == c ? 1 : 0)).Magnitude < 1e-12, $"{name}: (M†M)[{r},{c}] = {dot}");
            }
    }

    private static Complex[] State(Circuit c)
    {
        using var s = Simulator.Simulate(c, new SimulatorOptions { Fusion = 0 });
        return s.ToArray();
    }

    [Fact]
    public void HadamardTwice_IsIdentity()
    {
        var c = RandomCircuits.Make(4, 30, 3);
        var before = State(c);
        c.Gate("h", 2).Gate("h", 2);
        var after = State(c);
        for (int i = 0; i < before.Length; i++) Assert.True((before[i] - after[i]).Magnitude < 1e-12);
    }

    [Theory]
    [InlineData("s", "sdg", new double[0], new double[0])]
    [InlineData("t", "tdg", new double[0], new double[0])]
    [InlineData("sx", "sxdg", new double[0], new double[0])]
    [InlineData("rx", "rx", new[] { 0.7 }, new[] { -0.7 })]
    [InlineData("ry", "ry", new[] { 1.1 }, new[] { -1.1 })]
    [InlineData("rz", "rz", new[] { 2.3 }, new[] { -2.3 })]
    [InlineData("u3", "u3", new[] { 0.3, 0.5, 0.9 }, new[] { -0.3, -0.9, -0.5 })]
    [InlineData("cu3", "cu3", new[] { 0.3, 0.5, 0.9 }, new[] { -0.3, -0.9, -0.5 })]
    [InlineData("crx", "crx", new[] { 0.4 }, new[] { -0.4 })]
    [InlineData("cp", "cp", new[] { 0.4 }, new[] { -0.4 })]
    [InlineData("rxx", "rxx", new[] { 0.8 }, new[] { -0.8 })]
    [InlineData("rzz", "rzz", new[] { 0.8 }, new[] { -0.8 })]
    [InlineData("ccx", "ccx", new double[0], new double[0])]
    [InlineData("cswap", "cswap", new double[0], new double[0])]
    public void GateThenInverse_RestoresTheState(string gate, string inverse, double[] p, double[] pInv)
    {
        var c = RandomCircuits.Make(5, 25, 9);
        var before = State(c);
        int arity = GateLibrary.All[gate].QubitCount;
        var qs = new[] { 3, 0, 4 }[..arity];
        c.Gate(gate, p, qs).Gate(inverse, pInv, qs);
        var after = State(c);
        for (int i = 0; i < before.Length; i++) Assert.True((before[i] - after[i]).Magnitude < 1e-12, $"amplitude {i}");
    }

    [Fact]
    public void Cu3_IsExactlyControlledU3()
    {
        // Qiskit semantics: with the control set, cu3 acts as u3 on the target (no extra phase).
        var a = Circuit.WithQubits(2).Gate("x", 0).Gate("h", 1).Gate("cu3", [0.4, 0.9, -1.3], 0, 1);
        var b = Circuit.WithQubits(2).Gate("x", 0).Gate("h", 1).Gate("u3", [0.4, 0.9, -1.3], 1);
        var sa = State(a);
        var sb = State(b);
        for (int i = 0; i < 4; i++) Assert.True((sa[i] - sb[i]).Magnitude < 1e-12);
    }

    [Fact]
    public void FusedCircuit_EqualsUnfused_ForEveryFusionSize()
    {
        for (int seed = 0; seed < 5; seed++)
        {
            var c = RandomCircuits.Make(8, 150, 100 + seed);
            var unfused = State(c);
            for (int k = 1; k <= SimulatorOptions.MaxFusion; k++)
            {
                using var s = Simulator.Simulate(c, new SimulatorOptions { Fusion = k });
                var fused = s.ToArray();
                Assert.True(Simulator.Plan(c, k).Count <= c.GateCount);
                for (int i = 0; i < fused.Length; i++)
                    Assert.True((fused[i] - unfused[i]).Magnitude < 1e-11, $"seed {seed}, fusion {k}, amplitude {i}");
            }
        }
    }

    [Fact]
    public void Fusion_NeverExceedsTheQubitLimit()
    {
        var c = RandomCircuits.Make(10, 300, 5);
        for (int k = 1; k <= 5; k++)
            Assert.All(Simulator.Plan(c, k), g =>
                Assert.True(g.Targets.Length + g.Controls.Length <= k || c.MatrixGates().Contains(g),
                    $"fusion {k} produced a gate on {g.Targets.Length + g.Controls.Length} qubits"));
    }
}
