using System.CommandLine;
using TaskMesh.Engine.IO;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh graph GRAPH.json --dot [FILE] | --critical-path [--config F]</c>.</summary>
internal static class GraphCommand
{
    public static Command Create(CliIO io)
    {
        var graphArg = GraphInput.GraphArgument();
        var config = CliOptions.Config();
        var dot = new Option<string?>("--dot")
        {
            Description = "Write Graphviz DOT with the critical path marked, to FILE or standard output.",
            HelpName = "FILE",
            Arity = ArgumentArity.ZeroOrOne,
        };
        var critical = new Option<bool>("--critical-path") { Description = "Print the critical path." };
        var run = new Option<string?>("--run") { Description = "With --dot: fill each node by its outcome in this stored run of the graph (an id, a prefix, or 'last').", HelpName = "RUN" };
        var store = StoreInput.StoreOption();
        var command = new Command("graph", "Graphviz DOT of a graph with its critical path marked, or the path itself.") { graphArg, dot, critical, config, run, store };
        command.SetAction(parse =>
        {
            var path = parse.GetValue(graphArg)!;
            bool wantDot = parse.GetResult(dot) is not null;
            var dotFile = parse.GetValue(dot);
            bool wantCritical = parse.GetValue(critical);
            if (!wantDot && !wantCritical) throw new UsageException("graph needs --dot [FILE] or --critical-path");
            var configPath = parse.GetValue(config);
            CliOptions.CheckOutput("--dot", dotFile, path, configPath);
            var cfg = GraphInput.LoadConfig(configPath, io.Token);
            if (parse.GetValue(run) is not null) CliOptions.CheckOutput("--dot", dotFile, StoreInput.PathOf(parse.GetValue(store), cfg));
            var (engine, graph, hash) = GraphInput.LoadWithHash(path, cfg, io.Token);
            var analysis = engine.Analyze(graph);
            string?[]? statuses = null;
            if (parse.GetValue(run) is string runArg)
            {
                if (!wantDot) throw new UsageException("--run colours the --dot output; add --dot");
                using var s = StoreInput.Open(StoreInput.PathOf(parse.GetValue(store), cfg), readOnly: true, cfg);
                var runId = s.ResolveRunId(runArg);
                var (_, storedHash) = s.GraphOf(runId);
                if (storedHash is not null && storedHash != hash)
                    throw new TaskMesh.Engine.Store.StoreException($"run {runId} ran another version of '{path}' (its SHA-256 differs): its outcomes would not match these nodes");
                statuses = s.StatusesOf(runId, graph.Count);
            }
            if (wantCritical)
            {
                var ids = analysis.CriticalPath.Select(graph.IdOf);
                io.Out.WriteLine($"critical path ({analysis.CriticalPath.Count} tasks, {analysis.CriticalPathMs:0.###} ms): {string.Join(" -> ", ids)}");
            }
            if (wantDot)
            {
                var text = analysis.ToDot(graph.Graph, statuses is null ? null : i => statuses[i]);
                if (dotFile is null) io.Out.Write(text);
                else
                {
                    SafeFile.WriteAtomic(dotFile, s => { using var w = new StreamWriter(s); w.Write(text); });
                    io.Out.WriteLine($"wrote {dotFile}");
                }
            }
            return ExitCodes.Ok;
        });
        return command;
    }
}
