using System.Globalization;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Routing;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;

namespace TaskMesh.Learning.Routing;

/// <summary>How the router weighs cost against speed and confidence (<c>[routing] objective</c>, <c>--objective</c>).</summary>
/// <remarks>The names are <see cref="Engine.Configuration.RoutingObjectives"/>'s, defined once for the config, the command line and the router.</remarks>
public static class Objectives
{
    /// <inheritdoc cref="Engine.Configuration.RoutingObjectives.Auto"/>
    public const string Auto = Engine.Configuration.RoutingObjectives.Auto;
    /// <inheritdoc cref="Engine.Configuration.RoutingObjectives.Fastest"/>
    public const string Fastest = Engine.Configuration.RoutingObjectives.Fastest;
    /// <inheritdoc cref="Engine.Configuration.RoutingObjectives.Cheapest"/>
    public const string Cheapest = Engine.Configuration.RoutingObjectives.Cheapest;

    /// <inheritdoc cref="Engine.Configuration.RoutingObjectives.All"/>
    public static IReadOnlyList<string> All => Engine.Configuration.RoutingObjectives.All;
}

/// <summary>A cold-start band: tasks whose complexity score is at most <paramref name="UpTo"/> go to <paramref name="Layer"/>.</summary>
public sealed record ComplexityBand(double UpTo, string Layer);

/// <summary>The router's settings (<c>[routing]</c>).</summary>
public sealed record RoutingOptions
{
    /// <summary>One of <see cref="Objectives.All"/>.</summary>
    public string Objective { get; init; } = Objectives.Auto;

    /// <summary>The confidence a task needs when it states no <c>minConfidence</c>.</summary>
    public double MinConfidence { get; init; } = 0.70;

    /// <summary>
    /// Cost charged per unit of predicted failure probability in the expected cost (price × duration
    /// + penalty × (1 − confidence)). Null (the default): what a failure leads to — the escalation
    /// to the next capable layer up, at its own expected cost (and so on up the chain; a failure on
    /// the most capable layer costs another run there). A fixed penalty is in the layers' cost units,
    /// which differ by orders of magnitude between deployments; the chain's cost does not need tuning.
    /// </summary>
    public double? FailurePenalty { get; init; }

    /// <summary>Cold start: complexity bands, in increasing <see cref="ComplexityBand.UpTo"/>; empty: the least capable layer that can run the task.</summary>
    public IReadOnlyList<ComplexityBand> Bands { get; init; } = [];

    /// <summary>Share of tasks (0–1) sent to another capable layer than the chosen one, so every model keeps fresh data.</summary>
    public double Exploration { get; init; }

    /// <summary>Seed of the exploration draw (deterministic per task).</summary>
    public ulong Seed { get; init; } = 1;

    /// <summary>
    /// Most the routed tasks may cost together, by their predicted costs (<c>--budget</c>, and what
    /// is left of <c>[routing] daily_cost_limit</c>): each task goes to the best layer it still
    /// fits; a task that fits nowhere fails with that reason, without running. Null: no limit.
    /// A run's own budget (<see cref="Engine.RunOptions.Budget"/>, given to the router in
    /// <see cref="RoutingContext.Budget"/>) comes first; either way each run counts its own spend,
    /// so one router may route concurrent runs.
    /// </summary>
    public double? Budget { get; init; }

    /// <summary>A feature extractor over the graph to be routed, shared with others that need one (the recorder): the graph is then analysed once. Null: the router makes its own.</summary>
    public FeatureExtractor? Features { get; init; }

    /// <summary>Escalation rules; the router applies those with trigger <c>complexity</c> as it routes (the others act after attempts).</summary>
    public IReadOnlyList<Engine.Escalation.EscalationRule> Rules { get; init; } = [];
}

/// <summary>
/// Chooses each task's layer from the layers that can run it (its handler, its <c>requires</c>):
/// for each candidate, the predicted duration (the layer's duration model, else the handler's
/// estimate) and confidence (the layer's success model), the queue's wait, and the expected cost
/// — price × duration + penalty × (1 − confidence) — then the objective decides. Without a model
/// for a candidate (cold start) the complexity bands decide, else the least capable candidate. A
/// small share of tasks explores another candidate. Decisions are made once per kind of task —
/// handler, its own features quantized (<see cref="FeatureExtractor.KindOf(int, ArgumentSchema?)"/>), requirements, minimum confidence, the
/// complexity rules it crosses — the models scoring every new kind of a batch at once, and reused:
/// routing a task is a lookup after the first of its kind. Every decision carries its candidates and
/// their scores in <see cref="RouteDecision.Reason"/> (the audit's <c>layer_selection</c>).
/// </summary>
public sealed class LearnedRouter : IKindRouter
{
    private readonly TrainedModels? _models;
    private readonly RoutingOptions _options;
    // Per graph routed: its feature extractor, kinds and decisions (a run's graph is routed in several
    // batches, and runs of different graphs may be routed at once).
    private readonly System.Runtime.CompilerServices.ConditionalWeakTable<PreparedGraph, GraphState> _states = new();
    private readonly object _lock = new();
    private GraphState? _current;   // the graph being routed (under _lock)
    private readonly Dictionary<string, int> _requirements = new(StringComparer.Ordinal);
    private readonly List<float[]> _inputs = new();   // the model inputs of the tasks being decided, in the batch's order (under _lock)
    private byte[]?[] _leaves = [];   // per layer, the leaves its driver model's scan kept for those tasks (null: not scanned) (under _lock)
    private readonly List<int> _queues = new();   // the layers' queues as the batch being routed saw them, rounded (under _lock)
    private readonly Engine.Escalation.EscalationRule[] _complexityRules;
    private readonly Engine.Escalation.EscalationRule[] _confidenceRules;

