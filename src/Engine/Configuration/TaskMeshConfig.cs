using System.Globalization;
using Tomlyn.Parsing;
using Tomlyn.Syntax;

namespace TaskMesh.Engine.Configuration;

/// <summary>A problem in a configuration file, with the key and line it concerns.</summary>
public sealed class ConfigException(string message) : Exception(message);

/// <summary>
/// <c>taskmesh.toml</c>. Every key has a default, so no file is needed; a file may set any
/// subset. Unknown sections or keys, wrong types and out-of-range values are errors naming the
/// key and its line, all reported together. <c>docs/configuration.md</c> lists every key.
/// </summary>
public sealed class TaskMeshConfig
{
    // [general]
    /// <summary><c>general.progress</c>: <c>auto</c> (bar on a terminal, lines otherwise), <c>bar</c>, <c>lines</c> or <c>none</c>.</summary>
    public string Progress { get; set; } = ProgressModes.Auto;

    // [execution]
    public int MaxParallelTasks { get; set; } = Environment.ProcessorCount;
    public int WorkerThreads { get; set; } = EngineOptions.Automatic;
    public double TimeoutSeconds { get; set; } = 300;
    public int RetryAttempts { get; set; }
    public int RetryBaseDelayMs { get; set; } = 100;
    public int RetryMaxDelayMs { get; set; } = 30_000;
    public int CancelGraceMs { get; set; } = 2_000;
    /// <summary><c>execution.ready_order</c>: <c>auto</c>, <c>fifo</c> or <c>critical_path</c> (see <see cref="Scheduling.ReadyOrder"/>).</summary>
    public Scheduling.ReadyOrder ReadyOrder { get; set; } = Scheduling.ReadyOrder.Auto;

    // [handlers]
    public bool ShellEnabled { get; set; }

    // [store]
    /// <summary><c>store.path</c>: the run store file; null for the default (<see cref="Store.RunStore.DefaultPath"/>), relative to the config file's folder.</summary>
    public string? StorePath { get; set; }

    /// <summary><c>store.url</c>: the run store in a PostgreSQL database (<c>postgresql://user:password@host:port/database</c>) instead of a file; null for a file (<see cref="StorePath"/>).</summary>
    public string? StoreUrl { get; set; }

    /// <summary>The store the config names: <see cref="StoreUrl"/>, else <see cref="StorePath"/>; null for the default.</summary>
    public string? StoreLocation => StoreUrl ?? StorePath;

    /// <summary><c>store.enabled</c>: whether runs are recorded. Default true.</summary>
    public bool StoreEnabled { get; set; } = true;

    /// <summary><c>store.lock_timeout_seconds</c>: how long the store waits, retrying, while another process holds its lock, before it fails. Default 300.</summary>
    public double StoreLockTimeoutSeconds { get; set; } = Store.RunStore.DefaultLockTimeout.TotalSeconds;

    /// <summary><c>store.full_detail_tasks</c>, <c>slow_task_ms</c>, <c>sample_every</c>, <c>max_sampled_rows</c>: which task rows a run keeps.</summary>
    public Store.JournalOptions Journal { get; set; } = Store.JournalOptions.Default;

    // [open_runs]
    /// <summary><c>open_runs.max_pending</c>: most tasks of an open run submitted and not ended (<see cref="OpenRunOptions.MaxPending"/>).</summary>
    public int OpenMaxPending { get; set; } = OpenRunOptions.DefaultMaxPending;

    /// <summary><c>open_runs.retain_tasks</c>: ended tasks an open run keeps for later dependents (<see cref="OpenRunOptions.RetainTasks"/>).</summary>
    public int OpenRetainTasks { get; set; } = OpenRunOptions.DefaultRetainTasks;

    /// <summary><c>open_runs.retain_bytes</c>: most bytes of outputs an open run keeps for later dependents (<see cref="OpenRunOptions.RetainBytes"/>).</summary>
    public long OpenRetainBytes { get; set; } = OpenRunOptions.DefaultRetainBytes;

    // [api]
    /// <summary><c>api.host</c>: the address <c>taskmesh serve</c> listens on (default 127.0.0.1: this machine only).</summary>
    public string ApiHost { get; set; } = "127.0.0.1";

    /// <summary><c>api.http_port</c>: the HTTP API's port (default 8080; 0: a free one).</summary>
    public int ApiHttpPort { get; set; } = 8080;

    /// <summary><c>api.port</c>: the MessagePack socket protocol's port (default 7400; 0: a free one).</summary>
    public int ApiPort { get; set; } = 7400;

    /// <summary><c>api.max_frame_bytes</c>: the largest socket frame taken (default 4 MiB).</summary>
    public int ApiMaxFrameBytes { get; set; } = 4 << 20;

    /// <summary><c>api.handshake_seconds</c>: how long a socket client has to send its hello (default 5).</summary>
    public double ApiHandshakeSeconds { get; set; } = 5;

    /// <summary><c>api.drain_seconds</c>: on shutdown, how long going runs get to finish before they are cancelled (default 30).</summary>
    public double ApiDrainSeconds { get; set; } = 30;

    /// <summary><c>api.max_request_bytes</c>: the largest request body taken (a graph, a task); default 16 MiB.</summary>
    public long ApiMaxRequestBytes { get; set; } = 16L << 20;

    /// <summary><c>api.graph_directory</c>: the folder relative paths in submitted graphs resolve against (default: the folder the service started in).</summary>
    public string? ApiGraphDirectory { get; set; }

    /// <summary><c>api.token_key_file</c>: require bearer tokens signed with this key (relative to the config file); default: none (loopback only).</summary>
    public string? ApiTokenKeyFile { get; set; }

