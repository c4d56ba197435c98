using System.Collections.Concurrent;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Per-task state of one run, in flat arrays indexed by task: dependency counters, outcomes,
/// attempts, and — when details are kept — durations, start offsets and errors. Rare state
/// (escalations, handler reports) lives in a sparse map, so a million plain tasks pay nothing for it.
/// After the run ends nothing writes here, and the run record takes the arrays over as they are.
/// </summary>
internal sealed class TaskTable
{
    /// <summary>No failed ancestor: the task is not skipped.</summary>
    public const int NoSkipCause = 0;

    public readonly int[] Pending;          // unfinished predecessors
    public readonly byte[] Outcome;         // TaskOutcome; Cancelled (0) until the task ends
    private int[]? _skipCause;              // EncodeCause(failed ancestor) or NoSkipCause; made at the first failure
    public readonly byte[] Attempts;        // attempts made, saturating at byte.MaxValue
    public readonly byte[] Route;           // the layer of the task's next attempt, or RouteTable.Inline
    public readonly object?[]? Outputs;     // outputs kept for data edges (or all, on request)
    public readonly float[]? DurationMs;    // details only
    public readonly float[]? StartMs;       // details only: first attempt's start, from the run's start
    public readonly string?[]? Errors;      // details only
    public readonly string?[]? OutputSummaries; // details only, layer tasks only
    private readonly ConcurrentDictionary<int, TaskExtras> _extras = new();
    private int _extrasCount;

    public TaskTable(TaskGraph graph, byte[] route, bool keepOutputs, bool details)
    {
        int n = graph.Count;
        Pending = (int[])graph.InDegree.Clone();
        Outcome = new byte[n];
        Attempts = new byte[n];
        Route = route;
        if (graph.HasDataEdges || keepOutputs) Outputs = new object?[n];
        if (details)
        {
            DurationMs = new float[n];
            StartMs = new float[n];
            Errors = new string?[n];
            OutputSummaries = new string?[n];
        }
    }

    /// <summary>The skip cause stored for failed ancestor <paramref name="failed"/> (0 means none).</summary>
    public static int EncodeCause(int failed) => failed + 1;

    /// <summary>The failed ancestor a stored cause names, or -1 for none.</summary>
    public static int DecodeCause(int stored) => stored - 1;

    /// <summary>Skip marks, or null while no task has failed (the hot path then reads no array).</summary>
    public int[]? SkipCause => Volatile.Read(ref _skipCause);

    /// <summary>The skip marks, made on first use; a failing task calls this before it releases successors.</summary>
    public int[] SkipCauseForWriting()
    {
        var skips = Volatile.Read(ref _skipCause);
        if (skips is not null) return skips;
        skips = new int[Outcome.Length];
        return Interlocked.CompareExchange(ref _skipCause, skips, null) ?? skips;
    }

    public int NextAttempt(int node)
    {
        int a = Attempts[node] + 1;
        Attempts[node] = (byte)Math.Min(a, byte.MaxValue);
        return a;
    }

    /// <summary>True when some task has extras (a cheap check before the map is touched).</summary>
    public bool HasExtras => Volatile.Read(ref _extrasCount) != 0;

    public TaskExtras ExtrasOf(int node)
    {
        if (_extras.TryGetValue(node, out var e)) return e;
        var created = _extras.GetOrAdd(node, static _ => new TaskExtras());
        Interlocked.Increment(ref _extrasCount);
        return created;
    }

    public TaskExtras? TryExtrasOf(int node) => HasExtras && _extras.TryGetValue(node, out var e) ? e : null;

    public IEnumerable<KeyValuePair<int, TaskExtras>> AllExtras => _extras;
}

/// <summary>State of the few tasks that report confidence, ask for or undergo escalation.</summary>
internal sealed class TaskExtras
{
    /// <summary>Confidence reported by the handler during attempt <see cref="ReportedBy"/>.</summary>
    public double? Confidence;
    /// <summary>Escalation the handler asked for during attempt <see cref="ReportedBy"/>.</summary>
    public EscalationRequest? Request;
    /// <summary>The attempt the reports above came from (0: none yet).</summary>
    public int ReportedBy;
    /// <summary>The variant the task was escalated to on its layer (e.g. <c>double</c>).</summary>
    public string? Variant;
    /// <summary>The layer the task was first routed to, once it moved.</summary>
    public byte? InitialRoute;
    /// <summary>Escalations so far.</summary>
    public int Escalations;
    /// <summary>The attempt after which the task last escalated (retries count from there).</summary>
    public int EscalatedAfterAttempt;
    /// <summary>The successful output the task had before a low-confidence escalation: kept if the escalated attempt fails.</summary>
    public object? FallbackOutput;
    public bool HasFallback;
    public int FallbackAttempt;
    /// <summary>Time spent in slots of layers the task has left, in ms.</summary>
    public double ElapsedMs;

    /// <summary>Why a retry or escalation was refused (over the run's budget), added to the task's error.</summary>
    public string? Refusal;
    /// <summary>The layers the task left, each with the time it spent there (for per-layer cost).</summary>
    public List<(byte Route, double Ms)>? LeftLayers;

    /// <summary>Notes <paramref name="ms"/> spent on <paramref name="route"/>, which the task is leaving.</summary>
    public void Left(byte route, double ms)
    {
        ElapsedMs += ms;
        (LeftLayers ??= new()).Add((route == RouteTable.Inline ? RouteTable.Local : route, ms));
    }

    /// <summary>
    /// Takes (and clears) what the handler reported during <paramref name="attempt"/>: a report an
    /// earlier attempt made after it had ended (timed out, say, its handler still going) is not this
    /// attempt's, and is dropped.
    /// </summary>
    public (double? Confidence, EscalationRequest? Request) TakeReports(int attempt)
    {
        lock (this)
        {
            var r = ReportedBy == attempt ? (Confidence, Request) : (null, null);
            Confidence = null;
            Request = null;
            return r;
        }
    }

    /// <summary>
    /// Makes room for a report of <paramref name="attempt"/> (call under the lock): false for a
    /// report of an attempt older than the last one that reported (it ended long ago).
    /// </summary>
    public bool TakesReportOf(int attempt)
    {
        if (attempt < ReportedBy) return false;
        if (attempt > ReportedBy)
        {
            // A newer attempt: what an earlier one left is not its own.
            Confidence = null;
            Request = null;
            ReportedBy = attempt;
        }
        return true;
    }
}
