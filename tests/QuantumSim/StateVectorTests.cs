using System.Numerics;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;
using Xunit;

namespace TaskMesh.Tests.QuantumSim;

/// <summary>
/// One fixture, every kernel width: the scalar kernels are the reference the vector kernels must
/// reproduce (low and high targets, low and high controls, diagonal and dense gates, fused gates).
/// </summary>
public abstract class StateVectorTests
{
    protected abstract SimdWidth Width { get; }

    /// <summary>The width this fixture runs (read at discovery: a width the hardware lacks is skipped, see <see cref="WidthFactAttribute"/>).</summary>
    internal SimdWidth KernelWidth => Width;


    private static Complex[] Run(Circuit c, SimdWidth width, Precision precision, int fusion, int threads = 1)
    {
        using var s = Simulator.Simulate(c, new SimulatorOptions { Width = width, Precision = precision, Fusion = fusion, Threads = threads });
        return s.ToArray();
    }

    private static void AssertClose(Complex[] expected, Complex[] actual, double tol)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True((expected[i] - actual[i]).Magnitude <= tol, $"amplitude {i}: {actual[i]} vs {expected[i]}");
    }

    [WidthTheory]
    [InlineData(1, 0)]
    [InlineData(3, 1)]
    [InlineData(7, 2)]
    [InlineData(9, 3)]
    public void RandomCircuit_MatchesScalarReference(int qubits, int seed)
    {
        var c = RandomCircuits.Make(qubits, 120, seed);
        var reference = Run(c, SimdWidth.Scalar, Precision.Double, 0);
        AssertClose(reference, Run(c, Width, Precision.Double, 0), 1e-12);
        AssertClose(reference, Run(c, Width, Precision.Single, 0), 2e-5);
        for (int k = 1; k <= SimulatorOptions.MaxFusion; k++)
            AssertClose(reference, Run(c, Width, Precision.Double, k), 1e-11);
    }

    [WidthFact]
    public void LargeState_ThreadedSweeps_MatchSingleThread()
    {
        var c = RandomCircuits.Make(15, 40, 7);
        AssertClose(Run(c, Width, Precision.Double, 3, threads: 1), Run(c, Width, Precision.Double, 3, threads: 4), 1e-13);
    }

    [WidthTheory]
    [InlineData(Precision.Single)]
    [InlineData(Precision.Double)]
    public void CacheBlockedRuns_MatchGateByGateSweeps(Precision precision)
    {
        // Above BlockQubits (16 single, 15 double) runs of low gates go block by block.
        int n = 18;
        var plan = Simulator.Plan(RandomCircuits.Make(n, 80, 21), 3);
        using var blocked = new StateVector(n, precision, Width);
        using var swept = new StateVector(n, precision, Width);
        Assert.True(n > blocked.BlockQubits);
        Simulator.Apply(blocked, plan);
        foreach (var g in plan) swept.Apply(g);
        double tol = precision == Precision.Double ? 1e-12 : 1e-5;
        for (long i = 0; i < blocked.Length; i += 7)
            Assert.True((blocked.GetAmplitude(i) - swept.GetAmplitude(i)).Magnitude <= tol, $"amplitude {i}");
        Assert.Throws<ArgumentException>(() => blocked.ApplyBlocked([new MatrixGate([n - 1], [0, 1, 1, 0])]));
    }

    [WidthFact]
    public void ManyControls_ActOnlyWhenAllAreOne()
    {
        // X on qubit 2 controlled by 0, 1, 5, 8 (low and high controls).
        var gate = new MatrixGate([2], [0, 1, 1, 0], [0, 1, 5, 8]);
        using var s = new StateVector(10, Precision.Double, Width);
        foreach (long basis in new long[] { 0b1_0010_0011, 0b1_0010_0010, 0b0_0010_0011, 0b1_0000_0011 })
        {
            s.SetBasisState(basis);
            s.Apply(gate);
            long expected = basis == 0b1_0010_0011 ? basis ^ 0b100 : basis;
            Assert.Equal(1.0, s.GetAmplitude(expected).Magnitude, 12);
        }
    }

    [WidthFact]
    public void Norm_IsOneAfterUnitaryGates()
    {
        using var s = Simulator.Simulate(RandomCircuits.Make(12, 200, 11), new SimulatorOptions { Width = Width, Fusion = 4 });
        Assert.Equal(1.0, s.NormSquared(), 12);
    }
}

public sealed class ScalarStateVectorTests : StateVectorTests
{
    protected override SimdWidth Width => SimdWidth.Scalar;
}

public sealed class Vector256StateVectorTests : StateVectorTests
{
    protected override SimdWidth Width => SimdWidth.Vector256;
}

/// <remarks>On a machine without AVX-512 every test here is reported skipped, with the reason (see <see cref="Vector512Fixture"/>).</remarks>
public sealed class Vector512StateVectorTests : StateVectorTests
{
    protected override SimdWidth Width => SimdWidth.Vector512;
}
