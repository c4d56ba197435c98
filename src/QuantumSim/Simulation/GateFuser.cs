using System.Numerics;

namespace TaskMesh.QuantumSim.Simulation;

/// <summary>
/// Merges neighbouring gates into unitaries on at most <c>maxQubits</c> qubits so that several
/// gates cost one sweep of the state vector (qsim's basic fuser, greedy).
/// </summary>
/// <remarks>
/// Gates are visited in order. The fused gates that currently end on a gate's qubits are its
/// candidates; the latest of them takes the gate when the union of qubits stays within the limit
/// (nothing after it touches the gate's qubits, so the gate can move back to its slot). Earlier
/// candidates that are still the last gate on all of their own qubits join as well while the size
/// allows. Otherwise the gate opens a new fused gate. Gates with more qubits than the limit
/// (counting controls) pass through unchanged and block fusion across them.
/// </remarks>
internal static class GateFuser
{
    private sealed class Node
    {
        public required int[] Qubits;   // sorted; bit j of a matrix index is Qubits[j]
        public required Complex[] Matrix;
        public MatrixGate? Unfusable;
        public MatrixGate? Original;
        public bool Alive = true;
        public int Count = 1;
    }

    public static List<MatrixGate> Fuse(IReadOnlyList<MatrixGate> gates, int maxQubits)
    {
        if (maxQubits <= 0) return gates.ToList();
        var nodes = new List<Node>();
        var last = new Dictionary<int, int>();
        var candidates = new List<int>();
        foreach (var gate in gates)
        {
            if (gate.Targets.Length + gate.Controls.Length > maxQubits)
            {
                nodes.Add(new Node { Qubits = [], Matrix = [], Unfusable = gate });
                foreach (int q in gate.Qubits) last[q] = nodes.Count - 1;
                continue;
            }
            var plain = gate.WithoutControls();
            candidates.Clear();
            foreach (int q in plain.Targets)
                if (last.TryGetValue(q, out int c) && !candidates.Contains(c)) candidates.Add(c);

            if (candidates.Count > 0)
            {
                // The latest candidate t takes the gate: nothing after t touches the gate's qubits,
                // so the gate may move back to t's slot.
                candidates.Sort();
                int at = candidates[^1];
                var t = nodes[at];
                var union = new SortedSet<int>(t.Qubits);
                union.UnionWith(plain.Targets);
                if (t.Unfusable is null && union.Count <= maxQubits)
                {
                    // Earlier candidates join too when nothing after them touches their qubits
                    // (they then commute with everything up to t) and the size allows.
                    var absorbed = new List<int>();
                    for (int ci = candidates.Count - 2; ci >= 0; ci--)
                    {
                        var n = nodes[candidates[ci]];
                        if (n.Unfusable is not null || n.Qubits.Any(q => last[q] != candidates[ci])) continue;
                        if (union.Count + n.Qubits.Count(q => !union.Contains(q)) > maxQubits) continue;
                        union.UnionWith(n.Qubits);
                        absorbed.Add(candidates[ci]);
                    }
                    var qubits = union.ToArray();
                    var m = Identity(qubits.Length);
                    int count = t.Count + 1;
                    foreach (int c in absorbed)
                    {
                        var n = nodes[c];
                        ApplyToColumns(m, qubits, n.Qubits, n.Matrix);
                        count += n.Count;
                        n.Alive = false;
                        foreach (int q in n.Qubits) last[q] = at;
                    }
                    ApplyToColumns(m, qubits, t.Qubits, t.Matrix);
                    ApplyToColumns(m, qubits, plain.Targets, plain.Matrix);
                    nodes[at] = new Node { Qubits = qubits, Matrix = m, Count = count };
                    foreach (int q in plain.Targets) last[q] = at;
                    continue;
                }
            }
            var sorted = plain.Targets.Order().ToArray();
            var mat = Identity(sorted.Length);
            ApplyToColumns(mat, sorted, plain.Targets, plain.Matrix);
            nodes.Add(new Node { Qubits = sorted, Matrix = mat, Original = gate });
            foreach (int q in sorted) last[q] = nodes.Count - 1;
        }

        var result = new List<MatrixGate>(nodes.Count);
        foreach (var n in nodes)
        {
            if (!n.Alive) continue;
            if (n.Unfusable is not null) result.Add(n.Unfusable);
            else if (n.Count == 1) result.Add(n.Original!); // keeps controls and diagonality: a lone cx sweeps half the vector
            else result.Add(new MatrixGate(n.Qubits, n.Matrix));
        }
        return result;
    }

    private static Complex[] Identity(int qubits)
    {
        int dim = 1 << qubits;
        var m = new Complex[dim * dim];
        for (int i = 0; i < dim; i++) m[i * dim + i] = Complex.One;
        return m;
    }

    /// <summary>
    /// m ← G·m, where m is over <paramref name="space"/> (sorted) and G (matrix <paramref name="g"/>)
    /// acts on <paramref name="gateQubits"/> ⊆ space, bit j of G's index being gateQubits[j].
    /// </summary>
    internal static void ApplyToColumns(Complex[] m, int[] space, int[] gateQubits, Complex[] g)
    {
        int dim = 1 << space.Length, k = gateQubits.Length, sub = 1 << k;
        var pos = gateQubits.Select(q => Array.IndexOf(space, q)).ToArray();
        int mask = 0;
        foreach (int p in pos) mask |= 1 << p;
        Span<int> idx = stackalloc int[sub];
        Span<Complex> v = new Complex[sub];
        for (int col = 0; col < dim; col++)
        {
            for (int b = 0; b < dim; b++)
            {
                if ((b & mask) != 0) continue;
                for (int s = 0; s < sub; s++)
                {
                    int r = b;
                    for (int j = 0; j < k; j++) if ((s >> j & 1) != 0) r |= 1 << pos[j];
                    idx[s] = r;
                    v[s] = m[r * dim + col];
                }
                for (int s = 0; s < sub; s++)
                {
                    Complex acc = Complex.Zero;
                    for (int t = 0; t < sub; t++) acc += g[s * sub + t] * v[t];
                    m[idx[s] * dim + col] = acc;
                }
            }
        }
    }
}
