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
            var rows = s.TrainingRows();
            if (rows.Count == 0)
            {
                io.Error.WriteLine($"taskmesh: store '{s.Path}' has no task rows with features yet: run some graphs with taskmesh run first");
                return ExitCodes.BadInput;
            }
            var models = await Task.Run(() => ModelTrainer.Train(rows), io.Token);
            var (version, folder) = await PublishAsync(s, models, rows.Count);
            io.Out.WriteLine($"model version {version}: {models.Rows} examples from {rows.Count} task rows, in {folder}");
            Print(io.Out, models.Accuracy);
            return ExitCodes.Ok;
        });
        return command;
    }

    /// <summary>
    /// Trains a new version when the config says one is due after a run: <c>retrain_after_rows</c>
    /// rows with features stored since the newest version (or ever), or the newest version older
    /// than <c>retrain_after_minutes</c> with new rows since. After the run, never during it.
    /// </summary>
    internal static async Task TrainIfDueAsync(RunStore store, TaskMesh.Engine.Configuration.TaskMeshConfig config, TextWriter output, CancellationToken ct,
        TaskMesh.Engine.Observability.TaskMeshMetrics? metrics = null)
    {
        if (!config.LearningEnabled) return;
        var latest = store.Models() is { Count: > 0 } versions ? versions[0] : default;
        var rows = store.TrainingRows();
        int fresh = rows.Count - (latest.Folder is null ? 0 : latest.Rows);
        bool byRows = config.RetrainAfterRows > 0 && fresh >= config.RetrainAfterRows;
        bool byAge = config.RetrainAfterMinutes > 0 && latest.Folder is not null && fresh > 0
            && DateTimeOffset.UtcNow - latest.TrainedAt >= TimeSpan.FromMinutes(config.RetrainAfterMinutes);
        if (!byRows && !byAge) return;
        var models = await Task.Run(() => ModelTrainer.Train(rows), ct);
        var (version, folder) = await PublishAsync(store, models, rows.Count);
        output.WriteLine($"trained model version {version} from {rows.Count} task rows ({(byRows ? $"{fresh} new since the last version" : "the last version was old")}), in {folder}");
        if (metrics is not null)
        {
            metrics.RecordTraining();
            foreach (var a in models.Accuracy) metrics.RecordModel(version, a.Layer, a.DurationMaeMs, a.DurationR2, a.SuccessAuc, a.CalibrationError);
        }
    }

    /// <summary>
    /// Writes <paramref name="models"/> into a fresh folder beside the store, then publishes it as the
    /// next version (allocated in the store's transaction, the folder moved into place): processes
    /// training at once each get their own version, and no version names a half-written folder.
    /// </summary>
    private static async Task<(int Version, string Folder)> PublishAsync(RunStore store, TrainedModels models, int rows)
    {
        var staged = store.ModelStagingFolder();
        try
        {
            models.Save(staged, version: 0);
            int version = await store.PublishModelAsync(staged, DateTimeOffset.UtcNow, rows, JsonSerializer.Serialize(models.Accuracy),
                (folder, v) => models.WriteManifest(folder, v));
            return (version, store.Models().First(m => m.Version == version).Folder);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw new StoreException($"the models cannot be written beside store '{store.Path}': {ex.Message}", ex);
        }
        finally
        {
            // Published: moved away; failed: nothing to keep.
            try { if (Directory.Exists(staged)) Directory.Delete(staged, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
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
            }
            return ExitCodes.Ok;
        });
        return command;
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