    /// <summary><c>api.tls_certificate</c>: a PEM certificate (chain) for TLS on the HTTP API and the socket (relative to the config file).</summary>
    public string? ApiTlsCertificate { get; set; }

    /// <summary><c>api.tls_key</c>: the PEM private key of <c>api.tls_certificate</c>.</summary>
    public string? ApiTlsKey { get; set; }

    /// <summary><c>[cluster]</c>: the coordinator's silo, batching, strategy, poison limit and failure detection.</summary>
    public ClusterSettings Cluster { get; set; } = new();

    /// <summary><c>api.requests_per_second</c>: HTTP requests per second per caller (token subject, else address), bursts of twice that; 0: no limit. Default 1000.</summary>
    public int ApiRequestsPerSecond { get; set; } = 1_000;

    /// <summary><c>api.external_handlers</c>: handlers served by external workers, known from the start (graphs naming them are taken, and their tasks wait for a worker). Default none.</summary>
    public IReadOnlyList<string> ApiExternalHandlers { get; set; } = [];

    /// <summary><c>api.keep_finished_runs</c>: finished runs the service keeps in memory for the API (the store keeps all). Default 100.</summary>
    public int ApiKeepFinishedRuns { get; set; } = 100;

    /// <summary><c>observability.metrics.port</c>: serve <c>/metrics</c> on this port while a run goes (0: a free port; null: not served).</summary>
    public int? MetricsPort { get; set; }

    /// <summary><c>observability.metrics.host</c>: the address <c>/metrics</c> listens on (default 127.0.0.1: this machine only).</summary>
    public string MetricsHost { get; set; } = "127.0.0.1";

    /// <summary><c>observability.metrics.linger_seconds</c>: keep serving <c>/metrics</c> this long after the run ends, for a last scrape.</summary>
    public double MetricsLingerSeconds { get; set; }

    /// <summary><c>observability.logs.format</c>: <c>text</c> or <c>json</c> (one object per line), on standard error.</summary>
    public string LogFormat { get; set; } = "text";

    /// <summary><c>observability.logs.level</c>: the least severe level written (<c>trace</c> … <c>critical</c>, <c>none</c>).</summary>
    public string LogLevel { get; set; } = "warning";

    /// <summary>
    /// <c>[layers.NAME]</c>: the provider table, in the order declared (empty: <c>local</c> and
    /// <c>quantum</c> with their defaults). <c>local</c> and <c>quantum</c> exist unless declared
    /// otherwise (<c>enabled = false</c> for quantum); other sections add layers.
    /// </summary>
    public IReadOnlyList<Layers.LayerSpec> Layers { get; private set; } = [];

    /// <summary><c>[[escalation.rules]]</c>, in declaration order (none declared: <see cref="Escalation.EscalationRule.Defaults"/>).</summary>
    public IReadOnlyList<Escalation.EscalationRule> EscalationRules { get; private set; } = [];

    /// <summary><c>escalation.max_per_task</c>: escalations a task may have (0–8).</summary>
    public int MaxEscalationsPerTask { get; set; } = Escalation.RuleEscalationPolicy.DefaultMaxPerTask;

    /// <summary>True when the config has a <c>[routing]</c> section: the learned router chooses layers.</summary>
    public bool RoutingConfigured { get; private set; }

    /// <summary><c>routing.objective</c>: auto, fastest or cheapest.</summary>
    public string RoutingObjective { get; set; } = RoutingObjectives.Auto;

    /// <summary><c>routing.min_confidence</c>: the confidence a task needs when it states none.</summary>
    public double RoutingMinConfidence { get; set; } = 0.70;

    /// <summary><c>routing.failure_penalty</c>: cost per unit of predicted failure probability; null (unset): the expected cost of the escalation a failure leads to.</summary>
    public double? RoutingFailurePenalty { get; set; }

    /// <summary><c>routing.exploration</c>: share of tasks sent to another capable layer.</summary>
    public double RoutingExploration { get; set; }

    /// <summary><c>learning.retrain_after_rows</c>: train a new model version after a run once this many task rows with features were stored since the last one (0: never by count).</summary>
    public int RetrainAfterRows { get; set; } = 5_000;

    /// <summary><c>learning.retrain_after_minutes</c>: train after a run when the last version is older than this and new rows exist (0: never by age).</summary>
    public double RetrainAfterMinutes { get; set; } = 24 * 60;

    /// <summary><c>learning.max_argument_features</c>: most of the numbers a handler's tasks state in their own arguments that its models read (chosen when they are trained; 0: none).</summary>
    public int MaxArgumentFeatures { get; set; } = 8;

    /// <summary><c>learning.enabled</c>: train automatically after runs.</summary>
    public bool LearningEnabled { get; set; } = true;

    /// <summary><c>routing.daily_cost_limit</c>: most the layers may cost in a UTC day (with the run store's figures for today); null: none.</summary>
    public double? RoutingDailyCostLimit { get; set; }

    /// <summary><c>[[routing.bands]]</c> (<c>up_to</c>, <c>layer</c>): cold-start complexity bands, in increasing order.</summary>
    public IReadOnlyList<(double UpTo, string Layer)> RoutingBands { get; private set; } = [];

    /// <summary>Log levels, least severe first.</summary>
    public static readonly string[] LogLevels = ["trace", "debug", "information", "warning", "error", "critical", "none"];

    /// <summary>The configuration file's text, or null for defaults (kept with each stored run).</summary>
    public string? Text { get; private set; }

    /// <summary>[quantum]: the quantum layer's settings.</summary>
    public Layers.Quantum.QuantumOptions Quantum { get; } = new();

