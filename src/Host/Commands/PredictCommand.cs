using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Routing;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using TaskMesh.Learning.Routing;
using TaskMesh.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh predict GRAPH.json [--objective O] [--limit N] [--json FILE]</c>: an EXPLAIN of
/// routing — per task its complexity, the layer the learned router would choose and why, with
/// each candidate's predicted duration, confidence and cost. Nothing runs.
/// </summary>
internal static class PredictCommand
{
    public static Command Create(CliIO io)
    {
        var graphArg = GraphInput.GraphArgument();
        var config = CliOptions.Config();
        var store = StoreInput.StoreOption();
        var objective = CliOptions.OneOf("--objective", "The objective to explain (default: the config's).", [.. TaskMesh.Engine.Configuration.RoutingObjectives.All]);
        var limit = CliOptions.Int("--limit", 0, int.MaxValue, "Tasks printed (default 50; the JSON has every one).");
        var json = new Option<string?>("--json") { Description = "Write every task's prediction (JSON) to this file.", HelpName = "FILE" };
        var command = new Command("predict", "Explain routing: per task the chosen layer, complexity, and each candidate's predicted duration, confidence and cost. Nothing runs.")
        {
            graphArg, config, store, objective, limit, json,
        };
        command.SetAction(parse =>
        {
            var path = parse.GetValue(graphArg)!;
            var jsonPath = parse.GetValue(json);
            CliOptions.CheckOutput("--json", jsonPath, path, parse.GetValue(config));
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var storePath = StoreInput.PathOf(parse.GetValue(store), cfg);
            CliOptions.CheckOutput("--json", jsonPath, storePath);
            // The runtime a run would use (its store read-only: nothing is recorded), and the plan a
            // run of this graph would follow: the same routing, budget, exploration and features.
            var services = new ServiceCollection();
            var taskmesh = services.AddTaskMesh(cfg);
            if (TaskMesh.Engine.Store.RunStore.IsDatabaseUrl(storePath) || File.Exists(storePath)) taskmesh.AddRunStore(storePath, readOnly: true);
            using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
            var runtime = RunCommand.Resolve(provider);
            var (graph, _) = runtime.LoadGraph(path, io.Token);
            var setup = runtime.Prepare(graph, new RunRequest { Objective = parse.GetValue(objective) });
            var plan = setup.Plan();
            string modelNote = setup.Router is null ? "no learned routing: handlers' layers, else local" : setup.ModelNote;
            var features = new FeatureExtractor(graph);
            var rows = new List<(string Id, string Handler, double Complexity, string Layer, string Why)>();
            for (int i = 0; i < graph.Count; i++)
            {
                if ((i & 4095) == 0) io.Token.ThrowIfCancellationRequested();
                rows.Add((graph.Graph.IdOf(i), graph.Graph.HandlerOfTask(i), features.Complexity(i), plan.LayerOf(i), plan.ReasonOf(i)));
            }
            var o = io.Out;
            o.WriteLine($"predicted routing of '{TerminalText.Safe(graph.Graph.Name)}' ({graph.Count} tasks; {modelNote}; objective {parse.GetValue(objective) ?? cfg.RoutingObjective}{(setup.Budget is double b ? string.Create(CultureInfo.InvariantCulture, $"; budget {b:0.######}") : "")}); nothing ran");
            foreach (var g in rows.GroupBy(r => r.Layer).OrderBy(g => g.Key, StringComparer.Ordinal)) o.WriteLine($"  {g.Key}: {g.Count()} task(s)");
            int shown = parse.GetValue(limit) ?? 50;
            foreach (var r in rows.Take(shown))
                o.WriteLine(string.Create(CultureInfo.InvariantCulture, $"  {r.Id} [{r.Handler}, complexity {r.Complexity:0.#}] → {r.Layer}: {TerminalText.Safe(r.Why)}"));
            if (rows.Count > shown) o.WriteLine($"  ... and {rows.Count - shown} more");
            if (jsonPath is not null)
            {
                SafeFile.WriteAtomic(jsonPath, stream =>
                {
                    using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                    w.WriteStartArray();
                    foreach (var r in rows)
                    {
                        w.WriteStartObject();
                        w.WriteString("task_id", r.Id);
                        w.WriteString("handler", r.Handler);
                        w.WriteNumber("complexity", r.Complexity);
                        w.WriteString("layer", r.Layer);
                        w.WriteString("reason", r.Why);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                });
                o.WriteLine($"predictions written to {jsonPath}");
            }
            return ExitCodes.Ok;
        });
        return command;
    }
}
