using System.Diagnostics;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using TaskMesh.Engine.Configuration;
using Orleans;
using Orleans.Runtime;

namespace TaskMesh.Cluster;

/// <summary>
/// One attempt the cluster layer holds: queued, or in flight on one worker. It ends once, with the
/// worker's outcome (<see cref="End"/>; null when it is to run on <c>local</c>: no worker left) or
/// cancelled (<see cref="EndCancelled"/>). The dispatcher ends them in batches, on one thread-pool item
/// per batch (<see cref="ClusterDispatcher.Complete"/>), rather than one item per attempt — thousands
/// of those in the pool's queue delay everything behind them, the cluster's own liveness probes
/// included. The cluster layer's attempts override both (<see cref="ClusterLayer"/>); this class's own
/// ending completes <see cref="Done"/>.
/// </summary>
internal class RemoteWork(long key, WorkItem item, int qubits, long needBytes)
{
    public readonly long Key = key;
    public readonly WorkItem Item = item;
    /// <summary>A circuit's width (0: not a circuit) and its state vector's bytes.</summary>
    public readonly int Qubits = qubits;
    public readonly long NeedBytes = needBytes;

    private TaskCompletionSource<WorkOutcome?>? _done;

    /// <summary>Ends with the outcome, or null (run it on <c>local</c>); cancelled by <see cref="EndCancelled"/>.</summary>
    public TaskCompletionSource<WorkOutcome?> Done => LazyInitializer.EnsureInitialized(ref _done);

    /// <summary>The worker's outcome, or null: the attempt is to run on <c>local</c> (no worker left).</summary>
    public virtual void End(WorkOutcome? outcome) => Done.TrySetResult(outcome);

    /// <summary>Taken back (its cancellation, or the dispatcher's end): it has no outcome.</summary>
    public virtual void EndCancelled() => Done.TrySetCanceled();

    // Under the dispatcher's lock.
    public WorkerState? Owner;
    public LinkedListNode<RemoteWork>? Queued;
    /// <summary>Workers that died (or whose call failed) while they held it.</summary>
    public int Losses;
    /// <summary>Where it ran last (the worker's endpoint), for the task's record.</summary>
    public string? LastWorker;
}

/// <summary>A worker as the coordinator sees it. Mutable fields under the dispatcher's lock.</summary>
internal sealed class WorkerState(WorkerInfo info, IWorkerGrain grain)
{
    public WorkerInfo Info = info;
    public readonly IWorkerGrain Grain = grain;
    public readonly HashSet<string> Handlers = new(info.Handlers, StringComparer.Ordinal);
    public readonly Dictionary<long, RemoteWork> InFlight = new();
    public readonly long JoinedAt = Stopwatch.GetTimestamp();
    public long ReservedBytes;
    public bool Draining;
    public long Sent, Succeeded, Failed;

    public int Credit(int prefetch) => Info.Slots + prefetch - InFlight.Count;

    public bool CouldRun(RemoteWork w)
        => Handlers.Contains(w.Item.Handler) && (w.Qubits == 0 || (w.Qubits <= Info.MaxQubits && w.NeedBytes <= Info.MemoryBytes));
}

/// <summary>A worker as <c>taskmesh workers</c>, the layer status and the metrics show it.</summary>
public sealed record ClusterWorkerView(string Endpoint, string HostName, int ProcessId, int Slots, int Cores, long MemoryBytes, int MaxQubits,
    bool Draining, int InFlight, long Sent, long Succeeded, long Failed, double UpSeconds);

/// <summary>A worker declared dead, and what became of the attempts it held.</summary>
/// <param name="Requeued">Attempts sent again (to another worker, or to <c>local</c>).</param>
/// <param name="Poisoned">Attempts failed as poison (in flight on <see cref="ClusterSettings.PoisonLimit"/> workers that died).</param>
/// <param name="RequeueMs">From the loss being known here to every attempt queued again (or failed).</param>
public sealed record WorkerLoss(string Endpoint, string Why, int Requeued, int Poisoned, DateTimeOffset At, double RequeueMs);

