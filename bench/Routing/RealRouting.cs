using System.Diagnostics;
using System.Globalization;
using System.Text;
using TaskMesh.Engine;
using TaskMesh.Engine.Escalation;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;

namespace TaskMesh.Bench.Routing;

/// <summary>
/// <c>bench -- routing --real</c>: the same comparison on the real quantum layers — <c>quantum</c>
/// (single precision, price 1) and <c>quantum-double</c> (double precision, price 2, rank above) —
/// with real circuits and a norm tolerance that some single-precision runs exceed: such a circuit
/// escalates from quantum to quantum-double through the engine's own cascade and pays for both
/// attempts. The learned router trains on a recorded history of randomly placed circuits (a real
/// run store, the product's recorder, extractor and trainer), then routes a fresh set; fixed
/// policies place every circuit on one layer. Each policy's run is real: success, cost (the run
/// record's, per attempt), wall time and escalations are measured; the median of five runs (by
/// cost) is reported. The circuits run one at a time (see <see cref="Prepare"/>).
/// <para>
/// Workloads (<c>--workload</c>): <c>mixed</c> (the default), a mix of two families of circuits —
/// half time evolutions of a transverse-field Ising chain by Trotter steps, half random u3/cx
/// circuits, 8–16 qubits. A Trotter circuit repeats one layer of gates, so the rounding of its
/// single-precision amplitudes adds up coherently: its norm drift grows with the steps (measured:
/// ~1e-7 after a few steps, ~1e-6 after 40, ~1e-5 after 100). A random circuit's rounding errors
/// walk at random and mostly cancel (≲ 1e-6 after 3,000 gates, with no trend a feature can see).
/// <c>random</c> is random circuits only, 6–14 qubits, 20–400 gates, at a tolerance of 1e-7 (the
/// workload of the first measurements: which circuit drifts there is chance).
/// </para>
/// </summary>
internal static class RealRouting
{
    /// <summary>The tag both quantum layers have and every circuit requires.</summary>
    private const string SimulatorTag = "statevector";

    /// <summary>The workloads <c>--workload</c> names.</summary>
    public static readonly IReadOnlyList<string> Workloads = ["mixed", "random"];

