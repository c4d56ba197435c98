using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.IO;
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
    public static Command Create(CliIO io)
    {
        var circuitArg = new Argument<string>("CIRCUIT.qasm") { Description = "An OpenQASM 2.0 file." };
        var shots = CliOptions.Int("--shots", 0, SimulatorOptions.MaxShots, "Samples to draw (0: none).");
        var seed = CliOptions.Int("--seed", 0, int.MaxValue, "Seed of sampling and noise.", "S");
        var precisionOpt = CliOptions.OneOf("--precision", "Amplitude precision (default double).", "single", "double");
        var fusionOpt = CliOptions.Int("--fusion", 0, SimulatorOptions.MaxFusion, $"Largest fused gate, in qubits (default {SimulatorOptions.DefaultFusion}).", "K");
        var noiseOpt = new Option<string?>("--noise") { Description = "Noise model, e.g. depolarizing=0.01,trajectories=200.", HelpName = "SPEC" };
        var observableOpt = new Option<string[]>("--observable") { Description = "A Pauli string to take the expectation of, e.g. \"Z0 Z1\" (repeatable).", HelpName = "PAULI" };
        var topOpt = CliOptions.Int("--top", 1, SimulatorOptions.DefaultTopK, "Outcomes to print (default 16).");
        var jsonOpt = new Option<string?>("--json") { Description = "Write the result (JSON) to this file.", HelpName = "OUT.json" };
        var marginalOpt = new Option<string?>("--marginal") { Description = "Qubits of an exact marginal distribution, e.g. 0,3.", HelpName = "Q,Q" };
        var kernelOpt = CliOptions.OneOf("--kernel", "Kernels (default simd).", "simd", "scalar");
        var capOpt = CliOptions.Int("--memory-cap-mb", 1, int.MaxValue, "Refuse a state vector larger than this.", "MB");
        var exportOpt = new Option<string?>("--export-qasm") { Description = "Write the circuit back as OpenQASM 2.0.", HelpName = "OUT.qasm" };
        var command = new Command("qsim", "Simulate an OpenQASM 2.0 circuit: the most probable outcomes, counts, expectations.")
        {
            circuitArg, shots, seed, precisionOpt, fusionOpt, noiseOpt, observableOpt, topOpt, jsonOpt, marginalOpt, kernelOpt, capOpt, exportOpt,
        };
        command.SetAction(parse => Execute(io, parse.GetValue(circuitArg)!, parse.GetValue(shots) ?? 0, parse.GetValue(seed),
            parse.GetValue(precisionOpt) ?? "double", parse.GetValue(fusionOpt) ?? SimulatorOptions.DefaultFusion, parse.GetValue(noiseOpt),
            parse.GetValue(observableOpt) ?? [], parse.GetValue(topOpt) ?? 16, parse.GetValue(jsonOpt), parse.GetValue(marginalOpt),
            parse.GetValue(kernelOpt) ?? "simd", parse.GetValue(capOpt), parse.GetValue(exportOpt)));
        return command;
    }

    private static int Execute(CliIO io, string path, int shots, int? seed, string precisionText, int fusion, string? noiseText,
        string[] observableTexts, int top, string? jsonPath, string? marginalText, string kernel, int? capMb, string? exportPath)
    {
        var (stdout, stderr, ct) = (io.Out, io.Error, io.Token);
        PrecisionNames.TryParse(precisionText, out var precision);
        CliOptions.CheckOutput("--json", jsonPath, path);
        CliOptions.CheckOutput("--export-qasm", exportPath, path);

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
            var bytes = SafeFile.ReadInput(path, QasmParser.MaxSourceBytes, "circuit file", ct);
            circuit = QasmParser.Parse(System.Text.Encoding.UTF8.GetString(bytes), path, ct);
        }
        catch (QasmException e)
        {
            stderr.WriteLine(e.Message);
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

        // A signal that came while the last, uninterruptible steps ran (the probability pass) still
        // stops the command before it prints or writes anything.
        ct.ThrowIfCancellationRequested();
        Print(result, top, stdout);
        if (exportPath is not null)
        {
            try
            {
                var qasm = circuit.ToQasm();
                SafeFile.WriteAtomic(exportPath, s => { using var w = new StreamWriter(s); w.Write(qasm); });
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
            SafeFile.WriteAtomic(jsonPath, s =>
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