/// <summary>
/// The coordinator's side of the cluster: the workers that joined, the attempts queued for them and
/// in flight on each. Attempts go out in batches (up to <see cref="ClusterSettings.BatchSize"/> per
/// grain call) under credit flow control — a worker never holds more than its slots plus
/// <see cref="ClusterSettings.Prefetch"/> — to the worker the strategy picks among those that can run
/// them. Outcomes come back in batches; one of an attempt the worker no longer holds (it was declared
/// dead, or the attempt was re-queued) is dropped, so none is reported twice. When Orleans declares a
/// worker dead, or a call to it fails, every attempt it held is queued again, first in line.
/// </summary>
internal sealed class ClusterDispatcher : IAsyncDisposable
{
    private readonly ClusterSettings _settings;
    private readonly ILogger _log;
    private readonly object _lock = new();
    private readonly LinkedList<RemoteWork> _pending = new();
    private readonly Dictionary<string, WorkerState> _workers = new(StringComparer.Ordinal);
    private readonly List<WorkerState> _order = new();   // join order, for round robin
    private readonly HashSet<string> _deadSilos = new(StringComparer.Ordinal);
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _stop = new();
    private readonly List<WorkerLoss> _losses = new();
    private Func<string, IWorkerGrain>? _grainOf;
    private Task? _loop;
    private int _next;
    private long _dropped;

    public ClusterDispatcher(ClusterSettings settings, ILogger logger)
    {
        _settings = settings;
        _log = logger;
    }

    /// <summary>Raised (under no lock) with the layer's new slot count when workers join, drain or die.</summary>
    public event Action? WorkersChanged;

    /// <summary>Raised when a worker is declared dead, after its attempts were re-queued.</summary>
    public event Action<WorkerLoss>? WorkerLost;

    /// <summary>Starts sending, to the worker grain <paramref name="grainOf"/> gives for a worker's endpoint.</summary>
    public void Start(Func<string, IWorkerGrain> grainOf)
    {
        _grainOf = grainOf;
        _loop = Task.Run(DispatchLoopAsync);
    }

    /// <summary>Live workers (not draining) and the slots they offer, with prefetch.</summary>
    public (int Workers, int Slots, int Credits) Totals()
    {
        lock (_lock)
        {
            int n = 0, slots = 0;
            foreach (var w in _order)
                if (!w.Draining) { n++; slots += w.Info.Slots; }
            return (n, slots, slots + n * _settings.Prefetch);
        }
    }

    public IReadOnlyList<ClusterWorkerView> Workers()
    {
        lock (_lock)
            return _order.Select(w => new ClusterWorkerView(w.Info.Endpoint, w.Info.HostName, w.Info.ProcessId, w.Info.Slots, w.Info.Cores,
                w.Info.MemoryBytes, w.Info.MaxQubits, w.Draining, w.InFlight.Count, w.Sent, w.Succeeded, w.Failed,
                Stopwatch.GetElapsedTime(w.JoinedAt).TotalSeconds)).ToList();
    }

    /// <summary>The handlers some live worker runs (null while there is none).</summary>
    public string[]? Handlers()
    {
        lock (_lock)
        {
            if (_order.Count == 0) return null;
            return _order.SelectMany(w => w.Handlers).Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToArray();
        }
    }

    public int MaxQubits()
    {
        lock (_lock) return _order.Count == 0 ? 0 : _order.Max(w => w.Info.MaxQubits);
    }

    public IReadOnlyList<WorkerLoss> Losses()
    {
        lock (_lock) return _losses.ToList();
    }

    /// <summary>Outcomes dropped: late (their worker was declared dead, or they were re-queued) or of unknown attempts.</summary>
    public long Dropped => Interlocked.Read(ref _dropped);

    /// <summary>Attempts queued, not yet sent.</summary>
    public int Queued
    {
        get { lock (_lock) return _pending.Count; }
    }

    // ---------------------------------------------------------------- workers

    public void Join(WorkerInfo info)
    {
        if (_grainOf is null) return;
        bool again;
        lock (_lock)
        {
            if (_deadSilos.Contains(info.Silo)) return;   // declared dead: it does not come back as the same member
            again = _workers.TryGetValue(info.Endpoint, out var known);
            if (again)
            {
                known!.Handlers.Clear();
                known.Info = info;
                known.Handlers.UnionWith(info.Handlers);
                known.Draining = false;   // it joined again: it takes work again
            }
            else
            {
                var w = new WorkerState(info, _grainOf(info.Endpoint));
                _workers[info.Endpoint] = w;
                _order.Add(w);
            }
        }
        if (!again)
            _log.LogInformation("worker {Endpoint} joined: {Host} pid {Pid}, {Slots} slots, {Cores} cores, {MemoryMb} MB for circuits (up to {Qubits} qubits), {Handlers} handlers",
                info.Endpoint, info.HostName, info.ProcessId, info.Slots, info.Cores, info.MemoryBytes >> 20, info.MaxQubits, info.Handlers.Length);
        WorkersChanged?.Invoke();
        Wake();
    }

