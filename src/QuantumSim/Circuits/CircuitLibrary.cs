namespace TaskMesh.QuantumSim.Circuits;

/// <summary>Standard circuits for benchmarks, examples and tests.</summary>
public static class CircuitLibrary
{
    /// <summary>One H on every qubit.</summary>
    public static Circuit HadamardLayer(int qubits)
    {
        var c = Circuit.WithQubits(qubits);
        for (int q = 0; q < qubits; q++) c.Gate("h", q);
        return c;
    }

    /// <summary>The quantum Fourier transform: H and controlled phases per qubit, then the reversing swaps.</summary>
    public static Circuit Qft(int qubits)
    {
        var c = Circuit.WithQubits(qubits);
        for (int j = qubits - 1; j >= 0; j--)
        {
            c.Gate("h", j);
            for (int k = j - 1; k >= 0; k--) c.Gate("cp", [Math.PI / (1L << (j - k))], k, j);
        }
        for (int q = 0; q < qubits / 2; q++) c.Gate("swap", q, qubits - 1 - q);
        return c;
    }

    /// <summary>
    /// <paramref name="depth"/> layers of a random rx, ry or rz (random angle) on every qubit, then CX
    /// on neighbour pairs (0,1),(2,3)… in even layers and (1,2),(3,4)… in odd ones.
    /// </summary>
    public static Circuit RandomLayered(int qubits, int depth, int seed)
    {
        var rng = new Random(seed);
        var c = Circuit.WithQubits(qubits);
        string[] rot = ["rx", "ry", "rz"];
        for (int layer = 0; layer < depth; layer++)
        {
            for (int q = 0; q < qubits; q++) c.Gate(rot[rng.Next(3)], [rng.NextDouble() * 2 * Math.PI], q);
            for (int q = layer % 2; q + 1 < qubits; q += 2) c.Gate("cx", q, q + 1);
        }
        return c;
    }

    /// <summary>
    /// QAOA for MaxCut: H on every vertex, then per round a cost layer (rzz(-γ) on every edge) and a
    /// mixer layer (rx(2β) on every vertex), then every vertex measured into c.
    /// </summary>
    /// <remarks>
    /// The cost unitary of round r is exp(-i γ_r Σ_edges (1 - Z_u Z_v)/2), which up to a global
    /// phase is Π rzz(-γ_r) on the edges; the mixer is exp(-i β_r Σ X_v) = Π rx(2β_r).
    /// </remarks>
    public static Circuit QaoaMaxCut(int vertices, IReadOnlyList<(int U, int V)> edges, IReadOnlyList<double> gammas, IReadOnlyList<double> betas)
    {
        ArgumentNullException.ThrowIfNull(edges);
        if (gammas.Count != betas.Count) throw new ArgumentException("gammas and betas need the same length (one pair per round)");
        var c = new Circuit();
        c.AddQuantumRegister("q", vertices);
        c.AddClassicalRegister("c", vertices);
        for (int v = 0; v < vertices; v++) c.Gate("h", v);
        for (int r = 0; r < gammas.Count; r++)
        {
            foreach (var (u, v) in edges) c.Gate("rzz", [-gammas[r]], u, v);
            for (int v = 0; v < vertices; v++) c.Gate("rx", [2 * betas[r]], v);
        }
        for (int v = 0; v < vertices; v++) c.Measure(v, v);
        return c;
    }

    /// <summary>The number of edges of <paramref name="edges"/> cut by the vertex colouring <paramref name="assignment"/> (bit v = side of v).</summary>
    public static int CutSize(long assignment, IReadOnlyList<(int U, int V)> edges)
    {
        int cut = 0;
        foreach (var (u, v) in edges)
            if (((assignment >> u) & 1) != ((assignment >> v) & 1)) cut++;
        return cut;
    }
}
