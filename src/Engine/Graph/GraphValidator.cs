using System.Text.Json;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Local;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// Every check of a graph before anything runs, in one place (the file's JSON schema aside,
/// which the loader checks as it reads). Two stages: <see cref="CheckStructure"/> needs only the
/// graph (ids, edges, cycles, pools, value ranges); <see cref="Prepare"/> checks it against an
/// engine (handlers, their arguments, layers) and returns a <see cref="PreparedGraph"/>. Every
/// problem is reported, not just the first; ranges come from <see cref="GraphLimits"/>.
/// </summary>
public static class GraphValidator
{
    /// <summary>Errors reported for one cause (say, one unknown handler named by a million tasks) before the rest are summarised.</summary>
    public const int MaxErrorsPerCause = 10_000;

    /// <summary>Structural checks of a compiled graph; <paramref name="builder"/> supplies what it found while building.</summary>
    internal static void CheckStructure(GraphBuilder builder, TaskGraph graph, List<GraphError> errors)
    {
        errors.AddRange(builder.Errors);
        if (builder.SelfLoops > 0)
        {
            var sources = builder.EdgeSources;
            var targets = builder.EdgeTargets;
            for (int e = 0; e < sources.Length; e++)
                if (sources[e] == targets[e])
                    errors.Add(new GraphError(GraphErrorCodes.SelfLoop, "depends on itself", builder.DisplayId(targets[e]), builder.LineAt(targets[e])));
        }
        CheckWeights(builder, errors);
        CheckSpecs(builder, errors);
        // A graph whose every edge points from an earlier task to a later one cannot have a cycle.
        if (!builder.AllEdgesForward)
        {
            var cycle = graph.FindCycle();
            if (cycle is not null)
                errors.Add(new GraphError(GraphErrorCodes.Cycle, "cycle: " + string.Join(" -> ", cycle.Select(graph.IdOf)), graph.IdOf(cycle[0]), graph.LineOf(cycle[0])));
        }
    }

    private static void CheckWeights(GraphBuilder b, List<GraphError> errors)
    {
        if (b.EdgeWeightItems is not { } weights) return;
        var sources = b.EdgeSources;
        var targets = b.EdgeTargets;
        for (int e = 0; e < targets.Length; e++)
        {
            float w = weights[e];
            if (w is >= 0 and <= (float)GraphLimits.MaxEdgeWeightMs) continue;
            int t = targets[e];
            errors.Add(new GraphError(GraphErrorCodes.BadValue,
                $"dependency weight on '{b.DisplayId(sources[e])}' is {(float.IsFinite(w) ? w.ToString(System.Globalization.CultureInfo.InvariantCulture) : float.IsNaN(w) ? "not a number" : "beyond any limit")}; it must be between 0 and {GraphLimits.MaxEdgeWeightMs:0} (ms)",
                b.DisplayId(t), b.LineAt(t)));
        }
    }

