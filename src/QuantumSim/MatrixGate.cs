using System.Numerics;

namespace TaskMesh.QuantumSim;

/// <summary>
/// A unitary on 1–<see cref="MaxTargets"/> target qubits, optionally controlled by any number of
/// other qubits: what the simulator applies in one sweep of the state vector.
/// </summary>
/// <remarks>
/// <see cref="Matrix"/> is row-major, 2^k × 2^k, and bit j of a row or column index is the value of
/// <c>Targets[j]</c> (so the first target is the least significant bit, as in Qiskit's matrices).
/// </remarks>
public sealed class MatrixGate
{
    /// <summary>The largest target count a matrix gate may have.</summary>
    public const int MaxTargets = 6;

    /// <summary>Creates a gate and checks its shape.</summary>
    /// <exception cref="ArgumentException">The matrix size does not match the targets, a qubit repeats, or there are too many targets.</exception>
    public MatrixGate(int[] targets, Complex[] matrix, int[]? controls = null)
    {
        ArgumentNullException.ThrowIfNull(targets);
        ArgumentNullException.ThrowIfNull(matrix);
        controls ??= [];
        if (targets.Length is 0 or > MaxTargets)
            throw new ArgumentException($"a matrix gate has 1..{MaxTargets} targets, got {targets.Length}", nameof(targets));
        int dim = 1 << targets.Length;
        if (matrix.Length != dim * dim)
            throw new ArgumentException($"a gate on {targets.Length} qubit(s) needs a {dim}x{dim} matrix ({dim * dim} entries), got {matrix.Length}", nameof(matrix));
        var all = targets.Concat(controls).ToArray();
        if (all.Any(q => q < 0)) throw new ArgumentException("qubit indices must be non-negative");
        if (all.Distinct().Count() != all.Length) throw new ArgumentException($"a qubit appears twice in ({string.Join(",", all)})");
        Targets = targets;
        Controls = controls;
        Matrix = matrix;
        IsDiagonal = true;
        for (int r = 0; r < dim && IsDiagonal; r++)
            for (int c = 0; c < dim; c++)
                if (r != c && matrix[r * dim + c] != Complex.Zero) { IsDiagonal = false; break; }
    }

    /// <summary>The qubits the matrix acts on; bit j of a matrix index is <c>Targets[j]</c>.</summary>
    public int[] Targets { get; }

    /// <summary>Qubits that must all be 1 for the matrix to act (empty when uncontrolled).</summary>
    public int[] Controls { get; }

    /// <summary>Row-major 2^k × 2^k unitary.</summary>
    public Complex[] Matrix { get; }

    /// <summary>True when every off-diagonal entry is exactly zero; such gates take the phase-only path.</summary>
    public bool IsDiagonal { get; }

    /// <summary>The highest qubit index the gate touches.</summary>
    public int MaxQubit => Math.Max(Targets.Max(), Controls.Length == 0 ? -1 : Controls.Max());

    /// <summary>
    /// The same operator written as an uncontrolled matrix over <c>Targets</c> followed by
    /// <c>Controls</c> (used by fusion, which needs plain matrices).
    /// </summary>
    public MatrixGate WithoutControls()
    {
        if (Controls.Length == 0) return this;
        int k = Targets.Length, c = Controls.Length, dim = 1 << (k + c), sub = 1 << k;
        var m = new Complex[dim * dim];
        int ctlBlock = ((1 << c) - 1) << k;
        for (int i = 0; i < dim; i++)
            if ((i & ctlBlock) != ctlBlock) m[i * dim + i] = Complex.One;
        for (int r = 0; r < sub; r++)
            for (int col = 0; col < sub; col++)
                m[(ctlBlock | r) * dim + (ctlBlock | col)] = Matrix[r * sub + col];
        return new MatrixGate([.. Targets, .. Controls], m);
    }

    /// <summary>All qubits, targets then controls.</summary>
    public IEnumerable<int> Qubits => Targets.Concat(Controls);
}
