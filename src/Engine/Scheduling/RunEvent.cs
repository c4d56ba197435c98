namespace TaskMesh.Engine.Scheduling;

/// <summary>What happened to a task.</summary>
public enum RunEventKind
{
    Released,
    Routed,
    Started,
    Succeeded,
    Failed,
    TimedOut,
    Retried,
    Skipped,
    Cancelled,
    /// <summary>A task moved to a more capable layer or precision (see <see cref="EscalationRecord"/>).</summary>
    Escalated,
}

/// <summary>One event of a run, as published on <see cref="RunHandle.Events"/>.</summary>
/// <param name="Kind">What happened.</param>
/// <param name="Task">The task's dense index.</param>
/// <param name="TaskId">The task's id.</param>
/// <param name="Layer">The layer concerned, when there is one.</param>
/// <param name="Attempt">The attempt concerned (1 = first), or 0.</param>
/// <param name="Message">An error or a reason, when there is one.</param>
/// <param name="Timestamp">When, from the engine's <see cref="TimeProvider"/>.</param>
public readonly record struct RunEvent(RunEventKind Kind, int Task, string TaskId, string? Layer, int Attempt, string? Message, DateTimeOffset Timestamp);

/// <summary>The outcome of a task.</summary>
public enum TaskOutcome : byte
{
    /// <summary>Did not end: the run was cancelled before it ran or while it ran.</summary>
    Cancelled = 0,
    Succeeded = 1,
    Failed = 2,
    TimedOut = 3,
    Skipped = 4,
}

/// <summary>
/// One escalation: a task moved from a layer or precision to a more capable one, with the
/// trigger and the reason.
/// </summary>
/// <param name="TaskId">The task's id.</param>
/// <param name="From">What the task left: a layer, or a variant such as <c>single</c>.</param>
/// <param name="To">What it moved to.</param>
/// <param name="Trigger"><c>low_confidence</c>, <c>error</c>, <c>timeout</c>, <c>complexity</c> or <c>manual</c>.</param>
/// <param name="Reason">Why, in words.</param>
/// <param name="Timestamp">When, from the engine's clock.</param>
public sealed record EscalationRecord(string TaskId, string From, string To, string Trigger, string Reason, DateTimeOffset Timestamp)
{
    /// <summary>The task's dense index in its graph (-1 when not known).</summary>
    public int TaskIndex { get; init; } = -1;

    /// <summary>The confidence the task had before it escalated, when one was reported.</summary>
    public double? PreviousConfidence { get; init; }

    /// <summary>What the attempt it escalated after gave: its output's summary, or its error.</summary>
    public string? PreviousOutputSummary { get; init; }

    /// <summary>The declared rule that moved the task, when one did (the run store keeps its id).</summary>
    public Escalation.EscalationRule? Rule { get; init; }
}
