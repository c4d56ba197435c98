using System.CommandLine;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh validate GRAPH.json [--config F]</c>: every problem at once, exit 2 if any; runs nothing.</summary>
internal static class ValidateCommand
{
    public static Command Create(CliIO io)
    {
        var graphArg = GraphInput.GraphArgument();
        var config = CliOptions.Config();
        var command = new Command("validate", "Check a graph and report every problem (exit 2 if any); runs nothing.") { graphArg, config };
        command.SetAction(parse =>
        {
            var path = parse.GetValue(graphArg)!;
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var (engine, graph) = GraphInput.Load(path, cfg, io.Token);
            var analysis = engine.Analyze(graph);
            io.Token.ThrowIfCancellationRequested();
            io.Out.WriteLine($"{path}: ok: {graph.Count} tasks, {graph.Graph.EdgeCount} edges, {analysis.Widths.Count} levels, " +
                             $"max width {(analysis.Widths.Count == 0 ? 0 : analysis.Widths.Max())}, critical path {analysis.CriticalPathMs:0.###} ms");
            return ExitCodes.Ok;
        });
        return command;
    }
}
