using System.Collections.Concurrent;
using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine;
using TaskMesh.Engine.Layers.Quantum;
using TaskMesh.Engine.Scheduling;
using TaskMesh.QuantumSim;

namespace TaskMesh.Cluster;

/// <summary>
/// A worker silo's side: runs the attempts its coordinator sends, on this process's engine
/// (<see cref="DetachedTasks"/>: the same handlers as the local layer, circuits on the quantum
/// layer), <see cref="Slots"/> at a time — a handler that returns at once (an inline one) runs as
/// its batch arrives — and sends the outcomes back in batches: whatever ended while the last
/// report was on its way goes in the next.
/// </summary>
internal sealed class WorkerExecutor : IAsyncDisposable
{
    private readonly TaskMeshEngine _engine;
    private readonly DetachedTasks _tasks;
    private readonly SemaphoreSlim _slots;
    private readonly ILogger _log;
    private readonly int _batchSize;
    private readonly ConcurrentDictionary<long, CancellationTokenSource> _running = new();
    private readonly Channel<WorkOutcome> _outcomes = Channel.CreateUnbounded<WorkOutcome>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private ICoordinatorGrain? _coordinator;
    private string _self = "";
    private Task? _reporter;
    private int _held;
    private long _ran;

    public WorkerExecutor(TaskMeshEngine engine, int slots, int batchSize, ILogger logger)
    {
        _engine = engine;
        _tasks = new DetachedTasks(engine);
        Slots = slots;
        _slots = new SemaphoreSlim(slots, slots);
        _batchSize = batchSize;
        _log = logger;
    }

    public int Slots { get; }

    /// <summary>Attempts taken and not yet reported.</summary>
    public int Held => Volatile.Read(ref _held);

    /// <summary>Attempts run since the start.</summary>
    public long Ran => Interlocked.Read(ref _ran);

    /// <summary>Starts reporting to <paramref name="coordinator"/> as <paramref name="self"/> (this worker's endpoint).</summary>
    public void Start(ICoordinatorGrain coordinator, string self)
    {
        _coordinator = coordinator;
        _self = self;
        _reporter = Task.Run(ReportLoopAsync);
    }

    /// <summary>What this worker offers: its slots, cores, memory for state vectors, largest circuit and handlers.</summary>
    public WorkerInfo Describe(string endpoint, string silo)
    {
        var quantum = _engine.Layers.OfType<QuantumLayer>().Where(q => q.Precision != Precision.Double).FirstOrDefault()
            ?? _engine.Layers.OfType<QuantumLayer>().FirstOrDefault();
        long memory = 0;
        int qubits = 0;
        if (quantum is not null)
        {
            long available = Math.Max(0, MemoryAdmission.AvailableBytes() - MemoryAdmission.ReserveBytes);
            memory = Math.Min(_engine.Options.Quantum.MemoryCapBytes, available);
            qubits = quantum.Capabilities.MaxQubits;
        }
        return new WorkerInfo
        {
            Endpoint = endpoint,
            HostName = Environment.MachineName,
            ProcessId = Environment.ProcessId,
            Slots = Slots,
            Cores = Environment.ProcessorCount,
            MemoryBytes = memory,
            MaxQubits = qubits,
            Handlers = _engine.Handlers.Names.Where(h => !_engine.Handlers.TryGet(h, out var d) || !d.LocalOnly).ToArray(),
            Version = typeof(WorkerExecutor).Assembly.GetName().Version?.ToString() ?? "",
            Silo = silo,
        };
    }

    /// <summary>
    /// Takes a batch: inline handlers run now, and their outcomes are returned (the caller's answer:
    /// null when there is none); the others run as slots free up and are reported.
    /// </summary>
    public WorkOutcome[]? Accept(WorkItem[] batch)
    {
        Interlocked.Add(ref _held, batch.Length);
        List<WorkOutcome>? answered = null;
        foreach (var item in batch)
        {
            if (item.Inputs is null && _tasks.IsInline(item.Handler))
            {
                // Returns at once: nothing to cancel or time, no slot to wait for.
                (answered ??= new(batch.Length)).Add(Outcome(item, _tasks.RunInline(ToTask(item))));
                continue;
            }
            var cts = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
            if (!_running.TryAdd(item.Key, cts))
            {
                // The same attempt twice (a batch re-sent after a call that did reach us): it runs once.
                cts.Dispose();
                Interlocked.Decrement(ref _held);
                continue;
            }
            _ = RunInSlotAsync(item, cts.Token);
        }
        if (answered is null) return null;
        Interlocked.Add(ref _held, -answered.Count);
        return answered.ToArray();
    }

    private async Task RunInSlotAsync(WorkItem item, CancellationToken ct)
    {
        try
        {
            await _slots.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            Post(item.Key, new WorkOutcome { Key = item.Key, Status = WorkStatus.Cancelled, Error = "cancelled before it started" });
            return;
        }
        try
        {
            Finish(item, Task.FromResult(await _tasks.RunAsync(ToTask(item), ct).ConfigureAwait(false)));
        }
        catch (OperationCanceledException)
        {
            Post(item.Key, new WorkOutcome { Key = item.Key, Status = WorkStatus.Cancelled, Error = "cancelled" });
        }
        catch (Exception ex)
        {
            Post(item.Key, new WorkOutcome { Key = item.Key, Status = WorkStatus.Failed, Error = $"{ex.GetType().Name}: {ex.Message}" });
        }
        finally
        {
            _slots.Release();
        }
    }