    public LearnedRouter(TrainedModels? models, RoutingOptions? options = null)
    {
        _models = models;
        _options = options ?? new RoutingOptions();
        if (!Objectives.All.Contains(_options.Objective)) throw new ArgumentException($"objective '{_options.Objective}' is not one of {string.Join(", ", Objectives.All)}");
        if (_options.Exploration is < 0 or > 1) throw new ArgumentException("exploration is a share between 0 and 1");
        _complexityRules = _options.Rules.Select((r, i) => (r, i)).Where(x => x.r.Active && x.r.Trigger == Engine.Escalation.EscalationTriggers.Complexity)
            .OrderByDescending(x => x.r.Priority).ThenBy(x => x.i).Select(x => x.r).Take(31).ToArray();
        _confidenceRules = _options.Rules.Select((r, i) => (r, i)).Where(x => x.r.Active && x.r.Trigger == Engine.Escalation.EscalationTriggers.LowConfidence)
            .OrderByDescending(x => x.r.Priority).ThenBy(x => x.i).Select(x => x.r).ToArray();
    }

    /// <summary>The router also chooses among quantum layers for quantum tasks.</summary>
    public bool RoutesPreferredHandlers => true;

    /// <summary>Tasks without options are decided by handler (their arguments, requirements and minimum confidence are their handler's) — unless a budget is counted task by task.</summary>
    public bool DecidesByHandlerWithoutOptions => _options.Budget is null;

    /// <summary>Predicted cost of the tasks the last routing pass within a budget placed (each pass — each run — counts its own, in <see cref="RoutingContext.Ledger"/>).</summary>
    public double PredictedSpend { get; private set; }

    /// <summary>Decisions made (not looked up) so far: one per kind of task.</summary>
    public int DecisionsMade { get; private set; }

