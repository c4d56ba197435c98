using System.Text.Json;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Server;

/// <summary>
/// A run's graph as the dashboard draws it (<c>GET /api/runs/{id}/graph</c>): each task's level —
/// the longest path of edges from a task with no predecessors, so every edge goes to a later level —
/// and the critical path: measured for a finished run the service keeps with its tasks' times,
/// else by the engine's estimates. A graph of up to <see cref="MaxListed"/> tasks is listed whole
/// (tasks with their handler and level, edges as index pairs with their kind); a larger one up to
/// <see cref="MaxLevels"/> tasks gives each task's level only (the page draws it by level); past
/// that, the level sizes alone.
/// </summary>
internal static class GraphView
{
    public const int MaxListed = 5_000;
    public const int MaxLevels = 200_000;

    /// <summary>Each task's level (O(tasks + edges), in topological order).</summary>
    public static int[] Levels(TaskGraph g)
    {
        int n = g.Count;
        var level = new int[n];
        var waiting = new int[n];
        var ready = new Queue<int>();
        for (int i = 0; i < n; i++)
        {
            waiting[i] = g.PredecessorsOf(i).Length;
            if (waiting[i] == 0) ready.Enqueue(i);
        }
        while (ready.TryDequeue(out int i))
            foreach (int s in g.SuccessorsOf(i))
            {
                level[s] = Math.Max(level[s], level[i] + 1);
                if (--waiting[s] == 0) ready.Enqueue(s);
            }
        return level;
    }

    public static void Write(Utf8JsonWriter w, string runId, PreparedGraph prepared, TaskMeshEngine engine, RunResult? finished = null)
    {
        var g = prepared.Graph;
        var level = Levels(g);
        int levels = g.Count == 0 ? 0 : level.Max() + 1;
        var sizes = new int[levels];
        foreach (int l in level) sizes[l]++;
        w.WriteStartObject();
        w.WriteString("run_id", runId);
        w.WriteString("graph", g.Name);
        w.WriteNumber("tasks_total", g.Count);
        w.WriteNumber("levels", levels);
        w.WriteStartArray("level_sizes");
        foreach (int s in sizes) w.WriteNumberValue(s);
        w.WriteEndArray();
        if (g.Count <= MaxListed)
        {
            w.WriteStartArray("tasks");
            for (int i = 0; i < g.Count; i++)
            {
                w.WriteStartObject();
                w.WriteString("id", g.IdOf(i));
                w.WriteString("handler", g.HandlerOfTask(i));
                w.WriteNumber("level", level[i]);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteStartArray("edges");
            for (int i = 0; i < g.Count; i++)
            {
                var succ = g.SuccessorsOf(i);
                for (int k = 0; k < succ.Length; k++)
                {
                    w.WriteStartArray();
                    w.WriteNumberValue(i);
                    w.WriteNumberValue(succ[k]);
                    w.WriteStringValue(g.SuccessorKind(i, k) switch { EdgeKind.Soft => "soft", EdgeKind.Data => "data", _ => "hard" });
                    w.WriteEndArray();
                }
            }
            w.WriteEndArray();
        }
        else if (g.Count <= MaxLevels)
        {
            w.WriteStartArray("level_of");
            foreach (int l in level) w.WriteNumberValue(l);
            w.WriteEndArray();
        }
        var measured = finished is not null && finished.Total == g.Count && g.Count <= MaxLevels ? finished.Record.MeasuredCriticalPath : null;
        w.WriteStartArray("critical_path");
        if (g.Count <= MaxLevels)
            foreach (int i in measured ?? (IEnumerable<int>)engine.Analyze(prepared).CriticalPath) w.WriteStringValue(g.IdOf(i));
        w.WriteEndArray();
        w.WriteString("critical_path_source", measured is not null ? "measured" : g.Count <= MaxLevels ? "estimated" : "none");
        w.WriteEndObject();
    }
}
