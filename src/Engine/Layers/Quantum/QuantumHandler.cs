using System.Text;
using TaskMesh.Engine.Handlers;
using TaskMesh.QuantumSim;

namespace TaskMesh.Engine.Layers.Quantum;

/// <summary>
/// The <c>quantum</c> handler: simulates a circuit and outputs a <see cref="QuantumOutput"/>.
/// Prefers the <c>quantum</c> layer, which runs it with memory admission on its own threads; on
/// any other layer it runs in place.
/// </summary>
public static class QuantumHandler
{
    /// <summary>The handler's name in graphs.</summary>
    public const string Name = "quantum";

    /// <summary>Registers the handler with the layer defaults of <paramref name="options"/>.</summary>
    public static void Register(HandlerRegistry registry, QuantumOptions options)
    {
        ArgumentNullException.ThrowIfNull(registry);
        registry.Register(new HandlerDescriptor(Name, (ctx, _, ct) =>
        {
            try { return new ValueTask<object?>(Execute(ctx, options, options.MemoryCapBytes, 0, ct)); }
            catch (AdmissionException e) { throw new TaskFailedException($"not admitted: {e.Message}"); }
        })
        {
            ValidateWithContext = (a, c) => QuantumArgs.Parse(a, c, options.CircuitsOutsideGraphFolder),
            PreferredLayer = QuantumLayer.LayerName,
            // For the critical path: about 0.3 ms of set-up and summary, then a sweep of 2^n amplitudes
            // per gate at ~0.4 ns (single) / 0.8 ns (double) each on this machine kind, about halved by fusion.
            EstimateMicros = static p => p is QuantumArgs a
                ? 300 + a.Circuit.GateCount * Math.Pow(2, a.Circuit.Qubits) * (a.Precision == Precision.Single ? 0.4e-3 : 0.8e-3) / 2
                : 0,
        });
    }

    /// <summary>The variant a drifting single-precision circuit escalates to.</summary>
    public const string DoubleVariant = "double";

    /// <summary>
    /// Runs the task's circuit. A single-precision result whose norm drifted past the tolerance asks
    /// the engine (through <see cref="TaskContext.RequestEscalation"/>) for a double-precision
    /// attempt — when that attempt would be admitted; otherwise the result carries a warning.
    /// </summary>
    internal static QuantumOutput Execute(TaskContext ctx, QuantumOptions options, long capBytes, long reservedBytes, CancellationToken ct)
    {
        var args = ctx.ParsedArgs<QuantumArgs>() ?? throw new TaskFailedException("quantum task was not validated");
        var precision = ctx.EscalatedTo == DoubleVariant ? Precision.Double : args.Precision;
        // Admission: fail the task with the reason rather than risk an out-of-memory kill.
        MemoryAdmission.Check(args.Circuit.Qubits, precision, capBytes, reservedBytes);
        var result = Simulator.Run(args.Circuit, new SimulatorOptions
        {
            Precision = precision,
            Fusion = args.Fusion ?? options.DefaultFusion,
            Threads = options.ThreadsPerCircuit,
            Shots = args.Shots,
            Seed = args.Seed ?? StableSeed(ctx.Id),
            MemoryCapBytes = capBytes,
            NormTolerance = options.NormTolerance,
            EscalateOnDrift = false,
            Noise = args.Noise,
            Observables = args.Observables,
            MarginalQubits = args.Marginal,
            TopK = Math.Max(args.Top, 1),
            ListAllSmallStates = false,
        }, ct);
        string? warning = null;
        if (precision == Precision.Single && result.Confidence.NormDrift > options.NormTolerance)
        {
            string reason = $"norm drift {result.Confidence.NormDrift:E2} exceeds the tolerance {options.NormTolerance:E2}";
            try
            {
                // This attempt's single-precision state is freed before the next one starts.
                MemoryAdmission.Check(args.Circuit.Qubits, Precision.Double, capBytes, reservedBytes);
                ctx.RequestEscalation("low_confidence", "single", DoubleVariant, reason);
            }
            catch (AdmissionException e)
            {
                warning = $"{reason}, but a double-precision re-run ({MemoryAdmission.FormatBytes(StateVector.RequiredBytes(args.Circuit.Qubits, Precision.Double))}) would not be admitted: {e.Message}";
            }
        }
        return new QuantumOutput(result, args, warning);
    }

    /// <summary>FNV-1a of the task id: the same task samples the same way in every run unless a seed is given.</summary>
    internal static int StableSeed(string id)
    {
        uint h = 2166136261;
        foreach (byte b in Encoding.UTF8.GetBytes(id)) h = (h ^ b) * 16777619;
        return (int)(h & int.MaxValue);
    }
}
