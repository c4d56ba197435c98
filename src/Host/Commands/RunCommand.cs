using System.CommandLine;
using System.Text.Json;
using Spectre.Console;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;
using TaskMesh.Engine;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Observability;
using Microsoft.Extensions.Logging;

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
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", "auto", "bar", "lines", "none");
        var store = StoreInput.StoreOption();
        var noStore = StoreInput.NoStoreOption();
        var resume = new Option<string?>("--resume")
        {
            Description = "Resume a stored run of this graph: tasks whose completion reached the store are not run again (their data-edge outputs are restored).",
            HelpName = "RUN",
        };
        var metrics = new MetricsOptions();
        var objective = CliOptions.OneOf("--objective", "Let the learned router choose each task's layer: the cheapest confident one (auto), the quickest, or the least expected cost (failures priced as the escalations they lead to).", "auto", "fastest", "cheapest");
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
        var command = new Command("run", "Run a graph; exit 0 all succeeded, 1 some task failed (or the run store failed), 2 bad input, 130 cancelled.")
        {
            graphArg, json, maxParallel, config, nodes, progress, store, noStore, resume, objective, budget,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) => ExecuteAsync(io, parse.GetValue(graphArg)!, parse.GetValue(json), parse.GetValue(maxParallel),
            parse.GetValue(config), parse.GetValue(nodes), parse.GetValue(progress), parse.GetValue(store), parse.GetValue(noStore), parse.GetValue(resume),
            metrics.Read(parse), objective: parse.GetValue(objective), budget: parse.GetValue(budget)));
        return command;
    }

    /// <summary><c>taskmesh resume RUN</c>: the graph file comes from the store, and must not have changed since.</summary>
    public static Command CreateResume(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "The run to resume: an id, a unique prefix of one, or 'last'." };
        var json = new Option<string?>("--json") { Description = "Write the run summary (JSON) to this file.", HelpName = "SUMMARY.json" };
        var maxParallel = CliOptions.Int("--max-parallel", 1, 100_000, "Slots of the local layer (overrides the config).");
        var config = CliOptions.Config();
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", "auto", "bar", "lines", "none");
        var store = StoreInput.StoreOption();
        var metrics = new MetricsOptions();
        var command = new Command("resume", "Resume a stored run: finds its graph file, refuses it if it changed, runs only what did not finish.")
        {
            run, json, maxParallel, config, progress, store,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            var (runId, graphPath) = StoredRun(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(run)!,
                id => $"run {id} was not run from a graph file; use taskmesh run GRAPH --resume {id}");
            return ExecuteAsync(io, graphPath, parse.GetValue(json), parse.GetValue(maxParallel), parse.GetValue(config), nodes: false,
                parse.GetValue(progress), parse.GetValue(store), noStore: false, runId, metrics.Read(parse));
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

    /// <summary>
    /// The learned router chooses layers when the config has <c>[routing]</c> or an active
    /// <c>complexity</c> escalation rule, when <c>--objective</c> is given, or when the store has trained models (the newest version is
    /// loaded; one that cannot be read is reported and the router falls back to its cold-start
    /// rules). Otherwise tasks go where they always did: their handler's layer, else local.
    /// </summary>
    /// <returns>The run's budget: <c>--budget</c>, bounded by what today's figures leave of the daily limit (null: none).</returns>
    private static double? UseLearnedRouter(TaskMeshEngine engine, TaskMesh.Engine.Configuration.TaskMeshConfig config, RunStore? store, string? objective, double? budget,
        IReadOnlyList<TaskMesh.Engine.Escalation.EscalationRule> rules, TaskMesh.Learning.Features.FeatureExtractor features, TextWriter error)
    {
        var latest = store?.Models() is { Count: > 0 } versions ? versions[0] : default;
        bool complexityRules = rules.Any(r => r.Active && r.Trigger == TaskMesh.Engine.Escalation.EscalationTriggers.Complexity);
        // The run's budget: --budget, and what today's figures leave of the daily limit.
        if (config.RoutingDailyCostLimit is double daily)
        {
            string today = DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture);
            double spent = store?.DailyMetrics(1).Where(d => d.Day == today).Sum(d => d.Cost) ?? 0;
            budget = Math.Min(budget ?? double.MaxValue, Math.Max(0, daily - spent));
        }
        if (!config.RoutingConfigured && objective is null && latest.Folder is null && !complexityRules && budget is null) return budget;
        TaskMesh.Learning.Models.TrainedModels? models = null;
        if (latest.Folder is not null)
        {
            models = TaskMesh.Learning.Models.TrainedModels.Load(latest.Folder, out var problem);
            if (models is null) error.WriteLine($"taskmesh: warning: model version {latest.Version} not used, the router falls back to its cold-start rules: {problem}");
        }
        engine.Router = new TaskMesh.Learning.Routing.LearnedRouter(models, new TaskMesh.Learning.Routing.RoutingOptions
        {
            Objective = objective ?? config.RoutingObjective,
            MinConfidence = config.RoutingMinConfidence,
            FailurePenalty = config.RoutingFailurePenalty,
            Exploration = config.RoutingExploration,
            Bands = config.RoutingBands.Select(b => new TaskMesh.Learning.Routing.ComplexityBand(b.UpTo, b.Layer)).ToList(),
            Rules = rules,
            Budget = budget,
            Features = features,
        });
        // Tasks with no estimate of their own or from their handler take the duration model's
        // (the critical path, and the ready order when slots are scarce).
        if (models is not null) engine.DurationEstimator = new TaskMesh.Learning.Models.LearnedDurationEstimator(models, features);
        return budget;
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
        var progress = CliOptions.OneOf("--progress", "Progress display (auto: a bar on a terminal, lines otherwise).", "auto", "bar", "lines", "none");
        var store = StoreInput.StoreOption();
        var metrics = new MetricsOptions();
        var command = new Command("escalate", "Run a task of a stored run again on another layer, with the tasks that read its output; reuse the rest.")
        {
            run, task, to, reason, json, config, progress, store,
        };
        metrics.AddTo(command);
        command.SetAction((parse, ct) =>
        {
            var (runId, graphPath) = StoredRun(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(run)!,
                id => $"run {id} was not run from a graph file: it cannot be escalated from the command line");
            string why = parse.GetValue(reason) ?? $"escalated by an operator to {parse.GetValue(to)}";
            return ExecuteAsync(io, graphPath, parse.GetValue(json), null, parse.GetValue(config), nodes: false,
                parse.GetValue(progress), parse.GetValue(store), noStore: false, runId, metrics.Read(parse), (parse.GetValue(task)!, parse.GetValue(to)!, why));
        });
        return command;
    }

    private static async Task<int> ExecuteAsync(CliIO io, string path, string? jsonPath, int? maxParallel, string? configPath, bool nodes,
        string? progressOption, string? storeOption, bool noStore, string? resume, (int? Port, string? Host, double? Linger) metricsOptions,
        (string Task, string Layer, string Reason)? escalate = null, string? objective = null, double? budget = null)
    {
        if (resume is not null && noStore) throw new UsageException("--resume needs the run store; drop --no-store");
        var stdout = io.Out;
        if (noStore && storeOption is not null) throw new UsageException("--store and --no-store exclude each other");
        // Every output is checked before anything runs: a summary that cannot be written is
        // refused now, not lost after the run.
        CliOptions.CheckOutput("--json", jsonPath, path, configPath);
        var config = GraphInput.LoadConfig(configPath, io.Token);
        if (metricsOptions.Host is { } mh && !System.Net.IPAddress.TryParse(mh, out _))
            throw new UsageException($"--metrics-host must be an IP address (127.0.0.1, ::1, 0.0.0.0, …), got '{mh}'");
        using var logs = Logs.Create(io.LogFormat ?? config.LogFormat, io.LogLevel ?? config.LogLevel);
        var log = logs.CreateLogger("TaskMesh.Run");
        // The store is opened (and checked) before anything runs, too.
        using var store = noStore || !config.StoreEnabled && storeOption is null ? null : StoreInput.Open(StoreInput.PathOf(storeOption, config), readOnly: false, config);
        if (store is not null) CliOptions.CheckOutput("--json", jsonPath, store.Path);
        using var storeFailed = CancellationTokenSource.CreateLinkedTokenSource(io.Token);
        var ct = storeFailed.Token;
        var progress = progressOption ?? config.Progress;
        if (progress is not ("auto" or "bar" or "lines" or "none"))
            throw new UsageException($"--progress must be auto, bar, lines or none, got '{progress}'");
        if (maxParallel is int mp)
        {
            config.MaxParallelTasks = mp;
            if (config.WorkerThreads > mp) config.WorkerThreads = mp;
        }

        var (engine, graph, hash) = GraphInput.LoadWithHash(path, config, io.Token);
        // Escalation rules in force: the config's, else the store's (taskmesh rules add), else the defaults.
        var (rules, rulesSource) = RulesCommand.InForce(config, store);
        if (rulesSource == "store")
            engine.EscalationPolicy = new TaskMesh.Engine.Escalation.RuleEscalationPolicy(rules, () => engine.Layers, config.MaxEscalationsPerTask);
        // One feature extractor for the router and the recorder: the graph is analysed once.
        var features = new TaskMesh.Learning.Features.FeatureExtractor(graph);
        budget = UseLearnedRouter(engine, config, store, objective, budget, rules, features, io.Error);
        RestoredTasks? restored = null;
        string? resumedFrom = null;
        IReadOnlyList<ManualEscalation>? manual = null;
        if (resume is not null)
        {
            if (store is null) throw new UsageException("--resume needs the run store (it is disabled by the config's store.enabled = false; pass --store FILE)");
            resumedFrom = store.ResolveRunId(resume);
            // A run still going in a live process is that process's: a second one would run its tasks again beside it.
            if (store.LiveOwnerOf(resumedFrom) is { } live)
                throw new StoreException(live.RunId == resumedFrom
                    ? $"run {resumedFrom} is still going ({live.Owner}); wait for it to end, or stop that process, then {(escalate is null ? "resume" : "escalate")} it"
                    : $"run {resumedFrom} is being resumed by run {live.RunId} ({live.Owner}); wait for that run to end");
            var (_, storedHash) = store.GraphOf(resumedFrom);
            if (storedHash is not null && storedHash != hash)
                throw new StoreException($"'{path}' changed since run {resumedFrom} (its SHA-256 was {storedHash[..12]}…, now {hash[..12]}…): resuming would mix two graphs; run it anew instead");
            // So may a file a task reads (a circuit): the stored outputs were made from the old content.
            if (RunInputs.Changed(store.GetRun(resumedFrom).Inputs, graph.InputFiles(), resumedFrom) is { } changed)
                throw new StoreException($"{changed}: resuming would restore outputs made from the old content; run the graph anew instead");
            restored = store.LoadRestored(resumedFrom, graph.Graph);
            if (escalate is { } esc)
            {
                // The task runs again on its new layer, and so does every task that reads its output
                // over data edges (theirs change with it); everything else is reused.
                if (!graph.Graph.TryGetIndex(esc.Task, out int task))
                    throw new UsageException($"run {resumedFrom} (graph '{graph.Graph.Name}') has no task '{TaskMesh.Engine.Graph.GraphLimits.Printable(esc.Task)}'");
                if (engine.WhyCannotRun(graph, task, esc.Layer) is { } why) throw new UsageException($"--to: {why}");
                // Where it ran: its row's layer; a task answered from the cache or restored has none,
                // and is where it would be routed without a model: its forced layer, else its handler's.
                string from = store.TasksOf(resumedFrom).FirstOrDefault(t => t.Index == task)?.Layer
                    ?? graph.Graph.ForcedLayerOf(task)
                    ?? (graph.HandlerOf(task).PreferredLayer is { } preferred && engine.Layers.Any(l => l.Name == preferred) ? preferred : "local");
                if (from == esc.Layer)
                    throw new UsageException($"--to: task '{TaskMesh.Engine.Graph.GraphLimits.Printable(esc.Task)}' already ran on {esc.Layer} in run {resumedFrom}; escalate it to another layer");
                var rerun = graph.Graph.DataDescendantsOf(task);
                restored.Remove(task);
                foreach (int d in rerun) restored.Remove(d);
                manual = [new ManualEscalation(esc.Task, esc.Layer, from, esc.Reason)];
                stdout.WriteLine($"escalating task {TerminalText.Safe(esc.Task)} of run {resumedFrom} from {from} to {esc.Layer}: it and {rerun.Count} task(s) reading its output run again; {restored.Count} of {graph.Count} are reused");
            }
            else stdout.WriteLine($"resuming run {resumedFrom}: {restored.Count} of {graph.Count} tasks finished there and are not run again");
        }
        RunRecorder? recorder = null;
        if (store is not null)
        {
            store.RecordLayers(engine.Layers);
            // The config's rules are mirrored into the store; the store's own are already there.
            if (rulesSource == "config") store.RecordRules(rules);
            // Each kept row carries the task's complexity score and feature vector, what the learned
            // models train on (computed on the store's writer thread).
            recorder = new RunRecorder(store, path, hash, config.Text, resumedFrom, config.Journal,
                complexity: t => features.Complexity(t), features: t => features.Extract(t), inputs: graph.InputFiles());
            // A store that fails (disk full, file made read-only) stops the run: what it already
            // committed stays, and the summary says why.
            recorder.Faulted += _ => { try { storeFailed.Cancel(); } catch (ObjectDisposedException) { } };
        }
        // Metrics: served from the first task to the end of the run (and a linger after it).
        int? metricsPort = metricsOptions.Port ?? config.MetricsPort;
        TaskMeshMetrics? metrics = null;
        await using var web = metricsPort is int port ? await StartMetricsAsync(port, metricsOptions.Host ?? config.MetricsHost) : null;
        async Task<Web.TaskMeshWebHost> StartMetricsAsync(int port, string host)
        {
            metrics = new TaskMeshMetrics();
            metrics.Watch(engine);
            if (store is not null) metrics.Watch(store);
            Web.TaskMeshWebHost server;
            try { server = await Web.TaskMeshWebHost.StartAsync(host, port, metrics, logs, ct: io.Token); }
            catch (IOException ex) { throw new UsageException($"--metrics-port: {ex.Message}"); }
            stdout.WriteLine($"metrics at {server.MetricsUri}");
            stdout.Flush();
            return server;
        }
        if (metrics is not null && store?.Models() is { Count: > 0 } modelVersions)
            foreach (var a in JsonSerializer.Deserialize<List<TaskMesh.Learning.Models.LayerAccuracy>>(modelVersions[0].Metrics) ?? [])
                metrics.RecordModel(modelVersions[0].Version, a.Layer, a.DurationMaeMs, a.DurationR2, a.SuccessAuc, a.CalibrationError);
        var observers = new List<IRunObserver> { new RunLogger(log) };
        if (recorder is not null) observers.Add(recorder);
        if (metrics is not null) observers.Add(metrics);
        var runOptions = new RunOptions
        {
            BaseDirectory = Path.GetDirectoryName(Path.GetFullPath(path)),
            CollectTaskDetails = nodes ? true : null,
            Observers = observers,
            Restored = restored,
            ManualEscalations = manual,
            Cache = store is null ? null : new StoreTaskCache(store),
            Budget = budget,
        };
        var handle = engine.Start(graph, runOptions, ct);
        if (progress == "auto")
            progress = Console.IsOutputRedirected || !ReferenceEquals(stdout is TerminalSafeWriter t ? t.Inner : stdout, Console.Out) ? "lines" : "bar";
        if (progress == "bar") await ShowBarAsync(handle);
        else if (progress == "lines") await ShowLinesAsync(handle, stdout);
        var result = await handle.Completion;

        PrintSummary(result, stdout);
        if (jsonPath is not null)
        {
            SafeFile.WriteAtomic(jsonPath, s =>
            {
                using var w = new Utf8JsonWriter(s, new JsonWriterOptions { Indented = true });
                result.WriteJson(w, nodes ? true : null);
            });
            stdout.WriteLine($"summary written to {jsonPath}");
        }
        if (store is not null)
        {
            try
            {
                await store.FlushAsync(CancellationToken.None);
                stdout.WriteLine($"run {result.RunId} recorded in {store.Path}");
                // The models learn from the history after the run, never during it.
                if (result.Status != RunStatus.Cancelled) await TrainCommand.TrainIfDueAsync(store, config, stdout, io.Token, metrics);
            }
            catch (StoreException ex)
            {
                io.Error.WriteLine($"taskmesh: the run store failed, the run was stopped: {ex.Message}");
                return ExitCodes.TasksFailed;
            }
        }
        if (web is not null && (metricsOptions.Linger ?? config.MetricsLingerSeconds) is double linger and > 0)
        {
            stdout.WriteLine($"serving {web.MetricsUri} for {linger:0.###} s more");
            try { await Task.Delay(TimeSpan.FromSeconds(linger), io.Token); }
            catch (OperationCanceledException) { }
        }
        return result.Status switch
        {
            RunStatus.Succeeded => ExitCodes.Ok,
            RunStatus.Failed => ExitCodes.TasksFailed,
            _ => ExitCodes.Cancelled,
        };
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
