using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// What the attempt machinery needs from a run, whatever kind of run it is: the static run of a
/// whole graph (<see cref="RunState"/>) and the open run that takes tasks while it goes
/// (<c>OpenRunState</c>). Layers' dispatchers (<see cref="LayerDispatcher"/>),
/// attempts with their timeouts, retries and escalations (<see cref="AttemptRunner"/>) and the
/// handlers' <see cref="TaskContext"/> talk to a run through this contract only, so both kinds of
/// run share one definition of each. A task is named by its index in the run.
/// </summary>
internal abstract class AttemptHost
{
    /// <summary>No task (an index no task has).</summary>
    internal const int NoTask = -1;

    protected AttemptHost(double? budget) => Budget = budget;

    public abstract string RunId { get; }

    /// <summary>The directory relative paths in arguments are resolved against.</summary>
    public abstract string BaseDirectory { get; }

    internal abstract EngineOptions Options { get; }
    internal abstract AttemptRunner Attempts { get; }

    /// <summary>True once the whole run is cancelled.</summary>
    internal abstract bool Cancelled { get; }

    /// <summary>Cancelled when the run is.</summary>
    internal abstract CancellationToken RunToken { get; }

    internal abstract IReadOnlyList<string> LayerNames { get; }

    /// <summary>The layer at route <paramref name="route"/> (0 is local).</summary>
    internal abstract ExecutionLayer LayerAt(int route);

    /// <summary>The route (index in <see cref="LayerNames"/>) of a layer name, or -1.</summary>
    internal int RouteOf(string layer)
    {
        var names = LayerNames;
        for (int i = 0; i < names.Count; i++)
            if (names[i] == layer) return i;
        return -1;
    }

    internal abstract ObserverSet? OnAttemptStartedObservers { get; }
    internal abstract ObserverSet? OnAttemptEndedObservers { get; }
    internal abstract ObserverSet? OnRoutedObservers { get; }

    /// <summary>A task entered a layer's slot or a timed wait: the run may not end before it leaves.</summary>
    internal abstract void OnGuardedStarted();
    internal abstract void OnGuardedEnded();

    /// <summary><paramref name="count"/> guarded pieces of work ended at once (see <see cref="OnGuardedEnded()"/>).</summary>
    internal virtual void OnGuardedEnded(int count)
    {
        for (int i = 0; i < count; i++) OnGuardedEnded();
    }

    /// <summary>Something broke that no task can own: the run ends with <paramref name="ex"/>.</summary>
    internal abstract void Fault(Exception ex);

    // ---------------------------------------------------------------- budget

    /// <summary>Most the run's attempts may cost (<see cref="RunOptions.Budget"/>), or null.</summary>
    internal double? Budget { get; }

    private long _spentBits;   // a double, as bits, added to with compare-and-swap

    /// <summary>What the run's attempts have cost so far (price × duration, as each ended).</summary>
    internal double Spent => BitConverter.Int64BitsToDouble(Volatile.Read(ref _spentBits));

    internal void AddSpend(double cost)
    {
        if (cost <= 0 || Budget is null) return;   // kept only where something reads it
        long seen, next;
        do
        {
            seen = Volatile.Read(ref _spentBits);
            next = BitConverter.DoubleToInt64Bits(BitConverter.Int64BitsToDouble(seen) + cost);
        }
        while (Interlocked.CompareExchange(ref _spentBits, next, seen) != seen);
    }

    /// <summary>The price per second of a layer of this run (0 for one it does not have).</summary>
    internal double PriceOf(string layer)
    {
        int i = RouteOf(layer);
        return i < 0 ? 0 : LayerAt(i).PricePerSecond;
    }

    // ---------------------------------------------------------------- one task

    internal abstract HandlerDescriptor HandlerOf(int node);
    internal abstract string IdOf(int node);
    internal abstract string HandlerNameOf(int node);
    internal abstract TaskSpec? SpecOf(int node);
    internal abstract byte PriorityOf(int node);

    /// <summary>The graph the task's options and parsed arguments belong to (for an open run, the task's own one-task graph).</summary>
    internal abstract TaskGraph GraphOf(int node);

    internal abstract object? ParsedArgsOf(int node);
    internal abstract IReadOnlyList<KeyValuePair<string, object?>> InputsOf(int node);
    internal abstract int RetriesOf(int node);
    internal abstract TimeSpan TimeoutOf(int node);

