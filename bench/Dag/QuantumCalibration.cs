using System.Text;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Bench.Dag;

/// <summary>
/// <c>bench -- quantum-calibration [--json out.json]</c>: measures the duration of <c>quantum</c>
/// tasks on the quantum layer over a grid of shapes (qubits, gates, shots, observables,
/// precision), fits the linear model the handler's estimate uses, and prints each shape's
/// measured / estimated ratio for the fit and for the estimate compiled into the engine.
/// </summary>
internal static class QuantumCalibration
{
    private sealed record Row(int qubits, int gates, int shots, int observables, string precision, double measured_us, double engine_estimate_us);

    public static int Run(string[] args)
    {
        var engine = new TaskMeshEngine();
        var rows = new List<Row>();
        var features = new List<double[]>();
        var rnd = new Random(3);
        foreach (int n in new[] { 8, 12, 16, 20 })
        foreach (int depth in new[] { 2, 16, 64 })
        foreach (int shots in new[] { 0, 2000 })
        foreach (int obs in new[] { 0, 12 })
        foreach (var precision in new[] { "single", "double" })
        {
            var sb = new StringBuilder($"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[{n}]; creg c[{n}];\n");
            int gates = 0;
            for (int layer = 0; layer < depth; layer++)
            {
                for (int q = 0; q < n; q++) { sb.Append($"rx({rnd.NextDouble():0.000}) q[{q}];\n"); gates++; }
                for (int q = 0; q + 1 < n; q += 2) { sb.Append($"rzz({rnd.NextDouble():0.000}) q[{q}],q[{q + 1}];\n"); gates++; }
            }
            sb.Append("measure q -> c;\n");
            var g = new GraphBuilder();
            int tasks = n >= 18 ? 6 : 30;
            var observables = Enumerable.Range(0, obs).Select(i => $"Z{i % n} Z{(i + 1) % n}").ToArray();
            for (int i = 0; i < tasks; i++)
                g.Task($"c{i}", "quantum", new { qasm = sb.ToString(), shots, precision, observables, seed = i });
            var prepared = engine.Prepare(g);
            engine.RunAsync(prepared).GetAwaiter().GetResult();   // warm-up
            var result = engine.RunAsync(prepared, new RunOptions { CollectTaskDetails = true }).GetAwaiter().GetResult();
            var durations = result.Tasks.Select(t => t.DurationMs!.Value).Order().ToList();
            double median = durations[durations.Count / 2] * 1000;
            double estimate = QuantumHandler.EstimateMicros((QuantumArgs)prepared.ParsedArgsOf(0)!);
            double bytes = precision == "single" ? 1 : 2, size = Math.Pow(2, n);
            features.Add([1, gates, size * bytes, gates * size * bytes, shots, obs * size, median]);
            rows.Add(new Row(n, gates, shots, obs, precision, Math.Round(median, 1), Math.Round(estimate, 1)));
            Console.WriteLine($"n={n,2} gates={gates,5} shots={shots,4} observables={obs,2} {precision,-6}: measured {median,9:0} us, engine estimate {estimate,9:0} us ({median / estimate:0.00}x)");
        }
        // Least squares on relative error: t = c0 + c1 gates + c2 2^n p + c3 gates 2^n p + c4 shots + c5 obs 2^n.
        const int k = 6;
        var a = new double[k, k];
        var b = new double[k];
        foreach (var row in features)
        {
            double w = 1 / (row[k] * row[k]);
            for (int i = 0; i < k; i++)
            {
                b[i] += w * row[i] * row[k];
                for (int j = 0; j < k; j++) a[i, j] += w * row[i] * row[j];
            }
        }
        var c = MathNet.Numerics.LinearAlgebra.Double.DenseMatrix.OfArray(a).Solve(MathNet.Numerics.LinearAlgebra.Double.DenseVector.OfArray(b));
        Console.WriteLine("fit (us): " + string.Join(" + ", new[] { "1", "gates", "2^n*p", "gates*2^n*p", "shots", "observables*2^n" }.Select((f, i) => $"{c[i]:E3}*{f}")));
        var ratios = rows.Select(r => r.measured_us / r.engine_estimate_us).Order().ToList();
        Console.WriteLine($"engine estimate: measured/estimated median {ratios[ratios.Count / 2]:0.00}, range {ratios[0]:0.00}..{ratios[^1]:0.00}");
        if (DagSuite.Opt(args, "--json") is string json)
            File.WriteAllText(json, JsonSerializer.Serialize(rows, new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }
}
