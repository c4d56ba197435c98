using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling.Attempts;

/// <summary>
/// Decides, after an attempt, whether the task is done, retries where it is, or escalates to
/// another layer (or a more capable variant on the same one). The scheduler executes the
/// decision; a learned policy replaces the default without touching the loop.
/// <para>
/// Consulted after every attempt that failed, timed out, reported a confidence or made an
/// escalation request. A plain success (no confidence, no request) is final without asking:
/// that keeps tiny inline tasks free of the call. Called concurrently from many threads.
/// </para>
/// </summary>
public interface IEscalationPolicy
{
    /// <summary>The decision for <paramref name="attempt"/>.</summary>
    EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context);
}

/// <summary>What a policy knows about the task when it decides.</summary>
/// <param name="Graph">The graph being run.</param>
/// <param name="TaskId">The task's id.</param>
/// <param name="Handler">The task's handler.</param>
/// <param name="RetriesLeft">Retries the task may still make on its current layer (its <c>retries</c> minus those made).</param>
/// <param name="Escalations">Escalations the task has had so far in this run.</param>
/// <param name="MinConfidence">The task's <c>minConfidence</c>, when it sets one.</param>
/// <param name="Layers">The layers registered for the run, by name.</param>
/// <param name="Retry">The engine's back-off policy.</param>
/// <param name="Cancelled">True once the run was cancelled.</param>
public readonly record struct EscalationContext(
    TaskGraph Graph,
    string TaskId,
    string Handler,
    int RetriesLeft,
    int Escalations,
    double? MinConfidence,
    IReadOnlyList<string> Layers,
    RetryPolicy Retry,
    bool Cancelled)
{
    /// <summary>The task's handler as registered (whether it runs only on <c>local</c>, say), when the engine gives it.</summary>
    public Handlers.HandlerDescriptor? Descriptor { get; init; }
}

/// <summary>A policy's decision.</summary>
public readonly record struct EscalationDecision
{
    private EscalationDecision(AttemptNext next, TimeSpan delay, string? layer, string? trigger, string? from, string? reason, string? variant)
    {
        Next = next;
        Delay = delay;
        Layer = layer;
        Trigger = trigger;
        From = from;
        Reason = reason;
        Variant = variant;
    }

    /// <summary>Complete, retry or escalate.</summary>
    public AttemptNext Next { get; }

    /// <summary>Wait before the next attempt.</summary>
    public TimeSpan Delay { get; }

    /// <summary>For an escalation: the layer of the next attempt (null: the same layer).</summary>
    public string? Layer { get; }

    /// <summary>For an escalation: <c>low_confidence</c>, <c>error</c>, <c>timeout</c>, <c>complexity</c> or <c>manual</c>.</summary>
    public string? Trigger { get; }

    /// <summary>For an escalation: what the task leaves, for the audit (default: its layer).</summary>
    public string? From { get; }

    /// <summary>For an escalation: why, in words.</summary>
    public string? Reason { get; }

    /// <summary>For an escalation on the same layer: the variant its handler should run (e.g. <c>double</c>), seen as <see cref="Handlers.TaskContext.EscalatedTo"/>.</summary>
    public string? Variant { get; }

    /// <summary>For an escalation: the declared rule that fired, when one did (stored as the escalation's <c>rule_id</c>).</summary>
    public Escalation.EscalationRule? Rule { get; init; }

    /// <summary>The attempt's outcome is the task's outcome.</summary>
    public static EscalationDecision Complete { get; } = new(AttemptNext.Complete, default, null, null, null, null, null);

    /// <summary>Another attempt on the same layer after <paramref name="delay"/>.</summary>
    public static EscalationDecision RetryAfter(TimeSpan delay) => new(AttemptNext.Retry, delay, null, null, null, null, null);

    /// <summary>Another attempt on <paramref name="layer"/>.</summary>
    /// <exception cref="ArgumentException">An empty layer, trigger or reason.</exception>
    public static EscalationDecision EscalateTo(string layer, string trigger, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(layer);
        ArgumentException.ThrowIfNullOrEmpty(trigger);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        return new(AttemptNext.Escalate, default, layer, trigger, null, reason, null);
    }

    /// <summary>Another attempt on the same layer, in a more capable <paramref name="variant"/> of its handler.</summary>
    /// <exception cref="ArgumentException">An empty variant, trigger or reason.</exception>
    public static EscalationDecision EscalateVariant(string from, string variant, string trigger, string reason)
    {
        ArgumentException.ThrowIfNullOrEmpty(variant);
        ArgumentException.ThrowIfNullOrEmpty(trigger);
        ArgumentException.ThrowIfNullOrEmpty(reason);
        return new(AttemptNext.Escalate, default, null, trigger, from, reason, variant);
    }
}

/// <summary>
/// The engine's default policy: a failed or timed-out attempt is retried with back-off while the
/// task has retries left; a handler's escalation request to a variant of itself, or to a
/// registered layer, is granted; everything else completes.
/// </summary>
public sealed class DefaultEscalationPolicy : IEscalationPolicy
{
    /// <summary>The shared instance.</summary>
    public static DefaultEscalationPolicy Instance { get; } = new();

    /// <inheritdoc />
    public EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context)
    {
        if (context.Cancelled || attempt.Outcome == AttemptOutcome.Cancelled) return EscalationDecision.Complete;
        if (attempt.Succeeded)
        {
            if (attempt.Request is not { } r) return EscalationDecision.Complete;
            bool isLayer = false;
            foreach (var l in context.Layers) isLayer |= l == r.To;
            return isLayer
                ? EscalationDecision.EscalateTo(r.To, r.Trigger, r.Reason)
                : EscalationDecision.EscalateVariant(r.From, r.To, r.Trigger, r.Reason);
        }
        return context.RetriesLeft > 0
            ? EscalationDecision.RetryAfter(context.Retry.DelayAfter(attempt.Task, attempt.Attempt))
            : EscalationDecision.Complete;
    }
}