    /// <summary>The file the settings came from, or null for defaults.</summary>
    public string? Source { get; private set; }

    private delegate string? Setter(TaskMeshConfig c, ValueSyntax v);

    private static readonly Dictionary<string, Dictionary<string, Setter>> s_schema = new(StringComparer.Ordinal)
    {
        ["general"] = new(StringComparer.Ordinal)
        {
            ["progress"] = (c, v) => Str(v, out var s) ?? (ProgressModes.All.Contains(s!) ? Set(() => c.Progress = s!) : $"must be one of {string.Join(", ", ProgressModes.All)}"),
        },
        ["execution"] = new(StringComparer.Ordinal)
        {
            ["max_parallel_tasks"] = (c, v) => Int(v, 1, 100_000, out var x) ?? Set(() => c.MaxParallelTasks = x),
            ["worker_threads"] = (c, v) => Int(v, 0, 1024, out var x) ?? Set(() => c.WorkerThreads = x),
            ["timeout_seconds"] = (c, v) => Num(v, Graph.GraphLimits.MinTimeoutSeconds, Graph.GraphLimits.MaxTimeoutSeconds, out var x) ?? Set(() => c.TimeoutSeconds = x),
            ["retry_attempts"] = (c, v) => Int(v, 0, 100, out var x) ?? Set(() => c.RetryAttempts = x),
            ["retry_base_delay_ms"] = (c, v) => Int(v, 0, 3_600_000, out var x) ?? Set(() => c.RetryBaseDelayMs = x),
            ["retry_max_delay_ms"] = (c, v) => Int(v, 0, 3_600_000, out var x) ?? Set(() => c.RetryMaxDelayMs = x),
            ["cancel_grace_ms"] = (c, v) => Int(v, 0, 600_000, out var x) ?? Set(() => c.CancelGraceMs = x),
            ["ready_order"] = (c, v) => Str(v, out var s) ?? (Scheduling.ReadyOrders.TryParse(s, out var o) ? Set(() => c.ReadyOrder = o) : "must be auto, fifo or critical_path"),
        },
        ["handlers"] = new(StringComparer.Ordinal)
        {
            ["shell_enabled"] = (c, v) => Bool(v, out var b) ?? Set(() => c.ShellEnabled = b),
        },
        ["store"] = new(StringComparer.Ordinal)
        {
            ["path"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.StorePath = s)),
            ["url"] = (c, v) => Str(v, out var s) ?? (Store.PostgresUrl.Names(s) ? Set(() => c.StoreUrl = s) : "must be a postgresql://user:password@host:port/database URL (for a file, use store.path)"),
            ["enabled"] = (c, v) => Bool(v, out var b) ?? Set(() => c.StoreEnabled = b),
            ["lock_timeout_seconds"] = (c, v) => Num(v, 1, 86_400, out var x) ?? Set(() => c.StoreLockTimeoutSeconds = x),
            ["full_detail_tasks"] = (c, v) => Int(v, 0, int.MaxValue, out var x) ?? Set(() => c.Journal = c.Journal with { FullDetailTasks = x }),
            ["slow_task_ms"] = (c, v) => Num(v, 0, 86_400_000, out var x) ?? Set(() => c.Journal = c.Journal with { SlowTaskMs = x }),
            ["sample_every"] = (c, v) => Int(v, 1, Store.JournalOptions.MaxSampleEvery, out var x)
                ?? (System.Numerics.BitOperations.IsPow2(x) ? Set(() => c.Journal = c.Journal with { SampleEvery = x }) : "must be a power of two (1, 2, 4, … 1024, …)"),
            ["max_sampled_rows"] = (c, v) => Int(v, 1, 1_000_000, out var x) ?? Set(() => c.Journal = c.Journal with { MaxSampledRows = x }),
        },
        ["open_runs"] = new(StringComparer.Ordinal)
        {
            ["max_pending"] = (c, v) => Int(v, 1, 100_000_000, out var x) ?? Set(() => c.OpenMaxPending = x),
            ["retain_tasks"] = (c, v) => Int(v, 0, 100_000_000, out var x) ?? Set(() => c.OpenRetainTasks = x),
            ["retain_bytes"] = (c, v) => Num(v, 0, 1e13, out var x) ?? Set(() => c.OpenRetainBytes = (long)x),
        },
        ["api"] = new(StringComparer.Ordinal)
        {
            ["host"] = (c, v) => Str(v, out var s) ?? (System.Net.IPAddress.TryParse(s, out _) ? Set(() => c.ApiHost = s!) : "must be an IP address (127.0.0.1, ::1, 0.0.0.0, …)"),
            ["http_port"] = (c, v) => Int(v, 0, 65_535, out var x) ?? Set(() => c.ApiHttpPort = x),
            ["port"] = (c, v) => Int(v, 0, 65_535, out var x) ?? Set(() => c.ApiPort = x),
            ["max_frame_bytes"] = (c, v) => Int(v, 1024, 1 << 30, out var x) ?? Set(() => c.ApiMaxFrameBytes = x),
            ["handshake_seconds"] = (c, v) => Num(v, 0.1, 3600, out var x) ?? Set(() => c.ApiHandshakeSeconds = x),
            ["drain_seconds"] = (c, v) => Num(v, 0, 86_400, out var x) ?? Set(() => c.ApiDrainSeconds = x),
            ["max_request_bytes"] = (c, v) => Num(v, 1024, 1L << 31, out var x) ?? Set(() => c.ApiMaxRequestBytes = (long)x),
            ["graph_directory"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.ApiGraphDirectory = s)),
            ["keep_finished_runs"] = (c, v) => Int(v, 0, 1_000_000, out var x) ?? Set(() => c.ApiKeepFinishedRuns = x),
            ["requests_per_second"] = (c, v) => Int(v, 0, 100_000_000, out var x) ?? Set(() => c.ApiRequestsPerSecond = x),
            ["external_handlers"] = (c, v) => StrList(v, out var names) ?? (names.Select(n => Graph.GraphLimits.IdProblem(n)).FirstOrDefault(p => p is not null) is string problem
                ? $"has a handler name that {problem}" : Set(() => c.ApiExternalHandlers = names)),
            ["token_key_file"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.ApiTokenKeyFile = s)),
            ["tls_certificate"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.ApiTlsCertificate = s)),
            ["tls_key"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.ApiTlsKey = s)),
        },
        ["cluster"] = new(StringComparer.Ordinal)
        {
            ["enabled"] = (c, v) => Bool(v, out var b) ?? Set(() => c.Cluster = c.Cluster with { Enabled = b }),
            ["host"] = (c, v) => Str(v, out var s) ?? (System.Net.IPAddress.TryParse(s, out _) ? Set(() => c.Cluster = c.Cluster with { Host = s! }) : "must be an IP address (127.0.0.1, ::1, 0.0.0.0, …)"),
            ["port"] = (c, v) => Int(v, 0, 65_535, out var x) ?? Set(() => c.Cluster = c.Cluster with { Port = x }),
            ["cluster_id"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) || s!.Length > 100 ? "must be 1–100 characters" : Set(() => c.Cluster = c.Cluster with { ClusterId = s })),
            ["strategy"] = (c, v) => Str(v, out var s) ?? (ClusterStrategies.All.Contains(s!) ? Set(() => c.Cluster = c.Cluster with { Strategy = s! }) : $"must be one of {string.Join(", ", ClusterStrategies.All)}"),
            ["batch_size"] = (c, v) => Int(v, 1, 65_536, out var x) ?? Set(() => c.Cluster = c.Cluster with { BatchSize = x }),
            ["prefetch"] = (c, v) => Int(v, 0, 1_000_000, out var x) ?? Set(() => c.Cluster = c.Cluster with { Prefetch = x }),
            ["poison_limit"] = (c, v) => Int(v, 1, 100, out var x) ?? Set(() => c.Cluster = c.Cluster with { PoisonLimit = x }),
            ["fallback_to_local"] = (c, v) => Bool(v, out var b) ?? Set(() => c.Cluster = c.Cluster with { FallbackToLocal = b }),
            ["probe_timeout_ms"] = (c, v) => Int(v, 50, 300_000, out var x) ?? Set(() => c.Cluster = c.Cluster with { ProbeTimeout = TimeSpan.FromMilliseconds(x) }),
            ["missed_probes"] = (c, v) => Int(v, 1, 100, out var x) ?? Set(() => c.Cluster = c.Cluster with { MissedProbes = x }),
            ["votes_for_death"] = (c, v) => Int(v, 1, 100, out var x) ?? Set(() => c.Cluster = c.Cluster with { VotesForDeath = x }),
            ["verbose"] = (c, v) => Bool(v, out var b) ?? Set(() => c.Cluster = c.Cluster with { Verbose = b }),
            ["tls_certificate"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.Cluster = c.Cluster with { TlsCertificate = s })),
            ["tls_key"] = (c, v) => Str(v, out var s) ?? (string.IsNullOrWhiteSpace(s) ? "must not be empty" : Set(() => c.Cluster = c.Cluster with { TlsKey = s })),
            ["membership"] = (c, v) => Str(v, out var s) ?? (ClusterSettings.IsMembershipUrl(s!)
                ? Set(() => c.Cluster = c.Cluster with { Membership = s }) : "must be a postgresql://user:password@host:port/database or redis://[:password@]host:port[/database] URL"),
        },
        ["routing"] = new(StringComparer.Ordinal)
        {
            ["objective"] = (c, v) => Str(v, out var o) ?? (RoutingObjectives.All.Contains(o!) ? Set(() => c.RoutingObjective = o!) : $"must be one of {string.Join(", ", RoutingObjectives.All)}"),
            ["min_confidence"] = (c, v) => Num(v, 0, 1, out var x) ?? Set(() => c.RoutingMinConfidence = x),
            ["failure_penalty"] = (c, v) => Num(v, 0, 1e12, out var x) ?? Set(() => c.RoutingFailurePenalty = x),
            ["exploration"] = (c, v) => Num(v, 0, 1, out var x) ?? Set(() => c.RoutingExploration = x),
            ["daily_cost_limit"] = (c, v) => Num(v, 0, 1e15, out var x) ?? Set(() => c.RoutingDailyCostLimit = x),
        },
        ["learning"] = new(StringComparer.Ordinal)
        {
            ["enabled"] = (c, v) => Bool(v, out var b) ?? Set(() => c.LearningEnabled = b),
            ["retrain_after_rows"] = (c, v) => Int(v, 0, int.MaxValue, out var x) ?? Set(() => c.RetrainAfterRows = x),
            ["retrain_after_minutes"] = (c, v) => Num(v, 0, 525_600, out var x) ?? Set(() => c.RetrainAfterMinutes = x),
            ["max_argument_features"] = (c, v) => Int(v, 0, 64, out var x) ?? Set(() => c.MaxArgumentFeatures = x),
        },
        ["escalation"] = new(StringComparer.Ordinal)
        {
            ["max_per_task"] = (c, v) => Int(v, 0, Scheduling.Attempts.AttemptRunner.MaxEscalationsPerTask, out var x) ?? Set(() => c.MaxEscalationsPerTask = x),
        },
        ["observability.metrics"] = new(StringComparer.Ordinal)
        {
            ["port"] = (c, v) => Int(v, 0, 65_535, out var x) ?? Set(() => c.MetricsPort = x),
            ["host"] = (c, v) => Str(v, out var s) ?? (System.Net.IPAddress.TryParse(s, out _) ? Set(() => c.MetricsHost = s!) : "must be an IP address (127.0.0.1, ::1, 0.0.0.0, …)"),
            ["linger_seconds"] = (c, v) => Num(v, 0, 3600, out var x) ?? Set(() => c.MetricsLingerSeconds = x),
        },
        ["observability.logs"] = new(StringComparer.Ordinal)
        {
            ["format"] = (c, v) => Str(v, out var s) ?? (s is "text" or "json" ? Set(() => c.LogFormat = s!) : "must be text or json"),
            ["level"] = (c, v) => Str(v, out var s) ?? (LogLevels.Contains(s) ? Set(() => c.LogLevel = s!) : $"must be one of {string.Join(", ", LogLevels)}"),
        },
        ["quantum"] = new(StringComparer.Ordinal)
        {
            ["max_concurrent_circuits"] = (c, v) => Int(v, 1, 64, out var x) ?? Set(() => c.Quantum.MaxConcurrentCircuits = x),
            ["memory_cap_mb"] = (c, v) => Int(v, 1, int.MaxValue, out var x) ?? Set(() => c.Quantum.MemoryCapBytes = (long)x << 20),
            ["fusion"] = (c, v) => Int(v, 0, QuantumSim.SimulatorOptions.MaxFusion, out var x) ?? Set(() => c.Quantum.DefaultFusion = x),
            ["norm_tolerance"] = (c, v) => Num(v, 1e-15, 1, out var x) ?? Set(() => c.Quantum.NormTolerance = x),
            ["threads"] = (c, v) => Int(v, 0, 1024, out var x) ?? Set(() => c.Quantum.ThreadsPerCircuit = x),
            ["circuits_outside_graph_folder"] = (c, v) => Bool(v, out var x) ?? Set(() => c.Quantum.CircuitsOutsideGraphFolder = x),
        },
    };

    /// <summary>Loads a file. </summary>
    /// <exception cref="ConfigException">With every problem, each naming the key and line.</exception>
    public static TaskMeshConfig Load(string path, CancellationToken ct = default)
    {
        string text;
        try
        {
            var bytes = IO.SafeFile.ReadInput(path, IO.SafeFile.MaxConfigBytes, "config file", ct);
            text = new System.Text.UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
        }
        catch (IO.UnsafeFileException ex)
        {
            throw new ConfigException($"{path}: {ex.Message}");
        }
        catch (System.Text.DecoderFallbackException)
        {
            throw new ConfigException($"{path}: the config is not UTF-8 text");
        }
        return Parse(text, path);
    }

    /// <summary>Parses TOML text.</summary>
    public static TaskMeshConfig Parse(string text, string path = "taskmesh.toml")
    {
        var config = new TaskMeshConfig { Source = path, Text = text };
        var layerDrafts = new List<LayerDraft>();
        var rules = new List<Escalation.EscalationRule>();
        var ruleLines = new List<int>();
        if (text.StartsWith('\uFEFF')) text = text[1..];   // a byte order mark is allowed
        var doc = SyntaxParser.Parse(text, path);
        var problems = new List<string>();
        foreach (var d in doc.Diagnostics)
            problems.Add($"{path}:{d.Span.Start.Line + 1}:{d.Span.Start.Column + 1}: {d.Message}");
        if (problems.Count == 0)
        {
            foreach (var kv in doc.KeyValues)
                problems.Add($"{path}:{Line(kv)}: key '{KeyName(kv.Key)}' must be inside a section ([general], [execution], [handlers], [store], [layers.NAME], [quantum], …)");
            foreach (var table in doc.Tables)
            {
                string section = KeyName(table.Name);
                if (section == "routing") config.RoutingConfigured = true;
                if (table is TableArraySyntax && section == "routing.bands")
                {
                    config.RoutingConfigured = true;
                    ParseBand(config, table, path, problems);
                    continue;
                }
                if (table is TableArraySyntax && section == "escalation.rules")
                {
                    ParseRule(table, path, problems, rules, ruleLines);
                    continue;
                }
                if (table is not TableArraySyntax && section.StartsWith("layers.", StringComparison.Ordinal))
                {
                    ParseLayer(config, table, section["layers.".Length..], path, problems, layerDrafts);
                    continue;
                }
                if (table is TableArraySyntax || !s_schema.TryGetValue(section, out var keys))
                {
                    problems.Add($"{path}:{Line(table)}: unknown section [{section}] (known: {string.Join(", ", s_schema.Keys.Select(k => $"[{k}]"))}, [layers.NAME])");
                    continue;
                }
                foreach (var item in table.Items)
                {
                    if (item is not KeyValueSyntax kv) continue;
                    string key = KeyName(kv.Key);
                    if (!keys.TryGetValue(key, out var setter))
                    {
                        problems.Add($"{path}:{Line(kv)}: unknown key '{section}.{key}' (known: {string.Join(", ", keys.Keys)})");
                        continue;
                    }
                    if (setter(config, kv.Value!) is string problem)
                        problems.Add($"{path}:{Line(kv)}: key '{section}.{key}' {problem}");
                }
            }
        }
        config.Layers = FinishLayers(config, layerDrafts, path, problems);
        config.EscalationRules = rules;
        // The layers an engine made from this config has: local and quantum always, and each [layers.NAME].
        var declared = new HashSet<string>([Engine.Layers.LayerKinds.Local, Engine.Layers.LayerKinds.Quantum], StringComparer.Ordinal);
        declared.UnionWith(layerDrafts.Select(d => d.Name));
        if (declared.Count > Scheduling.RouteTable.MaxLayers - 1)
            problems.Add($"{path}: {declared.Count} layers (the [layers.*] tables with the built-in local and quantum); at most {Scheduling.RouteTable.MaxLayers - 1} can be registered");
        for (int i = 0; i < rules.Count; i++)
        {
            var r = rules[i];
            string known = string.Join(", ", declared.Order(StringComparer.Ordinal));
            if (r.From != Escalation.EscalationRule.AnyLayer && !declared.Contains(r.From))
                problems.Add($"{path}:{ruleLines[i]}: [[escalation.rules]]: from = \"{r.From}\" names no layer (layers: {known}; or \"*\" for any)");
            if (r.To != Escalation.EscalationRule.NextLayer && !declared.Contains(r.To))
                problems.Add($"{path}:{ruleLines[i]}: [[escalation.rules]]: to = \"{r.To}\" names no layer (layers: {known}; or \"next\" for the next rank)");
        }
        if (config.StoreUrl is not null && config.StorePath is not null)
            problems.Add($"{path}: [store] has both 'path' and 'url': give one (a file, or a PostgreSQL database)");
        if (problems.Count == 0 && config.RetryMaxDelayMs < config.RetryBaseDelayMs)
            problems.Add($"{path}: key 'execution.retry_max_delay_ms' ({config.RetryMaxDelayMs}) must be at least execution.retry_base_delay_ms ({config.RetryBaseDelayMs})");
        if (problems.Count > 0) throw new ConfigException(string.Join('\n', problems));
        // A relative path (the store file, the cluster's TLS files) means the config file's folder, not wherever the command runs.
        if (Path.GetDirectoryName(Path.GetFullPath(path)) is { } folder)
        {
            string? Beside(string? p) => p is null || Path.IsPathRooted(p) ? p : Path.Combine(folder, p);
            config.StorePath = Beside(config.StorePath);
            config.Cluster = config.Cluster with { TlsCertificate = Beside(config.Cluster.TlsCertificate), TlsKey = Beside(config.Cluster.TlsKey) };
        }
        return config;
    }

    /// <summary>The engine options these settings describe.</summary>
    public EngineOptions ToEngineOptions() => new()
    {
        MaxParallelTasks = MaxParallelTasks,
        WorkerThreads = WorkerThreads,
        DefaultTimeout = TimeSpan.FromSeconds(TimeoutSeconds),
        RetryAttempts = RetryAttempts,
        RetryBaseDelay = TimeSpan.FromMilliseconds(RetryBaseDelayMs),
        RetryMaxDelay = TimeSpan.FromMilliseconds(RetryMaxDelayMs),
        CancelGracePeriod = TimeSpan.FromMilliseconds(CancelGraceMs),
        ReadyOrder = ReadyOrder,
        ShellEnabled = ShellEnabled,
        Quantum = Quantum,
        Layers = Layers.Count == 0 ? null : Layers,
        EscalationRules = EscalationRules.Count == 0 ? Escalation.EscalationRule.Defaults : EscalationRules,
        MaxEscalationsPerTask = MaxEscalationsPerTask,
    };

    private static void ParseBand(TaskMeshConfig config, TableSyntaxBase table, string path, List<string> problems)
    {
        double? upTo = null;
        string? layer = null;
        foreach (var item in table.Items)
        {
            if (item is not KeyValueSyntax kv) continue;
            string key = KeyName(kv.Key);
            string? problem = key switch
            {
                "up_to" => Num(kv.Value!, 0, 100, out var x) ?? Set(() => upTo = x),
                "layer" => Str(kv.Value!, out var l) ?? (Graph.GraphNames.IsValidLayerName(l) ? Set(() => layer = l) : "must be a layer name"),
                _ => "is not a band setting (known: up_to, layer)",
            };
            if (problem is not null) problems.Add($"{path}:{Line(kv)}: key 'routing.bands.{key}' {problem}");
        }
        if (upTo is null || layer is null) { problems.Add($"{path}:{Line(table)}: [[routing.bands]] needs up_to (a complexity score 0–100) and layer"); return; }
        if (config.RoutingBands.Count > 0 && config.RoutingBands[^1].UpTo >= upTo)
        {
            problems.Add($"{path}:{Line(table)}: [[routing.bands]] must come in increasing up_to ({upTo} follows {config.RoutingBands[^1].UpTo})");
            return;
        }
        config.RoutingBands = [.. config.RoutingBands, (upTo.Value, layer)];
    }

    private static readonly string[] s_ruleKeys = ["from", "to", "trigger", "threshold", "priority", "active"];

    /// <summary>One <c>[[escalation.rules]]</c> table.</summary>
    private static void ParseRule(TableSyntaxBase table, string path, List<string> problems, List<Escalation.EscalationRule> rules, List<int> lines)
    {
        string from = Escalation.EscalationRule.AnyLayer, to = Escalation.EscalationRule.NextLayer;
        string? trigger = null;
        double? threshold = null;
        int priority = 0;
        bool active = true;
        int before = problems.Count;
        foreach (var item in table.Items)
        {
            if (item is not KeyValueSyntax kv) continue;
            string key = KeyName(kv.Key);
            var v = kv.Value!;
            string? problem = key switch
            {
                "from" => Str(v, out var f) ?? Set(() => from = f!),
                "to" => Str(v, out var t) ?? Set(() => to = t!),
                "trigger" => Str(v, out var tr) ?? Set(() => trigger = tr),
                "threshold" => Num(v, 0, 100, out var x) ?? Set(() => threshold = x),
                "priority" => Int(v, -1000, 1000, out var x) ?? Set(() => priority = x),
                "active" => Bool(v, out var b) ?? Set(() => active = b),
                _ => $"is not a rule setting (known: {string.Join(", ", s_ruleKeys)})",
            };
            if (problem is not null) problems.Add($"{path}:{Line(kv)}: key 'escalation.rules.{key}' {problem}");
        }
        if (problems.Count > before) return;
        if (trigger is null)
        {
            problems.Add($"{path}:{Line(table)}: [[escalation.rules]] needs a trigger ({string.Join(", ", Escalation.EscalationTriggers.All)})");
            return;
        }
        var rule = new Escalation.EscalationRule(from, to, trigger, threshold, priority, active);
        if (rule.Problem() is { } p) problems.Add($"{path}:{Line(table)}: [[escalation.rules]]: {p}");
        else
        {
            rules.Add(rule);
            lines.Add(Line(table));
        }
    }

    /// <summary>A <c>[layers.NAME]</c> section as read, before it is checked as a whole.</summary>
    private sealed class LayerDraft(string name, int line)
    {
        public readonly string Name = name;
        public readonly int Line = line;
        public string? Kind;
        public int? Capacity, Rank, Fusion, MemoryCapMb;
        public double Price;
        public bool Enabled = true;
        public string[] Capabilities = [];
        public QuantumSim.Precision? Precision;
        public double? NormTolerance;
        public readonly List<string> QuantumKeys = new();
    }

    private static readonly string[] s_layerKeys = ["kind", "capacity", "price_per_second", "rank", "enabled", "capabilities", "precision", "fusion", "memory_cap_mb", "norm_tolerance"];

    private static void ParseLayer(TaskMeshConfig config, TableSyntaxBase table, string name, string path, List<string> problems, List<LayerDraft> drafts)
    {
        if (!Graph.GraphNames.IsValidLayerName(name) || name == Graph.GraphNames.AutoLayer)
        {
            problems.Add($"{path}:{Line(table)}: [layers.{name}]: '{name}' is not a valid layer name (letters, digits, '-', '_' and '.'; not 'auto')");
            return;
        }
        if (drafts.Any(d => d.Name == name))
        {
            problems.Add($"{path}:{Line(table)}: [layers.{name}] is declared twice");
            return;
        }
        var d = new LayerDraft(name, Line(table));
        drafts.Add(d);
        foreach (var item in table.Items)
        {
            if (item is not KeyValueSyntax kv) continue;
            string key = KeyName(kv.Key);
            var v = kv.Value!;
            string? problem = key switch
            {
                "kind" => Str(v, out var k) ?? (Engine.Layers.LayerKinds.All.Contains(k) ? Set(() => d.Kind = k) : $"must be one of {string.Join(", ", Engine.Layers.LayerKinds.All)}"),
                "capacity" => Int(v, 1, 100_000, out var x) ?? Set(() => d.Capacity = x),
                "price_per_second" => Num(v, 0, 1e12, out var x) ?? Set(() => d.Price = x),
                "rank" => Int(v, -1000, 1000, out var x) ?? Set(() => d.Rank = x),
                "enabled" => Bool(v, out var b) ?? Set(() => d.Enabled = b),
                "capabilities" => StrList(v, out var list) ?? (list.FirstOrDefault(t => !Graph.GraphNames.IsValidLayerName(t)) is { } bad
                    ? $"has '{bad}', which is not a tag (letters, digits, '-', '_' and '.')" : Set(() => d.Capabilities = list)),
                "precision" => Str(v, out var p) ?? (p is "single" or "double"
                    ? Set(() => { d.Precision = p == "double" ? QuantumSim.Precision.Double : QuantumSim.Precision.Single; d.QuantumKeys.Add(key); }) : "must be single or double"),
                "fusion" => Int(v, 0, QuantumSim.SimulatorOptions.MaxFusion, out var x) ?? Set(() => { d.Fusion = x; d.QuantumKeys.Add(key); }),
                "memory_cap_mb" => Int(v, 1, int.MaxValue, out var x) ?? Set(() => { d.MemoryCapMb = x; d.QuantumKeys.Add(key); }),
                "norm_tolerance" => Num(v, 1e-15, 1, out var x) ?? Set(() => { d.NormTolerance = x; d.QuantumKeys.Add(key); }),
                _ => $"is not a layer setting (known: {string.Join(", ", s_layerKeys)})",
            };
            if (problem is not null) problems.Add($"{path}:{Line(kv)}: key 'layers.{name}.{key}' {problem}");
        }
    }

    /// <summary>Words a layer may not be named, and why.</summary>
    private static readonly Dictionary<string, string> ReservedLayerNames = new(StringComparer.Ordinal)
    {
        [Escalation.EscalationRule.NextLayer] = "a rule's to = \"next\" means the next higher rank",
        ["none"] = "the metrics' layer=\"none\" counts tasks that never ran",
        [Graph.GraphNames.AutoLayer] = "a task's layer = \"auto\" lets the router choose",
    };

    private static IReadOnlyList<Layers.LayerSpec> FinishLayers(TaskMeshConfig config, List<LayerDraft> drafts, string path, List<string> problems)
    {
        var specs = new List<Layers.LayerSpec>();
        foreach (var d in drafts)
        {
            string at = $"{path}:{d.Line}: [layers.{d.Name}]";
            string? kind = d.Kind ?? (d.Name is Engine.Layers.LayerKinds.Local or Engine.Layers.LayerKinds.Quantum ? d.Name : null);
            if (kind is null)
            {
                problems.Add($"{at} needs kind = \"local\" or \"quantum\"");
                continue;
            }
            if (d.Name == Engine.Layers.Local.LocalLayer.LayerName && kind != Engine.Layers.LayerKinds.Local) problems.Add($"{at}: the layer named local must be of kind local");
            if (d.Name == Engine.Layers.Quantum.QuantumLayer.LayerName && kind != Engine.Layers.LayerKinds.Quantum)
                problems.Add($"{at}: the layer named quantum must be of kind quantum (circuits go to it by name); give a local layer another name");
            if (ReservedLayerNames.ContainsKey(d.Name))
                problems.Add($"{at}: '{d.Name}' is a reserved word ({ReservedLayerNames[d.Name]}); give the layer another name");
            if (d.Name == Engine.Layers.Local.LocalLayer.LayerName && !d.Enabled) problems.Add($"{at}: the local layer cannot be disabled");
            if (kind != Engine.Layers.LayerKinds.Quantum && d.QuantumKeys.Count > 0)
                problems.Add($"{at}: {string.Join(", ", d.QuantumKeys)} {(d.QuantumKeys.Count == 1 ? "is a quantum setting" : "are quantum settings")}; this layer is of kind {kind}");
            Layers.Quantum.QuantumOptions? quantum = null;
            if (kind == Engine.Layers.LayerKinds.Quantum)
            {
                // The layer's own settings over the [quantum] section's (read whatever its place in the file).
                quantum = config.Quantum with
                {
                    DefaultFusion = d.Fusion ?? config.Quantum.DefaultFusion,
                    MemoryCapBytes = d.MemoryCapMb is int mb ? (long)mb << 20 : config.Quantum.MemoryCapBytes,
                    NormTolerance = d.NormTolerance ?? config.Quantum.NormTolerance,
                    MaxConcurrentCircuits = d.Capacity is int c ? Math.Min(c, 64) : config.Quantum.MaxConcurrentCircuits,
                };
                if (d.Capacity is > 64) problems.Add($"{at}: capacity {d.Capacity} is more circuits than a quantum layer runs at once (at most 64)");
            }
            specs.Add(new Layers.LayerSpec(d.Name, kind)
            {
                Capacity = d.Capacity,
                PricePerSecond = d.Price,
                Rank = d.Rank,
                Enabled = d.Enabled,
                Capabilities = d.Capabilities,
                Precision = d.Precision,
                Quantum = quantum,
                Line = d.Line,
            });
        }
        return specs;
    }

    private static string? StrList(ValueSyntax v, out string[] list)
    {
        list = [];
        if (v is not ArraySyntax a) return $"must be an array of strings, got {Describe(v)}";
        var items = new List<string>();
        foreach (var item in a.Items)
        {
            if (item.Value is not StringValueSyntax sv || sv.Value is null) return "must be an array of strings";
            items.Add(sv.Value);
        }
        list = items.ToArray();
        return null;
    }

    private static int Line(SyntaxNode node) => node.Span.Start.Line + 1;

    private static string KeyName(KeySyntax? key)
    {
        if (key is null) return "";
        var parts = new List<string> { Part(key.Key) };
        foreach (var d in key.DotKeys) parts.Add(Part(d.Key));
        return string.Join('.', parts);
    }

    private static string Part(BareKeyOrStringValueSyntax? k) => k switch
    {
        BareKeySyntax b => b.Key?.Text ?? "",
        StringValueSyntax s => s.Value ?? "",
        _ => k?.ToString()?.Trim() ?? "",
    };

    private static string? Set(Action a)
    {
        a();
        return null;
    }

    private static string? Int(ValueSyntax v, long min, long max, out int x)
    {
        x = 0;
        if (v is not IntegerValueSyntax i) return $"must be an integer, got {Describe(v)}";
        if (i.Value < min || i.Value > max) return $"is {i.Value}; it must be between {min} and {max}";
        x = (int)i.Value;
        return null;
    }

    private static string? Num(ValueSyntax v, double min, double max, out double x)
    {
        x = v switch { IntegerValueSyntax i => i.Value, FloatValueSyntax f => f.Value, _ => double.NaN };
        if (v is FloatValueSyntax && !double.IsFinite(x)) return $"must be finite, got {(double.IsNaN(x) ? "nan" : x > 0 ? "inf" : "-inf")}";
        if (double.IsNaN(x)) return $"must be a number, got {Describe(v)}";
        if (x < min || x > max) return $"is {x.ToString(CultureInfo.InvariantCulture)}; it must be between {min.ToString(CultureInfo.InvariantCulture)} and {max.ToString(CultureInfo.InvariantCulture)}";
        return null;
    }

    private static string? Bool(ValueSyntax v, out bool b)
    {
        b = false;
        if (v is not BooleanValueSyntax bv) return $"must be true or false, got {Describe(v)}";
        b = bv.Value;
        return null;
    }

    private static string? Str(ValueSyntax v, out string? s)
    {
        s = (v as StringValueSyntax)?.Value;
        return s is null ? $"must be a string, got {Describe(v)}" : null;
    }

    private static string Describe(ValueSyntax v) => v switch
    {
        IntegerValueSyntax => "an integer",
        FloatValueSyntax => "a float",
        BooleanValueSyntax => "a boolean",
        StringValueSyntax => "a string",
        ArraySyntax => "an array",
        InlineTableSyntax => "a table",
        _ => "another type",
    };
}
