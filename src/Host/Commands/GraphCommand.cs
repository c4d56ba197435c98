namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh graph GRAPH.json --dot [FILE] | --critical-path</c>.</summary>
internal static class GraphCommand
{
    public static int Execute(ArgList args, TextWriter stdout, TextWriter stderr)
    {
        var config = GraphInput.LoadConfig(args);
        var (dot, dotFile) = args.OptionalValue("--dot");
        bool critical = args.Flag("--critical-path");
        var path = args.Positional("graph file");
        if (!dot && !critical) throw new UsageException("graph needs --dot [FILE] or --critical-path");
        var (engine, graph) = GraphInput.Load(path, config);
        var analysis = engine.Analyze(graph);
        if (critical)
        {
            var ids = analysis.CriticalPath.Select(graph.IdOf);
            stdout.WriteLine($"critical path ({analysis.CriticalPath.Count} tasks, {analysis.CriticalPathMs:0.###} ms): {string.Join(" -> ", ids)}");
        }
        if (dot)
        {
            var text = analysis.ToDot(graph.Graph);
            if (dotFile is null) stdout.Write(text);
            else
            {
                AtomicFile.WriteAllText(dotFile, text);
                stdout.WriteLine($"wrote {dotFile}");
            }
        }
        return ExitCodes.Ok;
    }
}
