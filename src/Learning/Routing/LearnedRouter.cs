using System.Globalization;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Routing;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;

namespace TaskMesh.Learning.Routing;

/// <summary>How the router weighs cost against speed and confidence (<c>[routing] objective</c>, <c>--objective</c>).</summary>
public static class Objectives
{
    /// <summary>The cheapest layer whose predicted confidence meets the task's <c>minConfidence</c> (default 0.70).</summary>
    public const string Auto = "auto";
    /// <summary>The layer that finishes first: its queue's wait plus the predicted duration.</summary>
    public const string Fastest = "fastest";
    /// <summary>The layer of least predicted cost, whatever its confidence.</summary>
    public const string Cheapest = "cheapest";

    public static readonly IReadOnlyList<string> All = [Auto, Fastest, Cheapest];
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

    /// <summary>Cost charged per unit of predicted failure probability in the expected cost (price × duration + penalty × (1 − confidence)).</summary>
    public double FailurePenalty { get; init; } = 1.0;

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
    /// A router with a budget is meant for one run.
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
/// handler, its own features quantized (see <c>KindOf</c>), requirements, minimum confidence, the
/// complexity rules it crosses — the models scoring every new kind of a batch at once, and reused:
/// routing a task is a lookup after the first of its kind. Every decision carries its candidates and
/// their scores in <see cref="RouteDecision.Reason"/> (the audit's <c>layer_selection</c>).
/// </summary>
public sealed class LearnedRouter : ILayerRouter
{
    private readonly TrainedModels? _models;
    private readonly RoutingOptions _options;
    private readonly Dictionary<(int Handler, long Low, long High, string Requires, double MinConfidence, int Rules), RouteDecision[]> _table = new();
    private readonly Engine.Escalation.EscalationRule[] _complexityRules;
    private readonly Engine.Escalation.EscalationRule[] _confidenceRules;
    private FeatureExtractor? _features;
    private PreparedGraph? _graph;

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

    /// <summary>Predicted cost of the tasks routed so far (counted against <see cref="RoutingOptions.Budget"/>).</summary>
    public double PredictedSpend { get; private set; }

    /// <summary>Decisions made (not looked up) so far: one per kind of task.</summary>
    public int DecisionsMade { get; private set; }

    public RouteDecision Route(in RoutingContext context, int task)
    {
        var one = new RouteDecision[1];
        RouteBatch(context, [task], one);
        return one[0];
    }

    public void RouteBatch(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions)
    {
        lock (_table) RouteLocked(context, tasks, decisions);   // runs may start on several threads at once
    }

    private void RouteLocked(in RoutingContext context, ReadOnlySpan<int> tasks, Span<RouteDecision> decisions)
    {
        var graph = context.Graph;
        if (_graph?.Graph != graph)
        {
            _graph = context.Prepared;
            _features = _options.Features is { } shared && shared.Graph == context.Prepared ? shared : new FeatureExtractor(context.Prepared);
            _table.Clear();
        }
        var features = _features!;
        // First the kinds: a decision is made for each kind not seen before, the models scoring all
        // of them at once; then every task takes its kind's decision.
        var keys = new (int, long, long, string, double, int)[tasks.Length];
        var fresh = new Dictionary<(int, long, long, string, double, int), int>();
        for (int i = 0; i < tasks.Length; i++)
        {
            int task = tasks[i];
            var spec = graph.Spec(task);
            double minConfidence = spec?.MinConfidence ?? _options.MinConfidence;
            double complexity = features.Complexity(task);
            int fires = 0;   // which complexity rules the task crosses: part of its kind
            for (int k = 0; k < _complexityRules.Length; k++)
                if (complexity >= _complexityRules[k].Threshold) fires |= 1 << k;
            var (low, high) = KindOf(features, task);
            keys[i] = (graph.HandlerIndex(task), low, high, spec?.Requires is { } r ? string.Join(',', r) : "", minConfidence, fires);
            if (!_table.ContainsKey(keys[i])) fresh.TryAdd(keys[i], task);
        }
        if (fresh.Count > 0)
        {
            var predictions = Predict(context, fresh.Values.ToList());
            foreach (var (key, task) in fresh)
            {
                _table[key] = Decide(context, task, key.Item5, predictions);
                DecisionsMade++;
            }
        }
        for (int i = 0; i < tasks.Length; i++)
        {
            var choice = _table[keys[i]];
            decisions[i] = _options.Budget is double budget ? Afford(tasks[i], choice, budget) : Explore(tasks[i], choice);
        }
    }

