namespace TaskMesh.Engine;

/// <summary>
/// Settings of an engine, validated once when the engine is built (all problems reported
/// together) and copied, so later edits of this object have no effect on it.
/// </summary>
public sealed class EngineOptions
{
    /// <summary>Slots of the local layer: tasks with asynchronous handlers that run at once.</summary>
    /// <value>Default: the number of processors.</value>
    public int MaxParallelTasks { get; set; } = Environment.ProcessorCount;

    /// <summary>Scheduler worker threads (they also run inline handlers).</summary>
    /// <value>Default: <see cref="Automatic"/>, i.e. min(processors, <see cref="MaxParallelTasks"/>).</value>
    public int WorkerThreads { get; set; } = Automatic;

    /// <summary>Per-attempt timeout of a task that sets none (nor its graph's defaults).</summary>
    /// <value>Default: 300 seconds.</value>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(300);

    /// <summary>Retries of a failed task that sets none.</summary>
    /// <value>Default: 0.</value>
    public int RetryAttempts { get; set; }

    /// <summary>Delay before the first retry; doubled for each later one, with jitter.</summary>
    /// <value>Default: 100 ms.</value>
    public TimeSpan RetryBaseDelay { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>Upper bound of one retry delay.</summary>
    /// <value>Default: 30 s.</value>
    public TimeSpan RetryMaxDelay { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>How long a cancelled handler may keep running before it is abandoned.</summary>
    /// <value>Default: 2 s.</value>
    public TimeSpan CancelGracePeriod { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>Whether the <c>shell</c> handler may run.</summary>
    /// <value>Default: false.</value>
    public bool ShellEnabled { get; set; }

    /// <summary>Clock for timeouts and back-off (tests inject their own).</summary>
    public TimeProvider TimeProvider { get; set; } = TimeProvider.System;

    /// <summary>Seed of the retry jitter (see <see cref="Scheduling.Attempts.RetryPolicy"/>); null picks a random one.</summary>
    public int? RandomSeed { get; set; }

    /// <summary>
    /// The order in which a layer hands its free slots to the ready tasks waiting for them (within
    /// each priority class: explicit priorities always come first). <c>[execution] ready_order</c>.
    /// </summary>
    /// <value>Default: <see cref="Scheduling.ReadyOrder.Auto"/>.</value>
    public Scheduling.ReadyOrder ReadyOrder { get; set; } = Scheduling.ReadyOrder.Auto;

    /// <summary>"Choose for me" for <see cref="WorkerThreads"/>.</summary>
    public const int Automatic = 0;

    /// <summary>Settings of the <c>quantum</c> layer.</summary>
    public Layers.Quantum.QuantumOptions Quantum { get; set; } = new();

    /// <summary>
    /// The provider table: the layers to create, in order (<c>[layers.NAME]</c> in the config).
    /// Null or empty: <c>local</c> and <c>quantum</c> with their defaults. <c>local</c> always
    /// exists (a row named <c>local</c> configures it); a disabled row creates nothing.
    /// </summary>
    public IReadOnlyList<Layers.LayerSpec>? Layers { get; set; }

    /// <summary>
    /// Declared escalation rules: the engine's policy becomes a <see cref="Escalation.RuleEscalationPolicy"/>
    /// over them. Null (the default): <see cref="Scheduling.Attempts.DefaultEscalationPolicy"/>
    /// (retries, and handlers' own requests). The command line always passes rules (the defaults when the config declares none).
    /// </summary>
    public IReadOnlyList<Escalation.EscalationRule>? EscalationRules { get; set; }

    /// <summary>Escalations a task may have under <see cref="EscalationRules"/>, 0–8. Default 3.</summary>
    public int MaxEscalationsPerTask { get; set; } = Escalation.RuleEscalationPolicy.DefaultMaxPerTask;

    internal EngineOptions Validated()
    {
        var problems = new List<string>();
        if (MaxParallelTasks < 1) problems.Add($"max_parallel_tasks is {MaxParallelTasks}; it must be at least 1");
        if (WorkerThreads < 0 || WorkerThreads > 1024) problems.Add($"worker threads is {WorkerThreads}; it must be between 0 (automatic) and 1024");
        if (DefaultTimeout <= TimeSpan.Zero) problems.Add($"timeout_seconds is {DefaultTimeout.TotalSeconds}; it must be greater than 0");
        if (RetryAttempts is < 0 or > 100) problems.Add($"retry_attempts is {RetryAttempts}; it must be between 0 and 100");
        if (RetryBaseDelay < TimeSpan.Zero) problems.Add("retry_base_delay_ms must be at least 0");
        if (RetryMaxDelay < RetryBaseDelay) problems.Add("the maximum retry delay must be at least the base delay");
        if (CancelGracePeriod < TimeSpan.Zero) problems.Add("the cancellation grace period must be at least 0");
        if (!Enum.IsDefined(ReadyOrder)) problems.Add($"ready_order is {(int)ReadyOrder}; it must be auto, fifo or critical_path");
        problems.AddRange(Quantum.Problems());
        if (Layers is { } specs) problems.AddRange(LayerProblems(specs));
        if (MaxEscalationsPerTask is < 0 or > Scheduling.Attempts.AttemptRunner.MaxEscalationsPerTask)
            problems.Add($"max escalations per task is {MaxEscalationsPerTask}; it must be between 0 and {Scheduling.Attempts.AttemptRunner.MaxEscalationsPerTask}");
        if (EscalationRules is { } rules)
            for (int i = 0; i < rules.Count; i++)
                if (rules[i].Problem() is { } p) problems.Add($"escalation rule {i + 1}: {p}");
        if (problems.Count > 0) throw new ArgumentException("invalid engine options: " + string.Join("; ", problems));
        return new EngineOptions
        {
            MaxParallelTasks = MaxParallelTasks,
            WorkerThreads = WorkerThreads == Automatic ? Math.Min(Environment.ProcessorCount, MaxParallelTasks) : WorkerThreads,
            DefaultTimeout = DefaultTimeout,
            RetryAttempts = RetryAttempts,
            RetryBaseDelay = RetryBaseDelay,
            RetryMaxDelay = RetryMaxDelay,
            CancelGracePeriod = CancelGracePeriod,
            ReadyOrder = ReadyOrder,
            ShellEnabled = ShellEnabled,
            TimeProvider = TimeProvider,
            Quantum = Quantum with { },
            RandomSeed = RandomSeed,
            Layers = Layers?.ToArray(),
            EscalationRules = EscalationRules?.ToArray(),
            MaxEscalationsPerTask = MaxEscalationsPerTask,
        };
    }

    private static IEnumerable<string> LayerProblems(IReadOnlyList<Layers.LayerSpec> specs)
    {
        var seen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var l in specs)
        {
            string at = $"layers.{l.Name}";
            if (!Graph.GraphNames.IsValidLayerName(l.Name) || l.Name == Graph.GraphNames.AutoLayer)
                yield return $"'{l.Name}' is not a valid layer name (letters, digits, '-', '_' and '.'; not 'auto')";
            if (!seen.Add(l.Name)) yield return $"{at} is declared twice";
            if (!Engine.Layers.LayerKinds.All.Contains(l.Kind)) yield return $"{at}.kind is '{l.Kind}'; it must be one of {string.Join(", ", Engine.Layers.LayerKinds.All)}";
            if (l.Name == Engine.Layers.Local.LocalLayer.LayerName && l.Kind != Engine.Layers.LayerKinds.Local) yield return $"{at}: the layer named local must be of kind local";
            if (l.Name == Engine.Layers.Local.LocalLayer.LayerName && !l.Enabled) yield return $"{at}: the local layer cannot be disabled";
            if (l.Capacity is < 1 or > 100_000) yield return $"{at}.capacity is {l.Capacity}; it must be between 1 and 100000";
            if (!double.IsFinite(l.PricePerSecond) || l.PricePerSecond < 0) yield return $"{at}.price_per_second must be a finite number, 0 or more";
            if (l.Kind != Engine.Layers.LayerKinds.Quantum && (l.Precision is not null || l.Quantum is not null))
                yield return $"{at}: precision, fusion and memory_cap_mb are quantum settings; this layer is of kind {l.Kind}";
            if (l.Quantum is { } q) foreach (var p in q.Problems()) yield return $"{at}: {p}";
            foreach (var tag in l.Capabilities)
                if (!Graph.GraphNames.IsValidLayerName(tag)) yield return $"{at}.capabilities: '{tag}' is not a valid tag (letters, digits, '-', '_' and '.')";
        }
    }
}

/// <summary>An operator's decision to run a task on another layer (<c>taskmesh escalate</c>), recorded with trigger <c>manual</c>.</summary>
/// <param name="TaskId">The task.</param>
/// <param name="Layer">The layer it runs on in this run.</param>
/// <param name="From">The layer it ran on before (for the record).</param>
/// <param name="Reason">Why, in words.</param>
public sealed record ManualEscalation(string TaskId, string Layer, string From, string Reason);

/// <summary>Settings of one run.</summary>
public sealed class RunOptions
{
    /// <summary>Tasks an operator moves to another layer for this run: each runs there, and its move is recorded as a <c>manual</c> escalation.</summary>
    public IReadOnlyList<ManualEscalation>? ManualEscalations { get; set; }

    /// <summary>
    /// Most the run's attempts may cost together (price × duration of each, summed as they end;
    /// <c>--budget</c> and what is left of <c>[routing] daily_cost_limit</c>). The router places tasks
    /// within it by their predicted costs; this bounds what happens after: a retry or escalation whose
    /// next attempt — priced at its layer's price × the attempt just run — would pass it is refused,
    /// and the task keeps its outcome, its error saying so. Null: no limit.
    /// </summary>
    public double? Budget { get; set; }

    /// <summary>
    /// The router of this run, in place of the engine's <see cref="TaskMeshEngine.Router"/>: per-run
    /// state (a budget counted as tasks are placed, the graph's features) stays with the run, so one
    /// engine serves concurrent runs. Null: the engine's.
    /// </summary>
    public Routing.ILayerRouter? Router { get; set; }

    /// <summary>The duration estimates of this run (critical path, ready order), in place of the engine's <see cref="TaskMeshEngine.DurationEstimator"/>. Null: the engine's.</summary>
    public Scheduling.IDurationEstimator? DurationEstimator { get; set; }

    /// <summary>Publish the run's events on <see cref="RunHandle.Events"/>.</summary>
    public bool EmitEvents { get; set; }

    /// <summary>Events the stream buffers for its reader.</summary>
    /// <value>Default: 65,536.</value>
    public int EventCapacity { get; set; } = 65_536;

    /// <summary>What the stream does when its buffer is full.</summary>
    /// <value>Default: <see cref="Observability.EventOverflow.DropNewest"/> (counted in <see cref="RunHandle.DroppedEvents"/>; the run never waits for the reader).</value>
    public Observability.EventOverflow EventOverflow { get; set; } = Observability.EventOverflow.DropNewest;

    /// <summary>The result cache for tasks that ask for one (<c>"cache": true</c>); without it they simply run.</summary>
    public Scheduling.ITaskCache? Cache { get; set; }

    /// <summary>Tasks to take as already done (resuming a run): they are not run, and their restored outputs feed their data edges.</summary>
    public Scheduling.RestoredTasks? Restored { get; set; }

    /// <summary>Observers of this run only, after the engine's own (<see cref="TaskMeshEngine.Observers"/>).</summary>
    public IReadOnlyList<Observability.IRunObserver>? Observers { get; set; }

    /// <summary>Keep per-task durations, attempts, layers and errors; null keeps them up to 100,000 tasks.</summary>
    public bool? CollectTaskDetails { get; set; }

    /// <summary>Keep every task's output for <see cref="Scheduling.RunResult.OutputOf"/> (by default only outputs that feed a data edge are kept, and only until the run ends). Default false.</summary>
    public bool KeepOutputs { get; set; }

    /// <summary>Folder that relative paths in task arguments are resolved against.</summary>
    public string? BaseDirectory { get; set; }

    /// <summary>Tasks above which details are dropped unless asked for.</summary>
    public const int DetailsLimit = 100_000;
}
