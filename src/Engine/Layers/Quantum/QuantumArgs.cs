using System.Text.Json;
using TaskMesh.Engine.Handlers;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;
using TaskMesh.QuantumSim.Noise;
using TaskMesh.QuantumSim.Qasm;

namespace TaskMesh.Engine.Layers.Quantum;

/// <summary>The validated args of a <c>quantum</c> task; the circuit is parsed once, at validation.</summary>
public sealed class QuantumArgs : IReadsFiles
{
    /// <summary>Largest QASM file a task may name.</summary>
    public const long MaxQasmBytes = 16 << 20;

    /// <summary>Default number of probabilities a task outputs.</summary>
    public const int DefaultTop = 16;

    internal QuantumArgs(Circuit circuit, string source)
    {
        Circuit = circuit;
        Source = source;
    }

    /// <summary>The parsed circuit.</summary>
    public Circuit Circuit { get; }

    /// <summary>The QASM file's full path, or <c>inline</c>.</summary>
    public string Source { get; }

    /// <summary>The circuit file as it was read (none for inline QASM): part of the cache key and of resume's check.</summary>
    public IReadOnlyList<FileDigest> Files { get; private init; } = [];

    /// <summary>Shots to sample (0 = exact probabilities only).</summary>
    public int Shots { get; init; }

    /// <summary>Sampling and noise seed; null derives one from the task id so runs repeat.</summary>
    public int? Seed { get; init; }

    /// <summary>Requested precision (double when the task says nothing).</summary>
    public Precision Precision { get; init; } = Precision.Double;

    /// <summary>True when the task set <c>precision</c> itself (a layer's precision applies otherwise).</summary>
    public bool PrecisionGiven { get; init; }

    /// <summary>Largest fused gate, or null for the layer's default.</summary>
    public int? Fusion { get; init; }

    /// <summary>Noise model, or null.</summary>
    public NoiseModel? Noise { get; init; }

    /// <summary>Observables to evaluate (including those an objective needs).</summary>
    public IReadOnlyList<PauliString> Observables { get; init; } = [];

    /// <summary>How many of the most probable outcomes to output.</summary>
    public int Top { get; init; } = DefaultTop;

    /// <summary>MaxCut edges when the objective is the expected cut, else null.</summary>
    public IReadOnlyList<(int U, int V)>? MaxCutEdges { get; init; }

    /// <summary>Qubits of an exact marginal distribution to output, or null.</summary>
    public IReadOnlyList<int>? Marginal { get; init; }

    /// <summary>Caller metadata passed through to the output (e.g. the sweep parameters).</summary>
    public JsonElement Meta { get; init; }

    /// <summary>Parses and checks args; relative QASM paths resolve against the graph's directory.</summary>
    public static (object? Parsed, IReadOnlyList<string> Problems) Parse(JsonElement args, ValidationContext context)
        => Parse(args, context, allowOutsideGraphFolder: false);

