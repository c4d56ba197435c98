using System.Text.Json;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Store;

namespace TaskMesh.Learning.Models;

/// <summary>What a training published: its version, folder, rows and accuracy.</summary>
/// <param name="Version">The version the store allocated.</param>
/// <param name="Folder">The version's files (full path).</param>
/// <param name="Rows">Task rows it learned from.</param>
/// <param name="Models">The models.</param>
public sealed record PublishedModels(int Version, string Folder, int Rows, TrainedModels Models);

/// <summary>
/// Trains models from a store's history and publishes them as the store's next version: the one
/// path <c>taskmesh train</c>, the retraining after a run and the service's background trainer take.
/// The models are written into a fresh folder beside the store, then published in one transaction
/// of the store (<see cref="RunStore.PublishModelAsync"/>): processes training at once each get
/// their own version, and no version names a half-written folder.
/// </summary>
public static class ModelPublisher
{
    /// <summary>Trains from every kept row and publishes the result; null when the store has no rows with features yet.</summary>
    /// <exception cref="StoreException">The store or the models' folder cannot be written.</exception>
    /// <param name="argumentFeatures">Most argument features a handler's models read (<c>learning.max_argument_features</c>).</param>
    public static async Task<PublishedModels?> TrainAsync(RunStore store, TaskMeshMetrics? metrics = null, CancellationToken ct = default, int argumentFeatures = ModelTrainer.DefaultArgumentFeatures)
    {
        ArgumentNullException.ThrowIfNull(store);
        var rows = store.TrainingRows();
        if (rows.Count == 0) return null;
        return await TrainAsync(store, rows, metrics, argumentFeatures, ct);
    }

    /// <summary>
    /// Trains and publishes when the config says a version is due: <c>retrain_after_rows</c> rows
    /// with features stored since the newest version (or ever), or the newest version older than
    /// <c>retrain_after_minutes</c> with new rows since. Null when none is due.
    /// </summary>
    public static async Task<(PublishedModels Models, string Why)?> TrainIfDueAsync(RunStore store, TaskMeshConfig config, TaskMeshMetrics? metrics = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(config);
        if (!config.LearningEnabled) return null;
        var latest = store.Models() is { Count: > 0 } versions ? versions[0] : default;
        var rows = store.TrainingRows();
        int fresh = rows.Count - (latest.Folder is null ? 0 : latest.Rows);
        bool byRows = config.RetrainAfterRows > 0 && fresh >= config.RetrainAfterRows;
        bool byAge = config.RetrainAfterMinutes > 0 && latest.Folder is not null && fresh > 0
            && DateTimeOffset.UtcNow - latest.TrainedAt >= TimeSpan.FromMinutes(config.RetrainAfterMinutes);
        if (!byRows && !byAge) return null;
        var published = await TrainAsync(store, rows, metrics, config.MaxArgumentFeatures, ct);
        return (published, byRows ? $"{fresh} new since the last version" : "the last version was old");
    }

    private static async Task<PublishedModels> TrainAsync(RunStore store, IReadOnlyList<TrainingRow> rows, TaskMeshMetrics? metrics, int argumentFeatures, CancellationToken ct)
    {
        var models = await Task.Run(() => ModelTrainer.Train(rows, argumentFeatures: argumentFeatures), ct);
        var staged = store.ModelStagingFolder();
        try
        {
            models.Save(staged, version: 0);
            int version = await store.PublishModelAsync(staged, DateTimeOffset.UtcNow, rows.Count, JsonSerializer.Serialize(models.Accuracy),
                (folder, v) => models.WriteManifest(folder, v));
            if (metrics is not null)
            {
                metrics.RecordTraining();
                foreach (var a in models.Accuracy) metrics.RecordModel(version, a.Layer, a.DurationMaeMs, a.DurationR2, a.SuccessAuc, a.CalibrationError);
            }
            return new PublishedModels(version, store.Models().First(m => m.Version == version).Folder, rows.Count, models);
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
}
