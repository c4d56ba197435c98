using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Tasks.Dataflow;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Feeds one layer. Ready tasks wait here in four priority queues; a pump moves the most urgent
/// into the layer's Dataflow <see cref="ActionBlock{T}"/> while it has free slots, so the block
/// never runs more than the layer's capacity (back-pressure) and priorities decide who gets a
/// slot when slots are scarce; within a priority, arrival order, or the critical path first when
/// the run's <see cref="ReadyOrder"/> says so for this layer. The layer's capacity may change while the run goes on (a cluster
/// grows and shrinks): the slot count follows it.
/// A layer that takes batches (<see cref="ExecutionLayer.TakesBatches"/>) gets no block: the pump
/// runs on the thread pool, once for whatever arrived since its last round (queued tasks, slots
/// given back), and hands the layer everything it may start in one call; the dispatcher keeps the
/// attempts in flight in a table and one timer sweeps it for timeouts and cancellations.
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

    // Layers that take batches (see the class's summary).
    private const int MaxBatch = 512;
    private static readonly TimeSpan SweepPeriod = TimeSpan.FromMilliseconds(10);
    private readonly bool _batches;
    private LayerAttempt[]? _batch;                 // the pumper's alone
    private readonly object _inFlightLock = new();
    private LayerAttempt?[] _inFlight = [];         // [0, _inFlightCount): attempts the layer holds
    private int _inFlightCount;
    private ITimer? _sweep;                         // armed while attempts are in flight
    private bool _sweepArmed;
    private CancellationTokenRegistration _onRunCancelled;
    private int _pumpQueued;

    public LayerDispatcher(AttemptHost run, ExecutionLayer layer, double[]? ranks = null)
    {
        _run = run;
        Layer = layer;
        _batches = layer.TakesBatches;
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
        if (_batches)
        {
            _onRunCancelled.Dispose();
            lock (_inFlightLock)
            {
                _sweep?.Dispose();
                _sweep = null;
                _sweepArmed = false;
            }
        }
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
        if (_batches)
        {
            // On the thread pool, one round for whatever arrived meanwhile: the layer gets batches.
            if (Interlocked.Exchange(ref _pumpQueued, 1) == 0)
                ThreadPool.UnsafeQueueUserWorkItem(static d => { Volatile.Write(ref d._pumpQueued, 0); d.PumpNow(); }, this, preferLocal: false);
            return;
        }
        PumpNow();
    }

    private void PumpNow()
    {
        // One pumper at a time. A caller that finds the pump busy has already counted its
        // request, and the pumper re-checks the count after letting go, so no request is lost.
        Interlocked.Increment(ref _pumpRequests);
        while (true)
        {
            if (Interlocked.CompareExchange(ref _pumping, 1, 0) != 0) return;
            int seen = Volatile.Read(ref _pumpRequests);
            int batched = 0;
            long now = 0, clockNow = 0;   // read once a round (layers that take batches)
            while (!_run.Cancelled && Volatile.Read(ref _freeSlots) > 0 && TryDequeueMostUrgent(out int node))
            {
                Interlocked.Decrement(ref _freeSlots);
                Layer.AddQueued(-1);
                _run.OnGuardedStarted();
                if (!_batches)
                {
                    (_block ??= CreateBlock()).Post(node);   // only the pumper gets here: no race on creation
                    continue;
                }
                if (batched == 0) (now, clockNow) = Now();
                if (StartAttempt(node, now, clockNow) is not { } attempt) continue;
                (_batch ??= new LayerAttempt[MaxBatch])[batched++] = attempt;
                if (batched == MaxBatch)
                {
                    StartBatch(batched);
                    batched = 0;
                }
            }
            if (batched > 0) StartBatch(batched);
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
            SlotsEnded(1);
        }
    }

    // ---------------------------------------------------------------- layers that take batches

    /// <summary>Takes a slot for <paramref name="node"/>'s next attempt; null when it must not start (it was cancelled while it waited: completed as such, the slot given back).</summary>
    private LayerAttempt? StartAttempt(int node, long now, long clockNow)
    {
        var run = _run;
        Layer.AddRunning(1);
        Interlocked.Increment(ref _running);
        // Read before the task's own cancellation is: one cancelled after this moves the count, and the sweep asks.
        int cancellations = run.TasksCancelled;
        if (!run.StartInSlot(node))
        {
            try
            {
                run.CompleteGuarded(node, new AttemptResult(node, Layer.Name, 0, AttemptOutcome.Cancelled, null, "cancelled before it started", TimeSpan.Zero), 0, null);
            }
            catch (Exception ex)
            {
                run.Fault(ex);
            }
            finally
            {
                SlotEnded();
            }
            return null;
        }
        int attempt = run.NextAttempt(node);
        if (attempt == 1) run.NoteFirstStart(node, now);
        run.OnAttemptStartedObservers?.AttemptStarted(new AttemptStart(node, Layer.Name, attempt));
        var timeout = run.TimeoutOf(node);
        return new LayerAttempt(this, node, new LayerInvocation(run.HandlerOf(node), new TaskContext(run, node, attempt)), timeout, now, DeadlineAfter(timeout, clockNow))
        {
            CancellationsSeen = cancellations,
        };
    }

    /// <summary>A <see cref="Stopwatch"/> timestamp (for durations) and one of the run's clock (for timeouts): one read when the clock is the system's.</summary>
    private (long Now, long ClockNow) Now()
    {
        long now = Stopwatch.GetTimestamp();
        var clock = _run.Options.TimeProvider;
        return (now, ReferenceEquals(clock, TimeProvider.System) ? now : clock.GetTimestamp());
    }

    private long DeadlineAfter(TimeSpan timeout, long clockNow)
    {
        if (timeout <= TimeSpan.Zero || timeout.TotalDays >= 10_000) return long.MaxValue;
        return clockNow + (long)(timeout.TotalSeconds * _run.Options.TimeProvider.TimestampFrequency);
    }

    /// <summary>Hands the layer the first <paramref name="count"/> attempts of the pumper's batch, kept in flight first.</summary>
    private void StartBatch(int count)
    {
        var batch = _batch!;
        lock (_inFlightLock)
        {
            if (_inFlightCount + count > _inFlight.Length) Array.Resize(ref _inFlight, Math.Max(_inFlight.Length * 2, _inFlightCount + count));
            for (int i = 0; i < count; i++)
            {
                batch[i].Slot = _inFlightCount;
                _inFlight[_inFlightCount++] = batch[i];
            }
            if (!_sweepArmed)
            {
                if (_sweep is null)
                {
                    _sweep = _run.Options.TimeProvider.CreateTimer(static d => ((LayerDispatcher)d!).Sweep(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                    _onRunCancelled = _run.RunToken.UnsafeRegister(static d =>
                        ThreadPool.UnsafeQueueUserWorkItem(static x => x.Sweep(), (LayerDispatcher)d!, preferLocal: false), this);
                }
                _sweep.Change(SweepPeriod, SweepPeriod);
                _sweepArmed = true;
            }
        }
        try
        {
            Layer.StartAttempts(new ReadOnlySpan<LayerAttempt>(batch, 0, count));
        }
        catch (Exception ex)
        {
            // The layer refused the batch: its attempts fail (the rules may retry or escalate them).
            for (int i = 0; i < count; i++) batch[i].Fail(ex);
        }
        Array.Clear(batch, 0, count);
    }

    /// <summary>An attempt ended by its layer with an exception: cancelled, timed out or failed, as an attempt run in a slot would be.</summary>
    internal void Failed(LayerAttempt attempt, Exception ex)
    {
        int node = attempt.Node;
        if (ex is OperationCanceledException)
        {
            if (_run.IsCancelled(node)) { Ended(attempt, AttemptOutcome.Cancelled, null, "cancelled"); return; }
            if (_run.Options.TimeProvider.GetTimestamp() >= attempt.Deadline) { Ended(attempt, AttemptOutcome.TimedOut, null, TimedOut(attempt)); return; }
        }
        Ended(attempt, AttemptOutcome.Failed, null, RunState.DescribeFailure(ex));
    }

    private static string TimedOut(LayerAttempt attempt) => $"timed out after {attempt.Timeout.TotalSeconds:0.###}s";

    /// <summary>An attempt ended (once: the caller won <see cref="LayerAttempt.TryEnd"/>): the policy decides what follows, and its slot is given back.</summary>
    internal void Ended(LayerAttempt attempt, AttemptOutcome outcome, object? output, string? error)
    {
        lock (_inFlightLock)
        {
            int slot = attempt.Slot;
            if (slot >= 0)
            {
                var last = _inFlight[--_inFlightCount]!;
                _inFlight[slot] = last;
                last.Slot = slot;
                _inFlight[_inFlightCount] = null;
                attempt.Slot = -1;
            }
        }
        int node = attempt.Node;
        try
        {
            var result = new AttemptResult(node, Layer.Name, attempt.Invocation.Context.Attempt, outcome, output, error, Stopwatch.GetElapsedTime(attempt.StartedAt));
            _run.Attempts.Settle(node, this, result);
        }
        catch (Exception ex)
        {
            _run.Fault(ex);
        }
        finally
        {
            SlotEnded();
        }
    }

    private void SlotEnded()
    {
        if (t_ending is { Depth: > 0 } together)
        {
            together.Add(this);
            return;
        }
        SlotsEnded(1);
    }

    /// <summary><paramref name="count"/> of this dispatcher's slots were given back: the counts moved once, the pump asked once.</summary>
    private void SlotsEnded(int count)
    {
        Layer.AddRunning(-count);
        Interlocked.Add(ref _running, -count);
        Interlocked.Add(ref _freeSlots, count);
        _run.OnGuardedEnded(count);
        Pump();
    }

    // ---------------------------------------------------------------- attempts ended together

    [ThreadStatic] private static EndingTogether? t_ending;

    /// <summary>
    /// This thread's attempts ended inside <see cref="LayerAttempt.EndTogether"/>: each ends (its
    /// outcome settled, its task's next step taken) at once, and the slots they held are given back
    /// per dispatcher when the scope closes — a few atomic updates and one pump for a worker's batch
    /// of results instead of those per attempt.
    /// </summary>
    internal sealed class EndingTogether
    {
        public int Depth;
        private readonly List<(LayerDispatcher Dispatcher, int Count)> _ended = [];

        public void Add(LayerDispatcher d)
        {
            for (int i = 0; i < _ended.Count; i++)
                if (ReferenceEquals(_ended[i].Dispatcher, d))
                {
                    _ended[i] = (d, _ended[i].Count + 1);
                    return;
                }
            _ended.Add((d, 1));
        }

        /// <summary>Gives every slot back (the outermost scope closing).</summary>
        public void Close()
        {
            // Taken out first: a slot given back pumps, and what that starts may end attempts on this
            // thread in a scope of its own, which closes by itself.
            while (_ended.Count > 0)
            {
                var ended = _ended.ToArray();
                _ended.Clear();
                foreach (var (d, count) in ended)
                {
                    try { d.SlotsEnded(count); }
                    catch (Exception ex) { d._run.Fault(ex); }
                }
            }
        }
    }

    internal static EndingTogether Enter()
    {
        var scope = t_ending ??= new EndingTogether();
        scope.Depth++;
        return scope;
    }

    internal static void Leave(EndingTogether scope)
    {
        if (--scope.Depth == 0) scope.Close();
    }

    /// <summary>Ends the attempts in flight whose timeout passed or whose task (or run) was cancelled, and tells their layer.</summary>
    private void Sweep()
    {
        List<LayerAttempt>? due = null;
        long now = _run.Options.TimeProvider.GetTimestamp();
        lock (_inFlightLock)
        {
            // A task's cancellation is asked only when the run was cancelled, or some task was since the
            // attempt last looked (the count read before the scan: one cancelled during it moves it again).
            int cancellations = _run.TasksCancelled;
            bool runCancelled = _run.Cancelled;
            for (int i = 0; i < _inFlightCount; i++)
            {
                var a = _inFlight[i]!;
                bool end = a.Deadline <= now;
                if (!end && (runCancelled || a.CancellationsSeen != cancellations))
                {
                    end = _run.IsCancelled(a.Node);
                    a.CancellationsSeen = cancellations;
                }
                if (end) (due ??= []).Add(a);
            }
            if (_inFlightCount == 0 && _sweepArmed)
            {
                _sweep?.Change(Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
                _sweepArmed = false;
            }
        }
        if (due is null) return;
        foreach (var a in due)
        {
            if (!a.TryEnd()) continue;   // the layer ended it meanwhile
            a.CancelToken();
            try
            {
                Layer.StopAttempt(a);
            }
            catch (Exception)
            {
                // The layer could not stop it: its later report is ignored all the same.
            }
            if (_run.IsCancelled(a.Node)) Ended(a, AttemptOutcome.Cancelled, null, "cancelled");
            else Ended(a, AttemptOutcome.TimedOut, null, TimedOut(a));
        }
    }
}
