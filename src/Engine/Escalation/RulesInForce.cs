using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Store;

namespace TaskMesh.Engine.Escalation;

/// <summary>The escalation rules a run is made under, and where they come from: the config's <c>[[escalation.rules]]</c> when it declares any, else the store's (<c>taskmesh rules add</c>), else the defaults.</summary>
public static class RulesInForce
{
    /// <summary>Source: the config.</summary>
    public const string FromConfig = "config";

    /// <summary>Source: the run store.</summary>
    public const string FromStore = "store";

    /// <summary>Source: <see cref="EscalationRule.Defaults"/>.</summary>
    public const string FromDefaults = "defaults";

    /// <summary>The rules in force under <paramref name="config"/> with <paramref name="store"/> (null: none).</summary>
    public static (IReadOnlyList<EscalationRule> Rules, string Source) Of(TaskMeshConfig config, RunStore? store)
    {
        ArgumentNullException.ThrowIfNull(config);
        if (config.EscalationRules.Count > 0) return (config.EscalationRules, FromConfig);
        if (store?.RulesWithIds() is { Count: > 0 } stored) return (stored.Select(r => r.Rule).ToList(), FromStore);
        return (EscalationRule.Defaults, FromDefaults);
    }
}
