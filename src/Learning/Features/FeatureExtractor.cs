using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
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
        var m = MeasuresOf(task);
        into[1] = Log(m.Micros);
        into[2] = Log(m.Millis);
        into[3] = Log(m.Bytes);
        into[4] = Log(m.Size);
        into[5] = (float)m.Qubits;
        into[6] = (float)m.Gates;
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

    /// <summary>
    /// The task's kind: its own features (<see cref="ExtractTask"/>) quantized — sizes and the
    /// estimate to a quarter of a decade, qubits and flags exactly, gate counts and depth to half a
    /// power of two — packed into two words. Tasks of one kind are alike to a router. Made to be
    /// cheap (no feature vector, table logarithms): a router computes it for every task it routes.
    /// </summary>
    public TaskKind KindOf(int task) => KindOf(task, null);

    /// <summary>
    /// The task's kind (<see cref="KindOf(int)"/>) with the numbers its own arguments state: those
    /// <paramref name="schema"/> chooses for its handler, each by its bin of the training range
    /// (<see cref="ArgumentFeature.BinOf"/>) — the only ones its models can tell apart; for a handler
    /// the schema does not know (or without one), every stated number by quarter decades (up to
    /// <see cref="ArgumentFeatures.MaxPerTask"/>). Two tasks that differ only in <c>rows</c> by an
    /// order of magnitude are of different kinds.
    /// </summary>
    public TaskKind KindOf(int task, ArgumentSchema? schema)
    {
        const double QuarterDecades = 1.2041199826559248;   // 4 · log10(2): quarter decades per octave
        var parsed = _graph.ParsedArgsOf(task);
        long low = Pack(Octaves(EstimateMicros(task, parsed), QuarterDecades), 0);
        var m = MeasuresOf(task, parsed);
        low |= Pack(Octaves(m.Micros, QuarterDecades), 1) | Pack(Octaves(m.Millis, QuarterDecades), 2)
             | Pack(Octaves(m.Bytes, QuarterDecades), 3) | Pack(Octaves(m.Size, QuarterDecades), 4);
        double qubits = m.Qubits, gates = m.Gates, two = 0, depth = 0;
        long high = 0;
        if (parsed is QuantumArgs q)
        {
            var shape = CircuitShape.Of(q.Circuit);
            (qubits, gates, two, depth) = (q.Circuit.Qubits, shape.Gates, shape.TwoQubitGates, shape.Depth);
            high |= Pack(Octaves(q.Shots, QuarterDecades), 3) | Pack(q.Precision == Precision.Double ? 1 : 0, 4) | Pack(q.Noise is null ? 0 : 1, 5);
        }
        low |= Pack((int)Math.Clamp(qubits, 0, 1023), 5);
        high |= Pack(Octaves(gates, 2), 0) | Pack(Octaves(two, 2), 1) | Pack(Octaves(depth, 2), 2);
        return new TaskKind(low, high, ArgumentsKind(task, parsed, schema));

        static long Pack(int q, int slot) => (long)Math.Clamp(q, 0, 1023) << (10 * slot);
    }

    /// <summary>
    /// The box of model inputs a task's kind (<see cref="KindOf(int, ArgumentSchema?)"/>) spans: for
    /// each feature of its model input (<see cref="ModelInput"/>, given as <paramref name="input"/>),
    /// the least and greatest value a task of the same kind may have there, into
    /// <paramref name="low"/> and <paramref name="high"/> — the quarter of a decade of a size or an
    /// estimate, the half power of two of a gate count, the bin of a chosen argument's range (a
    /// little wider: the kind's logarithms come from a table); the task's own value where the kind
    /// holds the feature exactly or not at all (its place in the graph, which the router takes from
    /// the first task of a kind).
    /// </summary>
    internal void KindCell(int task, ArgumentSchema? schema, ReadOnlySpan<float> input, Span<float> low, Span<float> high)
    {
        const double QuarterDecades = 1.2041199826559248;
        const double Slack = 0.002;   // the table's logarithms err by under 0.0003 of a decade
        input.CopyTo(low);
        input.CopyTo(high);
        var parsed = _graph.ParsedArgsOf(task);
        var m = MeasuresOf(task, parsed);
        LogCell(0, EstimateMicros(task, parsed), low, high);
        LogCell(1, m.Micros, low, high);
        LogCell(2, m.Millis, low, high);
        LogCell(3, m.Bytes, low, high);
        LogCell(4, m.Size, low, high);
        if (parsed is QuantumArgs q)
        {
            var shape = CircuitShape.Of(q.Circuit);
            HalfOctaveCell(6, shape.Gates, low, high);
            HalfOctaveCell(7, shape.TwoQubitGates, low, high);
            HalfOctaveCell(8, shape.Depth, low, high);
            LogCell(9, q.Shots, low, high);
        }
        else
        {
            // Qubits are kept whole (what a handler states is cut to an integer), gates by half powers of two.
            int qubits = (int)Math.Clamp(m.Qubits, 0, 1023);
            (low[5], high[5]) = (qubits == 0 ? float.NegativeInfinity : qubits, qubits == 1023 ? float.PositiveInfinity : MathF.BitDecrement(qubits + 1));
            HalfOctaveCell(6, m.Gates, low, high);
        }
        var chosen = schema?.Of(HandlerOf(task));
        if (chosen is null) return;
        for (int slot = 0; slot < chosen.Count && LayerFeatures + slot < input.Length; slot++)
        {
            // The bin of the training range (ArgumentFeature.BinOf) the scaled value falls in.
            var f = chosen[slot];
            int at = LayerFeatures + slot;
            double x = input[at], width = (f.Max - f.Min) / ArgumentFeature.KindBins, wide = 1e-6 * (Math.Abs(f.Min) + Math.Abs(f.Max) + 1);
            double a, b;
            if (!(f.Max > f.Min)) (a, b) = x < f.Min ? (double.NegativeInfinity, f.Min) : x > f.Max ? (f.Max, double.PositiveInfinity) : (f.Min, f.Max);
            else
            {
                double bin = Math.Floor((x - f.Min) / (f.Max - f.Min) * ArgumentFeature.KindBins);
                (a, b) = bin < 0 ? (double.NegativeInfinity, f.Min) : bin >= ArgumentFeature.KindBins ? (f.Max, double.PositiveInfinity)
                    : (f.Min + bin * width, f.Min + (bin + 1) * width);
            }
            (low[at], high[at]) = ((float)(a - wide), (float)(b + wide));
        }

        static void LogCell(int at, double x, Span<float> low, Span<float> high)
        {
            // Quarter decades of 1 + x, as the input's log10(1 + x) reads them.
            int k = Math.Clamp(Octaves(x, QuarterDecades), 0, 1023);
            low[at] = k == 0 ? float.NegativeInfinity : (float)((k - 0.5) / 4 - Slack);
            high[at] = k == 1023 ? float.PositiveInfinity : (float)((k + 0.5) / 4 + Slack);
        }

        static void HalfOctaveCell(int at, double x, Span<float> low, Span<float> high)
        {
            // Half powers of two of 1 + x; the input holds x itself.
            int k = Math.Clamp(Octaves(x, 2), 0, 1023);
            low[at] = k == 0 ? float.NegativeInfinity : (float)(Math.Pow(2, (k - 0.5) / 2 - Slack) - 1);
            high[at] = k == 1023 ? float.PositiveInfinity : (float)(Math.Pow(2, (k + 0.5) / 2 + Slack) - 1);
        }
    }

    [ThreadStatic] private static List<KeyValuePair<string, double>>? _stated;

    /// <summary>The numbers the task's own arguments state, by name (<see cref="ArgumentFeatures"/>).</summary>
    public List<KeyValuePair<string, double>> ArgumentFeaturesOf(int task)
    {
        var list = new List<KeyValuePair<string, double>>();
        ArgumentFeatures.Collect(_graph.Graph.Spec(task)?.Args, _graph.ParsedArgsOf(task), list);
        return list;
    }

    /// <summary>The numbers the task's arguments state as the run store keeps them (<see cref="ArgumentFeatures.ToJson"/>); null when none.</summary>
    public string? ArgumentFeaturesJson(int task) => ArgumentFeatures.ToJson(ArgumentFeaturesOf(task));

    /// <summary>The task's whole model input under <paramref name="schema"/>: its <see cref="LayerFeatures"/> fixed features, then its handler's argument slots.</summary>
    public float[] ModelInput(int task, ArgumentSchema schema)
    {
        ArgumentNullException.ThrowIfNull(schema);
        var input = new float[schema.InputLength];
        Span<float> all = stackalloc float[Count];
        Extract(task, all);
        all[..LayerFeatures].CopyTo(input);
        if (schema.Slots > 0)
        {
            var stated = _stated ??= new List<KeyValuePair<string, double>>();
            stated.Clear();
            ArgumentFeatures.Collect(_graph.Graph.Spec(task)?.Args, _graph.ParsedArgsOf(task), stated);
            schema.Fill(HandlerOf(task), stated, input.AsSpan(LayerFeatures));
        }
        return input;
    }

    /// <summary>The stated numbers' part of a task's kind: a hash of each chosen (or, without a choice, each stated) name and the bin of its value.</summary>
    private long ArgumentsKind(int task, object? parsed, ArgumentSchema? schema)
    {
        const double QuarterDecades = 1.2041199826559248;
        var stated = _stated ??= new List<KeyValuePair<string, double>>();
        stated.Clear();
        ArgumentFeatures.Collect(_graph.Graph.Spec(task)?.Args, parsed, stated);
        if (stated.Count == 0) return 0;
        ulong h = 0x9E3779B97F4A7C15UL;
        var chosen = schema?.Of(HandlerOf(task));
        if (chosen is { Count: > 0 })
        {
            // The chosen features in slot order: a name not stated counts as 0, as the model reads it.
            for (int slot = 0; slot < chosen.Count; slot++)
                h = (h ^ (ulong)chosen[slot].BinOf(ArgumentSchema.ValueOf(chosen[slot].Name, stated))) * 0x100000001B3UL;
            return (long)h;
        }
        foreach (var (name, x) in stated)
        {
            h = (h ^ (ulong)(uint)StringComparer.Ordinal.GetHashCode(name)) * 0x100000001B3UL;
            h = (h ^ (ulong)(x < 0 ? 4096 + Octaves(-x, QuarterDecades) : Octaves(x, QuarterDecades))) * 0x100000001B3UL;
        }
        return (long)h;
    }

    /// <summary>The sizes the task states: from its parsed arguments when they say (<see cref="IMeasuredArgs"/>), else read from its JSON arguments.</summary>
    public TaskMeasures MeasuresOf(int task) => MeasuresOf(task, _graph.ParsedArgsOf(task));

    private TaskMeasures MeasuresOf(int task, object? parsed)
    {
        if (parsed is IMeasuredArgs measured) return measured.Measures;
        if (_graph.Graph.Spec(task)?.Args is not { ValueKind: JsonValueKind.Object } args) return default;
        double micros = 0, millis = 0, bytes = 0, size = 0, qubits = 0, gates = 0;
        // One pass over the arguments (a task's are few; looking each name up would scan them six times).
        foreach (var p in args.EnumerateObject())
        {
            if (p.Value.ValueKind != JsonValueKind.Number || !p.Value.TryGetDouble(out double x)) continue;
            if (p.NameEquals("micros"u8)) micros = x;
            else if (p.NameEquals("millis"u8)) millis = x;
            else if (p.NameEquals("bytes"u8)) bytes = x;
            else if (p.NameEquals("size"u8)) size = x;
            // A task that is not a circuit may still say how large one it stands for.
            else if (p.NameEquals("qubits"u8)) qubits = x;
            else if (p.NameEquals("gates"u8)) gates = x;
        }
        return new TaskMeasures(micros, millis, bytes, size, qubits, gates);
    }

    // log2(1 + (i + ½)/1024): the fraction's share of a base-2 logarithm, by its top ten bits.
    private static readonly float[] Log2Fraction = Enumerable.Range(0, 1024).Select(i => (float)Math.Log2(1 + (i + 0.5) / 1024)).ToArray();

    /// <summary>round(<paramref name="perOctave"/> · log2(1 + x)) from the bits of 1 + x and a table (0 for x ≤ 0 or not finite).</summary>
    private static int Octaves(double x, double perOctave)
    {
        if (!(x > 0) || !double.IsFinite(x)) return 0;
        long bits = BitConverter.DoubleToInt64Bits(1 + x);
        int exponent = (int)(bits >> 52) - 1023;
        return (int)(perOctave * (exponent + Log2Fraction[(int)(bits >> 42) & 1023]) + 0.5);
    }

    /// <summary>The handler's estimate of the task's duration in µs (0 when it gives none).</summary>
    public double EstimateMicros(int task) => EstimateMicros(task, _graph.ParsedArgsOf(task));

    private double EstimateMicros(int task, object? parsed)
    {
        var h = _graph.HandlerOf(task);
        // A handler with a validator estimates from its parsed arguments; one without takes none.
        if (h.EstimateMicros is null || parsed is null && (h.Validate is not null || h.ValidateWithContext is not null)) return 0;
        double us = h.EstimateMicros(parsed!);
        return double.IsFinite(us) && us > 0 ? us : 0;
    }

    /// <summary>
    /// The task's complexity, 0–100: the larger of a time score, 12.5 × log10(1 + estimated µs)
    /// (1 µs → 3.8, 1 ms → 37.5, 1 s → 75, 100 s or more → 100), and, for circuits, a memory
    /// score, 100 × (qubits − 10) / 22 (10 qubits or fewer → 0, 32 → 100); when the handler gives no
    /// estimate, the largest number the task's own arguments state, as if it were µs. Needs no graph analysis.
    /// </summary>
    public double Complexity(int task)
    {
        double estimate = EstimateMicros(task);
        double time = 12.5 * Math.Log10(1 + estimate);
        double memory = _graph.ParsedArgsOf(task) is QuantumArgs q ? 100.0 * (q.Circuit.Qubits - 10) / 22 : 0;
        double stated = 0;
        if (estimate <= 0)
        {
            // No estimate: the largest number the task's arguments state (rows, tokens, a prompt's
            // length), on the same scale — a task sized 10⁶ in its own words scores as 1 s would.
            var list = _stated ??= new List<KeyValuePair<string, double>>();
            list.Clear();
            ArgumentFeatures.Collect(_graph.Graph.Spec(task)?.Args, _graph.ParsedArgsOf(task), list);
            foreach (var (_, x) in list) stated = Math.Max(stated, x);
            stated = 12.5 * Math.Log10(1 + stated);
        }
        return Math.Round(Math.Clamp(Math.Max(Math.Max(time, memory), stated), 0, 100), 1);
    }

    private static float Log(double x) => x > 0 && double.IsFinite(x) ? (float)Math.Log10(1 + x) : 0;


}

/// <summary>A task's quantized features (<see cref="FeatureExtractor.KindOf(int, ArgumentSchema?)"/>), packed: the fixed ones in two words, the stated arguments' hashed into a third.</summary>
public readonly record struct TaskKind(long Low, long High, long Arguments = 0);

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