    /// <summary>The layer of the task's next attempt, or <see cref="RouteTable.Inline"/>.</summary>
    internal abstract byte RouteOfTask(int node);

    /// <summary>Counts an attempt of the task and returns its number (1 for the first).</summary>
    internal abstract int NextAttempt(int node);

    /// <summary>The task's first attempt starts at <paramref name="timestamp"/> (a <see cref="System.Diagnostics.Stopwatch"/> stamp).</summary>
    internal abstract void NoteFirstStart(int node, long timestamp);

    internal abstract TaskExtras ExtrasOf(int node);
    internal abstract TaskExtras? TryExtrasOf(int node);

    /// <summary>The token the task's attempts run under: the run's, or one that also cancels this task alone.</summary>
    internal virtual CancellationToken TokenOf(int node) => RunToken;

    /// <summary>True when the task's attempts should stop: the run, or the task alone, was cancelled.</summary>
    internal virtual bool IsCancelled(int node) => Cancelled;

    /// <summary>
    /// How many times a task alone was cancelled (0 where tasks are cancelled only with their run): a
    /// watcher of many tasks asks <see cref="IsCancelled"/> of each only when it moved.
    /// </summary>
    internal virtual int TasksCancelled => 0;

    /// <summary>A slot of a layer is about to run the task: false when it must not start (cancelled while it waited).</summary>
    internal virtual bool StartInSlot(int node) => !Cancelled;

    /// <summary>The router's decision for a task queued on <paramref name="layer"/>, for observers.</summary>
    internal abstract RouteDecision DecisionOf(int node, string layer);

    /// <summary>A task on a layer reached its final outcome.</summary>
    internal abstract void CompleteGuarded(int node, in AttemptResult final, double durationMs, string? note);

    /// <summary>The dispatcher of the layer at <paramref name="route"/>.</summary>
    internal abstract LayerDispatcher DispatcherAt(int route);

    /// <summary>Moves the task's next attempt to <paramref name="route"/>.</summary>
    internal abstract void SetRouteOfTask(int node, byte route);

    /// <summary>
    /// Sends a task to layer <paramref name="route"/> for its next attempt, after <paramref name="delay"/>.
    /// The task keeps the pools it holds. While it waits it counts as in flight, so a cancelled
    /// run waits for the (cancelled) delay rather than leaving a timer behind.
    /// </summary>
    internal void Redispatch(int node, byte route, TimeSpan delay)
    {
        byte was = RouteOfTask(node);
        if (was != route)
        {
            var x = ExtrasOf(node);
            x.InitialRoute ??= was == RouteTable.Inline ? RouteTable.Local : was;
            SetRouteOfTask(node, route);
        }
        var dispatcher = DispatcherAt(route);
        if (delay <= TimeSpan.Zero)
        {
            dispatcher.Enqueue(node);
            return;
        }
        OnGuardedStarted();
        Task.Delay(delay, Options.TimeProvider, TokenOf(node)).ContinueWith(static (t, s) =>
        {
            var (run, d, n) = ((AttemptHost, LayerDispatcher, int))s!;
            try
            {
                if (!t.IsCanceled) d.Enqueue(n);
                else run.OnDelayCancelled(n);
            }
            finally
            {
                run.OnGuardedEnded();
            }
        }, (this, dispatcher, node), CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
    }

    /// <summary>A task's wait before its next attempt was cancelled (the run's end, or the task's own cancellation).</summary>
    internal virtual void OnDelayCancelled(int node) { }

    internal abstract void RecordEscalation(int node, string from, string to, string trigger, string reason, double? previousConfidence = null,
        string? previousOutput = null, Escalation.EscalationRule? rule = null);

    internal string? VariantOf(int node) => TryExtrasOf(node)?.Variant;

    internal void ReportConfidence(int node, int attempt, double confidence)
    {
        var x = ExtrasOf(node);
        lock (x)
            if (x.TakesReportOf(attempt)) x.Confidence = confidence;
    }

    internal void RequestEscalation(int node, int attempt, EscalationRequest request)
    {
        var x = ExtrasOf(node);
        lock (x)
            if (x.TakesReportOf(attempt)) x.Request = request;
    }
}
