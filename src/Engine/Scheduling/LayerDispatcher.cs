using System.Collections.Concurrent;
using System.Threading.Tasks.Dataflow;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Feeds one layer. Ready tasks wait here in four priority queues; a pump moves the most urgent
/// into the layer's Dataflow <see cref="ActionBlock{T}"/> while it has free slots, so the block
/// never runs more than the layer's capacity (back-pressure) and priorities decide who gets a
/// slot when slots are scarce; within a priority, arrival order, or the critical path first when
/// the run's <see cref="ReadyOrder"/> says so for this layer. The layer's capacity may change while the run goes on (a cluster
/// grows and shrinks): the slot count follows it.
/// </summary>
internal sealed class LayerDispatcher
{
    private readonly AttemptHost _run;
    private readonly ConcurrentQueue<int>[] _queues = [new(), new(), new(), new()]; // by TaskPriority
    // Critical-path order (ReadyOrder): one heap under a lock, most urgent priority first, then the
    // highest upward rank, then arrival. Null: the lock-free arrival-order queues above.
    private readonly double[]? _ranks;
    private readonly PriorityQueue<int, (int Priority, double Rank, long Arrival)>? _ranked;
    private long _arrivals;
    private ActionBlock<int>? _block;   // made at the first task: most runs leave most layers unused
    private readonly Action<int> _onCapacityChanged;
    private int _freeSlots;
    private int _pumping;
    private int _pumpRequests;

    public LayerDispatcher(AttemptHost run, ExecutionLayer layer, double[]? ranks = null)
    {
        _run = run;
        Layer = layer;
        _ranks = ranks;
        if (ranks is not null) _ranked = new();
        _freeSlots = layer.Capacity;
        _onCapacityChanged = OnCapacityChanged;
        layer.CapacityChanged += _onCapacityChanged;
    }

    public ExecutionLayer Layer { get; }

    /// <summary>Detaches from the layer once the run ended; tasks still waiting (a cancelled or failed run) leave the layer's queue count.</summary>
    public void Close()
    {
        Layer.CapacityChanged -= _onCapacityChanged;
        _block?.Complete();
        int left = 0;
        if (_ranked is not null)
            lock (_ranked) { left = _ranked.Count; _ranked.Clear(); }
        else
            foreach (var q in _queues) while (q.TryDequeue(out _)) left++;
        if (left > 0) Layer.AddQueued(-left);
    }

    private void OnCapacityChanged(int delta)
    {
        Interlocked.Add(ref _freeSlots, delta);
        if (delta > 0) Pump();
    }

    public void Enqueue(int node)
    {
        _run.OnRoutedObservers?.TaskRouted(node, _run.DecisionOf(node, Layer.Name));
        int priority = _run.PriorityOf(node);
        if (_ranked is not null)
            lock (_ranked) _ranked.Enqueue(node, (-priority, -_ranks![node], _arrivals++));
        else
            _queues[priority].Enqueue(node);
        Layer.AddQueued(1);
        Pump();
    }

    private void Pump()
    {
        // One pumper at a time. A caller that finds the pump busy has already counted its
        // request, and the pumper re-checks the count after letting go, so no request is lost.
        Interlocked.Increment(ref _pumpRequests);
        while (true)
        {
            if (Interlocked.CompareExchange(ref _pumping, 1, 0) != 0) return;
            int seen = Volatile.Read(ref _pumpRequests);
            while (!_run.Cancelled && Volatile.Read(ref _freeSlots) > 0 && TryDequeueMostUrgent(out int node))
            {
                Interlocked.Decrement(ref _freeSlots);
                Layer.AddQueued(-1);
                _run.OnGuardedStarted();
                (_block ??= CreateBlock()).Post(node);   // only the pumper gets here: no race on creation
            }
            Interlocked.Exchange(ref _pumping, 0);
            if (Volatile.Read(ref _pumpRequests) == seen) return;
        }
    }

    private ActionBlock<int> CreateBlock()
        // The pump is the bound (at most Capacity tasks admitted at once, see _freeSlots); the block
        // itself is unbounded so that a capacity raised mid-run takes effect at once.
        => new(RunTaskAsync, new ExecutionDataflowBlockOptions
        {
            MaxDegreeOfParallelism = DataflowBlockOptions.Unbounded,
            EnsureOrdered = false,
        });

    private bool TryDequeueMostUrgent(out int node)
    {
        if (_ranked is not null)
            lock (_ranked) return _ranked.TryDequeue(out node, out _);
        for (int p = _queues.Length - 1; p >= 0; p--)
            if (_queues[p].TryDequeue(out node)) return true;
        node = AttemptHost.NoTask;
        return false;
    }

    /// <summary>This run's tasks running on the layer now (the layer's own count is every run's).</summary>
    public int Running => Volatile.Read(ref _running);

    private int _running;

    private async Task RunTaskAsync(int node)
    {
        Layer.AddRunning(1);
        Interlocked.Increment(ref _running);
        try
        {
            await _run.Attempts.RunInSlotAsync(node, this).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _run.Fault(ex);
        }
        finally
        {
            Layer.AddRunning(-1);
            Interlocked.Decrement(ref _running);
            Interlocked.Increment(ref _freeSlots);
            _run.OnGuardedEnded();
        }
        Pump();
    }
}
