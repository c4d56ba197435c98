using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Layers.Local;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;

namespace TaskMesh.Bench.Routing;

/// <summary>One layer of a simulated world: its slots and price, and the hidden truth of its durations and failures.</summary>
internal sealed record WorldLayer(string Name, int Slots, double PricePerSecond, int Rank, Formula DurationMs, Formula PFail);

/// <summary>
/// A simulated world (<c>--world FILE</c>, JSON; <c>bench/Routing/world.json</c> by default): layers
/// whose true durations and failure probabilities are formulas over the tasks' features, the ranges
/// the features are drawn from, the noise on durations, and the confidence tasks need.
/// </summary>
internal sealed class World
{
    public required IReadOnlyList<WorldLayer> Layers { get; init; }
    public required IReadOnlyDictionary<string, (double Min, double Max, bool Log)> Features { get; init; }
    public double Noise { get; init; }
    public double MinConfidence { get; init; } = 0.7;

    public static World Load(string path)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        var root = doc.RootElement;
        var logs = root.TryGetProperty("log_features", out var lf) ? lf.EnumerateArray().Select(e => e.GetString()!).ToHashSet() : [];
        var layers = root.GetProperty("layers").EnumerateArray().Select(l => new WorldLayer(
            l.GetProperty("name").GetString()!, l.GetProperty("slots").GetInt32(), l.GetProperty("price_per_second").GetDouble(), l.GetProperty("rank").GetInt32(),
            Formula.Parse(l.GetProperty("duration_ms").GetString()!), Formula.Parse(l.GetProperty("p_fail").GetString()!))).OrderBy(l => l.Rank).ToList();
        var features = root.GetProperty("features").EnumerateObject().ToDictionary(p => p.Name, p => (p.Value[0].GetDouble(), p.Value[1].GetDouble(), logs.Contains(p.Name)));
        return new World
        {
            Layers = layers,
            Features = features,
            Noise = root.TryGetProperty("noise", out var n) ? n.GetDouble() : 0,
            MinConfidence = root.TryGetProperty("min_confidence", out var m) ? m.GetDouble() : 0.7,
        };
    }

    /// <summary><paramref name="count"/> tasks' features, drawn with <paramref name="seed"/> (integers stay integers when both bounds are).</summary>
    public List<Dictionary<string, double>> Draw(int count, int seed)
    {
        var rng = new Random(seed);
        var tasks = new List<Dictionary<string, double>>(count);
        for (int i = 0; i < count; i++)
        {
            var t = new Dictionary<string, double>(StringComparer.Ordinal);
            foreach (var (name, (min, max, log)) in Features)
                t[name] = log ? Math.Round(Math.Exp(Math.Log(min) + rng.NextDouble() * (Math.Log(max) - Math.Log(min))))
                    : min == Math.Floor(min) && max == Math.Floor(max) ? rng.Next((int)min, (int)max + 1) : min + rng.NextDouble() * (max - min);
            tasks.Add(t);
        }
        return tasks;
    }
}

/// <summary>What one policy achieved on a workload.</summary>
/// <param name="floor_violations">The share of first attempts sent to a layer whose true success probability for the task is under the world's confidence floor.</param>
internal sealed record RoutingRecord(string policy, int tasks, double success_rate, double total_cost, double makespan_s, int escalations, double? floor_violations, string world, string objective);

/// <summary>
/// <c>bench -- routing --simulate [--world FILE] [--tasks N] [--train N] [--seed S] --json out.json</c>:
/// a discrete-event simulation of a world's layers. The learned router trains on <c>--train</c>
/// executions of randomly routed tasks (5,000 by default), through the product's own feature
/// extractor and trainer, then routes a fresh workload of <c>--tasks</c> tasks; the same workload
/// runs under an oracle that knows the hidden formulas, <c>always_cheapest</c>,
/// <c>always_most_capable</c>, <c>complexity_bands</c> and <c>random</c>. Every policy's tasks
/// escalate alike: a failed attempt moves up one rank (at most three times). One record per
/// policy, plus <c>{"metric": "routing_ns_per_task"}</c> (the hot-path decision: routing a task
/// whose kind is decided) and <c>{"metric": "routing_first_pass_ns_per_task"}</c> (the first pass,
/// which makes a decision for every new kind).
/// </summary>
internal static class RoutingSuite
{
    /// <summary>A simulated task's arguments as its handler's validator parsed them: the sizes it states (what the router reads).</summary>
    private sealed record SimArgs(TaskMeasures Measures) : IMeasuredArgs
    {
        public static SimArgs Parse(JsonElement a)
        {
            double Get(string name) => a.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetDouble() : 0;
            return new SimArgs(new TaskMeasures(Get("micros"), Get("millis"), Get("bytes"), Get("size"), Get("qubits"), Get("gates")));
        }
    }

