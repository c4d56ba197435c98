using System.CommandLine;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Host.Commands;

/// <summary>Loads the config and a graph file, and prepares the graph for an engine built from that config.</summary>
internal static class GraphInput
{
    public static Argument<string> GraphArgument() => new("GRAPH.json") { Description = "The graph file (JSON)." };

    public static TaskMeshConfig LoadConfig(string? path, CancellationToken ct)
        => path is null ? new TaskMeshConfig() : TaskMeshConfig.Load(path, ct);

    /// <exception cref="GraphValidationException">With every problem in the file.</exception>
    public static (TaskMeshEngine engine, PreparedGraph graph) Load(string path, TaskMeshConfig config, CancellationToken ct)
    {
        var (engine, graph, _) = LoadWithHash(path, config, ct);
        return (engine, graph);
    }

    /// <summary>Like <see cref="Load"/>, with the SHA-256 of the file's bytes (kept with a stored run).</summary>
    public static (TaskMeshEngine engine, PreparedGraph graph, string hash) LoadWithHash(string path, TaskMeshConfig config, CancellationToken ct)
    {
        var engine = new TaskMeshEngine(config.ToEngineOptions());
        var (graph, hash) = TaskMesh.Hosting.GraphFiles.Load(engine, path, ct);
        return (engine, graph, hash);
    }
}
