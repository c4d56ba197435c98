using System.Globalization;
using System.Text.Json;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Noise;
using TaskMesh.QuantumSim.Qasm;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh qsim CIRCUIT.qasm [--shots N] [--seed S] [--precision single|double] [--fusion K]
/// [--noise SPEC] [--observable "Z0 Z1"]... [--top N] [--json OUT.json]</c>.
/// </summary>
internal static class QsimCommand
{
    public static int Execute(ArgList args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        int shots = args.Int("--shots", 0, SimulatorOptions.MaxShots) ?? 0;
        int? seed = args.Int("--seed", 0, int.MaxValue);
        var precisionText = args.Value("--precision") ?? "double";
        if (!PrecisionNames.TryParse(precisionText, out var precision))
            throw new UsageException($"--precision must be single or double, got '{precisionText}'");
        int fusion = args.Int("--fusion", 0, SimulatorOptions.MaxFusion) ?? SimulatorOptions.DefaultFusion;
        int top = args.Int("--top", 1, SimulatorOptions.DefaultTopK) ?? 16;
        int? capMb = args.Int("--memory-cap-mb", 1, int.MaxValue);
        var kernel = args.Value("--kernel") ?? "simd";
        if (kernel is not ("simd" or "scalar")) throw new UsageException($"--kernel must be simd or scalar, got '{kernel}'");
        var noiseText = args.Value("--noise");
        var observableTexts = args.Values("--observable");
        var marginalText = args.Value("--marginal");
        var jsonPath = args.Value("--json");
        var exportPath = args.Value("--export-qasm");
        var path = args.Positional("circuit file");

        int[]? marginal = null;
        if (marginalText is not null)
        {
            var parts = marginalText.Split(',', StringSplitOptions.TrimEntries);
            marginal = new int[parts.Length];
            for (int i = 0; i < parts.Length; i++)
                if (!int.TryParse(parts[i], NumberStyles.None, CultureInfo.InvariantCulture, out marginal[i]))
                    throw new UsageException($"--marginal takes qubit indices separated by commas, e.g. 0,3; got '{marginalText}'");
        }
        NoiseModel? noise = null;
        var observables = new List<PauliString>();
        try
        {
            if (noiseText is not null) noise = NoiseModel.Parse(noiseText);
            foreach (var o in observableTexts) observables.Add(PauliString.Parse(o));
        }
        catch (FormatException e)
        {
            throw new UsageException(e.Message);
        }

        TaskMesh.QuantumSim.Circuits.Circuit circuit;
        try
        {
            circuit = QasmParser.ParseFile(path);
        }
        catch (QasmException e)
        {
            stderr.WriteLine(e.Message);
            return ExitCodes.BadInput;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            stderr.WriteLine($"{path}: cannot read the circuit: {e.Message}");
            return ExitCodes.BadInput;
        }
        foreach (var w in circuit.Warnings) stderr.WriteLine($"warning: {w}");

        SimulationResult result;
        try
        {
            result = Simulator.Run(circuit, new SimulatorOptions
            {
                Precision = precision,
                Fusion = fusion,
                Shots = shots,
                Seed = seed,
                Noise = noise,
                Observables = observables,
                MarginalQubits = marginal,
                Width = kernel == "scalar" ? SimdWidth.Scalar : SimdWidth.Auto,
                MemoryCapBytes = capMb is int mb ? (long)mb << 20 : MemoryAdmission.NoCap,
            }, ct);
        }
        catch (AdmissionException e)
        {
            stderr.WriteLine($"{path}: refused: {e.Message}");
            return ExitCodes.BadInput;
        }
        catch (ArgumentException e)
        {
            stderr.WriteLine($"{path}: {e.Message}");
            return ExitCodes.BadInput;
        }

        Print(result, top, stdout);
        if (exportPath is not null)
        {
            try
            {
                AtomicFile.WriteAllText(exportPath, circuit.ToQasm());
            }
            catch (NotSupportedException e)
            {
                stderr.WriteLine($"cannot export: {e.Message}");
                return ExitCodes.BadInput;
            }
            stdout.WriteLine($"circuit written to {exportPath}");
        }
        if (jsonPath is not null)
        {
            AtomicFile.Write(jsonPath, s =>
            {
                using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
                result.WriteJson(w);
            });
            stdout.WriteLine($"result written to {jsonPath}");
        }
        return ExitCodes.Ok;
    }

    private static void Print(SimulationResult r, int top, TextWriter o)
    {
        var inv = CultureInfo.InvariantCulture;
        o.WriteLine(string.Create(inv, $"{r.Qubits} qubits, {r.Gates} gates in {r.Sweeps} sweeps (fusion {r.Fusion}), {r.Precision.ToName()} precision, {(r.Kernel == SimdWidth.Scalar ? "scalar" : r.Kernel.ToString())} kernels: {r.ElapsedMs:F1} ms"));
        o.WriteLine(string.Create(inv, $"norm {r.Norm:F12}, {r.NonzeroStates} nonzero states, confidence {r.Confidence.Score:F4} (norm drift {r.Confidence.NormDrift:E2})"));
        if (r.Escalation is { } e) o.WriteLine($"escalated {e.From} -> {e.To} ({e.Trigger}): {e.Reason}");
        if (r.Noise is not null) o.WriteLine($"noise: {r.Noise}");
        int width = Math.Max(r.Qubits, "outcome".Length);
        bool counts = r.Counts is not null;
        o.WriteLine();
        o.WriteLine($"{"outcome".PadRight(width)}  {"probability",12}{(counts ? $"  {"count",10}" : "")}");
        foreach (var (i, p) in r.Probabilities.Take(top))
        {
            string c = counts ? string.Create(inv, $"  {r.Counts!.GetValueOrDefault(i),10}") : "";
            o.WriteLine(string.Create(inv, $"{r.Bits(i).PadRight(width)}  {p,12:F8}{c}"));
        }
        if (r.Probabilities.Count > top) o.WriteLine($"... {r.NonzeroStates - top} more nonzero states");
        if (r.Marginal is { } m && r.MarginalQubits is { } mq)
        {
            o.WriteLine($"marginal over {string.Join(' ', mq.Reverse().Select(q => $"q{q}"))}:");
            for (int i = 0; i < m.Count; i++)
                if (m[i] > Simulator.ZeroProbability) o.WriteLine(string.Create(inv, $"  {SimulationResult.FormatBits(i, mq.Count)}  {m[i],12:F8}"));
        }
        foreach (var x in r.Expectations)
            o.WriteLine(string.Create(inv, $"<{x.Observable}> = {x.Value:F8}{(r.Shots > 0 ? $"  (a {r.Shots}-shot estimate would be within ±{x.HalfWidth95:F4} at 95%)" : "")}"));
    }
}