    /// <summary>Time spent making them (the models scoring every candidate layer, the objective, the rules, the reason): <see cref="DecisionsMade"/> apart, what a decision costs.</summary>
    public TimeSpan DecidingTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, _decidingTicks);

    private long _decidingTicks;

    public RouteDecision Route(in RoutingContext context, int task)
    {
        var one = new RouteDecision[1];
        RouteBatch(context, [task], one);
        return one[0];
    }

    public void RouteBatch(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions)
    {
        lock (_lock) RouteLocked(context, tasks, decisions, default);   // runs may start on several threads at once
    }

    /// <summary>Without exploration or a budget, a task's decision is its kind's.</summary>
    public bool RoutesByKind => _options.Budget is null && _options.Exploration <= 0;

    public void KindsOf(in RoutingContext context, ReadOnlySpan<int> tasks, Span<int> kinds)
    {
        if (!RoutesByKind) throw new InvalidOperationException("this router explores or counts a budget: its decisions are per task (RouteBatch)");
        lock (_lock) RouteLocked(context, tasks, default, kinds);
    }

    public RouteDecision DecisionOfKind(in RoutingContext context, int kind)
    {
        lock (_lock)
        {
            // The graph routed last is the one asked about (the engine asks right after KindsOf).
            var state = _current is { } last && last.Features.Graph == context.Prepared ? last : _states.TryGetValue(context.Prepared, out var s) ? s : null;
            if (state is null || kind >= state.First.Count)
                throw new ArgumentOutOfRangeException(nameof(kind), $"kind {kind} was not named by KindsOf for this graph");
            return state.First[kind];
        }
    }

    /// <summary>What the router keeps for one graph: its features, its kinds, a decision per kind.</summary>
    private sealed class GraphState(FeatureExtractor features)
    {
        public readonly FeatureExtractor Features = features;
        public readonly KindTable Table = new();                          // kind → index in Choices
        public readonly List<RouteDecision[]> Choices = new();            // per kind: the decision, then the other candidates
        // Per kind, the decision (Choices[kind][0]) in one array: a run of many kinds asks for each
        // kind's decision once, in about the order the kinds were made — read in sequence from here,
        // not from thousands of separate arrays (the routing bench's hot path on 16,430 kinds in
        // 100,000 tasks: 33–42 → 20–25 ns a task).
        public readonly List<RouteDecision> First = new();
        // Per kind, its key, and how its tasks are told apart when its decision would not hold for all
        // of them (null: it holds; see Splitter).
        public readonly List<KindKey> Keys = new();
        public readonly List<Splitter?> Splits = new();
        // Per task, its kind once computed (+1; 0: not yet): a graph routed again (another run of it,
        // the next batch) looks its tasks' kinds up instead of reading their arguments again.
        // Not used under `fastest`, whose kinds hold the layers' queues of the moment.
        private int[] _kindOfTask = [];

        public int KindOfTask(int task) => task < _kindOfTask.Length ? _kindOfTask[task] - 1 : -1;

        public void SetKindOfTask(int task, int kind, int tasks)
        {
            if (task >= _kindOfTask.Length) Array.Resize(ref _kindOfTask, Math.Max(tasks, task + 1));
            _kindOfTask[task] = kind + 1;
        }
    }

    /// <summary>Kinds and decisions for <paramref name="tasks"/>: into <paramref name="decisions"/>, or (when it is not empty) only the kinds into <paramref name="kindsOut"/>.</summary>
    private void RouteLocked(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions, Span<int> kindsOut)
    {
        bool kindsOnly = !kindsOut.IsEmpty;
        var graph = context.Graph;
        var prepared = context.Prepared;
        var options = _options;
        var state = _current = _states.GetValue(prepared, p => new GraphState(options.Features is { } shared && shared.Graph == p ? shared : new FeatureExtractor(p)));
        var features = state.Features;
        var choices = state.Choices;
        // First the kinds: a decision is made for each kind not seen before, the models scoring all
        // of them at once; then every task takes its kind's decision.
        var rented = kindsOnly ? null : System.Buffers.ArrayPool<int>.Shared.Rent(tasks.Length);
        var kindOf = kindsOnly ? kindsOut : rented.AsSpan(0, tasks.Length);
        var fresh = new List<(int Task, double MinConfidence)>();
        var freshKeys = new List<KindKey>();
        // Under `fastest` the layers' queues are part of a decision: decisions are kept per state of
        // the queues (each rounded down to a power of two), so a graph routed again while another
        // run fills a layer is decided again.
        ulong queues = _options.Objective == Objectives.Fastest ? QueueState(context.Layers, _queues) : 0;
        // The run's budget (the context's), else the router's own.
        double? budget = context.Budget ?? _options.Budget;
        bool plain = budget is null && _options.Exploration <= 0;   // a task takes its kind's first choice
        bool remember = _options.Objective != Objectives.Fastest;
        var arguments = _models?.Arguments;
        bool bands = _options.Bands.Count > 0;
        for (int i = 0; i < tasks.Length; i++)
        {
            int task = tasks[i];
            if (remember && state.KindOfTask(task) is >= 0 and var known)
            {
                kindOf[i] = known;
                if (plain && !kindsOnly) decisions[i] = state.First[known];
                continue;
            }
            double minConfidence = _options.MinConfidence;
            int requires = 0, fires = 0;
            if (graph.HasRoutingNeeds && graph.Spec(task) is { } spec)
            {
                minConfidence = spec.MinConfidence ?? minConfidence;
                if (spec.Requires is { } r) requires = RequirementsId(r);
            }
            int band = 0;
            if (_complexityRules.Length > 0 || bands)
            {
                double complexity = features.Complexity(task);   // which complexity rules the task crosses: part of its kind
                for (int k = 0; k < _complexityRules.Length; k++)
                    if (complexity >= _complexityRules[k].Threshold) fires |= 1 << k;
                // Cold start goes by band: the complexity itself (a tenth of a point, as it is kept) is part of the kind.
                if (bands) band = 1 + (int)Math.Round(complexity * 10);
            }
            var key = new KindKey(features.KindOf(task, arguments), graph.HandlerIndex(task), requires, fires, band, minConfidence, queues);
            int kind = Place(state, key, task, fresh, freshKeys);
            if (kind < choices.Count && state.Splits[kind] is { } splitter)
                kind = Place(state, key with { Sub = splitter.SubOf(features.ModelInput(task, arguments!)) }, task, fresh, freshKeys);   // a kind whose tasks part ways: the task's part
            if (remember) state.SetKindOfTask(task, kind, graph.Count);
            kindOf[i] = kind;
            if (kind < choices.Count && plain && !kindsOnly) decisions[i] = state.First[kind];   // decided before: done
        }
        bool decidedAny = fresh.Count > 0;
        if (fresh.Count > 0)
        {
            long started = System.Diagnostics.Stopwatch.GetTimestamp();
            int firstFresh = choices.Count;
            bool split = DecideFresh(context, state, fresh, freshKeys, splitting: _options.Objective == Objectives.Auto && _models is not null);
            if (split)
            {
                // Some new kinds part ways: their tasks of this batch go to their parts, decided in turn.
                fresh.Clear();
                freshKeys.Clear();
                for (int i = 0; i < tasks.Length; i++)
                {
                    if (kindOf[i] < firstFresh || state.Splits[kindOf[i]] is not { } splitter) continue;
                    int kind = Place(state, state.Keys[kindOf[i]] with { Sub = splitter.SubOf(features.ModelInput(tasks[i], arguments!)) }, tasks[i], fresh, freshKeys);
                    if (remember) state.SetKindOfTask(tasks[i], kind, graph.Count);
                    kindOf[i] = kind;
                }
                if (fresh.Count > 0) DecideFresh(context, state, fresh, freshKeys, splitting: false);
            }
            _decidingTicks += System.Diagnostics.Stopwatch.GetTimestamp() - started;
        }
        if (kindsOnly) return;
        if (!plain || decidedAny)
            for (int i = 0; i < tasks.Length; i++)
            {
                var choice = choices[kindOf[i]];
                decisions[i] = budget is double b ? Afford(tasks[i], choice, b, context.Ledger)
                    : _options.Exploration > 0 ? Explore(tasks[i], choice) : choice[0];
            }
        System.Buffers.ArrayPool<int>.Shared.Return(rented!);
    }

    /// <summary>The kind of <paramref name="task"/> under <paramref name="key"/>: its index, a new one added to <paramref name="fresh"/> (and its key to <paramref name="keys"/>) to be decided.</summary>
    private static int Place(GraphState state, in KindKey key, int task, List<(int Task, double MinConfidence)> fresh, List<KindKey> keys)
    {
        int kind = state.Table.GetOrAdd(key, state.Choices.Count + fresh.Count);
        if (kind == state.Choices.Count + fresh.Count)
        {
            fresh.Add((task, key.MinConfidence));
            keys.Add(key);
        }
        return kind;
    }

    /// <summary>
    /// Decides the <paramref name="fresh"/> kinds (the models scoring all of them at once) and adds
    /// them to <paramref name="state"/>. With <paramref name="splitting"/> (under <c>auto</c>), a kind
    /// whose decision would not hold for every task it spans gets a <see cref="Splitter"/>; true when
    /// one did.
    /// </summary>
    private bool DecideFresh(in RoutingContext context, GraphState state, List<(int Task, double MinConfidence)> fresh, List<KindKey> keys, bool splitting)
    {
        var predictions = Predict(context, fresh);
        bool split = false;
        for (int f = 0; f < fresh.Count; f++)
        {
            var choice = Decide(context, fresh[f].Task, f, fresh[f].MinConfidence, predictions);
            state.Choices.Add(choice);
            state.First.Add(choice[0]);
            state.Keys.Add(keys[f]);
            var splitter = splitting && keys[f].Sub == 0 && predictions is not null ? SplitterFor(context, fresh[f].Task, f, fresh[f].MinConfidence, predictions, choice) : null;
            state.Splits.Add(splitter);
            split |= splitter is not null;
            DecisionsMade++;
        }
        return split;
    }

    [ThreadStatic] private static List<float>? _thresholds;

    /// <summary>About the most parts one kind is cut into (<see cref="SplitterFor"/>): cutting stops once the tree has twice as many nodes.</summary>
    private const int MostParts = 64;

    /// <summary>
    /// Whether the decision for the kind of <paramref name="task"/> (the <paramref name="position"/>th
    /// of the batch the models scored) holds for every task of that kind, and if not, how its tasks are
    /// told apart. A kind spans a box of model inputs (<see cref="FeatureExtractor.KindCell"/>: a
    /// quarter of a decade of a size, …), and under <c>auto</c> a layer is a candidate when its
    /// confidence meets the floor; a layer whose confidence over the box (<see cref="TrainedModels.ConfidenceBounds"/>)
    /// lies on both sides of the floor would be chosen for tasks it fails more often than the floor
    /// allows, or passed over for tasks it suits. Then the box is cut in two at one of that layer's
    /// split thresholds inside it (the middle one of the feature with the most), and each half again
    /// while its bounds still straddle the floor and thresholds are left to cut at (at most
    /// <see cref="MostParts"/> parts): the parts are fine only where the confidence crosses the floor,
    /// and within a part that no threshold cuts the model's confidence is one number. Null when the
    /// decision holds for the whole kind.
    /// </summary>
    private Splitter? SplitterFor(in RoutingContext context, int task, int position, double floor, (double?[] Ms, double?[] Confidence)[] predictions, RouteDecision[] choice)
    {
        var input = _inputs[position];
        int n = input.Length;
        var low = new float[n];
        var high = new float[n];
        _current!.Features.KindCell(task, _models!.Arguments, input, low, high);
        var handler = context.HandlerOf(task);
        var requires = context.Graph.Spec(task)?.Requires;
        // A layer confident enough at the first task and ranked after the chosen one (dearer in
        // expectation) is passed over wherever the chosen one stays confident: whether it straddles
        // the floor does not matter (the chosen one's own bounds are looked at).
        bool Behind(string layer)
        {
            for (int i = 1; i < choice.Length; i++)
                if (choice[i].Layer == layer) return choice[i].Confidence is double c && c >= floor && choice[0].Confidence is double d && d >= floor;
            return false;
        }
        List<string>? straddling = null;
        for (int li = 0; li < context.Layers.Count; li++)
        {
            var layer = context.Layers[li];
            if (predictions[li].Confidence[position] is null || layer.Status != LayerStatus.Active || !layer.CanRun(handler, requires)) continue;
            if (Behind(layer.Name)) continue;
            if (Straddles(layer.Name, handler.Name, low, high, floor)) (straddling ??= new()).Add(layer.Name);
        }
        if (straddling is null) return null;
        var nodes = new List<Splitter.Node>();

        int parts = 0;
        Cut(low, high);
        return parts > 1 ? new Splitter(nodes.ToArray()) : null;

        // Adds the node for the box, cut while it straddles; returns its index.
        int Cut(float[] lo, float[] hi)
        {
            int at = nodes.Count;
            nodes.Add(default);
            bool still = false;
            foreach (var name in straddling!) still |= Straddles(name, handler.Name, lo, hi, floor);
            (int Feature, float Threshold) best = (-1, 0);
            if (still && nodes.Count < 2 * MostParts)
            {
                var found = _thresholds ??= new List<float>();
                int most = 0;
                for (int j = 0; j < n; j++)
                {
                    if (!(lo[j] < hi[j])) continue;
                    found.Clear();
                    foreach (var name in straddling) _models.SuccessThresholdsInside(name, j, lo[j], hi[j], found);
                    if (found.Count <= most) continue;
                    found.Sort();
                    (most, best) = (found.Count, (j, found[found.Count / 2]));
                }
            }
            if (best.Feature < 0)
            {
                nodes[at] = new Splitter.Node(-1, 0, parts++, 0);
                return at;
            }
            // Left: x ≤ threshold (where the trees send it left); right: above it.
            var (leftHi, rightLo) = ((float[])hi.Clone(), (float[])lo.Clone());
            leftHi[best.Feature] = best.Threshold;
            rightLo[best.Feature] = MathF.BitIncrement(best.Threshold);
            int left = Cut(lo, leftHi);
            int right = Cut(rightLo, hi);
            nodes[at] = new Splitter.Node(best.Feature, best.Threshold, left, right);
            return at;
        }
    }

    /// <summary>Whether <paramref name="layer"/>'s confidence over the box lies on both sides of <paramref name="floor"/> (false when it cannot be bounded).</summary>
    private bool Straddles(string layer, string handler, float[] low, float[] high, double floor)
        => _models!.ConfidenceBounds(layer, handler, low, high) is var (least, most) && least < floor && most >= floor;

    /// <summary>
    /// How the tasks of one kind are told apart: a small tree of cuts (a feature of the model input
    /// and a threshold; a task above it goes right), whose leaves are the kind's parts. A task's part
    /// is its leaf's number, plus one (0 is the kind itself).
    /// </summary>
    private sealed class Splitter(Splitter.Node[] nodes)
    {
        /// <summary>A cut (<c>Feature</c> ≥ 0: <c>Left</c> and <c>Right</c> are node indices) or a leaf (<c>Feature</c> −1: <c>Left</c> is the part).</summary>
        public readonly record struct Node(int Feature, float Threshold, int Left, int Right);

        public long SubOf(ReadOnlySpan<float> input)
        {
            var node = nodes[0];
            while (node.Feature >= 0)
                node = nodes[input[node.Feature] <= node.Threshold ? node.Left : node.Right];   // NaN goes right, as in the trees
            return node.Left + 1L;
        }
    }

    /// <summary>
    /// The layers' queues, each rounded down to a power of two (0, 1, 2–3, 4–7, …), into
    /// <paramref name="rounded"/>, and packed into one number (five bits a layer; folded past twelve layers).
    /// </summary>
    internal static ulong QueueState(IReadOnlyList<ExecutionLayer> layers, List<int> rounded)
    {
        rounded.Clear();
        ulong packed = 0;
        for (int i = 0; i < layers.Count; i++)
        {
            int depth = layers[i].QueueDepth;
            int bucket = depth <= 0 ? 0 : Math.Min(31, 1 + System.Numerics.BitOperations.Log2((uint)depth));
            rounded.Add(bucket == 0 ? 0 : 1 << (bucket - 1));
            packed = i < 12 ? packed | (ulong)bucket << (5 * i) : (packed * 0x9E3779B97F4A7C15UL) ^ (ulong)bucket;
        }
        return packed;
    }

    /// <summary>A small number for a task's list of requirements (0: none), the same for equal lists.</summary>
    private int RequirementsId(IReadOnlyList<string> requires)
    {
        string joined = string.Join(',', requires);
        if (!_requirements.TryGetValue(joined, out int id)) _requirements.Add(joined, id = _requirements.Count + 1);
        return id;
    }

    /// <summary>What makes two tasks alike to the router: their quantized features, handler, requirements, the complexity rules they cross, the confidence they need (and, under <c>fastest</c>, the layers' queues as they were routed).</summary>
    private readonly record struct KindKey(TaskKind Kind, int Handler, int Requires, int Rules, int Band, double MinConfidence, ulong Queues, long Sub = 0)
    {
        public bool Equals(KindKey other) => Kind.Low == other.Kind.Low && Kind.High == other.Kind.High && Kind.Arguments == other.Kind.Arguments && Handler == other.Handler
            && Requires == other.Requires && Rules == other.Rules && Band == other.Band && MinConfidence.Equals(other.MinConfidence) && Queues == other.Queues && Sub == other.Sub;

        // The packed features hold small numbers in 10-bit fields: multiplied by odd constants and
        // folded, they spread over the table.
        public override int GetHashCode()
        {
            ulong h = (ulong)Kind.Low * 0x9E3779B97F4A7C15UL ^ (ulong)Kind.High * 0xC2B2AE3D27D4EB4FUL ^ (ulong)Kind.Arguments * 0x94D049BB133111EBUL
                ^ ((ulong)(uint)Handler << 32 | (uint)((Requires * 31 + Rules) * 1031 + Band)) * 0x165667B19E3779F9UL
                ^ BitConverter.DoubleToUInt64Bits(MinConfidence) ^ Queues * 0xD6E8FEB86659FD93UL ^ (ulong)Sub * 0xFF51AFD7ED558CCDUL;
            return (int)(h ^ (h >> 29) ^ (h >> 47));
        }
    }

    /// <summary>
    /// Kinds to decision indices: open addressing with linear probing, kept at most half full. A
    /// task's routing is a lookup here (the general dictionary took 40 ns a lookup, measured; this
    /// one keeps keys and values in flat arrays).
    /// </summary>
    private sealed class KindTable
    {
        private KindKey[] _keys = new KindKey[1024];
        private int[] _values = NewValues(1024);
        private int _count;

        private static int[] NewValues(int capacity)
        {
            var v = new int[capacity];
            Array.Fill(v, -1);
            return v;
        }

        /// <summary>The value of <paramref name="key"/>; when absent, adds it with <paramref name="value"/> and returns that.</summary>
        public int GetOrAdd(in KindKey key, int value)
        {
            int mask = _keys.Length - 1;
            int i = key.GetHashCode() & mask;
            while (true)
            {
                int v = _values[i];
                if (v < 0) break;
                if (_keys[i].Equals(key)) return v;
                i = (i + 1) & mask;
            }
            _keys[i] = key;
            _values[i] = value;
            if (++_count * 2 > _keys.Length) Grow();
            return value;
        }

        public void Clear()
        {
            Array.Fill(_values, -1);
            _count = 0;
        }

        private void Grow()
        {
            var (keys, values) = (_keys, _values);
            _keys = new KindKey[keys.Length * 2];
            _values = NewValues(keys.Length * 2);
            int mask = _keys.Length - 1;
            for (int j = 0; j < keys.Length; j++)
            {
                if (values[j] < 0) continue;
                int i = keys[j].GetHashCode() & mask;
                while (_values[i] >= 0) i = (i + 1) & mask;
                (_keys[i], _values[i]) = (keys[j], values[j]);
            }
        }
    }

    /// <summary>
    /// The models' predictions for the <paramref name="fresh"/> tasks on every layer, one batch per
    /// layer: per layer (in the context's order), per task (in the batch's), the predicted duration and
    /// confidence (null without models). The tasks' model inputs are kept in <see cref="_inputs"/>.
    /// </summary>
    private (double?[] Ms, double?[] Confidence)[]? Predict(in RoutingContext context, List<(int Task, double MinConfidence)> fresh)
    {
        _inputs.Clear();
        if (_models is null) return null;
        var items = new List<(string Handler, float[] Features)>(fresh.Count);
        foreach (var (t, _) in fresh)
        {
            var input = _current!.Features.ModelInput(t, _models.Arguments);
            items.Add((context.HandlerOf(t).Name, input));
            _inputs.Add(input);
        }
        var result = new (double?[], double?[])[context.Layers.Count];
        if (_leaves.Length < result.Length) _leaves = new byte[result.Length][];
        for (int li = 0; li < result.Length; li++) result[li] = _models.PredictMany(context.Layers[li].Name, items, out _leaves[li]);
        return result;
    }

    /// <summary>The decision (index 0) and the other candidates in order of preference, for a task like <paramref name="task"/> (the <paramref name="position"/>th of the batch <paramref name="predictions"/> scored).</summary>
    private RouteDecision[] Decide(in RoutingContext context, int task, int position, double minConfidence, (double?[] Ms, double?[] Confidence)[]? predictions)
    {
        var features = _current!.Features;
        var handler = context.HandlerOf(task);
        var requires = context.Graph.Spec(task)?.Requires;
        var candidates = new List<Candidate>(context.Layers.Count);
        bool anyConfidence = false;
        for (int li = 0; li < context.Layers.Count; li++)
        {
            var layer = context.Layers[li];
            if (layer.Status != LayerStatus.Active || !layer.CanRun(handler, requires)) continue;
            double? ms = predictions?[li].Ms[position] ?? (features.EstimateMicros(task) is > 0 and var us ? us / 1000 : null);
            double? confidence = predictions?[li].Confidence[position];
            anyConfidence |= confidence is not null;
            // The wait: the tasks queued before it (as the decision's queue state has them) share the layer's slots.
            int queued = _options.Objective == Objectives.Fastest && li < _queues.Count ? _queues[li] : layer.QueueDepth;
            double wait = ms is double d ? queued / (double)Math.Max(1, layer.Capacity) * d : 0;
            double cost = layer.PricePerSecond * (ms ?? 0) / 1000;
            candidates.Add(new Candidate(layer, li, ms, confidence, wait, cost) { Expected = cost + (_options.FailurePenalty ?? 0) * (1 - (confidence ?? 1)) });
        }
        if (candidates.Count == 0) return [new RouteDecision(Engine.Layers.Local.LocalLayer.LayerName, Reason: "no layer can take it: local")];
        if (_options.FailurePenalty is null) ChainExpectedCosts(candidates);
        List<Candidate> order;
        string how;
        if (!anyConfidence)
        {
            // Cold start: no model speaks for any candidate.
            double complexity = features.Complexity(task);
            var band = _options.Bands.FirstOrDefault(b => complexity <= b.UpTo && candidates.Any(c => c.Layer.Name == b.Layer));
            order = candidates.OrderBy(c => band is not null && c.Layer.Name == band.Layer ? 0 : 1).ThenBy(c => c.Layer.Rank).ThenBy(c => c.Layer.PricePerSecond).ToList();
            how = band is not null ? $"cold start: complexity {complexity:0.#} ≤ {band.UpTo:0.#} → {band.Layer}" : $"cold start: least capable of {candidates.Count}";
        }
        else
        {
            switch (_options.Objective)
            {
                case Objectives.Fastest:
                    order = candidates.OrderBy(c => c.Wait + (c.DurationMs ?? double.MaxValue)).ThenBy(c => c.Expected).ToList();
                    how = Objectives.Fastest;
                    break;
                case Objectives.Cheapest:
                    order = CheapestFirst(candidates);
                    how = Objectives.Cheapest;
                    break;
                default:
                    // auto: the cheapest (by expected cost) of those confident enough; else the most confident.
                    order = candidates;
                    SortStable(order, minConfidence, static (a, b, floor) =>
                    {
                        bool aOk = (a.Confidence ?? 0) >= floor, bOk = (b.Confidence ?? 0) >= floor;
                        if (aOk != bOk) return aOk ? -1 : 1;
                        return aOk ? a.Expected.CompareTo(b.Expected) : (b.Confidence ?? 0).CompareTo(a.Confidence ?? 0);
                    });
                    if (minConfidence != _autoFloor) (_autoFloor, _autoHow) = (minConfidence, $"auto (min confidence {minConfidence:0.##})");
                    how = _autoHow!;
                    break;
            }
        }
        // The candidates' scores (a decision is made once per kind, but there are many kinds: written
        // without format strings, which cost more than the rest of the decision).
        var text = _text.Clear();
        foreach (var c in order)
        {
            if (text.Length > 0) text.Append("; ");
            text.Append(c.Layer.Name).Append(": ");
            if (c.DurationMs is double d) Decimal(text, d, 3).Append(" ms"); else text.Append("? ms");
            text.Append(", confidence ");
            if (c.Confidence is double p) Decimal(text, p, 3); else text.Append('?');
            Decimal(text.Append(", cost "), c.Cost, 6);
            Decimal(text.Append(", expected "), c.Expected, 6);
        }
        string scores = text.ToString();
        // What drove the chosen layer's prediction: the features its model split on most along this task's paths.
        string drivers = "";
        if (_models is not null && order[0].Confidence is not null && position < _inputs.Count
            && DriversOf(order[0], handler.Name, position) is { Count: > 0 } drove)
        {
            text.Clear().Append("; features ");
            for (int i = 0; i < drove.Count; i++)
            {
                (i > 0 ? text.Append(", ") : text).Append(drove[i].Name);
                if (!float.IsNaN(drove[i].Value)) Decimal(text.Append(' '), drove[i].Value, 3);   // the handler has no value to show
            }
            drivers = text.ToString();
        }
        var decisions = new RouteDecision[order.Count];
        string? explored = order.Count > 1 ? "exploration; candidates " + scores : null;
        for (int i = 0; i < order.Count; i++)
            decisions[i] = new RouteDecision(order[i].Layer.Name, order[i].Confidence, order[i].Cost,
                i == 0 ? string.Concat(how, "; candidates ", scores, drivers) : explored);
        return ApplyRules(decisions, order, features, task, minConfidence);
    }

    /// <summary>What drove the prediction for the <paramref name="position"/>th task of the batch on the candidate's layer: from the leaves its scan kept, else by scoring it again.</summary>
    private IReadOnlyList<(string Name, float Value)> DriversOf(Candidate chosen, string handler, int position)
    {
        var input = _inputs[position];
        if (chosen.Index < _leaves.Length && _leaves[chosen.Index] is { } leaves)
        {
            int trees = leaves.Length / _inputs.Count;
            return _models!.DriversOf(chosen.Layer.Name, handler, input, leaves.AsSpan(position * trees, trees));
        }
        return _models!.DriversOf(chosen.Layer.Name, handler, input);
    }

    private double _autoFloor = double.NaN;   // the floor the last auto reason was written for, and that reason's start (under _lock)
    private string? _autoHow;

    /// <summary>Sorts a handful of candidates in place, equal ones kept in their order (as <c>OrderBy</c> does), without allocating.</summary>
    private static void SortStable(List<Candidate> items, double arg, Func<Candidate, Candidate, double, int> compare)
    {
        for (int i = 1; i < items.Count; i++)
        {
            var item = items[i];
            int j = i - 1;
            while (j >= 0 && compare(items[j], item, arg) > 0)
            {
                items[j + 1] = items[j];
                j--;
            }
            items[j + 1] = item;
        }
    }

    /// <summary>
    /// Share of the least expected cost within which candidates count as equally cheap under
    /// <c>cheapest</c>: in effect, the confidence below which a free layer is not tried first (starting
    /// on a free layer that succeeds with confidence c saves c of the next layer's cost in expectation).
    /// 0.1 % until the success models were calibrated on held-out examples (2026-12-07), which put a
    /// layer's confidence for tasks it always fails at a few tenths of a per cent instead of nearly 0:
    /// then the pages world started its tasks on a free layer that fails (3.4× the optimum's
    /// escalations, 4.6× its makespan). At 2 % the routing bench's worlds under <c>cheapest</c> measured
    /// escalations 0.28–1.10×, makespan 0.19–1.02× and cost 1.00–1.04× the optimum's on two seeds
    /// (1 %: makespan up to 1.20×; bench/README.md).
    /// </summary>
    internal const double CheapTie = 0.02;

    /// <summary>
    /// <c>cheapest</c>: by expected cost — but among the candidates within <see cref="CheapTie"/> of the
    /// least, the most confident first. Starting on a free layer that will almost surely fail is, in
    /// expectation, a hair cheaper than starting one up (the failure costs nothing but time); that
    /// hair is not worth the failed attempt, the escalation and the time.
    /// </summary>
    private static List<Candidate> CheapestFirst(List<Candidate> candidates)
    {
        var order = candidates.OrderBy(c => c.Expected).ThenBy(c => c.Layer.Rank).ToList();
        double least = order[0].Expected;
        var first = order.Where(c => c.Expected <= least * (1 + CheapTie) + 1e-12).OrderByDescending(c => c.Confidence ?? 0).ThenBy(c => c.Expected).First();
        if (first != order[0])
        {
            order.Remove(first);
            order.Insert(0, first);
        }
        return order;
    }

    /// <summary>
    /// Each candidate's expected cost when a failure escalates (into <see cref="Candidate.Expected"/>):
    /// its cost, plus its predicted failure probability times the expected cost of the least capable
    /// candidate above it (computed from the top down; on the most capable, a failure costs another run there).
    /// </summary>
    private static void ChainExpectedCosts(List<Candidate> candidates)
    {
        // Least capable first (a handful of layers: sorted in place, no LINQ).
        var byRank = candidates.ToArray();
        Array.Sort(byRank, static (a, b) => a.Layer.Rank != b.Layer.Rank ? a.Layer.Rank.CompareTo(b.Layer.Rank) : a.Layer.PricePerSecond.CompareTo(b.Layer.PricePerSecond));
        Span<double> cost = stackalloc double[byRank.Length], expected = stackalloc double[byRank.Length];
        Span<double?> confidence = stackalloc double?[byRank.Length];
        for (int i = 0; i < byRank.Length; i++) (cost[i], confidence[i]) = (byRank[i].Cost, byRank[i].Confidence);
        ChainExpected(cost, confidence, expected);
        for (int i = 0; i < byRank.Length; i++) byRank[i].Expected = expected[i];
    }

    /// <summary>
    /// Expected costs along an escalation chain, least capable first: E[i] = cost[i] + (1 − p[i]) ×
    /// E[i + 1], and on the last, a failure costs another run there (a confidence not known counts as 1).
    /// </summary>
    internal static double[] ChainExpected(double[] cost, double?[] confidence)
    {
        var e = new double[cost.Length];
        ChainExpected(cost, confidence, e);
        return e;
    }

    private static void ChainExpected(ReadOnlySpan<double> cost, ReadOnlySpan<double?> confidence, Span<double> e)
    {
        for (int i = cost.Length - 1; i >= 0; i--)
            e[i] = cost[i] + (1 - (confidence[i] ?? 1)) * (i + 1 < cost.Length ? e[i + 1] : cost[i]);
    }

    /// <summary>
    /// Rules that act as the task is routed: the first <c>complexity</c> rule (by priority) that the
    /// task crosses on its chosen layer, else the first <c>low_confidence</c> rule whose threshold
    /// (the task's <c>minConfidence</c> first) the model's predicted confidence on the chosen layer
    /// falls below, moves it to the rule's target among the candidates (<c>next</c>: the least
    /// capable above the chosen one); the run records the move as an escalation when it starts.
    /// </summary>
    private RouteDecision[] ApplyRules(RouteDecision[] decisions, List<Candidate> order, FeatureExtractor features, int task, double minConfidence)
    {
        var chosen = order[0];
        double complexity = _complexityRules.Length > 0 ? features.Complexity(task) : 0;
        foreach (var rule in _complexityRules)
            if (complexity >= rule.Threshold && Move(rule, string.Create(CultureInfo.InvariantCulture,
                    $"complexity {complexity:0.#} ≥ {rule.Threshold:0.#} on {chosen.Layer.Name}")) is { } moved)
                return moved;
        if (chosen.Confidence is double predicted)
            foreach (var rule in _confidenceRules)
            {
                double threshold = minConfidence == _options.MinConfidence ? rule.Threshold ?? minConfidence : minConfidence;
                if (predicted < threshold && Move(rule, string.Create(CultureInfo.InvariantCulture,
                        $"predicted confidence {predicted:0.###} < {threshold:0.###} on {chosen.Layer.Name}")) is { } moved)
                    return moved;
            }
        return decisions;

        RouteDecision[]? Move(Engine.Escalation.EscalationRule rule, string what)
        {
            if (rule.From != Engine.Escalation.EscalationRule.AnyLayer && rule.From != chosen.Layer.Name) return null;
            var next = rule.To == Engine.Escalation.EscalationRule.NextLayer
                ? ExecutionLayer.LeastCapable(order.Select(c => c.Layer).Where(l => l.Rank > chosen.Layer.Rank))
                : null;
            var target = rule.To == Engine.Escalation.EscalationRule.NextLayer
                ? order.FirstOrDefault(c => c.Layer == next)
                : order.FirstOrDefault(c => c.Layer.Name == rule.To && c.Layer != chosen.Layer);
            if (target is null) return null;
            var moved = decisions.First(d => d.Layer == target.Layer.Name);
            string why = $"{what} (rule {rule.From} → {rule.To} on {rule.Trigger})";
            var first = moved with { Reason = $"{why}; {decisions[0].Reason}", EscalatedFrom = chosen.Layer.Name, Trigger = rule.Trigger, Rule = rule };
            return [first, .. decisions.Where(d => d.Layer != target.Layer.Name)
                .Select(d => d.Reason!.StartsWith("exploration", StringComparison.Ordinal) ? d : d with { Reason = "exploration; " + d.Reason })];
        }
    }

    /// <summary>The first choice (in order of preference) that the budget still covers; exploration among those; else a refusal.</summary>
    private RouteDecision Afford(int task, RouteDecision[] choice, double budget, RoutingLedger ledger)
    {
        double left = budget - ledger.PredictedSpend;
        var affordable = choice.Where(d => (d.PredictedCost ?? 0) <= left + 1e-12).ToArray();
        if (affordable.Length == 0)
        {
            var cheapest = choice.MinBy(d => d.PredictedCost ?? 0);
            return new RouteDecision(cheapest.Layer, Refused: true, Reason: string.Create(CultureInfo.InvariantCulture,
                $"over budget: the cheapest layer that can run it ({cheapest.Layer}) is predicted to cost {cheapest.PredictedCost ?? 0:0.######}, and {Math.Max(0, left):0.######} of the budget of {budget:0.######} is left"));
        }
        var d = Explore(task, affordable);
        ledger.PredictedSpend += d.PredictedCost ?? 0;
        PredictedSpend = ledger.PredictedSpend;
        return d;
    }

    private RouteDecision Explore(int task, RouteDecision[] choice)
    {
        if (_options.Exploration <= 0 || choice.Length < 2) return choice[0];
        ulong h = Engine.Scheduling.SplitMix.Next(_options.Seed ^ (ulong)task * Engine.Scheduling.SplitMix.Golden);
        if (Engine.Scheduling.SplitMix.Unit(h) >= _options.Exploration) return choice[0];
        return choice[1 + (int)(Engine.Scheduling.SplitMix.Next(h) % (ulong)(choice.Length - 1))];
    }

    private readonly System.Text.StringBuilder _text = new();   // a decision's reason being written (under _lock)

    /// <summary>Appends <paramref name="x"/> rounded to <paramref name="decimals"/> places, without trailing zeros (as the format "0.###" writes it).</summary>
    internal static System.Text.StringBuilder Decimal(System.Text.StringBuilder into, double x, int decimals)
    {
        if (!double.IsFinite(x) || Math.Abs(x) >= 1e12) return into.Append(x.ToString("0." + new string('#', decimals), CultureInfo.InvariantCulture));
        long scale = decimals switch { 3 => 1000, 6 => 1_000_000, _ => (long)Math.Pow(10, decimals) };
        long scaled = (long)Math.Round(Math.Abs(x) * scale, MidpointRounding.AwayFromZero);
        if (scaled == 0) return into.Append('0');
        if (x < 0) into.Append('-');
        into.Append(scaled / scale);
        long fraction = scaled % scale;
        if (fraction == 0) return into;
        into.Append('.');
        for (long digit = scale / 10; digit > 0 && fraction > 0; digit /= 10)
        {
            into.Append((char)('0' + fraction / digit));
            fraction %= digit;
        }
        return into;
    }

    private sealed class Candidate(ExecutionLayer layer, int index, double? durationMs, double? confidence, double wait, double cost)
    {
        public ExecutionLayer Layer { get; } = layer;
        public int Index { get; } = index;   // the layer's place in the context's layers
        public double? DurationMs { get; } = durationMs;
        public double? Confidence { get; } = confidence;
        public double Wait { get; } = wait;
        public double Cost { get; } = cost;
        public double Expected { get; set; }   // with what a failure leads to
    }
}