    public void Leave(string endpoint)
    {
        lock (_lock)
        {
            if (!_workers.TryGetValue(endpoint, out var w)) return;
            w.Draining = true;
        }
        _log.LogInformation("worker {Endpoint} is draining: it finishes what it holds and takes nothing new", endpoint);
        WorkersChanged?.Invoke();
    }

    /// <summary>Orleans declared the silo <paramref name="silo"/> (its full address) dead: its attempts go elsewhere.</summary>
    public void SiloDied(string silo, string why)
    {
        string? endpoint;
        lock (_lock)
        {
            _deadSilos.Add(silo);
            endpoint = _order.FirstOrDefault(w => w.Info.Silo == silo)?.Info.Endpoint;
        }
        if (endpoint is not null) Lose(endpoint, why, declaredDead: true);
    }

    private void Lose(string endpoint, string why, bool declaredDead)
    {
        long known = Stopwatch.GetTimestamp();
        var poisoned = new List<RemoteWork>();
        int requeued = 0;
        bool drained;
        WorkerLoss loss;
        lock (_lock)
        {
            if (!_workers.Remove(endpoint, out var w)) return;
            _order.Remove(w);
            drained = w.Draining;
            _deadSilos.Add(w.Info.Silo);
            // Back to the front of the queue, in the order they were sent.
            foreach (var work in w.InFlight.Values.OrderByDescending(x => x.Key))
            {
                work.Owner = null;
                if (++work.Losses >= _settings.PoisonLimit) poisoned.Add(work);
                else
                {
                    work.Queued = _pending.AddFirst(work);
                    requeued++;
                }
            }
            w.InFlight.Clear();
            loss = new WorkerLoss(endpoint, why, requeued, poisoned.Count, DateTimeOffset.UtcNow, Stopwatch.GetElapsedTime(known).TotalMilliseconds);
            _losses.Add(loss);
            if (_losses.Count > 1000) _losses.RemoveAt(0);
        }
        if (poisoned.Count > 0)
            Complete(poisoned.Select(p => (p, (WorkOutcome?)new WorkOutcome
            {
                Key = p.Key,
                Status = WorkStatus.Failed,
                Error = $"poison: in flight on {p.Losses} workers that died (the last {endpoint}); not sent again",
            })).ToList());
        if (loss.Requeued + loss.Poisoned == 0 && drained) _log.LogInformation("worker {Endpoint} left the cluster", endpoint);
        else _log.LogWarning("worker {Endpoint} lost ({Why}): {Requeued} attempts queued again, {Poisoned} failed as poison", endpoint, why, requeued, poisoned.Count);
        if (!declaredDead) _log.LogWarning("worker {Endpoint} is not used again by this coordinator", endpoint);
        WorkersChanged?.Invoke();
        WorkerLost?.Invoke(loss);
        Wake();
    }

    // ---------------------------------------------------------------- attempts

    /// <summary>Queues attempts in their order, under one lock.</summary>
    public void Enqueue(List<RemoteWork> works)
    {
        if (works.Count == 0) return;
        lock (_lock)
            foreach (var work in works) work.Queued = _pending.AddLast(work);
        Wake();
    }

    /// <summary>The attempt's token fired: it leaves the queue, or its worker is told to stop it (its outcome is then dropped).</summary>
    public void Cancel(RemoteWork work)
    {
        WorkerState? owner;
        lock (_lock)
        {
            if (work.Queued is { } node)
            {
                _pending.Remove(node);
                work.Queued = null;
            }
            owner = work.Owner;
        }
        // Not on the canceller's thread: its token's callbacks are still running.
        ThreadPool.UnsafeQueueUserWorkItem(static w => w.EndCancelled(), work, preferLocal: false);
        if (owner is not null) _ = CancelOnWorkerAsync(owner, work.Key);
    }

    private async Task CancelOnWorkerAsync(WorkerState owner, long key)
    {
        try { await owner.Grain.Cancel([key]).ConfigureAwait(false); }
        catch (Exception ex) { _log.LogDebug(ex, "cancel on worker {Endpoint} failed", owner.Info.Endpoint); }
    }