    private void Finish(WorkItem item, Task<DetachedOutcome> pending)
    {
        if (!pending.IsCompleted)
        {
            _ = FinishLaterAsync(item, pending);
            return;
        }
        DetachedOutcome o;
        try { o = pending.GetAwaiter().GetResult(); }
        catch (OperationCanceledException)
        {
            Post(item.Key, new WorkOutcome { Key = item.Key, Status = WorkStatus.Cancelled, Error = "cancelled" });
            return;
        }
        if (_running.TryRemove(item.Key, out var cts)) cts.Dispose();
        Report(item, o);
    }

    private void Report(WorkItem item, DetachedOutcome o) => _outcomes.Writer.TryWrite(Outcome(item, o));

    /// <summary>An attempt ran here: counted, logged at debug level, and its outcome as the coordinator takes it.</summary>
    private WorkOutcome Outcome(WorkItem item, DetachedOutcome o)
    {
        Interlocked.Increment(ref _ran);
        if (_log.IsEnabled(LogLevel.Debug))
            _log.LogDebug("ran task {TaskId} attempt {Attempt}: {Outcome} in {Ms:0.###} ms", item.TaskId, item.Attempt,
                o.Succeeded ? "succeeded" : o.TimedOut ? "timed out" : "failed", o.DurationMs);
        return new WorkOutcome
        {
            Key = item.Key,
            Status = o.Succeeded ? WorkStatus.Succeeded : o.TimedOut ? WorkStatus.TimedOut : WorkStatus.Failed,
            Output = o.OutputJson,
            Error = o.Error,
            Confidence = o.Confidence ?? double.NaN,
            Escalation = o.Escalation is { } e ? [e.Trigger, e.From, e.To, e.Reason] : null,
            DurationMs = o.DurationMs,
        };
    }

    private async Task FinishLaterAsync(WorkItem item, Task<DetachedOutcome> pending)
    {
        DetachedOutcome o;
        try { o = await pending.ConfigureAwait(false); }
        catch (OperationCanceledException)
        {
            Post(item.Key, new WorkOutcome { Key = item.Key, Status = WorkStatus.Cancelled, Error = "cancelled" });
            return;
        }
        Finish(item, Task.FromResult(o));
    }

    private void Post(long key, WorkOutcome outcome)
    {
        if (_running.TryRemove(key, out var cts)) cts.Dispose();
        _outcomes.Writer.TryWrite(outcome);
    }

    private static DetachedTask ToTask(WorkItem item) => new(item.TaskId, item.Handler, item.Args, item.Attempt, item.Variant, item.Inputs,
        item.TimeoutMs == int.MaxValue ? TimeSpan.FromDays(1) : TimeSpan.FromMilliseconds(item.TimeoutMs) + TimeSpan.FromSeconds(1));

    public void Cancel(long[] keys)
    {
        foreach (var k in keys)
            if (_running.TryGetValue(k, out var cts))
                try { cts.Cancel(); }
                catch (ObjectDisposedException) { }
    }

    /// <summary>Reports in flight at once: a report waits for a round trip, and outcomes keep coming meanwhile.</summary>
    private const int ReportsInFlight = 8;

    private async Task ReportLoopAsync()
    {
        var reader = _outcomes.Reader;
        var batch = new List<WorkOutcome>(_batchSize);
        using var inFlight = new SemaphoreSlim(ReportsInFlight, ReportsInFlight);
        try
        {
            while (await reader.WaitToReadAsync(CancellationToken.None).ConfigureAwait(false))
            {
                await inFlight.WaitAsync().ConfigureAwait(false);
                while (batch.Count < _batchSize && reader.TryRead(out var o)) batch.Add(o);
                var sent = batch.ToArray();
                batch.Clear();
                _ = SendAsync(sent);
            }
            // The last reports, before the worker leaves.
            for (int i = 0; i < ReportsInFlight; i++) await inFlight.WaitAsync().ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _log.LogCritical(ex, "the worker's reporting stopped");
        }

        async Task SendAsync(WorkOutcome[] sent)
        {
            try
            {
                for (int attempt = 1; ; attempt++)
                {
                    try
                    {
                        await _coordinator!.Report(_self, sent).ConfigureAwait(false);
                        break;
                    }
                    catch (Exception ex) when (attempt < 5 && !_stop.IsCancellationRequested)
                    {
                        _log.LogWarning("reporting {Count} outcomes to the coordinator failed ({Error}); trying again", sent.Length, ex.Message);
                        await Task.Delay(TimeSpan.FromMilliseconds(100 * attempt)).ConfigureAwait(false);
                    }
                    catch (Exception ex)
                    {
                        _log.LogError("the coordinator did not take {Count} outcomes ({Error}); they are lost to it, and it sends their tasks again when it declares this worker dead", sent.Length, ex.Message);
                        break;
                    }
                }
            }
            finally
            {
                Interlocked.Add(ref _held, -sent.Length);
                inFlight.Release();
            }
        }
    }

    /// <summary>Waits until every attempt taken was run and reported, or <paramref name="timeout"/> passed; true when all were.</summary>
    public async Task<bool> DrainAsync(TimeSpan timeout)
    {
        var until = DateTime.UtcNow + timeout;
        while (Held > 0 && DateTime.UtcNow < until) await Task.Delay(20).ConfigureAwait(false);
        return Held == 0;
    }

    public async ValueTask DisposeAsync()
    {
        _stop.Cancel();
        _outcomes.Writer.TryComplete();
        // The last reports, for as long as a call may take (the coordinator may be gone).
        if (_reporter is not null)
            try { await _reporter.WaitAsync(TimeSpan.FromSeconds(35)).ConfigureAwait(false); }
            catch (TimeoutException) { _log.LogWarning("the last reports to the coordinator did not end in time"); }
        _stop.Dispose();
    }
}