    public static int Run(string[] args)
    {
        if (args.Contains("--real"))
        {
            int n = int.Parse(Opt(args, "--tasks") ?? "300", CultureInfo.InvariantCulture);
            int h = int.Parse(Opt(args, "--train") ?? "1500", CultureInfo.InvariantCulture);
            string realWorkload = Opt(args, "--workload") ?? "mixed";
            if (!RealRouting.Workloads.Contains(realWorkload))
            {
                Console.Error.WriteLine($"routing: --workload '{realWorkload}' is not one of {string.Join(", ", RealRouting.Workloads)}");
                return 2;
            }
            string objective = Opt(args, "--objective") ?? Objectives.Auto;
            if (!Objectives.All.Contains(objective))
            {
                Console.Error.WriteLine($"routing: --objective '{objective}' is not one of {string.Join(", ", Objectives.All)}");
                return 2;
            }
            Console.WriteLine($"routing bench (real layers, {realWorkload} workload, objective {objective}): {n} circuits, history of {h}");
            var real = RealRouting.Run(n, h, int.Parse(Opt(args, "--seed") ?? "1", CultureInfo.InvariantCulture), realWorkload, objective);
            Console.WriteLine($"{"policy",-20} {"success",8} {"cost",12} {"wall s",9} {"escalations",11}");
            foreach (var rec in real) Console.WriteLine($"{rec.policy,-20} {rec.success_rate,8:P2} {rec.total_cost,12:0.######} {rec.makespan_s,9:0.###} {rec.escalations,11}");
            if (Opt(args, "--json") is { } path)
            {
                File.WriteAllText(path, JsonSerializer.Serialize(real, new JsonSerializerOptions { WriteIndented = true }));
                Console.WriteLine($"wrote {path}");
            }
            return 0;
        }
        if (!args.Contains("--simulate"))
        {
            Console.Error.WriteLine("routing: --simulate or --real (see bench/README.md)");
            return 2;
        }
        string worldPath = Opt(args, "--world") ?? Path.Combine(AppContext.BaseDirectory, "Routing", "world.json");
        int tasks = int.Parse(Opt(args, "--tasks") ?? "100000", CultureInfo.InvariantCulture);
        int train = int.Parse(Opt(args, "--train") ?? "5000", CultureInfo.InvariantCulture);
        int seed = int.Parse(Opt(args, "--seed") ?? "1", CultureInfo.InvariantCulture);
        string? json = Opt(args, "--json");
        string simObjective = Opt(args, "--objective") ?? Objectives.Auto;
        if (!Objectives.All.Contains(simObjective))
        {
            Console.Error.WriteLine($"routing: --objective '{simObjective}' is not one of {string.Join(", ", Objectives.All)}");
            return 2;
        }
        var worlds = worldPath == "all"
            ? Directory.GetFiles(Path.Combine(AppContext.BaseDirectory, "Routing"), "world*.json").Order(StringComparer.Ordinal).ToList()
            : [worldPath];
        var records = new List<object>();
        foreach (var w in worlds) records.AddRange(Simulate(w, tasks, train, seed, simObjective));
        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    /// <summary>One world: train, route its workload with every policy, measure routing; its records.</summary>
    private static List<object> Simulate(string worldPath, int tasks, int train, int seed, string simObjective)
    {
        var world = World.Load(worldPath);
        Console.WriteLine($"routing bench (simulated): world {worldPath}, {world.Layers.Count} layers, {tasks} tasks, trained on {train} executions");

        var engine = Engine(world);
        // Training history: randomly routed executions, recorded as the run store keeps them.
        var history = world.Draw(train, seed);
        var historyGraph = Prepare(engine, history, "history");
        var historyFeatures = new FeatureExtractor(historyGraph);
        var rng = new Random(seed + 1);
        var sim = new Simulator(world, seed + 2);
        var firstLayers = history.Select(_ => rng.Next(world.Layers.Count)).ToArray();
        var outcomes = sim.Run(history, i => firstLayers[i]);
        var rows = Enumerable.Range(0, train).Select(i => new TrainingRow("sim", world.Layers[firstLayers[i]].Name, world.Layers[outcomes.FinalLayer[i]].Name,
            outcomes.Succeeded[i] ? "succeeded" : "failed", outcomes.DurationMs[i], outcomes.Escalations[i], historyFeatures.Extract(i), null)
            { ArgumentFeatures = historyFeatures.ArgumentFeaturesJson(i), LastAttemptMs = outcomes.LastAttemptMs[i], FirstAttemptMs = outcomes.FirstAttemptMs[i] }).ToList();
        var sw = Stopwatch.StartNew();
        var models = ModelTrainer.Train(rows, seed);
        Console.WriteLine($"trained in {sw.Elapsed.TotalSeconds:0.0} s: " + string.Join("; ", models.Accuracy.Select(a =>
            string.Create(CultureInfo.InvariantCulture, $"{a.Layer} R² {a.DurationR2:0.00} AUC {a.SuccessAuc:0.00} calibration error {a.CalibrationError:0.000}"))));
        foreach (var line in models.Arguments.Describe()) Console.WriteLine("argument features: " + line);

        // The fresh workload, routed by each policy.
        var workload = world.Draw(tasks, seed + 100);
        var graph = Prepare(engine, workload, "workload");
        var layerIndex = world.Layers.Select((l, i) => (l.Name, i)).ToDictionary(x => x.Name, x => x.i);
        // The world's layers only: the engine's own `local` is no candidate in a world without one.
        var context = RoutingContext.For(graph, engine.Layers.Where(l => layerIndex.ContainsKey(l.Name)).ToList());
        var features = new FeatureExtractor(graph);
        var learned = new int[graph.Count];
        var warm = new int[graph.Count];
        // Each timed pass starts from a collected heap: a collection the workload's million graph
        // objects made due is not the router's.
        // The first pass (every kind new) of fresh routers: six unmeasured to warm the code (the passes
        // kept getting faster until the fifth: 470, 330, 330, 330, 245, 130 ms), then
        // the median of five measured (a world of few kinds times a few dozen decisions a pass, on
        // caches the pass's collection left cold: three were not enough to settle its median), each
        // with a router of its own; the last one routes on.
        var firstPasses = new List<(double NsPerTask, double DecisionUs)>();
        LearnedRouter router = null!;
        // A world of few kinds decides little per pass: its decision code would still be tiering up
        // (a decision took 21, 15, 10.5, 9.7 µs after 1, 500, 1,000, 1,500 fresh routers on
        // world-frugal.json). Fresh routers over the first batch first, until 30,000 decisions
        // (at most 3,000 routers, 20 s).
        var warmBatch = Enumerable.Range(0, Math.Min(1024, graph.Count)).ToArray();
        var warmKinds = new int[warmBatch.Length];
        var warmClock = Stopwatch.StartNew();
        for (int k = 0, decided = 0; k < 3000 && decided < 30_000 && warmClock.Elapsed < TimeSpan.FromSeconds(20); k++)
        {
            var warming = new LearnedRouter(models, new RoutingOptions { MinConfidence = world.MinConfidence, Objective = simObjective, Features = features });
            warming.KindsOf(context, warmBatch, warmKinds);
            decided += Math.Max(1, warming.DecisionsMade);
        }
        for (int pass = -6; pass < 5; pass++)
        {
            // The graph's feature extractor is shared, as a run shares it between its router and its recorder (the graph analysed once).
            router = new LearnedRouter(models, new RoutingOptions { MinConfidence = world.MinConfidence, Objective = simObjective, Features = features });
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            sw.Restart();
            RouteAll(router, context, layerIndex, learned);
            double ns = sw.Elapsed.TotalMilliseconds * 1e6 / graph.Count;
            if (pass >= 0) firstPasses.Add((ns, router.DecidingTime.TotalMilliseconds * 1000 / Math.Max(1, router.DecisionsMade)));
        }
        double routingNs = firstPasses.Select(p => p.NsPerTask).Order().ElementAt(2);
        double decisionUs = firstPasses.Select(p => p.DecisionUs).Order().ElementAt(2);
        // Again, with the table compiled: what routing a task costs once its kind was decided (its
        // features read and quantized, the table looked up).
        int made = router.DecisionsMade;
        var warmPasses = new List<double>();
        // Two unmeasured passes first: with a short first pass (few kinds) the code was still being
        // promoted to its optimised tier during the next ones (passes of 220 ns/task, then 25).
        for (int pass = -2; pass < 5; pass++)
        {
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            sw.Restart();
            RouteAll(router, context, layerIndex, warm);
            if (pass >= 0) warmPasses.Add(sw.Elapsed.TotalMilliseconds * 1e6 / graph.Count);
            if (router.DecisionsMade != made || !warm.AsSpan().SequenceEqual(learned)) throw new InvalidOperationException("routing the workload again changed decisions");
        }
        double warmNs = warmPasses.Order().ElementAt(warmPasses.Count / 2);   // the median of five passes

        var cheapest = world.Layers.Select((l, i) => (l, i)).MinBy(x => (x.l.PricePerSecond, x.l.Rank)).i;
        int mostCapable = world.Layers.Count - 1;
        var policies = new (string Name, Func<int, int> Choose)[]
        {
            ("learned", i => learned[i]),
            ("oracle", i => Oracle(world, workload[i], simObjective)),
            ("oracle_floor", i => OracleFloor(world, workload[i])),
            ("oracle_no_floor", i => Oracle(world, workload[i], Objectives.Cheapest)),
            ("always_cheapest", _ => cheapest),
            ("always_most_capable", _ => mostCapable),
            ("complexity_bands", i => Math.Min(mostCapable, (int)(features.Complexity(i) / (100.0 / world.Layers.Count)))),
            ("random", i => (int)(TaskMesh.Engine.Scheduling.SplitMix.Next((ulong)seed * TaskMesh.Engine.Scheduling.SplitMix.Golden ^ (ulong)i) % (ulong)world.Layers.Count)),
        };
        var records = new List<object>();
        string worldName = Path.GetFileName(worldPath);
        Console.WriteLine($"{"policy",-20} {"success",8} {"cost",12} {"makespan s",11} {"escalations",11} {"floor viol.",10}");
        foreach (var (name, choose) in policies)
        {
            var r = new Simulator(world, seed + 3).Run(workload, choose);
            int violations = 0;
            for (int i = 0; i < tasks; i++)
                if (1 - Math.Clamp(world.Layers[choose(i)].PFail.Evaluate(workload[i]), 0, 1) < world.MinConfidence) violations++;
            var rec = new RoutingRecord(name, tasks, Math.Round(r.SuccessRate, 5), Math.Round(r.TotalCost, 4), Math.Round(r.MakespanMs / 1000, 3), r.TotalEscalations,
                Math.Round(violations / (double)tasks, 5), Path.GetFileName(worldPath), simObjective);
            records.Add(rec);
            Console.WriteLine($"{name,-20} {rec.success_rate,8:P2} {rec.total_cost,12:0.###} {rec.makespan_s,11:0.###} {rec.escalations,11} {(rec.floor_violations is double fv ? fv.ToString("P1", CultureInfo.InvariantCulture) : "-"),10}");
        }
        // The hot-path decision — a task whose kind's decision is in the table — and the first pass, which compiles the table.
        records.Add(new { metric = "routing_ns_per_task", value = Math.Round(warmNs, 1), world = worldName });
        records.Add(new { metric = "routing_first_pass_ns_per_task", value = Math.Round(routingNs, 1), world = worldName, kinds = router.DecisionsMade });
        records.Add(new { metric = "routing_decision_us", value = Math.Round(decisionUs, 2), world = worldName, decisions = router.DecisionsMade });
        Console.WriteLine($"routing: first pass {routingNs:0.0} ns/task ({router.DecisionsMade} decisions made for {graph.Count} tasks, {decisionUs:0.00} µs each; medians of five fresh routers, warmed); hot path {warmNs:0.0} ns/task with the table compiled (median; passes {string.Join(" / ", warmPasses.Select(p => p.ToString("0.0", CultureInfo.InvariantCulture)))})");
        var byName = records.OfType<RoutingRecord>().ToDictionary(r => r.policy);
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"learned ÷ oracle: success {byName["learned"].success_rate / byName["oracle"].success_rate:0.000}, cost {Ratio(byName["learned"].total_cost, byName["oracle"].total_cost):0.000}, escalations {Ratio(byName["learned"].escalations, byName["oracle"].escalations):0.000}, makespan {Ratio(byName["learned"].makespan_s, byName["oracle"].makespan_s):0.000}; learned ÷ always_most_capable: success {byName["learned"].success_rate / byName["always_most_capable"].success_rate:0.000}, cost {byName["learned"].total_cost / byName["always_most_capable"].total_cost:0.000}"));
        var l = byName["learned"];
        var o = byName["oracle"];
        bool met = l.success_rate >= 0.99 * o.success_rate && l.total_cost <= 1.10 * o.total_cost && l.escalations <= 1.5 * o.escalations
            && l.makespan_s <= 1.25 * o.makespan_s && warmNs < 50 && routingNs <= 2000 && decisionUs <= 10;
        Console.WriteLine($"goals (success ≥ 0.99×, cost ≤ 1.10×, escalations ≤ 1.5×, makespan ≤ 1.25× the oracle's; hot path < 50 ns, first pass ≤ 2 µs, a decision ≤ 10 µs): {(met ? "met" : "NOT met")}");
        // `auto` keeps the confidence floor, and so does its oracle: what keeping it costs, against the optimum without it.
        var free = byName["oracle_no_floor"];
        if (simObjective == Objectives.Auto)
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  the floor (min_confidence {world.MinConfidence:0.##}) costs {Ratio(o.total_cost, free.total_cost):0.000}× the optimum without it (oracle_no_floor) and saves {free.escalations - o.escalations:N0} escalations; learned {Ratio(l.total_cost, free.total_cost):0.000}× that optimum. Without the floor: --objective cheapest"));
        Console.WriteLine();
        return records;
    }

    /// <summary>
    /// Routes every task of <paramref name="context"/>'s graph as the engine does (ComputeRoutes):
    /// batches of 1,024 tasks — their kinds, each kind's decision taken once, when the router
    /// decides by kind; else decisions into one reused buffer — each turned into the layer's index.
    /// Optimised from its first call (it runs twice), so the figures are not those of unoptimised code.
    /// </summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private static void RouteAll(LearnedRouter router, RoutingContext context, Dictionary<string, int> layerIndex, int[] into)
    {
        var batch = new int[1024];
        var decisions = new RouteDecision[batch.Length];
        string? lastName = null;
        int lastIndex = 0, count = context.Graph.Count;
        if (router.RoutesByKind)
        {
            // As the engine does with a router that decides by kind: each kind's layer taken once.
            var kinds = new int[batch.Length];
            var layerOfKind = new List<int>();
            for (int start = 0; start < count; start += batch.Length)
            {
                int n = Math.Min(batch.Length, count - start);
                for (int k = 0; k < n; k++) batch[k] = start + k;
                router.KindsOf(context, batch.AsSpan(0, n), kinds.AsSpan(0, n));
                for (int k = 0; k < n; k++)
                {
                    int kind = kinds[k];
                    while (layerOfKind.Count <= kind) layerOfKind.Add(-1);
                    int l = layerOfKind[kind];
                    if (l < 0) layerOfKind[kind] = l = layerIndex[router.DecisionOfKind(context, kind).Layer];
                    into[start + k] = l;
                }
            }
            return;
        }
        for (int start = 0; start < count; start += batch.Length)
        {
            int n = Math.Min(batch.Length, count - start);
            for (int k = 0; k < n; k++) batch[k] = start + k;
            router.RouteBatch(context, batch.AsSpan(0, n), decisions.AsSpan(0, n));
            for (int k = 0; k < n; k++)
            {
                // A kind's decisions share their layer name: compare references before hashing the name.
                string name = decisions[k].Layer;
                if (!ReferenceEquals(name, lastName)) (lastName, lastIndex) = (name, layerIndex[name]);
                into[start + k] = lastIndex;
            }
        }
    }

    /// <summary>The engine the router routes with: one layer per world layer (routing only: nothing runs), and the <c>sim</c> handler.</summary>
    private static TaskMeshEngine Engine(World world)
    {
        var engine = new TaskMeshEngine();
        engine.Handlers.Register(new HandlerDescriptor("sim", (ctx, a, ct) => new ValueTask<object?>((object?)null))
        {
            Validate = a => (SimArgs.Parse(a), []),
            EstimateMicros = p => ((SimArgs)p!).Measures.Micros,
        });
        foreach (var l in world.Layers)
        {
            ExecutionLayer layer = l.Name == LocalLayer.LayerName ? engine.Layers[0] : new LocalLayer(l.Slots, l.Name);
            layer.Configure(l.PricePerSecond, l.Rank);
            if (l.Name != LocalLayer.LayerName) engine.AddLayer(layer);
        }
        return engine;
    }

    private static PreparedGraph Prepare(TaskMeshEngine engine, List<Dictionary<string, double>> tasks, string name)
    {
        var g = new GraphBuilder(name);
        for (int i = 0; i < tasks.Count; i++) g.Task($"t{i}", "sim", tasks[i]);
        return engine.Prepare(g);
    }

    /// <summary>a ÷ b, with 0 ÷ 0 = 1 (both policies at nothing).</summary>
    private static double Ratio(double a, double b) => b == 0 ? (a == 0 ? 1 : double.PositiveInfinity) : a / b;

    /// <summary>
    /// The optimum in expectation under <paramref name="objective"/>: the start layer whose whole
    /// escalation chain — as the simulator runs it, up one rank per failure, at most four attempts —
    /// has the least expected cost (<c>cheapest</c>), the least expected cost among the layers whose
    /// true success probability meets the world's confidence floor (<c>auto</c>, whose promise is
    /// that floor: the most reliable layer when none meets it — <see cref="OracleFloor"/>), or the
    /// least expected time (<c>fastest</c>, slots' waits aside) under the world's true formulas; ties
    /// by the other measure, then by rank. No start layer the objective allows does better in expectation.
    /// </summary>
    internal static int Oracle(World world, Dictionary<string, double> task, string objective)
    {
        if (objective == Objectives.Auto) return OracleFloor(world, task);
        int best = 0;
        (double Cost, double Ms) bestChain = (double.MaxValue, double.MaxValue);
        for (int l = 0; l < world.Layers.Count; l++)
        {
            var chain = ExpectedChain(world, task, l);
            bool better = objective == Objectives.Fastest
                ? chain.Ms < bestChain.Ms - 1e-12 || Math.Abs(chain.Ms - bestChain.Ms) <= 1e-12 && chain.Cost < bestChain.Cost
                : chain.Cost < bestChain.Cost - 1e-12 || Math.Abs(chain.Cost - bestChain.Cost) <= 1e-12 && chain.Ms < bestChain.Ms;
            if (better) (best, bestChain) = (l, chain);
        }
        return best;
    }

    /// <summary>The expected cost and time of a task's escalation chain started on layer <paramref name="start"/>, as the simulator runs it.</summary>
    internal static (double Cost, double Ms) ExpectedChain(World world, Dictionary<string, double> task, int start)
    {
        double cost = 0, ms = 0, reach = 1;
        for (int k = start, attempt = 0; k < world.Layers.Count && attempt <= 3; k++, attempt++)
        {
            var layer = world.Layers[k];
            double d = Math.Max(0, layer.DurationMs.Evaluate(task));
            cost += reach * layer.PricePerSecond * d / 1000;
            ms += reach * d;
            reach *= Math.Clamp(layer.PFail.Evaluate(task), 0, 1);
        }
        return (cost, ms);
    }

    /// <summary>The floor-respecting optimum: the layer of least expected cost of the escalation chain from it whose true success probability meets the world's confidence floor; else the most reliable.</summary>
    private static int OracleFloor(World world, Dictionary<string, double> task)
    {
        int best = -1;
        double bestCost = double.MaxValue;
        for (int l = 0; l < world.Layers.Count; l++)
        {
            if (1 - world.Layers[l].PFail.Evaluate(task) < world.MinConfidence) continue;
            double cost = ExpectedChain(world, task, l).Cost;
            if (cost < bestCost) (best, bestCost) = (l, cost);
        }
        return best >= 0 ? best : Enumerable.Range(0, world.Layers.Count).MaxBy(l => 1 - world.Layers[l].PFail.Evaluate(task));
    }

    private static string? Opt(string[] args, string name)
    {
        int i = Array.IndexOf(args, name);
        return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
    }
}

/// <summary>
/// Runs tasks through a world: each attempt occupies a slot of its layer (the earliest free one),
/// takes the layer's true duration with the world's noise and fails with its true probability; a
/// failed attempt moves the task up one rank, at most three times. Costs are price × duration per attempt.
/// </summary>
internal sealed class Simulator(World world, int seed)
{
    public sealed class Result
    {
        public required int[] FinalLayer, Escalations;
        public required bool[] Succeeded;
        public required double[] DurationMs;
        /// <summary>The last attempt's duration (on the final layer), and the first's when it succeeded (NaN when it failed), as the run store keeps them.</summary>
        public required double?[] LastAttemptMs, FirstAttemptMs;
        public double TotalCost, MakespanMs;
        public int TotalEscalations;
        public double SuccessRate => Succeeded.Count(s => s) / (double)Succeeded.Length;
    }

