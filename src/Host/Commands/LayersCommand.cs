using System.CommandLine;
using System.Globalization;
using TaskMesh.Engine;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh layers [--config F] [--store FILE]</c>: the layers an engine has with this config, and today's figures from the run store.</summary>
internal static class LayersCommand
{
    public static Command Create(CliIO io)
    {
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("layers", "The layers (status, capacity, price, what they run) and today's requests and success rate per layer.") { store, config };
        command.SetAction(parse =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            var engine = new TaskMeshEngine(cfg.ToEngineOptions());
            var path = StoreInput.PathOf(parse.GetValue(store), cfg);
            IReadOnlyList<DailyLayerFigures> today = [];
            if (File.Exists(path))
            {
                using var s = StoreInput.Open(path, readOnly: true, cfg);
                today = s.DailyMetrics(1);
            }
            var o = io.Out;
            o.WriteLine($"{"layer",-16}  {"kind",-8}  {"status",-8}  {"rank",5}  {"capacity",8}  {"price/s",10}  {"runs",-16}  {"capabilities",-20}  {"today",8}  {"success",8}");
            foreach (var l in engine.Layers.OrderBy(l => l.Rank).ThenBy(l => l.Name, StringComparer.Ordinal))
            {
                var f = today.FirstOrDefault(d => d.Layer == l.Name);
                string rate = f is { Requests: > 0 } ? ((double)f.Successes / f.Requests).ToString("P1", CultureInfo.InvariantCulture) : "-";
                string caps = string.Join(",", l.Tags.Concat(l is TaskMesh.Engine.Layers.Quantum.QuantumLayer { Precision: { } p } ? [p == TaskMesh.QuantumSim.Precision.Double ? "double" : "single"] : []));
                if (l is TaskMesh.Engine.Layers.Quantum.QuantumLayer { EscalatesTo: { } up }) caps += (caps.Length > 0 ? "," : "") + "escalates:" + up;
                o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{l.Name,-16}  {l.Kind,-8}  {l.Status.ToString().ToLowerInvariant(),-8}  {l.Rank,5}  {l.Capacity,8}  {l.PricePerSecond,10:0.######}  {(l.RunsHandlers is { } h ? string.Join(",", h) : "any handler"),-16}  {(caps.Length > 0 ? caps : "-"),-20}  {f?.Requests ?? 0,8}  {rate,8}"));
            }
            foreach (var d in cfg.Layers.Where(d => !d.Enabled))
                o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                    $"{d.Name,-16}  {d.Kind,-8}  {"disabled",-8}  {d.EffectiveRank,5}  {"-",8}  {d.PricePerSecond,10:0.######}  {"-",-16}  {"-",-20}  {"-",8}  {"-",8}"));
            return ExitCodes.Ok;
        });
        return command;
    }
}
