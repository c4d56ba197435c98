using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Store;

namespace TaskMesh.Hosting;

/// <summary>Graph files read the one way every command and the runtime read them.</summary>
public static class GraphFiles
{
    /// <summary>
    /// Reads <paramref name="path"/> (a regular file under the size cap), builds the graph and
    /// prepares it for <paramref name="engine"/>; also the SHA-256 of the file's bytes (kept with a
    /// stored run and checked when it is resumed).
    /// </summary>
    /// <exception cref="GraphValidationException">With every problem in the file (an unreadable file included).</exception>
    public static (PreparedGraph Graph, string Hash) Load(TaskMeshEngine engine, string path, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        byte[] bytes;
        try
        {
            bytes = TaskMesh.Engine.IO.SafeFile.ReadInput(path, TaskMesh.Engine.IO.SafeFile.MaxGraphBytes, "graph file", ct);
        }
        catch (TaskMesh.Engine.IO.UnsafeFileException ex)
        {
            throw new GraphValidationException([new GraphError(GraphErrorCodes.Unreadable, ex.Message)], path);
        }
        var builder = GraphLoader.Load(bytes, path);
        ct.ThrowIfCancellationRequested();
        return (engine.Prepare(builder, path, ct), RunStore.HashOf(bytes));
    }
}
