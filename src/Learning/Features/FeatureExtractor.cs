using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Circuits;

namespace TaskMesh.Learning.Features;

/// <summary>
/// The features of a task, for training and prediction alike: what the task is (its handler's
/// estimate, numeric arguments, for circuits their size and shape), where it sits in its graph
/// (level, fan-in, fan-out, slack on the critical path) and, at decision time, the state of a
/// candidate layer (queue depth, free slots). Values are deterministic functions of the graph and
/// the layer state; sizes are log-scaled so trees split on orders of magnitude. The handler itself
/// is not a number: models are kept per layer and take the handler as a category.
/// </summary>
public sealed class FeatureExtractor
{
    /// <summary>Feature names, in vector order.</summary>
    public static readonly IReadOnlyList<string> Names =
    [
        "log_estimate_us", "log_micros", "log_millis", "log_bytes", "log_size",
        "qubits", "gates", "two_qubit_gates", "depth", "log_shots", "double_precision", "noise",
        "level", "fan_in", "fan_out", "slack_ms",
        "queue_depth", "free_slots",
    ];

    /// <summary>Length of a feature vector.</summary>
    public static int Count => Names.Count;

    /// <summary>Index of the first layer feature (the others do not depend on the layer).</summary>
    public const int LayerFeatures = 16;

    private readonly PreparedGraph _graph;
    private readonly Lazy<GraphAnalysis> _shape;

    public FeatureExtractor(PreparedGraph graph)
    {
        _graph = graph ?? throw new ArgumentNullException(nameof(graph));
        // Level and slack (how much later than its earliest start a task could start without
        // lengthening the critical path, by the handlers' estimates and the edges' transfer costs):
        // the graph's own analysis, on first use.
        _shape = new Lazy<GraphAnalysis>(() => GraphAnalysis.Analyze(_graph.Graph, EstimateMicros), LazyThreadSafetyMode.ExecutionAndPublication);
    }

    /// <summary>The graph the features describe.</summary>
    public PreparedGraph Graph => _graph;

    /// <summary>The task's handler (the category models split on).</summary>
    public string HandlerOf(int task) => _graph.Graph.HandlerOfTask(task);

    /// <summary>The features of <paramref name="task"/> on a layer whose state is <paramref name="layer"/> (null: zeros).</summary>
    public float[] Extract(int task, LayerState? layer = null)
    {
        var v = new float[Count];
        Extract(task, v, layer);
        return v;
    }

    /// <summary>Writes the features of <paramref name="task"/> into <paramref name="into"/> (at least <see cref="Count"/> long).</summary>
    public void Extract(int task, Span<float> into, LayerState? layer = null)
    {
        ExtractTask(task, into);
        var shape = _shape.Value;
        var g = _graph.Graph;
        into[12] = shape.Levels[task];
        into[13] = g.PredecessorsOf(task).Length;
        into[14] = g.SuccessorsOf(task).Length;
        into[15] = (float)(shape.SlackMicros[task] / 1000);
        into[16] = layer?.QueueDepth ?? 0;
        into[17] = layer?.FreeSlots ?? 0;
    }

    /// <summary>The task's own features (indices 0–11: what it is, not where it sits), which need no graph analysis.</summary>
    public void ExtractTask(int task, Span<float> into)
    {
        into[..Count].Clear();
        into[0] = Log(EstimateMicros(task));
        if (_graph.Graph.Spec(task)?.Args is { ValueKind: JsonValueKind.Object } args)
        {
            // One pass over the arguments (a task's are few; looking each name up would scan them six times).
            foreach (var p in args.EnumerateObject())
            {
                if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetDouble(out double x)) continue;
                if (p.NameEquals("micros"u8)) into[1] = Log(x);
                else if (p.NameEquals("millis"u8)) into[2] = Log(x);
                else if (p.NameEquals("bytes"u8)) into[3] = Log(x);
                else if (p.NameEquals("size"u8)) into[4] = Log(x);
                // A task that is not a circuit may still say how large one it stands for.
                else if (p.NameEquals("qubits"u8)) into[5] = (float)x;
                else if (p.NameEquals("gates"u8)) into[6] = (float)x;
            }
        }
        if (_graph.ParsedArgsOf(task) is QuantumArgs q)
        {
            var shape = CircuitShape.Of(q.Circuit);
            into[5] = q.Circuit.Qubits;
            into[6] = shape.Gates;
            into[7] = shape.TwoQubitGates;
            into[8] = shape.Depth;
            into[9] = Log(q.Shots);
            into[10] = q.Precision == Precision.Double ? 1 : 0;
            into[11] = q.Noise is null ? 0 : 1;
        }
    }

    /// <summary>The handler's estimate of the task's duration in µs (0 when it gives none).</summary>
    public double EstimateMicros(int task)
    {
        var h = _graph.HandlerOf(task);
        var parsed = _graph.ParsedArgsOf(task);
        // A handler with a validator estimates from its parsed arguments; one without takes none.
        if (h.EstimateMicros is null || parsed is null && (h.Validate is not null || h.ValidateWithContext is not null)) return 0;
        double us = h.EstimateMicros(parsed!);
        return double.IsFinite(us) && us > 0 ? us : 0;
    }

    /// <summary>
    /// The task's complexity, 0–100: the larger of a time score, 12.5 × log10(1 + estimated µs)
    /// (1 µs → 3.8, 1 ms → 37.5, 1 s → 75, 100 s or more → 100), and, for circuits, a memory
    /// score, 100 × (qubits − 10) / 22 (10 qubits or fewer → 0, 32 → 100). Needs no graph analysis.
    /// </summary>
    public double Complexity(int task)
    {
        double time = 12.5 * Math.Log10(1 + EstimateMicros(task));
        double memory = _graph.ParsedArgsOf(task) is QuantumArgs q ? 100.0 * (q.Circuit.Qubits - 10) / 22 : 0;
        return Math.Round(Math.Clamp(Math.Max(time, memory), 0, 100), 1);
    }

    private static float Log(double x) => x > 0 && double.IsFinite(x) ? (float)Math.Log10(1 + x) : 0;


}

/// <summary>A candidate layer's state when a decision is made.</summary>
/// <param name="QueueDepth">Tasks waiting for its slots.</param>
/// <param name="FreeSlots">Slots free now.</param>
public readonly record struct LayerState(int QueueDepth, int FreeSlots)
{
    /// <summary>The state of <paramref name="layer"/> now.</summary>
    public static LayerState Of(ExecutionLayer layer) => new(layer.QueueDepth, Math.Max(0, layer.Capacity - layer.Running));
}

/// <summary>Gate count, two-qubit gates and depth of a circuit (measurements, resets and barriers not counted as gates).</summary>
internal readonly record struct CircuitShape(int Gates, int TwoQubitGates, int Depth)
{
    public static CircuitShape Of(Circuit c)
    {
        var depthOf = new int[Math.Max(1, c.Qubits)];
        int gates = 0, two = 0, depth = 0;
        foreach (var ins in c.Instructions)
        {
            if (ins.Kind != InstructionKind.Gate) continue;
            gates++;
            if (ins.Qubits.Length >= 2) two++;
            int d = 0;
            foreach (int q in ins.Qubits) d = Math.Max(d, depthOf[q]);
            d++;
            foreach (int q in ins.Qubits) depthOf[q] = d;
            depth = Math.Max(depth, d);
        }
        return new CircuitShape(gates, two, depth);
    }
}
