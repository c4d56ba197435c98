using System.Collections.Concurrent;
using System.Globalization;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Store;

/// <summary>
/// The result cache kept in a run store (<c>task_cache</c>): outputs of successful executions by
/// key (see <see cref="TaskCacheKey"/>), shared by every run against the store. Outputs are kept as
/// JSON (up to <see cref="RunRecorder.MaxStoredOutputBytes"/>; a larger one is not cached) and come
/// back as <see cref="StoredOutput"/> (strings and numbers as themselves). Lookups read the store;
/// what this process kept but the writer has not committed yet is found in memory.
/// </summary>
public sealed class StoreTaskCache : ITaskCache
{
    private readonly RunStore _store;
    private readonly ConcurrentDictionary<string, string> _pending = new(StringComparer.Ordinal);
    private readonly string? _runId;

    /// <summary>A cache over <paramref name="store"/>; <paramref name="runId"/> is noted with what is kept.</summary>
    public StoreTaskCache(RunStore store, string? runId = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        if (store.Writer is null) throw new ArgumentException("the store is open read-only", nameof(store));
        _store = store;
        _runId = runId;
    }

    /// <inheritdoc />
    public bool TryGet(string key, out object? output)
    {
        output = null;
        string? json = _pending.TryGetValue(key, out var p) ? p : _store.CachedJson(key);
        if (json is null) return false;
        output = StoredOutput.Restore(json);
        return true;
    }

    /// <inheritdoc />
    public void Put(string key, string handler, string taskId, object? output)
    {
        if (StoredOutput.Serialize(output, RunRecorder.MaxStoredOutputBytes) is not string json) return;
        _pending[key] = json;
        _store.Writer!.Enqueue(new CacheRow(key, handler, json, _runId, taskId, DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture)));
    }

    private sealed class CacheRow(string key, string handler, string json, string? runId, string taskId, string at) : StoreWrite
    {
        public override long Bytes => 2L * json.Length;

        public override void Apply(StoreBatch b)
        {
            string? file = null;
            if (json.Length > OutputFiles.InlineLimit && b.FilesFolder is not null)
            {
                file = OutputFiles.CacheName(key);
                OutputFiles.Write(b.FilesFolder, file, json);
            }
            var cmd = b.Command("""
                INSERT INTO task_cache (key, handler, json, run_id, task_id, created_at, file, bytes)
                VALUES (@key, @handler, @json, @run, @task, @at, @file, @bytes)
                ON CONFLICT (key) DO UPDATE SET handler = excluded.handler, json = excluded.json, run_id = excluded.run_id, task_id = excluded.task_id,
                    created_at = excluded.created_at, file = excluded.file, bytes = excluded.bytes
                """);
            cmd.Parameters.AddWithValue("@key", key);
            cmd.Parameters.AddWithValue("@handler", handler);
            cmd.Parameters.AddWithValue("@json", file is null ? json : "");
            cmd.Parameters.AddWithValue("@file", (object?)file ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@bytes", json.Length);
            cmd.Parameters.AddWithValue("@run", (object?)runId ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@task", taskId);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.ExecuteNonQuery();
        }
    }
}
