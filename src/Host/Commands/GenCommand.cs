using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.IO;
using TaskMesh.QuantumSim.Circuits;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh gen qaoa ...</c>: writes a QAOA MaxCut parameter sweep as a graph: one
/// <c>quantum</c> task per (γ, β) grid point, a <c>best</c> task per γ row, an overall
/// <c>best</c>, and a <c>report</c>.
/// </summary>
internal static class GenCommand
{
    public static Command Create(CliIO io)
    {
        var gen = new Command("gen", "Write a generated graph.");
        var vertices = CliOptions.Int("--vertices", 2, 24, "Vertices of the MaxCut graph (default 12).");
        var degree = CliOptions.Int("--degree", 1, 23, "Degree of the random regular graph (default 3).");
        var graphSeed = CliOptions.Int("--graph-seed", 0, int.MaxValue, "Seed of the random graph (default 7).", "S");
        var rounds = CliOptions.Int("--rounds", 1, 8, "QAOA rounds p (default 1).");
        var shots = CliOptions.Int("--shots", 0, 10_000_000, "Shots per circuit (default 2000).");
        var grid = new Option<string?>("--grid") { Description = "The γ×β grid (default 16x16).", HelpName = "GAMMASxBETAS" };
        var precision = CliOptions.OneOf("--precision", "Precision of the circuits (default double).", "single", "double");
        var report = new Option<string?>("--report") { Description = "Report path, relative to the graph (default out/qaoa-report.json).", HelpName = "PATH" };
        var outPath = new Option<string?>("--out") { Description = "Write the graph here (default: standard output).", HelpName = "GRAPH.json" };
        var qaoa = new Command("qaoa", "A QAOA MaxCut parameter sweep: one quantum task per (γ, β), best per row, best overall, a report.")
        {
            vertices, degree, graphSeed, rounds, shots, grid, precision, report, outPath,
        };
        qaoa.SetAction(parse => Execute(io, parse.GetValue(vertices) ?? 12, parse.GetValue(degree) ?? 3, parse.GetValue(graphSeed) ?? 7,
            parse.GetValue(rounds) ?? 1, parse.GetValue(shots) ?? 2000, parse.GetValue(grid) ?? "16x16", parse.GetValue(precision) ?? "double",
            parse.GetValue(report) ?? "out/qaoa-report.json", parse.GetValue(outPath)));
        gen.Subcommands.Add(qaoa);
        return gen;
    }

    private static int Execute(CliIO io, int vertices, int degree, int graphSeed, int rounds, int shots, string grid, string precision, string report, string? outPath)
    {
        var stdout = io.Out;
        CliOptions.CheckOutput("--out", outPath);
        if (degree >= vertices) throw new UsageException($"--degree {degree} needs more than {degree} vertices");
        if (vertices * degree % 2 != 0) throw new UsageException($"a {degree}-regular graph needs an even vertices × degree ({vertices} × {degree})");
        var parts = grid.Split('x');
        if (parts.Length != 2 || !int.TryParse(parts[0], out int gammas) || !int.TryParse(parts[1], out int betas) || gammas is < 1 or > 256 || betas is < 1 or > 256)
            throw new UsageException($"--grid must be GAMMASxBETAS with 1..256 each, e.g. 16x16; got '{grid}'");

        var edges = RegularGraph(vertices, degree, graphSeed);
        int exact = Enumerable.Range(0, 1 << vertices).Max(a => CircuitLibrary.CutSize(a, edges));
        var text = Write(vertices, edges, exact, gammas, betas, rounds, shots, precision, report);
        if (outPath is null) stdout.Write(text);
        else
        {
            SafeFile.WriteAtomic(outPath, s => { using var w = new StreamWriter(s); w.Write(text); });
            stdout.WriteLine($"wrote {outPath}: {gammas * betas} circuits on {vertices} qubits ({edges.Count} edges, exact MaxCut {exact}), {gammas + 2} aggregation tasks");
        }
        return ExitCodes.Ok;
    }

    /// <summary>A random <paramref name="degree"/>-regular simple graph (configuration model, retried until simple).</summary>
    internal static List<(int U, int V)> RegularGraph(int n, int degree, int seed)
    {
        var rng = new Random(seed);
        for (int attempt = 0; attempt < 10_000; attempt++)
        {
            var stubs = Enumerable.Range(0, n).SelectMany(v => Enumerable.Repeat(v, degree)).OrderBy(_ => rng.Next()).ToArray();
            var set = new HashSet<(int, int)>();
            bool ok = true;
            for (int i = 0; i < stubs.Length && ok; i += 2)
            {
                int u = Math.Min(stubs[i], stubs[i + 1]), v = Math.Max(stubs[i], stubs[i + 1]);
                ok = u != v && set.Add((u, v));
            }
            if (ok) return set.OrderBy(e => e).ToList();
        }
        throw new UsageException($"could not draw a simple {degree}-regular graph on {n} vertices; try another --graph-seed");
    }

