namespace TaskMesh.QuantumSim.Simulation;

/// <summary>
/// Reorders a gate list so that gates on low ("local") qubits form long runs for cache-blocked
/// application. Gates that share a qubit keep their order; gates on disjoint qubits commute, so
/// any topological order of the per-qubit dependency chains gives the same state.
/// </summary>
internal static class LocalityScheduler
{
    /// <summary>
    /// List scheduling: emit every ready local gate (lowest original index first), then every
    /// ready non-local gate, and repeat. Each switch back to local gates starts a new run.
    /// </summary>
    public static List<MatrixGate> GroupLocal(IReadOnlyList<MatrixGate> gates, int localQubits)
    {
        int count = gates.Count;
        var pending = new int[count];
        var successors = new List<int>?[count];
        var last = new Dictionary<int, int>();
        for (int i = 0; i < count; i++)
        {
            foreach (int q in gates[i].Qubits)
            {
                if (last.TryGetValue(q, out int p))
                {
                    var list = successors[p] ??= new List<int>(2);
                    if (list.Count == 0 || list[^1] != i)
                    {
                        list.Add(i);
                        pending[i]++;
                    }
                }
                last[q] = i;
            }
        }
        var local = new PriorityQueue<int, int>();
        var wide = new PriorityQueue<int, int>();
        void Ready(int i)
        {
            if (gates[i].MaxQubit < localQubits) local.Enqueue(i, i);
            else wide.Enqueue(i, i);
        }
        for (int i = 0; i < count; i++)
            if (pending[i] == 0) Ready(i);

        var order = new List<MatrixGate>(count);
        void Emit(int i)
        {
            order.Add(gates[i]);
            if (successors[i] is { } next)
                foreach (int s in next)
                    if (--pending[s] == 0) Ready(s);
        }
        while (order.Count < count)
        {
            while (local.TryDequeue(out int i, out _)) Emit(i);
            // Only the wide gates ready now: those they release go back through the local drain first.
            int n = wide.Count;
            for (int k = 0; k < n && wide.TryDequeue(out int w, out _); k++) Emit(w);
        }
        return order;
    }

    /// <summary>Passes over memory a gate order costs: one per wide or lone local gate, one per run of two or more local gates.</summary>
    public static int Passes(IReadOnlyList<MatrixGate> gates, int localQubits)
    {
        int passes = 0;
        for (int i = 0; i < gates.Count;)
        {
            int j = i;
            while (j < gates.Count && gates[j].MaxQubit < localQubits) j++;
            if (j - i >= 2) { passes++; i = j; }
            else { passes++; i++; }
        }
        return passes;
    }
}
