using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;

namespace TaskMesh.Tests.QuantumSim;

/// <summary>Seeded random circuits over the whole gate library, for identity and cross-path tests.</summary>
internal static class RandomCircuits
{
    private static readonly string[] s_names = GateLibrary.All.Keys.Order(StringComparer.Ordinal).ToArray();

    public static Circuit Make(int qubits, int gates, int seed)
    {
        var rng = new Random(seed);
        var c = Circuit.WithQubits(qubits);
        int added = 0;
        while (added < gates)
        {
            var def = GateLibrary.All[s_names[rng.Next(s_names.Length)]];
            if (def.QubitCount > qubits) continue;
            var qs = Enumerable.Range(0, qubits).OrderBy(_ => rng.Next()).Take(def.QubitCount).ToArray();
            var ps = Enumerable.Range(0, def.ParameterCount).Select(_ => rng.NextDouble() * 4 * Math.PI - 2 * Math.PI).ToArray();
            c.Gate(def.Name, ps, qs);
            added++;
        }
        return c;
    }
}
