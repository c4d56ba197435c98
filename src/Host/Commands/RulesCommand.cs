using System.CommandLine;
using System.Globalization;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Escalation;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh rules list|add|set|disable</c>. The rules in force are the config's
/// <c>[[escalation.rules]]</c> when it declares any; else the run store's (managed with
/// <c>rules add|set|disable</c>); else the defaults.
/// </summary>
internal static class RulesCommand
{
    /// <summary>The rules in force, and where they come from (<c>config</c>, <c>store</c> or <c>defaults</c>).</summary>
    internal static (IReadOnlyList<EscalationRule> Rules, string Source) InForce(TaskMeshConfig config, RunStore? store) => RulesInForce.Of(config, store);

    public static Command Create(CliIO io)
    {
        var root = new Command("rules", "Escalation rules: when a task moves to a more capable layer. In force: the config's [[escalation.rules]], else the store's, else the defaults.");
        root.Subcommands.Add(List(io));
        root.Subcommands.Add(Add(io));
        root.Subcommands.Add(Set(io));
        root.Subcommands.Add(Disable(io));
        return root;
    }

    private static Command List(CliIO io)
    {
        var config = CliOptions.Config();
        var store = StoreInput.StoreOption();
        var list = new Command("list", "The escalation rules in force, highest priority first (with the store's ids).") { config, store };
        list.SetAction(parse =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var path = StoreInput.PathOf(parse.GetValue(store), cfg);
            using var s = File.Exists(path) ? StoreInput.Open(path, readOnly: true, cfg) : null;
            var (rules, source) = InForce(cfg, s);
            var ids = source == "store" ? s!.RulesWithIds().Select(r => r.Id).ToList() : Enumerable.Range(1, rules.Count).ToList();
            var o = io.Out;
            o.WriteLine(source switch
            {
                "config" => $"escalation rules from {cfg.Source}",
                "store" => $"escalation rules from the run store {s!.Path} (taskmesh rules add|set|disable)",
                _ => "escalation rules: the defaults (neither the config nor the store declares any)",
            } + $"; at most {cfg.MaxEscalationsPerTask} escalation(s) per task");
            o.WriteLine($"{(source == "store" ? "id" : "#"),3}  {"priority",8}  {"trigger",-14}  {"threshold",9}  {"from",-16}  {"to",-16}  active");
            // The order they are tried: priority, highest first, then as declared.
            foreach (var (r, i) in rules.Select((r, i) => (r, i)).OrderByDescending(x => x.r.Priority).ThenBy(x => x.i))
                o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{ids[i],3}  {r.Priority,8}  {r.Trigger,-14}  {(r.Threshold is double t ? t.ToString("0.###", CultureInfo.InvariantCulture) : "-"),9}  {r.From,-16}  {r.To,-16}  {(r.Active ? "yes" : "no")}"));
            return ExitCodes.Ok;
        });
        return list;
    }

    /// <summary>The options a rule is written with.</summary>
    private sealed class RuleOptions
    {
        public readonly Option<string?> Trigger = CliOptions.OneOf("--trigger", "What sets the rule off.", [.. EscalationTriggers.All]);
        public readonly Option<string?> From = new("--from") { Description = "The layer it applies on, or * (default: *).", HelpName = "LAYER" };
        public readonly Option<string?> To = new("--to") { Description = "Where the task goes: a layer, or next (default: next).", HelpName = "LAYER" };
        public readonly Option<double?> Threshold = new("--threshold")
        {
            Description = "low_confidence: a confidence 0–1; complexity: a score 0–100.",
            HelpName = "X",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (double.TryParse(text, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out var v) && double.IsFinite(v)) return v;
                r.AddError($"option --threshold must be a finite number (a confidence 0–1 or a complexity score 0–100), got '{text}'");
                return null;
            },
        };
        public readonly Option<int?> Priority = CliOptions.Int("--priority", -1000, 1000, "Higher is tried first (default 0).");
        public readonly Option<bool?> Active = new("--active") { Description = "Whether the rule fires (default true).", HelpName = "true|false" };
        public readonly Option<string?> Store = StoreInput.StoreOption();
        public readonly Option<string?> Config = CliOptions.Config();

        public void AddTo(Command c)
        {
            foreach (var o in new Option[] { Trigger, From, To, Threshold, Priority, Active, Store, Config }) c.Options.Add(o);
        }