    /// <summary>The models' predictions for <paramref name="tasks"/> on every layer, one batch per layer (empty without models).</summary>
    private Dictionary<(int Task, string Layer), (double? Ms, double? Confidence)> Predict(in RoutingContext context, List<int> tasks)
    {
        var result = new Dictionary<(int, string), (double?, double?)>();
        if (_models is null) return result;
        var items = new List<(string Handler, float[] Features)>(tasks.Count);
        foreach (int t in tasks) items.Add((context.HandlerOf(t).Name, _features!.Extract(t)));
        foreach (var layer in context.Layers)
        {
            var (ms, confidence) = _models.PredictMany(layer.Name, items);
            for (int i = 0; i < tasks.Count; i++) result[(tasks[i], layer.Name)] = (ms[i], confidence[i]);
        }
        return result;
    }

    /// <summary>
    /// The task's kind: its own features (what it is), quantized — sizes to a quarter of a decade,
    /// qubits exactly, gate counts to half a power of two — and packed into two words. Tasks of one
    /// kind (and handler, requirements, minimum confidence) share a decision.
    /// </summary>
    private static (long Low, long High) KindOf(FeatureExtractor features, int task)
    {
        Span<float> f = stackalloc float[FeatureExtractor.Count];
        features.ExtractTask(task, f);
        long low = 0, high = 0;
        for (int i = 0; i < 12; i++)
        {
            float v = f[i];
            int q = i switch
            {
                5 or 10 or 11 => (int)v,                                       // qubits, flags
                6 or 7 or 8 => (int)MathF.Round(MathF.Log2(1 + v) * 2),         // gate counts, depth
                _ => (int)MathF.Round(v * 4),                                   // log10 sizes
            };
            q = Math.Clamp(q, 0, 1023);
            if (i < 6) low |= (long)q << (10 * i);
            else high |= (long)q << (10 * (i - 6));
        }
        return (low, high);
    }

