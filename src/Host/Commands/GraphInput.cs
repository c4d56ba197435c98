using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Host.Commands;

/// <summary>Loads the config and a graph file, and validates the graph against an engine built from that config.</summary>
internal static class GraphInput
{
    public static TaskMeshConfig LoadConfig(ArgList args)
    {
        var path = args.Value("--config");
        return path is null ? new TaskMeshConfig() : TaskMeshConfig.Load(path);
    }

    /// <exception cref="GraphValidationException">With every problem in the file.</exception>
    public static (TaskMeshEngine engine, PreparedGraph graph) Load(string path, TaskMeshConfig config)
    {
        var engine = new TaskMeshEngine(config.ToEngineOptions());
        var builder = GraphLoader.LoadFile(path);
        var graph = engine.Prepare(builder, path);
        return (engine, graph);
    }
}
