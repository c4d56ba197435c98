namespace TaskMesh.Engine.Scheduling.Attempts;

/// <summary>How one attempt ended.</summary>
public enum AttemptOutcome : byte
{
    Succeeded,
    /// <summary>The handler threw (or a layer refused the task).</summary>
    Failed,
    /// <summary>The attempt ran past its timeout.</summary>
    TimedOut,
    /// <summary>The run was cancelled while the attempt ran or waited.</summary>
    Cancelled,
}

/// <summary>What the scheduler does after an attempt, as the escalation policy decided.</summary>
public enum AttemptNext : byte
{
    /// <summary>The attempt's outcome is the task's outcome.</summary>
    Complete,
    /// <summary>Another attempt on the same layer, after a back-off delay.</summary>
    Retry,
    /// <summary>Another attempt on another layer, or the same layer in a more capable variant.</summary>
    Escalate,
}

/// <summary>
/// A handler's request to run its task again in a more capable way (for example a circuit whose
/// single-precision result drifted asks for double precision). The escalation policy decides.
/// </summary>
/// <param name="Trigger">Why: <c>low_confidence</c>, <c>error</c>, <c>timeout</c>, <c>complexity</c> or <c>manual</c>.</param>
/// <param name="From">What the task leaves, e.g. <c>single</c> or a layer name.</param>
/// <param name="To">What it asks for: a layer name, or a variant its handler understands (e.g. <c>double</c>).</param>
/// <param name="Reason">In words, for the audit trail.</param>
public sealed record EscalationRequest(string Trigger, string From, string To, string Reason);

/// <summary>
/// The result of one attempt of one task: a value, not an exception, as it travels from the layer
/// through the escalation policy to the observers.
/// </summary>
/// <param name="Task">The task's dense index.</param>
/// <param name="Layer">The layer the attempt ran in.</param>
/// <param name="Attempt">1 for the first attempt, 2 for the next, …</param>
/// <param name="Outcome">How it ended.</param>
/// <param name="Output">The handler's output (only when it succeeded).</param>
/// <param name="Error">The failure, in words (null when it succeeded).</param>
/// <param name="Duration">Wall time of the attempt.</param>
/// <param name="Confidence">The confidence the handler reported (0–1), when it reported one.</param>
/// <param name="Request">A handler's escalation request, when it made one.</param>
/// <param name="Next">What the scheduler does next (set once the policy decided).</param>
public readonly record struct AttemptResult(
    int Task,
    string Layer,
    int Attempt,
    AttemptOutcome Outcome,
    object? Output,
    string? Error,
    TimeSpan Duration,
    double? Confidence = null,
    EscalationRequest? Request = null,
    AttemptNext Next = AttemptNext.Complete)
{
    /// <summary>True when the attempt succeeded.</summary>
    public bool Succeeded => Outcome == AttemptOutcome.Succeeded;

    /// <summary>The task outcome this attempt stands for when it is final.</summary>
    public TaskOutcome TaskOutcome => Outcome switch
    {
        AttemptOutcome.Succeeded => TaskOutcome.Succeeded,
        AttemptOutcome.Failed => TaskOutcome.Failed,
        AttemptOutcome.TimedOut => TaskOutcome.TimedOut,
        _ => TaskOutcome.Cancelled,
    };
}