    public Result Run(List<Dictionary<string, double>> tasks, Func<int, int> firstLayer)
    {
        var rng = new Random(seed);
        var slots = world.Layers.Select(l => new PriorityQueue<int, double>(Enumerable.Range(0, l.Slots).Select(s => (s, 0.0)))).ToArray();
        int n = tasks.Count;
        var r = new Result { FinalLayer = new int[n], Escalations = new int[n], Succeeded = new bool[n], DurationMs = new double[n], LastAttemptMs = new double?[n], FirstAttemptMs = new double?[n] };
        for (int i = 0; i < n; i++)
        {
            int layer = firstLayer(i);
            double ready = 0, spent = 0;
            for (int attempt = 0; ; attempt++)
            {
                var w = world.Layers[layer];
                double ms = Math.Max(0, w.DurationMs.Evaluate(tasks[i]) * (1 + world.Noise * (2 * rng.NextDouble() - 1)));
                slots[layer].TryDequeue(out int slot, out double free);
                double start = Math.Max(free, ready), end = start + ms;
                slots[layer].Enqueue(slot, end);
                r.MakespanMs = Math.Max(r.MakespanMs, end);
                r.TotalCost += w.PricePerSecond * ms / 1000;
                spent += ms;
                bool failed = rng.NextDouble() < Math.Clamp(w.PFail.Evaluate(tasks[i]), 0, 1);
                if (attempt == 0 && !failed) r.FirstAttemptMs[i] = ms;
                r.LastAttemptMs[i] = ms;
                if (!failed || layer == world.Layers.Count - 1 || attempt == 3)
                {
                    r.FinalLayer[i] = layer;
                    r.Succeeded[i] = !failed;
                    r.DurationMs[i] = spent;
                    break;
                }
                r.Escalations[i]++;
                r.TotalEscalations++;
                ready = end;
                layer++;
            }
        }
        return r;
    }
}
