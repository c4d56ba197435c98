using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Models;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh train</c> and <c>taskmesh models</c>: per-layer models from the run store's history, and their versions.</summary>
internal static class TrainCommand
{
    public static Command CreateTrain(CliIO io)
    {
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("train", "Train the per-layer duration and success models from the run store's history; keep them as a new version beside the store.") { store, config };
        command.SetAction(async (parse, ct) =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config), io.Token);
            using var s = StoreInput.Open(StoreInput.PathOf(parse.GetValue(store), cfg), readOnly: false, cfg);
            var published = await ModelPublisher.TrainAsync(s, ct: io.Token, argumentFeatures: cfg.MaxArgumentFeatures);
            if (published is null)
            {
                io.Error.WriteLine($"taskmesh: store '{s.Path}' has no task rows with features yet: run some graphs with taskmesh run first");
                return ExitCodes.BadInput;
            }
            var models = published.Models;
            io.Out.WriteLine($"model version {published.Version}: {models.Rows} examples from {published.Rows} task rows, in {published.Folder}");
            Print(io.Out, models.Accuracy);
            PrintArguments(io.Out, models.Arguments);
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>Trains a new version when the config says one is due after a run (<see cref="ModelPublisher.TrainIfDueAsync"/>), and says so.</summary>
    internal static async Task TrainIfDueAsync(RunStore store, TaskMesh.Engine.Configuration.TaskMeshConfig config, TextWriter output, CancellationToken ct,
        TaskMesh.Engine.Observability.TaskMeshMetrics? metrics = null)
    {
        if (await ModelPublisher.TrainIfDueAsync(store, config, metrics, ct) is not { } done) return;
        output.WriteLine($"trained model version {done.Models.Version} from {done.Models.Rows} task rows ({done.Why}), in {done.Models.Folder}");
    }

    public static Command CreateModels(CliIO io)
    {
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("models", "The model versions trained from the run store, newest first, with their held-out accuracy per layer.") { store, config };
        command.SetAction(parse =>
        {
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath: null);
            var versions = s.Models();
            if (versions.Count == 0) io.Out.WriteLine("no models yet (taskmesh train makes one)");
            foreach (var v in versions)
            {
                io.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"version {v.Version}  trained {v.TrainedAt:yyyy-MM-dd HH:mm:ss} UTC  from {v.Rows} task rows  {v.Folder}"));
                Print(io.Out, JsonSerializer.Deserialize<List<LayerAccuracy>>(v.Metrics) ?? []);
                if (ModelFiles.ArgumentsOf(v.Folder) is { } arguments) PrintArguments(io.Out, arguments);
            }
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>The argument features the version's models read, a line per handler (by how informative each was).</summary>
    private static void PrintArguments(TextWriter o, TaskMesh.Learning.Features.ArgumentSchema arguments)
    {
        if (arguments.Slots == 0)
        {
            o.WriteLine("  argument features: none (the fixed features alone)");
            return;
        }
        o.WriteLine("  argument features (name (log-scaled, how informative)):");
        foreach (var line in arguments.Describe()) o.WriteLine("    " + line);
    }

    private static void Print(TextWriter o, IEnumerable<LayerAccuracy> accuracy)
    {
        o.WriteLine($"  {"layer",-16}  {"examples",8}  {"duration MAE ms",15}  {"duration R²",11}  {"success AUC",11}  {"calibration err",15}");
        foreach (var a in accuracy)
            o.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"  {a.Layer,-16}  {a.Rows,8}  {Fmt(a.DurationMaeMs, "0.###"),15}  {Fmt(a.DurationR2, "0.###"),11}  {Fmt(a.SuccessAuc, "0.###"),11}  {Fmt(a.CalibrationError, "0.###"),15}"));
        static string Fmt(double? x, string f) => x is double v ? v.ToString(f, CultureInfo.InvariantCulture) : "-";
    }
}
