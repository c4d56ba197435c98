using Orleans;
using Orleans.Concurrency;
using Orleans.Placement;
using Orleans.Runtime;
using Orleans.Runtime.Placement;

namespace TaskMesh.Cluster;

/// <summary>A worker silo's entry point: the coordinator sends it batches of attempts. Keyed by the worker's endpoint.</summary>
internal interface IWorkerGrain : IGrainWithStringKey
{
    /// <summary>
    /// Takes a batch to run; returns once the worker holds it, with the outcomes of the attempts that
    /// ended at once (handlers that run inline there: one call each way is then all an attempt costs),
    /// or null. The other outcomes come back by <see cref="ICoordinatorGrain.Report"/>.
    /// </summary>
    Task<WorkOutcome[]?> Run(WorkItem[] batch);

    /// <summary>Cancels attempts the worker holds (their outcomes come back as cancelled).</summary>
    Task Cancel(long[] keys);
}

/// <summary>The coordinator silo's entry point for workers. Keyed by the coordinator's endpoint.</summary>
internal interface ICoordinatorGrain : IGrainWithStringKey
{
    /// <summary>A worker joins (or says again what it offers): it gets work from now on.</summary>
    Task Join(WorkerInfo info);

    /// <summary>A worker drains: it finishes what it holds and takes nothing new.</summary>
    Task Leave(string worker);

    /// <summary>Outcomes of attempts a worker ran (many to a call).</summary>
    Task Report(string worker, WorkOutcome[] outcomes);
}

[SiloPinnedPlacement, Reentrant]
internal sealed class WorkerGrain(WorkerExecutor executor) : Grain, IWorkerGrain
{
    public Task<WorkOutcome[]?> Run(WorkItem[] batch) => Task.FromResult(executor.Accept(batch));

    public Task Cancel(long[] keys)
    {
        executor.Cancel(keys);
        return Task.CompletedTask;
    }
}

[SiloPinnedPlacement, Reentrant]
internal sealed class CoordinatorGrain(ClusterDispatcher dispatcher) : Grain, ICoordinatorGrain
{
    public Task Join(WorkerInfo info)
    {
        dispatcher.Join(info);
        return Task.CompletedTask;
    }

    public Task Leave(string worker)
    {
        dispatcher.Leave(worker);
        return Task.CompletedTask;
    }

    public Task Report(string worker, WorkOutcome[] outcomes)
    {
        dispatcher.Report(worker, outcomes);
        return Task.CompletedTask;
    }
}

/// <summary>
/// Places a grain on the silo its key names (<c>ip:port</c>), and nowhere else: a worker's grain
/// lives on that worker, the coordinator's on the coordinator. When that silo is gone the call fails
/// (the caller re-queues), rather than the grain moving to another silo.
/// </summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
internal sealed class SiloPinnedPlacement : PlacementStrategy
{
    internal static readonly SiloPinnedPlacement Instance = new();
}

[AttributeUsage(AttributeTargets.Class, AllowMultiple = false)]
internal sealed class SiloPinnedPlacementAttribute() : PlacementAttribute(SiloPinnedPlacement.Instance);

internal sealed class SiloPinnedPlacementDirector : IPlacementDirector
{
    public Task<SiloAddress> OnAddActivation(PlacementStrategy strategy, PlacementTarget target, IPlacementContext context)
    {
        string key = target.GrainIdentity.Key.ToString()!;
        foreach (var silo in context.GetCompatibleSilos(target))
            if (EndpointOf(silo) == key) return Task.FromResult(silo);
        throw new SiloUnavailableException($"no active silo at {key}");
    }

    /// <summary>A silo's key: its endpoint as <c>ip:port</c>.</summary>
    internal static string EndpointOf(SiloAddress silo) => silo.Endpoint.ToString();
}
