using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Server;

/// <summary>
/// The service's reads, once for both transports: each asks <see cref="TaskMeshService"/> at once
/// (its problems are <see cref="ApiException"/>s before anything is written) and returns the
/// writer of its JSON answer. HTTP sends that JSON (<c>GET /api/…</c>); the socket's <c>get</c>
/// message sends the same document as a MessagePack map (<see cref="Find"/> maps its path).
/// </summary>
internal static class Reads
{
    /// <summary>A read: the service, the path's values (e.g. a run id), the query parameters by name.</summary>
    public delegate Action<Utf8JsonWriter> Read(TaskMeshService service, ServerOptions options, string[] values, Func<string, string?> query);

    /// <summary>The reads by path under <c>/api</c> (<c>{}</c>: a value), as the socket's <c>get</c> names them; all need the viewer role.</summary>
    private static readonly (string[] Pattern, Read Read)[] Table =
    [
        (["runs"], (s, _, _, q) => Runs(s, q)),
        (["runs", "{}", "tasks"], (s, _, v, q) => RunTasks(s, v[0], q)),
        (["runs", "{}", "tasks", "{}"], (s, _, v, _) => s.GetRunTask(v[0], v[1]).Write),
        (["runs", "{}", "graph"], (s, _, v, _) => RunGraph(s, v[0])),
        (["layers"], (s, _, _, _) => Layers(s)),
        (["workers"], (_, o, _, _) => Workers(o)),
        (["metrics"], (s, _, _, q) => Metrics(s, q)),
        (["metrics", "escalations"], (s, _, _, q) => Escalations(s, q)),
        (["metrics", "complexity"], (s, _, _, q) => Complexity(s, q)),
        (["rules"], (s, _, _, _) => Rules(s)),
        (["audit"], (s, _, _, q) => Audit(s, q)),
        (["learning", "models"], (s, _, _, _) => Models(s)),
        (["status"], (s, _, _, _) => w => Status.Write(w, s, Status.Problems(s))),
    ];

    /// <summary>The read a path names (<c>layers</c>, <c>runs/ID/graph</c>, …; a leading <c>/api/</c> or <c>/</c> is allowed), with its values; null when none does.</summary>
    public static (Read Read, string[] Values)? Find(string path)
    {
        if (path.StartsWith("/api/", StringComparison.Ordinal)) path = path[5..];
        else if (path.StartsWith('/')) path = path[1..];
        var parts = path.Split('/');
        foreach (var (pattern, read) in Table)
        {
            if (pattern.Length != parts.Length) continue;
            var values = new List<string>(2);
            bool match = true;
            for (int i = 0; i < parts.Length && match; i++)
            {
                if (pattern[i] == "{}")
                {
                    if (parts[i].Length == 0) match = false;
                    else values.Add(Uri.UnescapeDataString(parts[i]));
                }
                else match = pattern[i] == parts[i];
            }
            if (match) return (read, values.ToArray());
        }
        return null;
    }

    /// <summary>The paths <see cref="Find"/> knows, for an error that lists them.</summary>
    public static string Paths => string.Join(", ", Table.Select(t => string.Join('/', t.Pattern.Select(p => p == "{}" ? "ID" : p))));

