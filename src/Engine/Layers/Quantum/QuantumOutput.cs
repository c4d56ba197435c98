using System.Text.Json;
using TaskMesh.Engine.Handlers;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;

namespace TaskMesh.Engine.Layers.Quantum;

/// <summary>
/// What a <c>quantum</c> task hands along its data edges: the top outcomes, counts, expectation
/// values, the confidence and, for a MaxCut objective, the expected and best sampled cut.
/// </summary>
public sealed class QuantumOutput : ITaskOutput
{
    internal QuantumOutput(SimulationResult result, QuantumArgs args, string? warning = null)
    {
        Result = result;
        Warnings = warning is null ? result.Warnings : [.. result.Warnings, warning];
        Meta = args.Meta;
        Top = result.Probabilities.Take(args.Top).Select(e => (result.Bits(e.Index), e.Probability)).ToArray();
        if (args.MaxCutEdges is { } edges)
        {
            // Expected cut = sum over edges of (1 - <Z_u Z_v>) / 2.
            var zz = result.Expectations.ToDictionary(e => e.Observable, e => e.Value, StringComparer.Ordinal);
            Objective = edges.Sum(e => (1 - zz[QuantumArgs.ZZ(e.U, e.V)]) / 2);
            var pool = result.Counts is { Count: > 0 } counts ? counts.Keys : result.Probabilities.Select(p => p.Index);
            long best = pool.OrderByDescending(i => CircuitLibrary.CutSize(i, edges)).ThenBy(i => i).First();
            BestBitstring = result.Bits(best);
            BestCut = CircuitLibrary.CutSize(best, edges);
        }
    }

    /// <summary>Warnings of the circuit reader and of the run (e.g. a drift whose re-run was not admitted).</summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>The full simulation result.</summary>
    public SimulationResult Result { get; }

    /// <inheritdoc />
    public JsonElement Meta { get; }

    /// <summary>The most probable outcomes (bitstring q[n-1]…q[0], probability).</summary>
    public IReadOnlyList<(string Bits, double Probability)> Top { get; }

    /// <summary>Expected MaxCut value, when the task had a MaxCut objective.</summary>
    public double? Objective { get; }

    /// <summary>The best cut among sampled outcomes (or listed ones without shots).</summary>
    public int? BestCut { get; }

    /// <summary>The assignment that reached <see cref="BestCut"/>.</summary>
    public string? BestBitstring { get; }

    /// <inheritdoc />
    public bool TryGetMetric(string name, out double value)
    {
        switch (name)
        {
            case "objective" when Objective is double o: value = o; return true;
            case "best_cut" when BestCut is int b: value = b; return true;
            case "confidence": value = Result.Confidence.Score; return true;
            case "norm": value = Result.Norm; return true;
            case "elapsed_ms": value = Result.ElapsedMs; return true;
        }
        foreach (var e in Result.Expectations)
            if (e.Observable == name) { value = e.Value; return true; }
        value = 0;
        return false;
    }

    /// <inheritdoc />
    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteNumber("qubits", Result.Qubits);
        w.WriteNumber("gates", Result.Gates);
        w.WriteString("precision", Result.Precision.ToName());
        w.WriteNumber("elapsed_ms", Math.Round(Result.ElapsedMs, 3));
        w.WriteNumber("norm", Result.Norm);
        w.WriteNumber("shots", Result.Shots);
        if (Objective is double o) w.WriteNumber("objective", o);
        if (BestCut is int bc)
        {
            w.WriteNumber("best_cut", bc);
            w.WriteString("best_bitstring", BestBitstring);
        }
        w.WriteStartObject("top");
        foreach (var (bits, p) in Top) w.WriteNumber(bits, p);
        w.WriteEndObject();
        w.WriteStartObject("expectations");
        foreach (var e in Result.Expectations) w.WriteNumber(e.Observable, e.Value);
        w.WriteEndObject();
        if (Result.Marginal is { } m && Result.MarginalQubits is { } mq)
        {
            w.WriteStartObject("marginal");
            for (int i = 0; i < m.Count; i++)
                if (m[i] > Simulator.ZeroProbability) w.WriteNumber(SimulationResult.FormatBits(i, mq.Count), m[i]);
            w.WriteEndObject();
        }
        w.WriteNumber("confidence", Result.Confidence.Score);
        if (Warnings.Count > 0)
        {
            w.WriteStartArray("warnings");
            foreach (var warning in Warnings) w.WriteStringValue(warning);
            w.WriteEndArray();
        }
        if (Meta.ValueKind != JsonValueKind.Undefined)
        {
            w.WritePropertyName("meta");
            Meta.WriteTo(w);
        }
        w.WriteEndObject();
    }
}
