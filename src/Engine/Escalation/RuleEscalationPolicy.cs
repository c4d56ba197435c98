using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Escalation;

/// <summary>
/// The escalation policy of declared rules (<c>[[escalation.rules]]</c>; <see cref="EscalationRule.Defaults"/>
/// when none are declared). After an attempt:
/// <list type="bullet">
/// <item>a handler's own request (the quantum handler's, say) is granted, as by <see cref="DefaultEscalationPolicy"/>;</item>
/// <item>a success with a confidence below the threshold of a matching <c>low_confidence</c> rule
/// (the task's <c>minConfidence</c> first, then the rule's, then 0.70) moves the task to the rule's target;</item>
/// <item>a failure or timeout is retried while the task has retries left on its layer, then moves
/// to the target of a matching <c>error</c> or <c>timeout</c> rule;</item>
/// <item>everything else completes.</item>
/// </list>
/// Rules are tried by priority, highest first; a rule whose target does not exist, does not run
/// the task's handler or lacks a capability it requires is passed over. A task escalates at most
/// <see cref="MaxPerTask"/> times (the engine caps any policy at
/// <see cref="AttemptRunner.MaxEscalationsPerTask"/>). Thread-safe: rules and layers are read only.
/// </summary>
public sealed class RuleEscalationPolicy : IEscalationPolicy
{
    private readonly EscalationRule[] _rules;
    private readonly Func<IReadOnlyList<ExecutionLayer>> _layers;

    /// <param name="rules">The rules (inactive ones are kept out).</param>
    /// <param name="layers">The engine's layers, read at each decision (ranks, handlers, capabilities).</param>
    /// <param name="maxPerTask">Escalations a task may have, 0–8.</param>
    /// <exception cref="ArgumentException">A rule is malformed (the message says which and why), or <paramref name="maxPerTask"/> is out of range.</exception>
    public RuleEscalationPolicy(IEnumerable<EscalationRule> rules, Func<IReadOnlyList<ExecutionLayer>> layers, int maxPerTask = DefaultMaxPerTask)
    {
        ArgumentNullException.ThrowIfNull(rules);
        ArgumentNullException.ThrowIfNull(layers);
        if (maxPerTask is < 0 or > AttemptRunner.MaxEscalationsPerTask)
            throw new ArgumentException($"at most 0 to {AttemptRunner.MaxEscalationsPerTask} escalations per task, not {maxPerTask}", nameof(maxPerTask));
        var all = rules.ToArray();
        for (int i = 0; i < all.Length; i++)
            if (all[i].Problem() is { } p) throw new ArgumentException($"escalation rule {i + 1}: {p}", nameof(rules));
        // Highest priority first; declaration order among equals.
        _rules = all.Select((r, i) => (r, i)).Where(x => x.r.Active).OrderByDescending(x => x.r.Priority).ThenBy(x => x.i).Select(x => x.r).ToArray();
        _layers = layers;
        MaxPerTask = maxPerTask;
    }

    /// <summary>Escalations a task may have unless the config says otherwise.</summary>
    public const int DefaultMaxPerTask = EscalationLimits.DefaultPerTask;

    /// <summary>Escalations a task may have.</summary>
    public int MaxPerTask { get; }

    /// <summary>The active rules, in the order they are tried.</summary>
    public IReadOnlyList<EscalationRule> Rules => _rules;

    /// <inheritdoc />
    public EscalationDecision Decide(in AttemptResult attempt, in EscalationContext context)
    {
        if (context.Cancelled || attempt.Outcome == AttemptOutcome.Cancelled) return EscalationDecision.Complete;
        if (attempt.Succeeded)
        {
            if (attempt.Request is not null) return DefaultEscalationPolicy.Instance.Decide(attempt, context);
            if (attempt.Confidence is not double c || context.Escalations >= MaxPerTask) return EscalationDecision.Complete;
            foreach (var rule in _rules)
            {
                if (rule.Trigger != EscalationTriggers.LowConfidence || !From(rule, attempt.Layer)) continue;
                double threshold = context.MinConfidence ?? rule.Threshold ?? EscalationRule.DefaultMinConfidence;
                if (c >= threshold) continue;
                if (Target(rule, attempt.Layer, context) is string target)
                    return EscalationDecision.EscalateTo(target, EscalationTriggers.LowConfidence,
                        $"confidence {c:0.###} is below {threshold:0.###} on {attempt.Layer} ({Describe(rule)})") with { Rule = rule };
            }
            return EscalationDecision.Complete;
        }
        if (context.RetriesLeft > 0) return EscalationDecision.RetryAfter(context.Retry.DelayAfter(attempt.Task, attempt.Attempt));
        if (context.Escalations >= MaxPerTask) return EscalationDecision.Complete;
        string trigger = attempt.Outcome == AttemptOutcome.TimedOut ? EscalationTriggers.Timeout : EscalationTriggers.Error;
        foreach (var rule in _rules)
        {
            if (rule.Trigger != trigger || !From(rule, attempt.Layer)) continue;
            if (Target(rule, attempt.Layer, context) is string target)
                return EscalationDecision.EscalateTo(target, trigger,
                    $"{(trigger == EscalationTriggers.Timeout ? "timed out" : "failed")} on {attempt.Layer} with no retries left: {attempt.Error} ({Describe(rule)})") with { Rule = rule };
        }
        return EscalationDecision.Complete;
    }

    private static bool From(EscalationRule rule, string layer) => rule.From == EscalationRule.AnyLayer || rule.From == layer;

    private static string Describe(EscalationRule r) => "rule " + r.Describe();

    /// <summary>The layer the rule sends the task to from <paramref name="here"/>, or null when none can take it.</summary>
    private string? Target(EscalationRule rule, string here, in EscalationContext context)
    {
        var layers = _layers();
        ExecutionLayer? current = null;
        foreach (var l in layers) if (l.Name == here) current = l;
        string[]? requires = context.Graph.TryGetIndex(context.TaskId, out int task) ? context.Graph.Spec(task)?.Requires : null;
        string handler = context.Handler;
        // The one rule (ExecutionLayer.CanRun), with the handler as registered when the engine gives it.
        var descriptor = context.Descriptor;
        bool Takes(ExecutionLayer l) => l.Name != here && (descriptor is not null ? l.CanRun(descriptor, requires) : l.Runs(handler) && l.Covers(requires));
        if (rule.To != EscalationRule.NextLayer)
        {
            foreach (var l in layers) if (l.Name == rule.To && Takes(l)) return l.Name;
            return null;
        }
        int rank = current?.Rank ?? int.MinValue;
        return ExecutionLayer.LeastCapable(layers.Where(l => l.Rank > rank && Takes(l)))?.Name;
    }
}