    public void Report(string endpoint, WorkOutcome[] outcomes)
    {
        var done = new List<(RemoteWork Work, WorkOutcome? Outcome)>(outcomes.Length);
        int dropped = 0;
        lock (_lock)
        {
            if (!_workers.TryGetValue(endpoint, out var w)) dropped = outcomes.Length;
            else
                foreach (var o in outcomes)
                {
                    if (!w.InFlight.Remove(o.Key, out var work))
                    {
                        dropped++;
                        continue;
                    }
                    work.Owner = null;
                    w.ReservedBytes -= work.NeedBytes;
                    if (o.Status == WorkStatus.Succeeded) w.Succeeded++;
                    else w.Failed++;
                    done.Add((work, o));
                }
        }
        if (dropped > 0)
        {
            Interlocked.Add(ref _dropped, dropped);
            _log.LogDebug("dropped {Count} outcomes from {Endpoint}: their attempts are no longer in flight there", dropped, endpoint);
        }
        if (done.Count > 0)
        {
            Complete(done);
            Wake();
        }
    }

    private void Wake() => _wake.Writer.TryWrite(true);

    /// <summary>Ends attempts (null: run it locally), their continuations one after the other on one thread-pool item, their slots given back together.</summary>
    internal static void Complete(List<(RemoteWork Work, WorkOutcome? Outcome)> ended)
        => ThreadPool.UnsafeQueueUserWorkItem(static list =>
        {
            using var together = Engine.Layers.LayerAttempt.EndTogether();
            foreach (var (work, outcome) in list) work.End(outcome);
        }, ended, preferLocal: false);

