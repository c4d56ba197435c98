using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TaskMesh.Learning.Models;

namespace TaskMesh.Hosting;

/// <summary>
/// Retrains in the background for a long-lived host (<c>taskmesh serve</c>): every
/// <c>checkEvery</c>, a new model version when the config's <c>[learning]</c> says one is due
/// (<see cref="ModelPublisher.TrainIfDueAsync"/>). Runs pick the new version up as they start
/// (<see cref="TaskMeshRuntime.CurrentModels"/>). A failed training is logged and tried again next time.
/// </summary>
public sealed partial class ModelTrainingService(TaskMeshRuntime runtime, TimeSpan checkEvery, ILogger? logger = null) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        if (runtime.Store is not { IsReadOnly: false } store || !runtime.Config.LearningEnabled) return;
        using var timer = new PeriodicTimer(checkEvery);
        do
        {
            try
            {
                if (await ModelPublisher.TrainIfDueAsync(store, runtime.Config, runtime.Metrics, stoppingToken) is { } done && logger is not null)
                    Trained(logger, done.Models.Version, done.Models.Rows, done.Why);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex) when (ex is Engine.Store.StoreException or IOException or InvalidOperationException)
            {
                if (logger is not null) Failed(logger, ex.Message);
            }
        }
        while (await timer.WaitForNextTickAsync(stoppingToken).ConfigureAwait(false));
    }

    [LoggerMessage(EventId = 20, Level = LogLevel.Information, Message = "trained model version {Version} from {Rows} task rows ({Why})")]
    private static partial void Trained(ILogger logger, int version, int rows, string why);

    [LoggerMessage(EventId = 21, Level = LogLevel.Warning, Message = "training failed, tried again later: {Reason}")]
    private static partial void Failed(ILogger logger, string reason);
}
