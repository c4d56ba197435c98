namespace TaskMesh.Engine.Escalation;

/// <summary>What sets a rule off.</summary>
public static class EscalationTriggers
{
    /// <summary>An attempt succeeded with a confidence below the threshold (the task's <c>minConfidence</c> when it sets one).</summary>
    public const string LowConfidence = "low_confidence";
    /// <summary>An attempt failed and the task has no retries left on its layer.</summary>
    public const string Error = "error";
    /// <summary>An attempt timed out and the task has no retries left on its layer.</summary>
    public const string Timeout = "timeout";
    /// <summary>A task's complexity score is at or above the threshold (applied by the router when it routes).</summary>
    public const string Complexity = "complexity";
    /// <summary>An operator asked for it (<c>taskmesh escalate</c>).</summary>
    public const string Manual = "manual";

    public static readonly IReadOnlyList<string> All = [LowConfidence, Error, Timeout, Complexity, Manual];
}

/// <summary>
/// A declared escalation: when <see cref="Trigger"/> fires for a task on <see cref="From"/>
/// (<c>*</c>: any layer), its next attempt goes to <see cref="To"/> (<c>next</c>: the layer of the
/// next higher rank that runs its handler and has what it requires). Rules are tried by
/// <see cref="Priority"/>, highest first; inactive rules are kept but never fire.
/// </summary>
/// <param name="From">A layer name, or <c>*</c>.</param>
/// <param name="To">A layer name, or <c>next</c>.</param>
/// <param name="Trigger">One of <see cref="EscalationTriggers.All"/>.</param>
/// <param name="Threshold">For <c>low_confidence</c>: the confidence (0–1) below which it fires (default 0.70); for <c>complexity</c>: the score (0–100) from which it fires.</param>
/// <param name="Priority">Higher first.</param>
/// <param name="Active">False: kept, never fires.</param>
public sealed record EscalationRule(string From, string To, string Trigger, double? Threshold = null, int Priority = 0, bool Active = true)
{
    /// <summary>Any layer, in <see cref="From"/>.</summary>
    public const string AnyLayer = "*";

    /// <summary>The next higher rank, in <see cref="To"/>.</summary>
    public const string NextLayer = "next";

    /// <summary>The confidence below which a <c>low_confidence</c> rule fires when it states no threshold (and the task no <c>minConfidence</c>).</summary>
    public const double DefaultMinConfidence = 0.70;

    /// <summary>The rules in force when a configuration declares none: low confidence, errors and timeouts move a task up one rank.</summary>
    public static IReadOnlyList<EscalationRule> Defaults { get; } =
    [
        new(AnyLayer, NextLayer, EscalationTriggers.LowConfidence, DefaultMinConfidence),
        new(AnyLayer, NextLayer, EscalationTriggers.Error),
        new(AnyLayer, NextLayer, EscalationTriggers.Timeout),
    ];

    /// <summary>The rule as reports and the escalation history name it: <c>local → big on error</c>, <c>* → next on low_confidence 0.7</c>.</summary>
    public string Describe()
        => string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{From} → {To} on {Trigger}{(Threshold is double t ? $" {t:0.###}" : "")}");

    /// <summary>What is wrong with the rule, or null.</summary>
    public string? Problem()
    {
        if (Threshold is double th && !double.IsFinite(th)) return $"threshold is {th.ToString(System.Globalization.CultureInfo.InvariantCulture)}; it must be a finite number";
        if (!EscalationTriggers.All.Contains(Trigger)) return $"trigger is '{Trigger}'; it must be one of {string.Join(", ", EscalationTriggers.All)}";
        if (From != AnyLayer && !Graph.GraphNames.IsValidLayerName(From)) return $"from is '{From}'; it must be * or a layer name";
        if (To != NextLayer && !Graph.GraphNames.IsValidLayerName(To)) return $"to is '{To}'; it must be next or a layer name";
        if (Trigger == EscalationTriggers.LowConfidence && Threshold is < 0 or > 1) return $"threshold is {Threshold}; a low_confidence threshold is a confidence between 0 and 1";
        if (Trigger == EscalationTriggers.Complexity && Threshold is not (>= 0 and <= 100)) return "a complexity rule needs a threshold between 0 and 100 (a complexity score)";
        if (Trigger is EscalationTriggers.Error or EscalationTriggers.Timeout or EscalationTriggers.Manual && Threshold is not null) return $"a rule on {Trigger} takes no threshold";
        return null;
    }
}