    /// <summary>Parses and checks args; circuit files must stay inside the graph's folder unless <paramref name="allowOutsideGraphFolder"/>.</summary>
    public static (object? Parsed, IReadOnlyList<string> Problems) Parse(JsonElement args, ValidationContext context, bool allowOutsideGraphFolder)
    {
        var problems = new List<string>();
        if (args.ValueKind != JsonValueKind.Object)
        {
            problems.Add("args must be an object with at least 'qasm'");
            return (null, problems);
        }
        var known = new HashSet<string>(StringComparer.Ordinal) { "qasm", "shots", "seed", "precision", "fusion", "noise", "observables", "top", "objective", "meta", "marginal" };
        foreach (var p in args.EnumerateObject())
            if (!known.Contains(p.Name)) problems.Add($"unknown argument '{p.Name}' (expected {string.Join(", ", known)})");

        Circuit? circuit = null;
        string source = "inline";
        FileDigest? file = null;
        if (!args.TryGetProperty("qasm", out var q) || q.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(q.GetString()))
            problems.Add("missing argument 'qasm' (OpenQASM 2.0 text, or a .qasm file path relative to the graph file)");
        else
        {
            string text = q.GetString()!;
            bool inline = text.Contains(';') || text.Contains('\n');
            try
            {
                if (inline) circuit = QasmParser.Parse(text, "inline qasm", context.CancellationToken);
                else
                {
                    // A circuit file stays inside the graph's folder (links resolved), so a graph
                    // cannot make the engine read, and quote in its errors, any file it can reach.
                    string? problem = null;
                    string? full = allowOutsideGraphFolder
                        ? Path.GetFullPath(Path.Combine(context.BaseDirectory, text))
                        : IO.SafeFile.ResolveInside(context.BaseDirectory, text, out problem);
                    if (full is null) problems.Add($"circuit file {problem} (set quantum.circuits_outside_graph_folder = true to allow it)");
                    else
                    {
                        source = full;
                        var bytes = IO.SafeFile.ReadInput(full, MaxQasmBytes, "circuit file", context.CancellationToken);
                        file = FileDigest.Of(full, bytes);
                        circuit = QasmParser.Parse(System.Text.Encoding.UTF8.GetString(bytes), text, context.CancellationToken);
                    }
                }
            }
            catch (QasmException e) { problems.Add(e.Message); }
            catch (IO.UnsafeFileException e) { problems.Add(e.Message); }
        }

        int shots = (int)Integer(args, "shots", 0, SimulatorOptions.MaxShots, 0, problems);
        int? seed = args.TryGetProperty("seed", out _) ? (int)Integer(args, "seed", 0, int.MaxValue, 0, problems) : null;
        int? fusion = args.TryGetProperty("fusion", out _) ? (int)Integer(args, "fusion", 0, SimulatorOptions.MaxFusion, 0, problems) : null;
        int top = (int)Integer(args, "top", 1, SimulatorOptions.DefaultTopK, DefaultTop, problems);

        var precision = Precision.Double;
        if (args.TryGetProperty("precision", out var pr) && (pr.ValueKind != JsonValueKind.String || !PrecisionNames.TryParse(pr.GetString(), out precision)))
            problems.Add("argument 'precision' must be \"single\" or \"double\"");

        NoiseModel? noise = null;
        if (args.TryGetProperty("noise", out var nz))
        {
            if (nz.ValueKind != JsonValueKind.String) problems.Add("argument 'noise' must be a string such as \"depolarizing=0.01,trajectories=200\"");
            else
            {
                try { noise = NoiseModel.Parse(nz.GetString()!); }
                catch (FormatException e) { problems.Add(e.Message); }
            }
        }

        var observables = new List<PauliString>();
        if (args.TryGetProperty("observables", out var obs))
        {
            if (obs.ValueKind != JsonValueKind.Array || obs.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
                problems.Add("argument 'observables' must be an array of Pauli strings such as [\"Z0 Z1\", \"X3\"]");
            else
                foreach (var e in obs.EnumerateArray())
                {
                    try { observables.Add(PauliString.Parse(e.GetString()!)); }
                    catch (FormatException ex) { problems.Add(ex.Message); }
                }
        }

        List<(int, int)>? edges = null;
        if (args.TryGetProperty("objective", out var objective))
        {
            if (objective.ValueKind != JsonValueKind.Object || !objective.TryGetProperty("maxcut", out var mc) || mc.ValueKind != JsonValueKind.Array)
                problems.Add("argument 'objective' must be {\"maxcut\": [[u, v], ...]}");
            else
            {
                edges = new();
                foreach (var e in mc.EnumerateArray())
                {
                    if (e.ValueKind != JsonValueKind.Array || e.GetArrayLength() != 2 || e.EnumerateArray().Any(x => x.ValueKind != JsonValueKind.Number || !x.TryGetInt32(out int v) || v < 0))
                    {
                        problems.Add("objective.maxcut edges must be pairs of vertex indices, e.g. [0, 1]");
                        break;
                    }
                    int u = e[0].GetInt32(), v = e[1].GetInt32();
                    if (u == v) { problems.Add($"objective.maxcut edge [{u}, {v}] is a self-loop"); break; }
                    edges.Add((u, v));
                }
                foreach (var (u, v) in edges)
                    if (!observables.Any(o => o.Text == ZZ(u, v))) observables.Add(PauliString.Parse(ZZ(u, v)));
            }
        }

        int[]? marginal = null;
        if (args.TryGetProperty("marginal", out var mg))
        {
            if (mg.ValueKind != JsonValueKind.Array || mg.GetArrayLength() is 0 or > SimulatorOptions.MaxMarginalQubits
                || mg.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.Number || !e.TryGetInt32(out int q) || q < 0))
                problems.Add($"argument 'marginal' must be an array of 1..{SimulatorOptions.MaxMarginalQubits} qubit indices, e.g. [0, 3]");
            else
            {
                marginal = mg.EnumerateArray().Select(e => e.GetInt32()).ToArray();
                if (marginal.Distinct().Count() != marginal.Length) problems.Add("argument 'marginal' names a qubit twice");
            }
        }

        if (circuit is not null)
        {
            if (marginal?.FirstOrDefault(q => q >= circuit.Qubits, -1) is int badQubit and >= 0)
                problems.Add($"marginal qubit {badQubit} is out of range: the circuit has {circuit.Qubits} qubit(s)");
            foreach (var o in observables)
                if (o.MaxQubit >= circuit.Qubits) problems.Add($"observable '{o}' names qubit {o.MaxQubit} but the circuit has {circuit.Qubits} qubit(s)");
            if (noise is { HasGateNoise: true } && circuit.Qubits > SimulatorOptions.MaxNoisyQubits)
                problems.Add($"noisy circuits may have at most {SimulatorOptions.MaxNoisyQubits} qubits; this one has {circuit.Qubits}");
        }
        if (problems.Count > 0 || circuit is null) return (null, problems);
        return (new QuantumArgs(circuit, source)
        {
            Files = file is null ? [] : [file],
            Shots = shots,
            Seed = seed,
            Precision = precision,
            PrecisionGiven = args.TryGetProperty("precision", out _),
            Fusion = fusion,
            Noise = noise,
            Observables = observables,
            Top = top,
            MaxCutEdges = edges,
            Meta = args.TryGetProperty("meta", out var meta) ? meta.Clone() : default,
            Marginal = marginal,
        }, problems);
    }

    internal static string ZZ(int u, int v) => $"Z{Math.Min(u, v)} Z{Math.Max(u, v)}";

    private static long Integer(JsonElement args, string name, long min, long max, long fallback, List<string> problems)
    {
        if (!args.TryGetProperty(name, out var v)) return fallback;
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
        {
            problems.Add($"argument '{name}' must be an integer");
            return fallback;
        }
        if (x < min || x > max)
        {
            problems.Add($"argument '{name}' is {x}; it must be between {min} and {max}");
            return fallback;
        }
        return x;
    }
}
