using System.Security.Cryptography;
using System.Text;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// The result cache a run consults for tasks that ask for it (<c>"cache": true</c>): a successful
/// execution is kept under a key made of the handler, its version, the task's arguments and its
/// data-edge inputs, and a later task with the same key — in this run or another — is not run:
/// its output is the kept one. Failed executions are never kept. Called from scheduler threads.
/// </summary>
public interface ITaskCache
{
    /// <summary>The output kept under <paramref name="key"/>, if any.</summary>
    bool TryGet(string key, out object? output);

    /// <summary>Keeps a successful execution's output under <paramref name="key"/>.</summary>
    void Put(string key, string handler, string taskId, object? output);
}

/// <summary>Cache keys.</summary>
public static class TaskCacheKey
{
    /// <summary>
    /// The key of task <paramref name="task"/>: SHA-256 over the handler's name and version, the
    /// arguments as written (their JSON text), the content of every file they name (their hashes, when
    /// the parsed arguments are <see cref="Handlers.IReadsFiles"/>: the same path edited, or a
    /// different file at the same relative path, is another key) and, in edge order, the JSON of every data-edge input;
    /// null when an input cannot be written as JSON (the task then runs, uncached).
    /// </summary>
    public static string? Of(PreparedGraph graph, int task, IReadOnlyList<KeyValuePair<string, object?>> inputs) => Of(graph, task, inputs, variant: null);

    /// <summary>The key of task <paramref name="task"/>, with the part of its output that depends on its layer (<see cref="Handlers.HandlerDescriptor.CacheVariant"/>).</summary>
    public static string? Of(PreparedGraph graph, int task, IReadOnlyList<KeyValuePair<string, object?>> inputs, string? variant)
    {
        ArgumentNullException.ThrowIfNull(graph);
        var h = graph.HandlerOf(task);
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        void Add(string part)
        {
            hash.AppendData(Encoding.UTF8.GetBytes(part));
            hash.AppendData([0]);
        }
        Add(h.Name);
        Add(h.Version);
        var args = graph.Graph.SpecOf(task)?.Args;
        Add(args is { ValueKind: not System.Text.Json.JsonValueKind.Undefined } a ? a.GetRawText() : "");
        if (graph.ParsedArgsOf(task) is Handlers.IReadsFiles reads)
            foreach (var f in reads.Files) Add(f.Sha256);
        if (variant is not null) Add("variant:" + variant);
        foreach (var (_, output) in inputs)
        {
            if (Store.StoredOutput.Serialize(output, int.MaxValue) is not string json) return null;
            Add(json);
        }
        return Convert.ToHexStringLower(hash.GetHashAndReset());
    }
}