    private static string Write(int n, List<(int U, int V)> edges, int exact, int gammas, int betas, int rounds, int shots, string precision, string report)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", $"qaoa-maxcut-n{n}-{gammas}x{betas}");
            w.WriteStartObject("defaults");
            w.WriteNumber("timeoutSeconds", 120);
            w.WriteEndObject();
            w.WriteStartArray("tasks");
            for (int g = 0; g < gammas; g++)
            {
                double gamma = Math.PI * (g + 1) / (gammas + 1);
                for (int b = 0; b < betas; b++)
                {
                    double beta = Math.PI / 2 * (b + 1) / (betas + 1);
                    var circuit = CircuitLibrary.QaoaMaxCut(n, edges, Enumerable.Repeat(gamma, rounds).ToArray(), Enumerable.Repeat(beta, rounds).ToArray());
                    w.WriteStartObject();
                    w.WriteString("id", Id(g, b));
                    w.WriteString("handler", "quantum");
                    w.WriteStartObject("args");
                    w.WriteString("qasm", circuit.ToQasm());
                    w.WriteNumber("shots", shots);
                    w.WriteString("precision", precision);
                    w.WriteStartObject("objective");
                    WriteEdges(w, "maxcut", edges);
                    w.WriteEndObject();
                    w.WriteStartObject("meta");
                    w.WriteNumber("gamma", Math.Round(gamma, 6));
                    w.WriteNumber("beta", Math.Round(beta, 6));
                    w.WriteNumber("rounds", rounds);
                    w.WriteEndObject();
                    w.WriteEndObject();
                    w.WriteStartArray("tags");
                    w.WriteStringValue("qaoa");
                    w.WriteEndArray();
                    w.WriteEndObject();
                }
                w.WriteStartObject();
                w.WriteString("id", $"best_g{g:00}");
                w.WriteString("handler", "best");
                w.WriteStartObject("args");
                w.WriteString("metric", "objective");
                w.WriteEndObject();
                WriteDataDeps(w, Enumerable.Range(0, betas).Select(b => Id(g, b)));
                w.WriteEndObject();
            }
            w.WriteStartObject();
            w.WriteString("id", "best");
            w.WriteString("handler", "best");
            w.WriteStartObject("args");
            w.WriteString("metric", "objective");
            w.WriteEndObject();
            WriteDataDeps(w, Enumerable.Range(0, gammas).Select(g => $"best_g{g:00}"));
            w.WriteEndObject();

            w.WriteStartObject();
            w.WriteString("id", "report");
            w.WriteString("handler", "report");
            w.WriteStartObject("args");
            w.WriteString("path", report);
            w.WriteString("title", $"QAOA MaxCut sweep: {n} vertices, {edges.Count} edges, {gammas}x{betas} grid, p={rounds}");
            w.WriteStartObject("meta");
            w.WriteNumber("vertices", n);
            WriteEdges(w, "edges", edges);
            w.WriteNumber("exact_maxcut", exact);
            w.WriteNumber("circuits", gammas * betas);
            w.WriteNumber("shots", shots);
            w.WriteEndObject();
            w.WriteEndObject();
            w.WriteString("layer", "local");
            WriteDataDeps(w, ["best"]);
            w.WriteEndObject();
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray()) + "\n";

        static string Id(int g, int b) => string.Create(CultureInfo.InvariantCulture, $"q_g{g:00}_b{b:00}");
    }

    private static void WriteEdges(Utf8JsonWriter w, string name, List<(int U, int V)> edges)
    {
        w.WriteStartArray(name);
        foreach (var (u, v) in edges)
        {
            w.WriteStartArray();
            w.WriteNumberValue(u);
            w.WriteNumberValue(v);
            w.WriteEndArray();
        }
        w.WriteEndArray();
    }

    private static void WriteDataDeps(Utf8JsonWriter w, IEnumerable<string> ids)
    {
        w.WriteStartArray("dependsOn");
        foreach (var id in ids)
        {
            w.WriteStartObject();
            w.WriteString("id", id);
            w.WriteString("type", "data");
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}
