namespace TaskMesh.Engine.Escalation;

/// <summary>How often one task may escalate in a run: defined here once, for the policy, the runner and the config.</summary>
public static class EscalationLimits
{
    /// <summary>Escalations a task may have unless the config says otherwise (<c>escalation.max_per_task</c>).</summary>
    public const int DefaultPerTask = 3;

    /// <summary>The most any config may allow; a policy asking for more is refused (the attempt completes).</summary>
    public const int MaxPerTask = 8;
}
