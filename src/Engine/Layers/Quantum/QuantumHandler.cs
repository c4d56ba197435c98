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
            // The precision it would run in there: a single-precision result is not a double-precision layer's.
            CacheVariant = static (args, layer) => args is QuantumArgs q ? PrecisionOf(q, null, (layer as QuantumLayer)?.Precision).ToString() : null,
            // Deterministic: a task without a seed samples with a seed derived from its id.
            Cacheable = true,
            EstimateMicros = static p => p is QuantumArgs a ? EstimateMicros(a) : 0,
        });
    }

    /// <summary>
    /// Predicted wall time of one task in microseconds, for the critical path: a fit of measured
    /// task durations on the quantum layer (set-up, fusion, sweeps, the probability pass, sampling,
    /// expectations and the output), n = 8–20 qubits, 36–1920 gates, 0 or 2000 shots, 0 or 12
    /// observables, both precisions: measured / estimated has a median of 1.1 and stays within 0.7–1.5 for most shapes, 3.2 at
    /// worst (deep circuits on few qubits). Calibrated with <c>bench -- quantum-calibration</c>.
    /// </summary>
    public static double EstimateMicros(QuantumArgs a)
    {
        ArgumentNullException.ThrowIfNull(a);
        double amplitudes = Math.Pow(2, a.Circuit.Qubits);
        double bytes = a.Precision == Precision.Single ? 1 : 2;   // the state's size relative to single precision
        int gates = a.Circuit.GateCount;
        int trajectories = a.Noise is { HasGateNoise: true } noise ? Math.Max(1, noise.Trajectories) : 1;
        return 137.5
            + trajectories * (0.69 * gates + 7.46e-3 * amplitudes * bytes + 1.76e-7 * gates * amplitudes * bytes)
            + 0.0615 * a.Shots
            + 4.52e-3 * a.Observables.Count * amplitudes;
    }

    /// <summary>The variant a drifting single-precision circuit escalates to.</summary>
    public const string DoubleVariant = "double";

    /// <summary>
    /// Runs the task's circuit. A single-precision result whose norm drifted past the tolerance asks
    /// the engine (through <see cref="TaskContext.RequestEscalation"/>) for a double-precision
    /// attempt — when that attempt would be admitted; otherwise the result carries a warning.
    /// </summary>
    /// <summary>
    /// The precision a circuit runs at: double after an escalation to the double variant or on a
    /// double-precision layer; on a single-precision layer, what the task asks for (single when it
    /// says nothing); on a layer without its own precision, what the task asks for (double by default).
    /// </summary>
    internal static Precision PrecisionOf(QuantumArgs args, string? escalatedTo, Precision? layerPrecision)
        => escalatedTo == DoubleVariant || layerPrecision == Precision.Double ? Precision.Double
            : layerPrecision == Precision.Single && !args.PrecisionGiven ? Precision.Single
            : args.Precision;

    internal static QuantumOutput Execute(TaskContext ctx, QuantumOptions options, long capBytes, long reservedBytes, CancellationToken ct, QuantumLayer? layer = null)
    {
        var args = ctx.ParsedArgs<QuantumArgs>() ?? throw new TaskFailedException("quantum task was not validated");
        var precision = PrecisionOf(args, ctx.EscalatedTo, layer?.Precision);
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
        // The score (norm drift and, with shots, the sampling error) is the attempt's confidence:
        // escalation policies and the run store's audit and daily figures see it.
        ctx.ReportConfidence(Math.Clamp(result.Confidence.Score, 0, 1));
        string? warning = null;
        if (precision == Precision.Single && result.Confidence.NormDrift > options.NormTolerance)
        {
            string reason = $"norm drift {result.Confidence.NormDrift:E2} exceeds the tolerance {options.NormTolerance:E2}";
            try
            {
                // This attempt's single-precision state is freed before the next one starts.
                MemoryAdmission.Check(args.Circuit.Qubits, Precision.Double, capBytes, reservedBytes);
                // To the double-precision layer above this one when there is one (an ordinary
                // escalation between layers); else a double-precision variant on this layer.
                if (layer?.EscalatesTo is { } target) ctx.RequestEscalation("low_confidence", layer.Name, target, reason);
                else ctx.RequestEscalation("low_confidence", "single", DoubleVariant, reason);
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