    public static Action<Utf8JsonWriter> Runs(TaskMeshService service, Func<string, string?> q)
    {
        var runs = service.ListRuns(IntOf(q, "limit", 20), IntOf(q, "offset", 0), q("status"));
        return w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("runs");
            foreach (var r in runs) r.Write(w);
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    public static Action<Utf8JsonWriter> RunTasks(TaskMeshService service, string id, Func<string, string?> q)
    {
        var (source, total, tasks) = service.ListRunTasks(id, q("status"), IntOf(q, "limit", 100), IntOf(q, "offset", 0));
        return w =>
        {
            w.WriteStartObject();
            w.WriteString("run_id", id);
            w.WriteString("source", source);
            w.WriteNumber("total", total);
            w.WriteStartArray("tasks");
            foreach (var t in tasks)
            {
                w.WriteStartObject();
                w.WriteString("id", t.Id);
                if (t.Index >= 0) w.WriteNumber("index", t.Index);
                w.WriteString("handler", t.Handler);
                w.WriteString("status", t.Status);
                if (t.Layer is not null) w.WriteString("layer", t.Layer);
                w.WriteNumber("attempts", t.Attempts);
                w.WriteNumber("escalations", t.Escalations);
                if (t.DurationMs is double d) w.WriteNumber("duration_ms", Math.Round(d, 3));
                if (t.StartedMs is double started) w.WriteNumber("started_ms", Math.Round(started, 3));
                if (t.Error is not null) w.WriteString("error", t.Error);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    public static Action<Utf8JsonWriter> RunGraph(TaskMeshService service, string id)
    {
        var graph = service.GraphOfRun(id);
        var finished = service.FinishedResultOf(id);
        return w => GraphView.Write(w, id, graph, service.Runtime.Engine, finished);
    }

    public static Action<Utf8JsonWriter> Layers(TaskMeshService service) => w => Status.WriteLayers(w, service);

    public static Action<Utf8JsonWriter> Workers(ServerOptions options)
    {
        var cluster = options.Cluster ?? throw new ApiException(404, "no cluster", "this service is not a cluster coordinator (start it with --cluster-port, or cluster.enabled = true)");
        return w => Status.WriteWorkers(w, cluster);
    }

    public static Action<Utf8JsonWriter> Metrics(TaskMeshService service, Func<string, string?> q)
    {
        int days = IntOf(q, "days", 7);
        if (days is < 1 or > 3650) throw new ApiException(400, "invalid request", $"days must be 1–3650, got {days}");
        var store = service.Runtime.Store ?? throw new ApiException(404, "no store", "the service keeps no run store: there is no history");
        var figures = store.DailyMetrics(days);
        return w =>
        {
            w.WriteStartObject();
            w.WriteNumber("days", days);
            w.WriteStartArray("layers");
            foreach (var d in figures)
            {
                w.WriteStartObject();
                w.WriteString("day", d.Day);
                w.WriteString("layer", d.Layer);
                JsonParts.WriteFigures(w, d);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    public static Action<Utf8JsonWriter> Escalations(TaskMeshService service, Func<string, string?> q)
    {
        int days = IntOf(q, "days", 30);
        var rows = service.EscalationsByDay(days);
        return w =>
        {
            w.WriteStartObject();
            w.WriteNumber("days", days);
            w.WriteStartArray("escalations");
            foreach (var (day, from, to, count) in rows)
            {
                w.WriteStartObject();
                w.WriteString("day", day);
                w.WriteString("from", from);
                w.WriteString("to", to);
                w.WriteNumber("count", count);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    public static Action<Utf8JsonWriter> Complexity(TaskMeshService service, Func<string, string?> q)
    {
        int days = IntOf(q, "days", 30);
        var buckets = service.ComplexityBuckets(days);
        return w =>
        {
            w.WriteStartObject();
            w.WriteNumber("days", days);
            w.WriteStartArray("buckets");
            foreach (var (bucket, tasks, cost) in buckets)
            {
                w.WriteStartObject();
                w.WriteNumber("from", bucket * 10);
                w.WriteString("label", bucket == 9 ? "90–100" : $"{bucket * 10}–{bucket * 10 + 9}");
                w.WriteNumber("tasks", tasks);
                w.WriteNumber("cost", Math.Round(cost, 6));
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    /// <summary>The rules in force, where they come from, each as fields and as text.</summary>
    public static Action<Utf8JsonWriter> Rules(TaskMeshService service) => w =>
    {
        w.WriteStartObject();
        w.WriteString("source", service.Runtime.RulesSource);
        w.WriteStartArray("rules");
        foreach (var r in service.Runtime.Rules)
        {
            w.WriteStartObject();
            w.WriteString("from", r.From);
            w.WriteString("to", r.To);
            w.WriteString("trigger", r.Trigger);
            if (r.Threshold is double t) w.WriteNumber("threshold", t);
            else w.WriteNull("threshold");
            w.WriteNumber("priority", r.Priority);
            w.WriteBoolean("active", r.Active);
            w.WriteString("text", r.Describe());
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    };

    public static Action<Utf8JsonWriter> Audit(TaskMeshService service, Func<string, string?> q)
    {
        var rows = service.AuditOf(q("run"), q("category"), IntOf(q, "limit", 100));
        return w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("audit");
            foreach (var a in rows) JsonParts.WriteAudit(w, a, withTask: true);
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    public static Action<Utf8JsonWriter> Models(TaskMeshService service)
    {
        var store = service.Runtime.Store ?? throw new ApiException(404, "no store", "the service keeps no run store: there are no models");
        var models = store.Models();
        return w =>
        {
            w.WriteStartObject();
            w.WriteStartArray("models");
            foreach (var m in models) WriteModel(w, m);
            w.WriteEndArray();
            w.WriteEndObject();
        };
    }

    /// <summary>A trained model version: number, when, from how many rows, its held-out accuracy per layer.</summary>
    public static void WriteModel(Utf8JsonWriter w, (int Version, DateTimeOffset TrainedAt, int Rows, string Folder, string Metrics) m)
    {
        w.WriteStartObject();
        w.WriteNumber("version", m.Version);
        w.WriteString("trained_at", m.TrainedAt);
        w.WriteNumber("rows", m.Rows);
        JsonParts.WriteStoredJson(w, "metrics", m.Metrics);
        w.WriteEndObject();
    }

    /// <summary>A whole-number query parameter (400 naming it when it is not one).</summary>
    public static int IntOf(Func<string, string?> q, string name, int fallback)
    {
        if (q(name) is not { } text) return fallback;
        return int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out int v)
            ? v
            : throw new ApiException(400, "invalid request", $"{name} must be a whole number, got '{GraphLimits.Printable(text)}'");
    }
}