    public static List<RoutingRecord> Run(int tasks, int train, int seed, string workload = "mixed", string objective = Objectives.Auto, int repeats = 5)
    {
        if (!Workloads.Contains(workload)) throw new ArgumentException($"workload '{workload}' is not one of {string.Join(", ", Workloads)}");
        // The norm drift a single-precision run may reach: past it, the run escalates to double precision.
        double tolerance = workload == "random" ? 1e-7 : 2e-6;
        Func<int, int, List<string>> circuits = workload == "random" ? RandomCircuits : MixedCircuits;
        var dir = Directory.CreateTempSubdirectory("taskmesh-routing-real-").FullName;
        try
        {
            var history = circuits(train, seed);
            var engine = Engine(tolerance);
            // A warm-up on both layers first: the history should time the simulator's optimised
            // code, not its first, unoptimised runs (each precision's kernels compile separately).
            var warm = circuits(60, seed + 200);
            for (int w = 0; w < 2; w++)
                engine.RunAsync(Prepare(engine, warm, i => (i + w) % 2 == 0 ? "quantum" : "quantum-double")).GetAwaiter().GetResult();
            var rows = new List<TrainingRow>();
            using (var store = RunStore.Open(Path.Combine(dir, "history.db")))
            {
                var rng = new Random(seed + 1);
                var prepared = Prepare(engine, history, i => rng.Next(2) == 0 ? "quantum" : "quantum-double");
                var features = new FeatureExtractor(prepared);
                var result = engine.RunAsync(prepared, new RunOptions
                {
                    Observers = [new RunRecorder(store, complexity: t => features.Complexity(t), features: t => features.Extract(t))],
                }).GetAwaiter().GetResult();
                store.FlushAsync().GetAwaiter().GetResult();
                rows.AddRange(store.TrainingRows());
                Console.WriteLine($"history: {result.Succeeded} of {history.Count} circuits ran, {result.Escalations.Count} escalated; {rows.Count} rows");
            }
            var models = ModelTrainer.Train(rows, seed);
            Console.WriteLine("trained: " + string.Join("; ", models.Accuracy.Select(a =>
                string.Create(CultureInfo.InvariantCulture, $"{a.Layer} {a.Rows} rows, R² {a.DurationR2:0.00}, AUC {a.SuccessAuc:0.00}, rate {a.SuccessRate:0.00}"))));

            var fresh = circuits(tasks, seed + 100);
            var records = new List<RoutingRecord>();
            var policies = new (string Name, Func<int, string?> Layer)[]
            {
                ("learned", _ => null),
                ("always_cheapest", _ => "quantum"),
                ("always_most_capable", _ => "quantum-double"),
                ("random", i => (TaskMesh.Engine.Scheduling.SplitMix.Next((ulong)seed * TaskMesh.Engine.Scheduling.SplitMix.Golden ^ (ulong)i) & 1) == 0 ? "quantum" : "quantum-double"),
            };
            // Each policy runs the workload `repeats` times, round-robin with the others (so drifts of
            // the machine hit them alike); the median run (by cost) is reported.
            var runs = policies.ToDictionary(p => p.Name, _ => new List<(double Cost, double Wall, double Success, int Escalations, string Layers)>());
            for (int rep = 0; rep < repeats; rep++)
                foreach (var (name, layerOf) in policies)
                {
                    var e = Engine(tolerance);
                    if (name == "learned") e.Router = new LearnedRouter(models, new RoutingOptions { Objective = objective });
                    var prepared = Prepare(e, fresh, layerOf);
                    var sw = Stopwatch.StartNew();
                    var r = e.RunAsync(prepared, new RunOptions { CollectTaskDetails = true }).GetAwaiter().GetResult();
                    string layers = string.Join("; ", r.Record.Layers.Select(l => string.Create(CultureInfo.InvariantCulture, $"{l.Name} {l.Tasks} attempts {l.DurationMs / 1000:0.###} s cost {l.Cost:0.###}")));
                    runs[name].Add((r.CostByLayer.Values.Sum(), sw.Elapsed.TotalSeconds, r.Succeeded / (double)tasks, r.Escalations.Count, layers));
                }
            foreach (var (name, _) in policies)
            {
                var m = runs[name].OrderBy(x => x.Cost).ElementAt(runs[name].Count / 2);
                Console.WriteLine($"{name}: {m.Layers}");
                records.Add(new RoutingRecord(name, tasks, Math.Round(m.Success, 5), Math.Round(m.Cost, 6), Math.Round(m.Wall, 3), m.Escalations, null, "real-" + workload, objective));
            }
            return records;
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>The real layers: quantum (single precision, price 1, rank 10) and quantum-double (double, price 2, rank 20); the cascade between them links itself.</summary>
    private static TaskMeshEngine Engine(double tolerance)
    {
        // One thread per circuit: its duration does not depend on how fast the other core is.
        var quantum = new QuantumOptions { NormTolerance = tolerance, ThreadsPerCircuit = 1 };
        return new TaskMeshEngine(new EngineOptions
        {
            Quantum = quantum,
            Layers =
            [
                new LayerSpec("quantum", LayerKinds.Quantum) { Precision = TaskMesh.QuantumSim.Precision.Single, PricePerSecond = 1, Rank = 10, Quantum = quantum, Capabilities = [SimulatorTag] },
                new LayerSpec("quantum-double", LayerKinds.Quantum) { Precision = TaskMesh.QuantumSim.Precision.Double, PricePerSecond = 2, Rank = 20, Quantum = quantum, Capabilities = [SimulatorTag] },
            ],
            EscalationRules = [],
        });
    }

    /// <summary>
    /// The circuits as a chain, so that one runs at a time: every attempt is timed alone, as on
    /// layers of their own hardware. (On this machine's two cores, two circuits at once slow each
    /// other, and the two cores differ: a fixed loop takes 1.6 s on one and 2.8 s on the other,
    /// measured with taskset — a policy that keeps both layers busy would pay for that, not for its choices.)
    /// </summary>
    private static PreparedGraph Prepare(TaskMeshEngine engine, List<string> circuits, Func<int, string?> layerOf)
    {
        var g = new GraphBuilder("circuits");
        TaskRef? previous = null;
        for (int i = 0; i < circuits.Count; i++)
        {
            // The free local layer could run a circuit in place (in double precision, at price 0),
            // which a cost objective would rightly take: the circuits ask for the simulators' tag.
            var t = g.Task($"c{i}", "quantum", new { qasm = circuits[i], shots = 0 }).Requires(SimulatorTag);
            if (layerOf(i) is { } layer) t.OnLayer(layer);
            if (previous is { } p) t.DependsOn(p);
            previous = t;
        }
        return engine.Prepare(g);
    }

    /// <summary>Random u3/cx circuits of 6–14 qubits and 20–400 gates.</summary>
    private static List<string> RandomCircuits(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<string>(count);
        for (int c = 0; c < count; c++) list.Add(RandomCircuit(rng, rng.Next(6, 15), rng.Next(20, 401)));
        return list;
    }

    /// <summary>Half Trotterised Ising evolutions (8–16 qubits, 1–120 steps), half random u3/cx circuits (8–16 qubits, 20–2,000 gates), shuffled.</summary>
    private static List<string> MixedCircuits(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<string>(count);
        for (int c = 0; c < count; c++)
            list.Add(rng.Next(2) == 0 ? TrotterCircuit(rng, rng.Next(8, 17), rng.Next(1, 121)) : RandomCircuit(rng, rng.Next(8, 17), rng.Next(20, 2001)));
        return list;
    }

    private static string RandomCircuit(Random rng, int n, int gates)
    {
        var sb = new StringBuilder($"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[{n}]; ");
        for (int g = 0; g < gates; g++)
        {
            if (rng.Next(3) == 0) { int a = rng.Next(n), b = (a + 1 + rng.Next(n - 1)) % n; sb.Append(CultureInfo.InvariantCulture, $"cx q[{a}],q[{b}]; "); }
            else sb.Append(CultureInfo.InvariantCulture, $"u3({rng.NextDouble() * 3:0.###},{rng.NextDouble() * 3:0.###},{rng.NextDouble() * 3:0.###}) q[{rng.Next(n)}]; ");
        }
        return sb.ToString();
    }

    /// <summary>
    /// exp(−iHt) for H = −J Σ ZᵢZᵢ₊₁ − h Σ Xᵢ on an open chain of <paramref name="n"/> spins, from |+…+⟩,
    /// by first-order Trotter steps: per step, each ZZ term as cx·rz·cx and each X term as rx.
    /// </summary>
    private static string TrotterCircuit(Random rng, int n, int steps)
    {
        double dt = 0.05 + rng.NextDouble() * 0.2, h = 0.2 + rng.NextDouble() * 1.3;
        var sb = new StringBuilder($"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[{n}]; ");
        for (int q = 0; q < n; q++) sb.Append(CultureInfo.InvariantCulture, $"h q[{q}]; ");
        for (int s = 0; s < steps; s++)
        {
            for (int q = 0; q + 1 < n; q++) sb.Append(CultureInfo.InvariantCulture, $"cx q[{q}],q[{q + 1}]; rz({2 * dt:0.######}) q[{q + 1}]; cx q[{q}],q[{q + 1}]; ");
            for (int q = 0; q < n; q++) sb.Append(CultureInfo.InvariantCulture, $"rx({2 * h * dt:0.######}) q[{q}]; ");
        }
        return sb.ToString();
    }
}