        /// <summary>The rule these options describe, over <paramref name="basis"/> (null: a new rule).</summary>
        public EscalationRule Read(System.CommandLine.ParseResult p, EscalationRule? basis)
        {
            string trigger = p.GetValue(Trigger) ?? basis?.Trigger ?? throw new UsageException("--trigger is required for a new rule");
            return new EscalationRule(p.GetValue(From) ?? basis?.From ?? EscalationRule.AnyLayer, p.GetValue(To) ?? basis?.To ?? EscalationRule.NextLayer, trigger,
                p.GetResult(Threshold) is not null ? p.GetValue(Threshold) : basis?.Threshold, p.GetValue(Priority) ?? basis?.Priority ?? 0, p.GetValue(Active) ?? basis?.Active ?? true);
        }
    }

    /// <summary>
    /// Warns of a rule that names a layer the config's engine does not have, naming the option: the
    /// store's rules serve every config run against it, so a layer another config declares is
    /// allowed — but a typo is said at once, not found later as a rule that never fires.
    /// </summary>
    private static void CheckLayers(CliIO io, EscalationRule rule, TaskMesh.Engine.Configuration.TaskMeshConfig cfg)
    {
        var names = new TaskMesh.Engine.TaskMeshEngine(cfg.ToEngineOptions()).Layers.Select(l => l.Name).ToList();
        string of = cfg.Source is { } source ? $"the layers of {source}" : "the default layers";
        if (rule.From != EscalationRule.AnyLayer && !names.Contains(rule.From))
            io.Error.WriteLine($"taskmesh: warning: --from: no layer '{TaskMesh.Engine.Graph.GraphLimits.Printable(rule.From)}' among {of} ({string.Join(", ", names)}); the rule fires only under a config that declares it");
        if (rule.To != EscalationRule.NextLayer && !names.Contains(rule.To))
            io.Error.WriteLine($"taskmesh: warning: --to: no layer '{TaskMesh.Engine.Graph.GraphLimits.Printable(rule.To)}' among {of} ({string.Join(", ", names)}); the rule fires only under a config that declares it");
    }

    private static RunStore OpenStore(CliIO io, RuleOptions o, System.CommandLine.ParseResult p, EscalationRule? rule = null)
    {
        var cfg = GraphInput.LoadConfig(p.GetValue(o.Config), io.Token);
        if (rule is not null) CheckLayers(io, rule, cfg);
        var s = StoreInput.Open(StoreInput.PathOf(p.GetValue(o.Store), cfg), readOnly: false, cfg);
        if (cfg.EscalationRules.Count > 0)
            io.Error.WriteLine($"taskmesh: warning: {cfg.Source} declares [[escalation.rules]]: they, not the store's, are in force with that config");
        return s;
    }

    private static Command Add(CliIO io)
    {
        var o = new RuleOptions();
        var add = new Command("add", "Add an escalation rule to the run store's rules.");
        o.AddTo(add);
        add.SetAction(async (parse, ct) =>
        {
            var rule = o.Read(parse, null);
            using var s = OpenStore(io, o, parse, rule);
            int id = await s.AddRuleAsync(rule);
            io.Out.WriteLine($"rule {id} added: {rule.From} → {rule.To} on {rule.Trigger}");
            return ExitCodes.Ok;
        });
        return add;
    }

    private static Command Set(CliIO io)
    {
        var o = new RuleOptions();
        var id = new Argument<int>("ID") { Description = "The rule's id (taskmesh rules list)." };
        var set = new Command("set", "Change a rule of the run store (what is not given stays).") { id };
        o.AddTo(set);
        set.SetAction(async (parse, ct) =>
        {
            using var s = OpenStore(io, o, parse);
            int which = parse.GetValue(id);
            var current = s.RulesWithIds().FirstOrDefault(r => r.Id == which).Rule
                ?? throw new StoreException($"store '{s.Path}' has no escalation rule {which} (see taskmesh rules list)");
            var changed = o.Read(parse, current);
            CheckLayers(io, changed, GraphInput.LoadConfig(parse.GetValue(o.Config), io.Token));
            await s.SetRuleAsync(which, changed);
            io.Out.WriteLine($"rule {which} changed");
            return ExitCodes.Ok;
        });
        return set;
    }

    private static Command Disable(CliIO io)
    {
        var id = new Argument<int>("ID") { Description = "The rule's id (taskmesh rules list)." };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var disable = new Command("disable", "Keep a rule of the run store, but let it never fire.") { id, store, config };
        disable.SetAction(async (parse, ct) =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            using var s = StoreInput.Open(StoreInput.PathOf(parse.GetValue(store), cfg), readOnly: false, cfg);
            int which = parse.GetValue(id);
            var current = s.RulesWithIds().FirstOrDefault(r => r.Id == which).Rule
                ?? throw new StoreException($"store '{s.Path}' has no escalation rule {which} (see taskmesh rules list)");
            await s.SetRuleAsync(which, current with { Active = false });
            io.Out.WriteLine($"rule {which} disabled");
            return ExitCodes.Ok;
        });
        return disable;
    }
}
