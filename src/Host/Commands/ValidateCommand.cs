namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh validate GRAPH.json</c>: every problem at once, exit 2 if any; runs nothing.</summary>
internal static class ValidateCommand
{
    public static int Execute(ArgList args, TextWriter stdout, TextWriter stderr)
    {
        var config = GraphInput.LoadConfig(args);
        var path = args.Positional("graph file");
        var (engine, graph) = GraphInput.Load(path, config);
        var analysis = engine.Analyze(graph);
        stdout.WriteLine($"{path}: ok: {graph.Count} tasks, {graph.Graph.EdgeCount} edges, {analysis.Widths.Count} levels, " +
                         $"max width {(analysis.Widths.Count == 0 ? 0 : analysis.Widths.Max())}, critical path {analysis.CriticalPathMs:0.###} ms");
        return ExitCodes.Ok;
    }
}
