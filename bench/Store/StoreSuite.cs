using System.Diagnostics;
using System.Text.Json;
using TaskMesh.Bench.Dag;
using TaskMesh.Engine;
using TaskMesh.Engine.Store;

namespace TaskMesh.Bench.Store;

/// <summary>
/// <c>bench -- store [--url postgresql://…] [--tasks 20000] [--repeat 3] --json out.json</c>: how fast
/// the run store's writer keeps an open run whose every task has an id of its own, as the service's
/// runs do (a row per task, its submission in the audit trail, its output) — in a SQLite file, and
/// in the PostgreSQL database of <c>--url</c> when given. Each store is warmed by one run first; the
/// time of a run is from its start until the store has committed everything of it.
/// </summary>
internal static class StoreSuite
{
    public static int Run(string[] args)
    {
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "20000");
        int repeat = int.Parse(DagSuite.Opt(args, "--repeat") ?? "3");
        string? url = DagSuite.Opt(args, "--url");
        string? json = DagSuite.Opt(args, "--json");
        var dir = Directory.CreateTempSubdirectory("taskmesh-bench-store-").FullName;
        var records = new List<object>();
        try
        {
            var stores = new List<(string Kind, string Where)> { ("sqlite", Path.Combine(dir, "bench.db")) };
            if (url is not null) stores.Add(("postgresql", url));
            foreach (var (kind, where) in stores)
            {
                using var store = RunStore.Open(where);
                var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 2 });
                engine.Handlers.RegisterInline("noop", _ => 1);
                var commits = new List<(double Ms, int Writes)>();
                store.BatchCommitted += (took, writes) => { lock (commits) commits.Add((took.TotalMilliseconds, writes)); };
                var times = new List<double>();
                for (int r = -1; r < repeat; r++)
                {
                    lock (commits) commits.Clear();
                    long t0 = Stopwatch.GetTimestamp();
                    // An open run, as the service's: every task with an id of its own has a row, its output and its audit record.
                    var run = engine.Open(new OpenRunOptions { Store = store, Name = "store-bench" });
                    for (int i = 0; i < tasks; i++) run.Submit(new TaskRequest("noop") { Id = $"t{i}" });
                    run.Complete();
                    var result = run.Completion.GetAwaiter().GetResult();
                    store.FlushAsync().GetAwaiter().GetResult();
                    double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                    if (result.Succeeded != tasks || store.CompletedCount(result.RunId) != tasks) throw new InvalidOperationException($"{kind}: the store missed tasks");
                    if (r < 0) continue;   // the warm-up run
                    times.Add(ms);
                    lock (commits)
                    {
                        double perWrite = commits.Sum(c => c.Ms) / Math.Max(1, commits.Sum(c => c.Writes));
                        Console.WriteLine($"{kind}: {tasks:N0} tasks recorded in {ms:0} ms ({tasks / ms * 1000:N0} tasks/s); {commits.Count} commits of {commits.Sum(c => c.Writes):N0} writes, {perWrite * 1000:0.0} µs a write");
                    }
                }
                double median = times.Order().ElementAt(times.Count / 2);
                records.Add(new { suite = "store", store = kind, tasks, runs = repeat, ms_per_run = Math.Round(median, 1), tasks_per_s = Math.Round(tasks / median * 1000) });
            }
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(dir, recursive: true);
        }
        if (json is not null) File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
        return 0;
    }
}
