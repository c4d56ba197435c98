using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;
using TaskMesh.Engine;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Observability;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using TaskMesh.Hosting;
using TaskMesh.Engine.Configuration;
using TaskMesh.Cluster;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh run GRAPH.json [--json SUMMARY.json] [--max-parallel N] [--config F] [--nodes] [--progress MODE]</c>.</summary>
internal static class RunCommand
{
    public static Command Create(CliIO io)
    {
        var graphArg = GraphInput.GraphArgument();
        var json = new Option<string?>("--json") { Description = "Write the run summary (JSON) to this file.", HelpName = "SUMMARY.json" };
        var maxParallel = CliOptions.Int("--max-parallel", 1, 100_000, "Slots of the local layer (overrides the config).");
        var config = CliOptions.Config();
        var nodes = new Option<bool>("--nodes") { Description = "Keep and write per-task results even above 100,000 tasks." };
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", [.. ProgressModes.All]);
        var store = StoreInput.StoreOption();
        var noStore = StoreInput.NoStoreOption();
        var resume = new Option<string?>("--resume")
        {
            Description = "Resume a stored run of this graph: tasks whose completion reached the store are not run again (their data-edge outputs are restored).",
            HelpName = "RUN",
        };
        var metrics = new MetricsOptions();
        var objective = CliOptions.OneOf("--objective", "Let the learned router choose each task's layer: the cheapest confident one (auto), the quickest, or the least expected cost (failures priced as the escalations they lead to).", [.. RoutingObjectives.All]);
        var budget = new Option<double?>("--budget")
        {
            Description = "Most this run may cost (by predicted costs): tasks go to the best layer they still fit; one that fits nowhere fails, without running.",
            HelpName = "COST",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && double.IsFinite(v) && v >= 0) return v;
                r.AddError($"option --budget must be a cost, 0 or more, got '{text}'");
                return null;
            },
        };
        var (workers, workerSlots) = WorkersOptions();
        var dashboard = new Option<int?>("--dashboard")
        {
            Description = "Serve the run's page of the web dashboard while it goes, on this port of api.host (none given: a free port); put it after the graph file.",
            HelpName = "PORT",
            Arity = ArgumentArity.ZeroOrOne,
            CustomParser = r =>
            {
                if (r.Tokens.Count == 0) return 0;
                var text = r.Tokens[^1].Value;
                if (int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int p) && p <= 65_535) return p;
                r.AddError($"option --dashboard takes a port between 0 and 65535, got '{text}'");
                return null;
            },
        };
        var keepOpen = new Option<bool>("--keep-open") { Description = "With --dashboard: keep serving the page after the run ends, until Ctrl+C." };
        var command = new Command("run", "Run a graph; exit 0 all succeeded, 1 some task failed (or the run store failed), 2 bad input, 130 cancelled.")
        {
            graphArg, json, maxParallel, config, nodes, progress, store, noStore, resume, objective, budget, workers, workerSlots, dashboard, keepOpen,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) => ExecuteAsync(io, new RunArgs(parse.GetValue(graphArg)!)
        {
            JsonPath = parse.GetValue(json), MaxParallel = parse.GetValue(maxParallel), ConfigPath = parse.GetValue(config), Nodes = parse.GetValue(nodes),
            Progress = parse.GetValue(progress), Store = parse.GetValue(store), NoStore = parse.GetValue(noStore), Resume = parse.GetValue(resume),
            Metrics = metrics.Read(parse), Objective = parse.GetValue(objective), Budget = parse.GetValue(budget),
            Workers = parse.GetValue(workers), WorkerSlots = parse.GetValue(workerSlots),
            Dashboard = parse.GetValue(dashboard), KeepOpen = parse.GetValue(keepOpen),
        }));
        return command;
    }

    /// <summary><c>--workers N</c> and <c>--worker-slots S</c>: the embedded cluster of <c>run</c> and <c>resume</c>.</summary>
    private static (Option<int?> Workers, Option<int?> WorkerSlots) WorkersOptions() => (
        CliOptions.Int("--workers", 1, 64,
            "The embedded cluster: this process becomes a cluster coordinator, starts N worker processes on this machine, sends the tasks to them (the cluster layer), and stops them at the end.", "N"),
        CliOptions.Int("--worker-slots", 1, 100_000, "Slots of each --workers worker (default: this machine's cores divided among them).", "N"));

    /// <summary><c>taskmesh resume RUN</c>: the graph file comes from the store, and must not have changed since.</summary>
    public static Command CreateResume(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "The run to resume: an id, a unique prefix of one, or 'last'." };
        var json = new Option<string?>("--json") { Description = "Write the run summary (JSON) to this file.", HelpName = "SUMMARY.json" };
        var maxParallel = CliOptions.Int("--max-parallel", 1, 100_000, "Slots of the local layer (overrides the config).");
        var config = CliOptions.Config();
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", [.. ProgressModes.All]);
        var store = StoreInput.StoreOption();
        var metrics = new MetricsOptions();
        var (workers, workerSlots) = WorkersOptions();
        var command = new Command("resume", "Resume a stored run: finds its graph file, refuses it if it changed, runs only what did not finish.")
        {
            run, json, maxParallel, config, progress, store, workers, workerSlots,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            var (runId, graphPath) = StoredRun(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(run)!,
                id => $"run {id} was not run from a graph file; use taskmesh run GRAPH --resume {id}");
            return ExecuteAsync(io, new RunArgs(graphPath)
            {
                JsonPath = parse.GetValue(json), MaxParallel = parse.GetValue(maxParallel), ConfigPath = parse.GetValue(config),
                Progress = parse.GetValue(progress), Store = parse.GetValue(store), Resume = runId, Metrics = metrics.Read(parse),
                Workers = parse.GetValue(workers), WorkerSlots = parse.GetValue(workerSlots),
            });
        });
        return command;
    }

    /// <summary><c>--metrics-port</c>, <c>--metrics-host</c>, <c>--metrics-linger</c>: serve <c>/metrics</c> while the run goes.</summary>
    private sealed class MetricsOptions
    {
        private readonly Option<int?> _port = CliOptions.Int("--metrics-port", 0, 65_535,
            "Serve Prometheus metrics at http://HOST:P/metrics while the run goes (0: a free port; the address is logged and printed).", "P");
        private readonly Option<string?> _host = new("--metrics-host") { Description = "The address /metrics listens on (default 127.0.0.1: this machine only).", HelpName = "IP" };
        private readonly Option<double?> _linger = new("--metrics-linger")
        {
            Description = "Keep serving /metrics this many seconds after the run ends, for a last scrape (default 0).",
            HelpName = "SECONDS",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && v >= 0 && v <= 3600) return v;
                r.AddError($"option --metrics-linger must be a number of seconds between 0 and 3600, got '{text}'");
                return null;
            },
        };

        public void AddTo(Command c)
        {
            c.Options.Add(_port);
            c.Options.Add(_host);
            c.Options.Add(_linger);
        }

        public (int? Port, string? Host, double? Linger) Read(System.CommandLine.ParseResult p) => (p.GetValue(_port), p.GetValue(_host), p.GetValue(_linger));
    }

    /// <summary>A stored run's id and the graph file it ran (the file is checked against its hash when the run starts).</summary>
    private static (string RunId, string GraphPath) StoredRun(CliIO io, string? configPath, string? storeOption, string run, Func<string, string> noFile)
    {
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        using var s = StoreInput.Open(StoreInput.PathOf(storeOption, cfg), readOnly: true, cfg);
        string runId = s.ResolveRunId(run);
        return (runId, s.GraphOf(runId).Path ?? throw new StoreException(noFile(runId)));
    }

    /// <summary>
    /// <c>taskmesh escalate RUN TASK --to LAYER [--reason TEXT]</c>: a new run of the stored run's
    /// graph (found and checked as <c>resume</c> does) that runs TASK on LAYER, re-runs the tasks
    /// that read its output over data edges, and reuses every other completion from the store;
    /// the move is recorded as a <c>manual</c> escalation, and the new run is linked to the old.
    /// </summary>
    public static Command CreateEscalate(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "The stored run: an id, a unique prefix of one, or 'last'." };
        var task = new Argument<string>("TASK") { Description = "The task to run again on another layer." };
        var to = new Option<string>("--to") { Description = "The layer to run it on.", HelpName = "LAYER", Required = true };
        var reason = new Option<string?>("--reason") { Description = "Why (kept with the escalation).", HelpName = "TEXT" };
        var json = new Option<string?>("--json") { Description = "Write the run summary (JSON) to this file.", HelpName = "SUMMARY.json" };
        var config = CliOptions.Config();
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", [.. ProgressModes.All]);
        var store = StoreInput.StoreOption();
        var metrics = new MetricsOptions();
        var server = RemoteCommands.Server(required: false);
        var token = RemoteCommands.TokenFile();
        var wait = new Option<bool>("--wait") { Description = "With --server: wait for the new run to end and print it (exit 0 when every task succeeded)." };
        var command = new Command("escalate", "Run a task of a stored run (or of a service's run, with --server) again on another layer, with the tasks that read its output; reuse the rest.")
        {
            run, task, to, reason, json, config, progress, store, server, token, wait,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            if (parse.GetValue(server) is { } url)
            {
                if (parse.GetValue(store) is not null || parse.GetValue(json) is not null)
                    throw new UsageException("--server acts on the service's run: --store and --json are for a local run");
                return RemoteCommands.EscalateAsync(io, parse.GetValue(run)!, parse.GetValue(task)!, parse.GetValue(to)!, parse.GetValue(reason),
                    url, parse.GetValue(token), parse.GetValue(wait));
            }
            if (parse.GetValue(wait)) throw new UsageException("--wait is for --server (a local escalation always waits)");
            var (runId, graphPath) = StoredRun(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(run)!,
                id => $"run {id} was not run from a graph file: it cannot be escalated from the command line");
            string why = parse.GetValue(reason) ?? $"escalated by an operator to {parse.GetValue(to)}";
            return ExecuteAsync(io, new RunArgs(graphPath)
            {
                JsonPath = parse.GetValue(json), ConfigPath = parse.GetValue(config), Progress = parse.GetValue(progress), Store = parse.GetValue(store),
                Resume = runId, Metrics = metrics.Read(parse), Escalate = (parse.GetValue(task)!, parse.GetValue(to)!, why),
            });
        });
        return command;
    }

    /// <summary>What the command line asks of one run: the options of <c>run</c>, <c>resume</c> and <c>escalate</c>.</summary>
    private sealed record RunArgs(string GraphPath)
    {
        public string? JsonPath { get; init; }
        public int? MaxParallel { get; init; }
        public string? ConfigPath { get; init; }
        public bool Nodes { get; init; }
        public string? Progress { get; init; }
        public string? Store { get; init; }
        public bool NoStore { get; init; }
        public string? Resume { get; init; }
        public (int? Port, string? Host, double? Linger) Metrics { get; init; }
        public (string Task, string Layer, string Reason)? Escalate { get; init; }
        public string? Objective { get; init; }
        public double? Budget { get; init; }
        public int? Workers { get; init; }
        public int? WorkerSlots { get; init; }
        public int? Dashboard { get; init; }
        public bool KeepOpen { get; init; }
    }

    /// <summary>
    /// A run through the composition root: the options are checked, the runtime (engine, store,
    /// rules, models) resolved from <see cref="TaskMeshServiceCollectionExtensions.AddTaskMesh"/>,
    /// the run prepared by it (<see cref="TaskMeshRuntime.Prepare"/>), shown while it goes, and
    /// recorded after.
    /// </summary>
    private static async Task<int> ExecuteAsync(CliIO io, RunArgs a)
    {
        if (a.Resume is not null && a.NoStore) throw new UsageException("--resume needs the run store; drop --no-store");
        var stdout = io.Out;
        if (a.NoStore && a.Store is not null) throw new UsageException("--store and --no-store exclude each other");
        // Every output is checked before anything runs: a summary that cannot be written is
        // refused now, not lost after the run.
        CliOptions.CheckOutput("--json", a.JsonPath, a.GraphPath, a.ConfigPath);
        var config = GraphInput.LoadConfig(a.ConfigPath, io.Token);
        if (a.Metrics.Host is { } mh && !System.Net.IPAddress.TryParse(mh, out _))
            throw new UsageException($"--metrics-host must be an IP address (127.0.0.1, ::1, 0.0.0.0, …), got '{mh}'");
        var progress = a.Progress ?? config.Progress;
        if (!ProgressModes.All.Contains(progress))
            throw new UsageException($"--progress must be one of {string.Join(", ", ProgressModes.All)}, got '{progress}'");
        if (a.MaxParallel is int mp)
        {
            config.MaxParallelTasks = mp;
            if (config.WorkerThreads > mp) config.WorkerThreads = mp;
        }
        bool storeOn = !a.NoStore && (config.StoreEnabled || a.Store is not null);
        if (a.Resume is not null && !storeOn) throw new UsageException("--resume needs the run store (it is disabled by the config's store.enabled = false; pass --store FILE)");
        if (storeOn) CliOptions.CheckOutput("--json", a.JsonPath, StoreInput.PathOf(a.Store, config));
        int? metricsPort = a.Metrics.Port ?? config.MetricsPort;

        using var logs = Logs.Create(io.LogFormat ?? config.LogFormat, io.LogLevel ?? config.LogLevel, config.Cluster.Verbose);
        var services = new ServiceCollection();
        services.AddSingleton(logs);
        var taskmesh = services.AddTaskMesh(config);
        // The store is opened (and checked) before anything runs, too.
        if (storeOn) taskmesh.AddRunStore(StoreInput.PathOf(a.Store, config));
        if (metricsPort is not null) taskmesh.AddMetrics();
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = Resolve(provider);
        var store = runtime.Store;
        using var storeFailed = CancellationTokenSource.CreateLinkedTokenSource(io.Token);
        var ct = storeFailed.Token;

        if (a.WorkerSlots is not null && a.Workers is null) throw new UsageException("--worker-slots needs --workers");
        // The embedded cluster: its coordinator (and so the cluster layer) before the graph is checked,
        // its workers once the graph is known to be good.
        await using var coordinator = a.Workers is int n ? await StartClusterAsync(n) : null;
        var (graph, hash) = runtime.LoadGraph(a.GraphPath, io.Token);
        await using var localWorkers = coordinator is null ? null
            : LocalWorkers.Start(a.Workers!.Value, coordinator.Endpoint, a.WorkerSlots ?? Math.Max(1, Environment.ProcessorCount / a.Workers.Value),
                logs.CreateLogger("TaskMesh.Cluster"), extraArgs: WorkerArgs());
        if (coordinator is not null)
        {
            if (!await coordinator.WaitForWorkersAsync(a.Workers!.Value, TimeSpan.FromSeconds(60), io.Token))
            {
                io.Error.WriteLine($"taskmesh: only {coordinator.Workers.Count} of {a.Workers} workers joined the coordinator at {coordinator.Endpoint} within 60 s");
                return ExitCodes.TasksFailed;
            }
            // Without a learned router, every task the cluster can run goes there.
            runtime.Engine.Router = new Engine.Routing.FixedLayerRouter(coordinator.Layer.Name);
            stdout.WriteLine($"cluster coordinator at {coordinator.Endpoint}: {coordinator.Workers.Count} workers, {coordinator.Workers.Sum(w => w.Slots)} slots{(coordinator.Tls ? ", mutual TLS" : "")}");
        }
        async Task<Cluster.ClusterCoordinator> StartClusterAsync(int n)
        {
            try
            {
                return await Cluster.ClusterCoordinator.StartAsync(runtime.Engine, config.Cluster with { Port = 0 }, logs, io.Token);
            }
            catch (ArgumentException ex)
            {
                throw new UsageException(ex.Message);
            }
        }
        List<string> WorkerArgs()
        {
            var args = new List<string>();
            if (a.ConfigPath is not null) args.AddRange(["--config", Path.GetFullPath(a.ConfigPath)]);
            if (io.LogFormat is not null) args.InsertRange(0, ["--log-format", io.LogFormat]);
            if (io.LogLevel is not null) args.InsertRange(0, ["--log-level", io.LogLevel]);
            return args;
        }
        RunSetup setup;
        try
        {
            setup = runtime.Prepare(graph, new RunRequest
            {
                GraphPath = a.GraphPath,
                GraphHash = hash,
                Objective = a.Objective,
                Budget = a.Budget,
                ResumeFrom = a.Resume,
                Escalate = a.Escalate,
                CollectTaskDetails = a.Nodes ? true : null,
            });
        }
        catch (RunRequestException ex)
        {
            throw new UsageException(ex.Field switch
            {
                RunRequestFields.EscalateLayer => $"--to: {ex.Message}",
                _ => ex.Message,
            });
        }
        if (setup.ModelProblem is { } modelProblem) io.Error.WriteLine($"taskmesh: warning: {modelProblem}");
        if (setup.Notice is { } notice) stdout.WriteLine(notice);
        // A store that fails (disk full, file made read-only, locked past the timeout) stops the
        // run: what it already committed stays, and the summary says why.
        if (setup.Recorder is { } recorder) recorder.Faulted += _ => { try { storeFailed.Cancel(); } catch (ObjectDisposedException) { } };

        // Metrics: served from the first task to the end of the run (and a linger after it).
        await using var web = metricsPort is int port ? await StartMetricsAsync(port, a.Metrics.Host ?? config.MetricsHost) : null;
        async Task<Web.TaskMeshWebHost> StartMetricsAsync(int port, string host)
        {
            Web.TaskMeshWebHost server;
            try { server = await Web.TaskMeshWebHost.StartAsync(host, port, runtime.Metrics!, logs, ct: io.Token); }
            catch (IOException ex) { throw new UsageException($"--metrics-port: {ex.Message}"); }
            stdout.WriteLine($"metrics at {server.MetricsUri}");
            stdout.Flush();
            return server;
        }
        // The dashboard: the run's own page, served by a read-only service over this runtime.
        if (a.KeepOpen && a.Dashboard is null) throw new UsageException("--keep-open needs --dashboard");
        if (a.Dashboard is not null) setup.Options.EmitEvents = true;
        await using var dashboard = a.Dashboard is int dashboardPort ? await StartDashboardAsync(dashboardPort) : null;
        async Task<Server.TaskMeshServer> StartDashboardAsync(int port)
        {
            var options = ServerSettings.FromConfig(config, a.ConfigPath);
            (options.HttpPort, options.SocketPort, options.ReadOnly) = (port, null, true);
            if (options.Problems() is { Count: > 0 } problems) throw new UsageException("--dashboard: " + string.Join("; ", problems));
            try { return await Server.TaskMeshServer.StartAsync(runtime, options, logs, io.Token); }
            catch (Exception ex) when (ex is IOException or ArgumentException) { throw new UsageException($"--dashboard: {ex.Message}"); }
        }
        var handle = setup.Start(ct);
        if (dashboard is not null)
        {
            dashboard.Watch(handle, graph, hash);
            stdout.WriteLine($"dashboard at {dashboard.HttpAddress}runs/{handle.RunId}");
            stdout.Flush();
        }
        if (progress == "auto")
            progress = Console.IsOutputRedirected || !ReferenceEquals(stdout is TerminalSafeWriter t ? t.Inner : stdout, Console.Out) ? "lines" : "bar";
        if (progress == "bar") await ShowBarAsync(handle);
        else if (progress == "lines") await ShowLinesAsync(handle, stdout);
        var result = await handle.Completion;

        PrintSummary(result, stdout);
        if (a.JsonPath is not null)
        {
            SafeFile.WriteAtomic(a.JsonPath, s =>
            {
                using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
                result.WriteJson(w, a.Nodes ? true : null);
            });
            stdout.WriteLine($"summary written to {a.JsonPath}");
        }
        if (store is not null)
        {
            try
            {
                // The models learn from the history after the run, never during it.
                var trained = runtime.AfterRunAsync(result, io.Token);
                await store.FlushAsync(CancellationToken.None);
                stdout.WriteLine($"run {result.RunId} recorded in {store.Path}");
                if (await trained is { } done)
                    stdout.WriteLine($"trained model version {done.Models.Version} from {done.Models.Rows} task rows ({done.Why}), in {done.Models.Folder}");
            }
            catch (StoreException ex)
            {
                io.Error.WriteLine($"taskmesh: the run store failed, the run was stopped: {ex.Message}");
                return ExitCodes.TasksFailed;
            }
        }
        if (web is not null && (a.Metrics.Linger ?? config.MetricsLingerSeconds) is double linger and > 0)
        {
            stdout.WriteLine($"serving {web.MetricsUri} for {linger:0.###} s more");
            try { await Task.Delay(TimeSpan.FromSeconds(linger), io.Token); }
            catch (OperationCanceledException) { }
        }
        if (dashboard is not null && a.KeepOpen)
        {
            stdout.WriteLine($"the dashboard stays open at {dashboard.HttpAddress}runs/{result.RunId} (Ctrl+C stops it)");
            stdout.Flush();
            try { await Task.Delay(Timeout.Infinite, io.Token); }
            catch (OperationCanceledException) { }
        }
        return result.Status switch
        {
            RunStatus.Succeeded => ExitCodes.Ok,
            RunStatus.Failed => ExitCodes.TasksFailed,
            _ => ExitCodes.Cancelled,
        };
    }

    /// <summary>The runtime from the container; a problem with its options or its store is the command's bad input.</summary>
    internal static TaskMeshRuntime Resolve(IServiceProvider provider)
    {
        try
        {
            return provider.GetRequiredService<TaskMeshRuntime>();
        }
        catch (Microsoft.Extensions.Options.OptionsValidationException ex)
        {
            throw new UsageException(string.Join("; ", ex.Failures));
        }
    }

    private static async Task ShowBarAsync(RunHandle handle)
    {
        await AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async ctx =>
            {
                var bar = ctx.AddTask("running", maxValue: Math.Max(1, handle.Total));
                var started = DateTime.UtcNow;
                while (!handle.Completion.IsCompleted)
                {
                    Update(bar, handle, started);
                    await Task.WhenAny(handle.Completion, Task.Delay(100));
                }
                Update(bar, handle, started);
            });

        static void Update(ProgressTask bar, RunHandle h, DateTime started)
        {
            bar.Value = h.Completed;
            double rate = h.Completed / Math.Max(1e-3, (DateTime.UtcNow - started).TotalSeconds);
            bar.Description = $"done {h.Completed}/{h.Total}  failed {h.Failed}  running {h.Running}  {rate:0}/s";
        }
    }

    private static async Task ShowLinesAsync(RunHandle handle, TextWriter stdout)
    {
        var started = DateTime.UtcNow;
        while (await Task.WhenAny(handle.Completion, Task.Delay(1000)) != handle.Completion)
        {
            double rate = handle.Completed / Math.Max(1e-3, (DateTime.UtcNow - started).TotalSeconds);
            stdout.WriteLine($"progress: {handle.Completed}/{handle.Total} done, {handle.Failed} failed, {handle.Running} running, {rate:0} tasks/s");
        }
    }

    internal static void PrintSummary(RunResult r, TextWriter o)
    {
        o.WriteLine($"run {r.RunId} of '{TerminalText.Safe(r.Graph.Name)}': {r.StatusName}");
        o.WriteLine($"  tasks: {r.Total} total, {r.Succeeded} succeeded{(r.Restored > 0 ? $" ({r.Restored} restored from the resumed run)" : "")}{(r.Cached > 0 ? $" ({r.Cached} from the result cache)" : "")}, {r.Failed} failed ({r.TimedOut} timed out), {r.Skipped} skipped, {r.Cancelled} cancelled");
        var costs = r.CostByLayer;
        o.WriteLine($"  layers: {string.Join(", ", r.TasksByLayer.Select(kv => costs.GetValueOrDefault(kv.Key) is double c and > 0 ? string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{kv.Key} {kv.Value} (cost {c:0.######})") : $"{kv.Key} {kv.Value}"))}");
        if (costs.Values.Sum() is double total and > 0) o.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture, $"  cost: {total:0.######}"));
        if (r.Escalations.Count > 0)
        {
            o.WriteLine($"  escalations: {r.Escalations.Count}");
            foreach (var e in r.Escalations.Take(10)) o.WriteLine($"    {TerminalText.Safe(e.TaskId)}: {e.From} → {e.To} ({e.Trigger}): {TerminalText.Safe(e.Reason)}");
            if (r.Escalations.Count > 10) o.WriteLine($"    ... and {r.Escalations.Count - 10} more");
        }
        o.WriteLine($"  wall {r.Wall.TotalMilliseconds:0.###} ms, {r.TasksPerSecond:0.#} tasks/s; critical path {r.CriticalPathMs:0.###} ms vs makespan {r.Wall.TotalMilliseconds:0.###} ms; ready order {r.ReadyOrder}");
        if (r.Record.MeasuredCriticalPathMs is double measured)
            o.WriteLine($"  measured critical path: {measured:0.###} ms, {r.Record.MeasuredCriticalPath!.Count} tasks (the chain the run waited on; the critical path above is from the estimates)");
        if (!r.HasTaskDetails)
        {
            if (r.Failed > 0) o.WriteLine("  (per-task errors not kept for a graph this large; rerun with --nodes)");
            return;
        }
        var failures = r.Failures.Take(20).ToList();
        if (failures.Count > 0)
        {
            o.WriteLine("  failures:");
            foreach (var f in failures)
                o.WriteLine($"    {TerminalText.Safe(f.Id)} [{f.Status}, {f.Attempts} attempt(s)]: {TerminalText.Safe(f.Error)}");
            if (r.Failed > failures.Count) o.WriteLine($"    ... and {r.Failed - failures.Count} more");
        }
        if (r.Skipped > 0)
        {
            var skipped = r.Tasks.Where(t => t.Outcome == TaskOutcome.Skipped).Take(10).ToList();
            o.WriteLine($"  skipped: {string.Join(", ", skipped.Select(s => $"{TerminalText.Safe(s.Id)} (because {TerminalText.Safe(s.SkippedBecause)} failed)"))}{(r.Skipped > skipped.Count ? ", ..." : "")}");
        }
    }
}
