using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>Tasks that run on a layer: dispatch, pools, completion, and moves between layers.</summary>
internal sealed partial class RunState
{
    private RouteDetails? _routeDetails;

    /// <summary>Router decisions that carry a prediction, kept for observers (set before the run starts).</summary>
    internal void SetRouteDetails(RouteDetails? details) => _routeDetails = details;

    internal override RouteDecision DecisionOf(int node, string layer)
        => _routeDetails is not null && _routeDetails.TryGet(node, out var d) && d.Layer == layer ? d : new RouteDecision(layer);

    private Dictionary<int, string>? _refused;

    /// <summary>Tasks the router refused (over a budget): each fails with its reason when its turn comes, without running.</summary>
    internal void SetRefused(Dictionary<int, string>? refused) => _refused = refused;

    private void Dispatch(int node)
    {
        if (_refused is not null && _refused.TryGetValue(node, out var reason))
        {
            Tasks.Attempts[node] = 1;
            if (Tasks.Errors is { } errors) errors[node] = reason;
            _onAttemptEnded?.AttemptEnded(new AttemptResult(node, LocalName, 1, AttemptOutcome.Failed, null, reason, TimeSpan.Zero));
            Finish(null, node, TaskOutcome.Failed, TaskTable.NoSkipCause);
            return;
        }
        if (_gate is not null && (Graph.FlagsOf(node) & NodeFlags.UsesResources) != 0 && !_gate.TryAcquireOrPark(node))
            return;
        _dispatchers[Tasks.Route[node]].Enqueue(node);
    }

    internal override LayerDispatcher DispatcherAt(int route) => _dispatchers[route];

    internal override void SetRouteOfTask(int node, byte route) => Tasks.Route[node] = route;

    internal override void OnGuardedStarted() => Interlocked.Increment(ref _guardedInFlight);

    internal override void OnGuardedEnded() => OnGuardedEnded(1);

    internal override void OnGuardedEnded(int count)
    {
        if (Interlocked.Add(ref _guardedInFlight, -count) == 0 && (_cancelled || _stopping))
            _drained.TrySetResult();
    }

    internal override int RetriesOf(int node)
        => Graph.Spec(node)?.Retries ?? Graph.Defaults.Retries ?? _options.RetryAttempts;

    internal override TimeSpan TimeoutOf(int node)
    {
        double? s = Graph.Spec(node)?.TimeoutSeconds ?? Graph.Defaults.TimeoutSeconds;
        return s is double x ? TimeSpan.FromSeconds(x) : _options.DefaultTimeout;
    }

    /// <summary>Called by a dispatcher when a task on a layer reached its final outcome (any but cancellation, which ends nothing).</summary>
    internal override void CompleteGuarded(int node, in AttemptResult final, double durationMs, string? note)
    {
        var outcome = final.TaskOutcome;
        if (Tasks.Outputs is { } outputs && outcome == TaskOutcome.Succeeded && (_keepAllOutputs || (Graph.FlagsOf(node) & NodeFlags.HasDataSuccessor) != 0))
            outputs[node] = final.Output;
        if (Tasks.DurationMs is { } d) d[node] = (float)durationMs;
        if (Tasks.Errors is { } errors && (final.Error ?? note) is { } error) errors[node] = error;
        if (Tasks.OutputSummaries is { } summaries && outcome == TaskOutcome.Succeeded) summaries[node] = OutputSummary.Of(final.Output);
        if (outcome == TaskOutcome.Succeeded && _cache is not null && (Graph.FlagsOf(node) & NodeFlags.Cached) != 0) KeepInCache(node, final.Output);
        ReleasePools(node);
        if (outcome == TaskOutcome.Cancelled) return;
        Finish(null, node, outcome, TaskTable.NoSkipCause, TimeSpan.FromMilliseconds(durationMs));
    }

    internal void ReleasePools(int node)
    {
        if (_gate is null || (Graph.FlagsOf(node) & NodeFlags.UsesResources) == 0) return;
        var admitted = _gate.Release(node);
        if (admitted is null) return;
        foreach (var next in admitted)
        {
            if (_cancelled) break;
            _dispatchers[Tasks.Route[next]].Enqueue(next);
        }
    }

    // ---------------------------------------------------------------- reading the outcome

    internal TaskOutcome OutcomeOf(int node) => (TaskOutcome)Tasks.Outcome[node];

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal int AttemptsOf(int node) => Tasks.Attempts[node] == 0 && Tasks.Outcome[node] == (byte)TaskOutcome.Succeeded ? 1 : Tasks.Attempts[node];

    /// <summary>The index (in <see cref="LayerNames"/>) of the layer a task ran in last, or <see cref="PackedTaskEnd.NoLayer"/> when it never ran.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    internal byte LayerIndexOf(int node)
    {
        var o = (TaskOutcome)Tasks.Outcome[node];
        if (o is TaskOutcome.Skipped || o is TaskOutcome.Cancelled && Tasks.Attempts[node] == 0) return PackedTaskEnd.NoLayer;
        byte r = Tasks.Route[node];
        return r == RouteTable.Inline ? RouteTable.Local : r;
    }

    /// <summary>The layer a task ran in last, or null when it never ran.</summary>
    internal string? LayerOf(int node)
    {
        var o = (TaskOutcome)Tasks.Outcome[node];
        if (o is TaskOutcome.Skipped || o is TaskOutcome.Cancelled && Tasks.Attempts[node] == 0) return null;
        byte r = Tasks.Route[node];
        return r == RouteTable.Inline ? LocalName : _layerNames[r];
    }
}
