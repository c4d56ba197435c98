using System.Diagnostics;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// Traces for OpenTelemetry (or any <see cref="ActivityListener"/>): a span per run
/// (<c>taskmesh.run</c>) and, under it, a span per task attempt (<c>taskmesh.attempt</c>), tagged
/// with <c>taskmesh.run_id</c>, <c>taskmesh.task_id</c>, the layer, the attempt number, its outcome
/// and confidence. The engine adds this observer to a run only when something listens to
/// <see cref="Source"/> as the run starts: no listener, no cost. Sampling is the listener's
/// (<see cref="ActivityListener.Sample"/>): an attempt span the sampler drops is not made.
/// Spans are made as attempts end, with their measured start, so no state is held per task.
/// </summary>
public sealed class TaskMeshTracing : IRunObserver
{
    /// <summary>The source's name: what an OpenTelemetry tracer provider adds (<c>AddSource("TaskMesh")</c>).</summary>
    public const string SourceName = "TaskMesh";

    /// <summary>The engine's activity source.</summary>
    public static readonly ActivitySource Source = new(SourceName, typeof(TaskMeshTracing).Assembly.GetName().Version?.ToString());

    private Activity? _run;
    private ActivityContext _parent;
    private TaskGraph _graph = null!;
    private string _runId = "";

    /// <summary>Every attempt's end, plain inline successes included, timed precisely.</summary>
    public RunObserverInterests Interests => RunObserverInterests.AttemptEnded | RunObserverInterests.PreciseInlineTiming;

    /// <summary>A tracer for one run.</summary>
    internal TaskMeshTracing() { }

    public void OnRunStarted(RunStart run)
    {
        _graph = run.Graph;
        _runId = run.RunId;
        var previous = Activity.Current;
        _run = Source.StartActivity("taskmesh.run", ActivityKind.Internal, previous?.Context ?? default,
            [new("taskmesh.run_id", run.RunId), new("taskmesh.graph", run.Graph.Name), new("taskmesh.tasks", run.Graph.Count)]);
        _parent = _run?.Context ?? previous?.Context ?? default;
        Activity.Current = previous;   // the run's span is not the caller's current activity
    }

    public void OnAttemptEnded(in AttemptResult r)
    {
        var previous = Activity.Current;
        var now = DateTimeOffset.UtcNow;
        var span = Source.StartActivity("taskmesh.attempt", ActivityKind.Internal, _parent,
            [new("taskmesh.run_id", _runId), new("taskmesh.task_id", _graph.IdOf(r.Task)), new("taskmesh.layer", r.Layer), new("taskmesh.attempt", r.Attempt)],
            startTime: now - r.Duration);
        if (span is not null)
        {
            span.SetTag("taskmesh.outcome", r.Outcome switch
            {
                AttemptOutcome.Succeeded => "succeeded",
                AttemptOutcome.TimedOut => "timed_out",
                AttemptOutcome.Cancelled => "cancelled",
                _ => "failed",
            });
            if (r.Confidence is double c) span.SetTag("taskmesh.confidence", c);
            if (r.Next != AttemptNext.Complete) span.SetTag("taskmesh.next", r.Next.ToString().ToLowerInvariant());
            if (!r.Succeeded) span.SetStatus(ActivityStatusCode.Error, r.Error);
            span.SetEndTime(now.UtcDateTime);
            span.Stop();
        }
        Activity.Current = previous;
    }

    public void OnEscalated(EscalationRecord e)
        => _run?.AddEvent(new ActivityEvent("taskmesh.escalation", tags: new ActivityTagsCollection
        {
            ["taskmesh.task_id"] = e.TaskId, ["from"] = e.From, ["to"] = e.To, ["trigger"] = e.Trigger,
        }));

    public void OnRunEnded(RunRecord record)
    {
        if (_run is null) return;
        _run.SetTag("taskmesh.status", record.StatusName);
        _run.SetTag("taskmesh.succeeded", record.Succeeded);
        _run.SetTag("taskmesh.failed", record.Failed);
        if (record.Status != RunStatus.Succeeded) _run.SetStatus(ActivityStatusCode.Error, record.StatusName);
        var previous = Activity.Current;
        _run.Stop();
        Activity.Current = previous;
    }
}