    private static void CheckSpecs(GraphBuilder b, List<GraphError> errors)
    {
        foreach (var (pool, cap) in b.Resources)
        {
            if (cap < 1)
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"resource pool '{GraphLimits.Printable(pool)}' has capacity {cap}; it must be at least 1"));
        }
        if (Timeout(b.Defaults.TimeoutSeconds) is string dt)
            errors.Add(new GraphError(GraphErrorCodes.BadValue, "defaults." + dt));
        if (Retries(b.Defaults.Retries) is string dr)
            errors.Add(new GraphError(GraphErrorCodes.BadValue, "defaults." + dr));
        if (b.Defaults.Layer is string dl && !GraphNames.IsValidLayerName(dl))
            errors.Add(new GraphError(GraphErrorCodes.BadValue, $"defaults.layer '{GraphLimits.Printable(dl)}' is not a layer name"));

        for (int i = 0; i < b.Count; i++)
        {
            var s = b.SpecAt(i);
            if (s is null) continue;
            string id = b.DisplayId(i);
            int? line = b.LineAt(i);
            if (Timeout(s.TimeoutSeconds) is string t)
                errors.Add(new GraphError(GraphErrorCodes.BadValue, t, id, line));
            if (Retries(s.Retries) is string r)
                errors.Add(new GraphError(GraphErrorCodes.BadValue, r, id, line));
            if (s.MinConfidence is double c && !(c is >= 0 and <= 1))
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"minConfidence is {c}; it must be between 0 and 1", id, line));
            if (s.EstimateMs is double est && !(est is >= 0 and <= GraphLimits.MaxEstimateMs))
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"estimateMs is {est}; it must be between 0 and {GraphLimits.MaxEstimateMs} (a year)", id, line));
            if (s.Layer is string l && !GraphNames.IsValidLayerName(l))
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"layer '{GraphLimits.Printable(l)}' is not a layer name", id, line));
            if (s.Uses is { } uses)
            {
                foreach (var u in uses)
                {
                    if (!b.Resources.ContainsKey(u))
                        errors.Add(new GraphError(GraphErrorCodes.UnknownResource, $"uses resource pool '{GraphLimits.Printable(u)}', which the graph does not declare", id, line));
                }
            }
        }
    }

    private static string? Timeout(double? seconds)
        => seconds is double t && !(t is >= GraphLimits.MinTimeoutSeconds and <= GraphLimits.MaxTimeoutSeconds)
            ? $"timeoutSeconds is {t}; it must be between {GraphLimits.MinTimeoutSeconds} and {GraphLimits.MaxTimeoutSeconds:0} (30 days)"
            : null;

    private static string? Retries(int? retries)
        => retries is int r && r is < 0 or > GraphLimits.MaxRetries ? $"retries is {r}; it must be between 0 and {GraphLimits.MaxRetries}" : null;

    /// <summary>True when task <paramref name="task"/> has arguments of its own (others share their handler's parse of "none").</summary>
    internal static bool HasOwnArgs(TaskGraph graph, int task) => graph.Spec(task) is { } s && s.Args.ValueKind != JsonValueKind.Undefined;

    /// <summary>A layer's capability tags for a message.</summary>
    private static string Describe(IReadOnlyList<string> tags) => tags.Count == 0 ? "no capability tags" : string.Join(", ", tags);

    /// <summary>
    /// Checks <paramref name="graph"/> against an engine's handlers and layers: handlers exist,
    /// their arguments are valid (parsed once here), forced layers exist and can run the handler.
    /// </summary>
    /// <returns>The prepared graph, or null when <paramref name="errors"/> received problems.</returns>
    internal static PreparedGraph? Prepare(TaskGraph graph, object engine, HandlerRegistry registry, IReadOnlyList<ExecutionLayer> layers,
        ValidationContext context, List<GraphError> errors)
    {
        int before = errors.Count;
        var layerHandlers = layers.ToDictionary(l => l.Name, l => l.RunsHandlers, StringComparer.Ordinal);
        string known = string.Join(", ", layers.Select(l => l.Name));
        if (graph.Defaults.Layer is string dl && dl != GraphNames.AutoLayer && GraphNames.IsValidLayerName(dl) && !layerHandlers.ContainsKey(dl))
            errors.Add(new GraphError(GraphErrorCodes.BadValue, $"defaults.layer is '{dl}'; it must be auto or a registered layer ({known})"));
        var handlers = ResolveHandlers(graph, registry, errors);
        var shared = new object?[handlers.Length];
        var sharedProblems = new IReadOnlyList<string>?[handlers.Length];
        object?[]? own = null;
        // Decided at construction: without task options or a default layer, every task of a
        // handler is checked alike — once per handler (every task still gets its own error line).
        if (graph.HasNoSpecs && graph.Defaults.Layer is null or GraphNames.AutoLayer && !graph.HasCachedTasks && errors.Count == before)
        {
            for (int hi = 0; hi < handlers.Length; hi++)
            {
                var h = handlers[hi]!;
                if (h.Validate is null && h.ValidateWithContext is null) continue;
                (shared[hi], sharedProblems[hi]) = Parse(h, default, context);
            }
            if (sharedProblems.All(p => p is null || p.Count == 0))
                return new PreparedGraph(graph, engine, handlers!, shared, null, context.BaseDirectory);
        }
        for (int i = 0; i < graph.Count; i++)
        {
            if ((i & 4095) == 0) context.CancellationToken.ThrowIfCancellationRequested();
            var spec = graph.Spec(i);
            if (spec?.Layer is string l && l != GraphNames.AutoLayer && GraphNames.IsValidLayerName(l) && !layerHandlers.ContainsKey(l))
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"layer is '{l}'; it must be auto or a registered layer ({known})", graph.IdOf(i), graph.LineOf(i)));
            var h = handlers[graph.HandlerIndex(i)];
            if (h is null) continue;
            if ((graph.FlagsOf(i) & NodeFlags.Cached) != 0 && !h.Cacheable && spec?.Cache != false)
                errors.Add(new GraphError(GraphErrorCodes.BadValue, $"cache is on but handler '{h.Name}' is not cacheable (its output may depend on more than its arguments and inputs)", graph.IdOf(i), graph.LineOf(i)));
            string? forced = spec?.Layer ?? graph.Defaults.Layer;
            if (spec?.Requires is { Length: > 0 } requires)
            {
                foreach (var tag in requires)
                    if (!GraphNames.IsValidLayerName(tag))
                        errors.Add(new GraphError(GraphErrorCodes.BadValue, $"requires: '{GraphLimits.Printable(tag)}' is not a capability tag (letters, digits, '-', '_' and '.')", graph.IdOf(i), graph.LineOf(i)));
                bool forcedLayer = forced is not null && forced != GraphNames.AutoLayer;
                var candidates = layers.Where(l => (!forcedLayer || l.Name == forced) && l.CanRun(h)).ToList();
                if (candidates.Count > 0 && !candidates.Any(l => l.Covers(requires)))
                    errors.Add(new GraphError(GraphErrorCodes.BadLayer, forcedLayer
                        ? $"requires {string.Join(", ", requires)}, which layer '{forced}' does not have (it has: {Describe(candidates[0].Tags)})"
                        : $"requires {string.Join(", ", requires)}: no layer that runs handler '{h.Name}' has them all ({string.Join("; ", candidates.Select(l => $"{l.Name}: {Describe(l.Tags)}"))})",
                        graph.IdOf(i), graph.LineOf(i)));
            }
            if (forced is not null && forced != GraphNames.AutoLayer && layerHandlers.TryGetValue(forced, out var only))
            {
                if (h.LocalOnly && forced != LocalLayer.LayerName)
                    errors.Add(new GraphError(GraphErrorCodes.BadLayer, $"handler '{h.Name}' runs only in the local layer", graph.IdOf(i), graph.LineOf(i)));
                else if (only is not null && !only.Contains(h.Name))
                    errors.Add(new GraphError(GraphErrorCodes.BadLayer, $"layer '{forced}' runs only {string.Join(", ", only)}, not handler '{h.Name}'", graph.IdOf(i), graph.LineOf(i)));
            }
            if (h.Validate is null && h.ValidateWithContext is null) continue;
            IReadOnlyList<string> problems;
            if (!HasOwnArgs(graph, i))
            {
                // Tasks without arguments share one parse per handler.
                int hi = graph.HandlerIndex(i);
                if (sharedProblems[hi] is null)
                    (shared[hi], sharedProblems[hi]) = Parse(h, default, context);
                problems = sharedProblems[hi]!;
            }
            else
            {
                own ??= new object?[graph.Count];
                (own[i], problems) = Parse(h, spec!.Args, context);
            }
            foreach (var p in problems)
                errors.Add(new GraphError(GraphErrorCodes.BadArgs, $"handler '{h.Name}': {p}", graph.IdOf(i), graph.LineOf(i)));
        }
        return errors.Count > before ? null : new PreparedGraph(graph, engine, handlers!, shared, own, context.BaseDirectory);
    }

    internal static (object? Parsed, IReadOnlyList<string> Problems) Parse(HandlerDescriptor h, JsonElement args, ValidationContext context)
        => h.ValidateWithContext is { } withContext ? withContext(args, context) : h.Validate!(args);

    internal static HandlerDescriptor?[] ResolveHandlers(TaskGraph graph, HandlerRegistry registry, List<GraphError>? errors)
    {
        var result = new HandlerDescriptor?[graph.HandlerNames.Length];
        for (int h = 0; h < result.Length; h++)
        {
            if (registry.TryGet(graph.HandlerNames[h], out var d)) result[h] = d;
            else if (errors is not null)
            {
                // Report each task that names it, so every line is listed (up to a limit).
                var name = graph.HandlerNames[h];
                int reported = 0, count = 0;
                for (int i = 0; i < graph.Count; i++)
                {
                    if (graph.HandlerIndex(i) != h) continue;
                    count++;
                    if (reported == MaxErrorsPerCause) continue;
                    reported++;
                    errors.Add(new GraphError(GraphErrorCodes.UnknownHandler,
                        name.Length == 0 ? "has no handler" : $"handler '{GraphLimits.Printable(name)}' is not registered (known: {string.Join(", ", registry.Names)})",
                        graph.IdOf(i), graph.LineOf(i)));
                }
                if (count > reported)
                    errors.Add(new GraphError(GraphErrorCodes.UnknownHandler, $"... and {count - reported:N0} more tasks name handler '{GraphLimits.Printable(name)}'"));
                if (errors.Count > 10 * MaxErrorsPerCause) break;
            }
        }
        return result;
    }
}
