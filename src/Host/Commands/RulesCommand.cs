using System.CommandLine;
using System.Globalization;
using TaskMesh.Engine.Escalation;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh rules list [--config F]</c>: the escalation rules runs are made under, in the order they are tried.</summary>
internal static class RulesCommand
{
    public static Command Create(CliIO io)
    {
        var config = CliOptions.Config();
        var list = new Command("list", "The escalation rules in force (the config's [[escalation.rules]], else the defaults), highest priority first.") { config };
        list.SetAction(parse =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            bool declared = cfg.EscalationRules.Count > 0;
            var rules = declared ? cfg.EscalationRules : EscalationRule.Defaults;
            var o = io.Out;
            o.WriteLine($"escalation rules ({(declared ? $"from {cfg.Source}" : "the defaults: the config declares none")}); at most {cfg.MaxEscalationsPerTask} escalation(s) per task");
            o.WriteLine($"{"#",3}  {"priority",8}  {"trigger",-14}  {"threshold",9}  {"from",-16}  {"to",-16}  active");
            // The order they are tried: priority, highest first, then as declared.
            var ordered = rules.Select((r, i) => (r, i)).OrderByDescending(x => x.r.Priority).ThenBy(x => x.i);
            foreach (var (r, i) in ordered)
                o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{i + 1,3}  {r.Priority,8}  {r.Trigger,-14}  {(r.Threshold is double t ? t.ToString("0.###", CultureInfo.InvariantCulture) : "-"),9}  {r.From,-16}  {r.To,-16}  {(r.Active ? "yes" : "no")}"));
            return ExitCodes.Ok;
        });
        return new Command("rules", "Escalation rules: when a task moves to a more capable layer.") { list };
    }
}