    /// <summary>The decision (index 0) and the other candidates in order of preference, for a task like <paramref name="task"/>.</summary>
    private RouteDecision[] Decide(in RoutingContext context, int task, double minConfidence,
        Dictionary<(int Task, string Layer), (double? Ms, double? Confidence)> predictions)
    {
        var features = _features!;
        var handler = context.HandlerOf(task);
        var requires = context.Graph.Spec(task)?.Requires;
        var candidates = new List<Candidate>();
        foreach (var layer in context.Layers)
        {
            if (layer.Status != LayerStatus.Active || !layer.CanRun(handler, requires)) continue;
            var predicted = predictions.GetValueOrDefault((task, layer.Name));
            double? ms = predicted.Ms ?? (features.EstimateMicros(task) is > 0 and var us ? us / 1000 : null);
            double? confidence = predicted.Confidence;
            double wait = ms is double d ? layer.QueueDepth / (double)Math.Max(1, layer.Capacity) * d : 0;
            double cost = layer.PricePerSecond * (ms ?? 0) / 1000;
            candidates.Add(new Candidate(layer, ms, confidence, wait, cost, cost + _options.FailurePenalty * (1 - (confidence ?? 1))));
        }
        if (candidates.Count == 0) return [new RouteDecision(Engine.Layers.Local.LocalLayer.LayerName, Reason: "no layer can take it: local")];

        List<Candidate> order;
        string how;
        if (candidates.All(c => c.Confidence is null))
        {
            // Cold start: no model speaks for any candidate.
            double complexity = features.Complexity(task);
            var band = _options.Bands.FirstOrDefault(b => complexity <= b.UpTo && candidates.Any(c => c.Layer.Name == b.Layer));
            order = candidates.OrderBy(c => band is not null && c.Layer.Name == band.Layer ? 0 : 1).ThenBy(c => c.Layer.Rank).ThenBy(c => c.Layer.PricePerSecond).ToList();
            how = band is not null ? $"cold start: complexity {complexity:0.#} ≤ {band.UpTo:0.#} → {band.Layer}" : $"cold start: least capable of {candidates.Count}";
        }
        else
        {
            order = _options.Objective switch
            {
                Objectives.Fastest => candidates.OrderBy(c => c.Wait + (c.DurationMs ?? double.MaxValue)).ThenBy(c => c.Expected).ToList(),
                Objectives.Cheapest => candidates.OrderBy(c => c.Cost).ThenBy(c => c.Layer.Rank).ToList(),
                // auto: the cheapest (by expected cost) of those confident enough; else the most confident.
                _ => candidates.OrderBy(c => (c.Confidence ?? 0) >= minConfidence ? 0 : 1)
                    .ThenBy(c => (c.Confidence ?? 0) >= minConfidence ? c.Expected : -(c.Confidence ?? 0)).ToList(),
            };
            how = _options.Objective == Objectives.Auto ? $"auto (min confidence {minConfidence:0.##})" : _options.Objective;
        }
        string scores = string.Join("; ", order.Select(c => string.Create(CultureInfo.InvariantCulture,
            $"{c.Layer.Name}: {(c.DurationMs is double d ? $"{d:0.###} ms" : "? ms")}, confidence {(c.Confidence is double p ? p.ToString("0.###", CultureInfo.InvariantCulture) : "?")}, cost {c.Cost:0.######}, expected {c.Expected:0.######}")));
        var decisions = order.Select((c, i) => new RouteDecision(c.Layer.Name, c.Confidence, c.Cost, i == 0 ? $"{how}; candidates {scores}" : $"exploration; candidates {scores}")).ToArray();
        return ApplyRules(decisions, order, features.Complexity(task), minConfidence);
    }

    /// <summary>
    /// Rules that act as the task is routed: the first <c>complexity</c> rule (by priority) that the
    /// task crosses on its chosen layer, else the first <c>low_confidence</c> rule whose threshold
    /// (the task's <c>minConfidence</c> first) the model's predicted confidence on the chosen layer
    /// falls below, moves it to the rule's target among the candidates (<c>next</c>: the least
    /// capable above the chosen one); the run records the move as an escalation when it starts.
    /// </summary>
    private RouteDecision[] ApplyRules(RouteDecision[] decisions, List<Candidate> order, double complexity, double minConfidence)
    {
        var chosen = order[0];
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
            var first = moved with { Reason = $"{why}; {decisions[0].Reason}", EscalatedFrom = chosen.Layer.Name, Trigger = rule.Trigger };
            return [first, .. decisions.Where(d => d.Layer != target.Layer.Name)
                .Select(d => d.Reason!.StartsWith("exploration", StringComparison.Ordinal) ? d : d with { Reason = "exploration; " + d.Reason })];
        }
    }

    /// <summary>The first choice (in order of preference) that the budget still covers; exploration among those; else a refusal.</summary>
    private RouteDecision Afford(int task, RouteDecision[] choice, double budget)
    {
        double left = budget - PredictedSpend;
        var affordable = choice.Where(d => (d.PredictedCost ?? 0) <= left + 1e-12).ToArray();
        if (affordable.Length == 0)
        {
            var cheapest = choice.MinBy(d => d.PredictedCost ?? 0);
            return new RouteDecision(cheapest.Layer, Refused: true, Reason: string.Create(CultureInfo.InvariantCulture,
                $"over budget: the cheapest layer that can run it ({cheapest.Layer}) is predicted to cost {cheapest.PredictedCost ?? 0:0.######}, and {Math.Max(0, left):0.######} of the budget of {budget:0.######} is left"));
        }
        var d = Explore(task, affordable);
        PredictedSpend += d.PredictedCost ?? 0;
        return d;
    }

    private RouteDecision Explore(int task, RouteDecision[] choice)
    {
        if (_options.Exploration <= 0 || choice.Length < 2) return choice[0];
        ulong h = Engine.Scheduling.SplitMix.Next(_options.Seed ^ (ulong)task * Engine.Scheduling.SplitMix.Golden);
        if (Engine.Scheduling.SplitMix.Unit(h) >= _options.Exploration) return choice[0];
        return choice[1 + (int)(Engine.Scheduling.SplitMix.Next(h) % (ulong)(choice.Length - 1))];
    }

    private sealed record Candidate(ExecutionLayer Layer, double? DurationMs, double? Confidence, double Wait, double Cost, double Expected);
}
