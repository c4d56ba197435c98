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
/// with real circuits (random u3/cx circuits of 6–14 qubits, 20–400 gates) and a norm tolerance
/// that deep single-precision circuits exceed: such a circuit escalates from quantum to
/// quantum-double through the engine's own cascade and pays for both attempts. The learned router
/// trains on a recorded history of randomly placed circuits (a real run store, the product's
/// recorder, extractor and trainer), then routes a fresh set; fixed policies place every circuit
/// on one layer. Each policy's run is real: success, cost (the run record's, per attempt), wall
/// time and escalations are measured; the median of five runs (by cost) is reported.
/// </summary>
internal static class RealRouting
{
    private const double Tolerance = 1e-7;

    public static List<RoutingRecord> Run(int tasks, int train, int seed, int repeats = 5)
    {
        var dir = Directory.CreateTempSubdirectory("taskmesh-routing-real-").FullName;
        try
        {
            var history = Circuits(train, seed);
            var engine = Engine();
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

            var workload = Circuits(tasks, seed + 100);
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
            var runs = policies.ToDictionary(p => p.Name, _ => new List<(double Cost, double Wall, double Success, int Escalations)>());
            for (int rep = 0; rep < repeats; rep++)
                foreach (var (name, layerOf) in policies)
                {
                    var e = Engine();
                    if (name == "learned") e.Router = new LearnedRouter(models);
                    var prepared = Prepare(e, workload, layerOf);
                    var sw = Stopwatch.StartNew();
                    var r = e.RunAsync(prepared, new RunOptions { CollectTaskDetails = true }).GetAwaiter().GetResult();
                    runs[name].Add((r.CostByLayer.Values.Sum(), sw.Elapsed.TotalSeconds, r.Succeeded / (double)tasks, r.Escalations.Count));
                }
            foreach (var (name, _) in policies)
            {
                var m = runs[name].OrderBy(x => x.Cost).ElementAt(runs[name].Count / 2);
                records.Add(new RoutingRecord(name, tasks, Math.Round(m.Success, 5), Math.Round(m.Cost, 6), Math.Round(m.Wall, 3), m.Escalations, "real"));
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
    private static TaskMeshEngine Engine()
    {
        // One thread per circuit: the two layers run side by side on the two cores without slowing each other (all cores per circuit would make any policy that mixes layers pay for contention).
        var quantum = new QuantumOptions { NormTolerance = Tolerance, ThreadsPerCircuit = 1 };
        return new TaskMeshEngine(new EngineOptions
        {
            Quantum = quantum,
            Layers =
            [
                new LayerSpec("quantum", LayerKinds.Quantum) { Precision = TaskMesh.QuantumSim.Precision.Single, PricePerSecond = 1, Rank = 10, Quantum = quantum },
                new LayerSpec("quantum-double", LayerKinds.Quantum) { Precision = TaskMesh.QuantumSim.Precision.Double, PricePerSecond = 2, Rank = 20, Quantum = quantum },
            ],
            EscalationRules = [],
        });
    }

    private static PreparedGraph Prepare(TaskMeshEngine engine, List<string> circuits, Func<int, string?> layerOf)
    {
        var g = new GraphBuilder("circuits");
        for (int i = 0; i < circuits.Count; i++)
        {
            var t = g.Task($"c{i}", "quantum", new { qasm = circuits[i], shots = 0 });
            if (layerOf(i) is { } layer) t.OnLayer(layer);
        }
        return engine.Prepare(g);
    }

    /// <summary>Random u3/cx circuits of 6–14 qubits and 20–400 gates.</summary>
    private static List<string> Circuits(int count, int seed)
    {
        var rng = new Random(seed);
        var list = new List<string>(count);
        for (int c = 0; c < count; c++)
        {
            int n = rng.Next(6, 15), gates = rng.Next(20, 401);
            var sb = new StringBuilder($"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[{n}]; ");
            for (int g = 0; g < gates; g++)
            {
                if (rng.Next(3) == 0) { int a = rng.Next(n), b = (a + 1 + rng.Next(n - 1)) % n; sb.Append(CultureInfo.InvariantCulture, $"cx q[{a}],q[{b}]; "); }
                else sb.Append(CultureInfo.InvariantCulture, $"u3({rng.NextDouble() * 3:0.###},{rng.NextDouble() * 3:0.###},{rng.NextDouble() * 3:0.###}) q[{rng.Next(n)}]; ");
            }
            list.Add(sb.ToString());
        }
        return list;
    }
}