    private async Task DispatchLoopAsync()
    {
        var sends = new List<(WorkerState Worker, WorkItem[] Batch)>();
        var local = new List<RemoteWork>();
        var failed = new List<(RemoteWork Work, string Error)>();
        try
        {
            while (await _wake.Reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false))
            {
                _wake.Reader.TryRead(out _);
                lock (_lock) Plan(sends, local, failed);
                if (local.Count + failed.Count > 0)
                {
                    Complete([.. local.Select(w => (w, (WorkOutcome?)null)),
                        .. failed.Select(f => (f.Work, (WorkOutcome?)new WorkOutcome { Key = f.Work.Key, Status = WorkStatus.Failed, Error = f.Error }))]);
                    local.Clear();
                    failed.Clear();
                }
                foreach (var (worker, batch) in sends) _ = SendAsync(worker, batch);
                sends.Clear();
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        catch (Exception ex)
        {
            _log.LogCritical(ex, "the cluster dispatcher stopped");
        }
    }

    /// <summary>Under the lock: which queued attempts go to which worker now, which run locally, which can run nowhere.</summary>
    private void Plan(List<(WorkerState, WorkItem[])> sends, List<RemoteWork> local, List<(RemoteWork, string)> failed)
    {
        if (_pending.Count == 0) return;
        var live = _order.Where(w => !w.Draining).ToList();
        if (live.Count == 0)
        {
            if (!_settings.FallbackToLocal) return;
            foreach (var work in _pending)
            {
                work.Queued = null;
                local.Add(work);
            }
            _pending.Clear();
            return;
        }
        int credit = 0;
        foreach (var w in live) credit += Math.Max(0, w.Credit(_settings.Prefetch));
        var batches = new Dictionary<WorkerState, List<WorkItem>>();
        var node = _pending.First;
        while (node is not null && credit > 0)
        {
            var next = node.Next;
            var work = node.Value;
            var target = Pick(work, live);
            if (target is null)
            {
                if (!live.Any(w => w.CouldRun(work)))
                {
                    _pending.Remove(node);
                    work.Queued = null;
                    failed.Add((work, NowhereToRun(work, live)));
                }
                node = next;
                continue;
            }
            _pending.Remove(node);
            work.Queued = null;
            work.Owner = target;
            work.LastWorker = target.Info.Endpoint;
            target.InFlight[work.Key] = work;
            target.ReservedBytes += work.NeedBytes;
            target.Sent++;
            credit--;
            if (!batches.TryGetValue(target, out var batch)) batches[target] = batch = new List<WorkItem>();
            batch.Add(work.Item);
            if (batch.Count >= _settings.BatchSize)
            {
                sends.Add((target, batch.ToArray()));
                batch.Clear();
            }
            node = next;
        }
        foreach (var (w, batch) in batches)
            if (batch.Count > 0) sends.Add((w, batch.ToArray()));
    }

    private static string NowhereToRun(RemoteWork work, List<WorkerState> live)
    {
        if (!live.Any(w => w.Handlers.Contains(work.Item.Handler)))
            return $"no worker of the cluster runs handler '{work.Item.Handler}'";
        var biggest = live.MaxBy(w => w.Info.MemoryBytes)!;
        return $"no worker can hold a {work.Qubits}-qubit state vector ({work.NeedBytes >> 20} MB): the largest takes {biggest.Info.MaxQubits} qubits, {biggest.Info.MemoryBytes >> 20} MB ({biggest.Info.Endpoint})";
    }

    /// <summary>The worker for <paramref name="work"/> now by the strategy, among those with credit that can run it; null when none.</summary>
    private WorkerState? Pick(RemoteWork work, List<WorkerState> live)
    {
        int prefetch = _settings.Prefetch;
        bool circuit = work.Qubits > 0;
        switch (_settings.Strategy)
        {
            case ClusterStrategies.RoundRobin:
                for (int i = 0; i < live.Count; i++)
                {
                    var w = live[(_next + i) % live.Count];
                    if (w.Credit(prefetch) > 0 && w.CouldRun(work) && Fits(w, work))
                    {
                        _next = (_next + i + 1) % live.Count;
                        return w;
                    }
                }
                return null;
            case ClusterStrategies.ResourceAware when circuit:
            {
                WorkerState? best = null;
                foreach (var w in live)
                    if (w.Credit(prefetch) > 0 && w.CouldRun(work) && Fits(w, work)
                        && (best is null || w.Info.MemoryBytes - w.ReservedBytes > best.Info.MemoryBytes - best.ReservedBytes))
                        best = w;
                return best;
            }
            default:
            {
                WorkerState? best = null;
                double bestLoad = double.MaxValue;
                foreach (var w in live)
                {
                    if (w.Credit(prefetch) <= 0 || !w.CouldRun(work) || (circuit && !Fits(w, work))) continue;
                    double load = (double)w.InFlight.Count / Math.Max(1, w.Info.Slots);
                    if (load < bestLoad) (best, bestLoad) = (w, load);
                }
                return best;
            }
        }
    }

    /// <summary>A circuit fits a worker while the state vectors it already holds leave room for it.</summary>
    private static bool Fits(WorkerState w, RemoteWork work) => work.NeedBytes == 0 || w.ReservedBytes + work.NeedBytes <= w.Info.MemoryBytes;

    private async Task SendAsync(WorkerState worker, WorkItem[] batch)
    {
        WorkOutcome[]? answered;
        try
        {
            answered = await worker.Grain.Run(batch).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // The worker did not take the batch: it died, or is unreachable. Orleans' failure detector
            // decides whether it is dead; this batch goes elsewhere now.
            _log.LogWarning("a batch of {Count} to worker {Endpoint} failed ({Error}); it is sent elsewhere, and the worker gets nothing new until it joins again",
                batch.Length, worker.Info.Endpoint, ex.GetType().Name + ": " + ex.Message);
            if (ex is SiloUnavailableException) Lose(worker.Info.Endpoint, "unavailable", declaredDead: false);
            else
            {
                lock (_lock) worker.Draining = true;
                WorkersChanged?.Invoke();
                Requeue(worker, batch);
            }
            return;
        }
        // The attempts that ended at once there come back with the call's answer.
        if (answered is { Length: > 0 }) Report(worker.Info.Endpoint, answered);
    }

    /// <summary>A batch a worker did not take: back to the front of the queue (each counts one loss towards the poison limit).</summary>
    private void Requeue(WorkerState worker, WorkItem[] batch)
    {
        var poisoned = new List<RemoteWork>();
        lock (_lock)
        {
            for (int i = batch.Length - 1; i >= 0; i--)
            {
                if (!worker.InFlight.Remove(batch[i].Key, out var work)) continue;
                work.Owner = null;
                worker.ReservedBytes -= work.NeedBytes;
                if (++work.Losses >= _settings.PoisonLimit) poisoned.Add(work);
                else work.Queued = _pending.AddFirst(work);
            }
        }
        if (poisoned.Count > 0)
            Complete(poisoned.Select(p => (p, (WorkOutcome?)new WorkOutcome
            {
                Key = p.Key, Status = WorkStatus.Failed, Error = $"poison: {p.Losses} workers failed to take it (the last {worker.Info.Endpoint})",
            })).ToList());
        Wake();
    }

    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        if (_loop is not null) await _loop.ConfigureAwait(false);
        List<RemoteWork> left;
        lock (_lock)
        {
            left = _pending.Concat(_order.SelectMany(w => w.InFlight.Values)).ToList();
            _pending.Clear();
        }
        foreach (var w in left) w.EndCancelled();
    }
}
