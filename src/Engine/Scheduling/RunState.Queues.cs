using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling;

/// <summary>The ready queues: each worker's deque, shared queues by priority, the roots, and the notifier.</summary>
internal sealed partial class RunState
{
    /// <summary>Roots a worker claims at once from the shared cursor.</summary>
    private const int RootChunk = 64;

    /// <summary>A task index that names no task (an empty hand, nothing taken).</summary>

    private readonly Worker[] _workers;
    private readonly ConcurrentQueue<int> _injected = new();   // normal priority, released off the workers
    private readonly ConcurrentQueue<int> _critical = new();
    private readonly ConcurrentQueue<int> _high = new();
    private readonly ConcurrentQueue<int> _low = new();
    private readonly Notifier _notifier = new();
    private PaddedLong _urgentCount;                            // items in _critical + _high
    private PaddedLong _rootCursor;                             // next task index to scan for roots

    // All-normal graphs: workers find roots themselves, a chunk at a time, by scanning the task
    // indices (a root has no predecessors). Otherwise roots are seeded into the priority queues
    // before the workers start, so a critical root is never found after normal work (and, when the
    // run orders by critical path, in rank order).
    private readonly bool _seedRootsByScan;

    private void SeedRoots()
    {
        if (Ready.Ranks is { } ranks)
        {
            SeedRootsByRank(ranks);
            return;
        }
        int w = 0;
        for (int i = 0; i < Graph.Count; i++)
        {
            if (Tasks.Pending[i] != 0) continue;
            _onReleased?.TaskReleased(i);
            byte p = Graph.PriorityByte(i);
            if (p == (byte)TaskPriority.Normal)
            {
                _workers[w].Deque.Push(i);
                if (++w == _workers.Length) w = 0;
            }
            else EnqueueShared(i, p);
        }
        _rootCursor.Value = Graph.Count;
    }

    /// <summary>
    /// Critical-path order: the roots go to the shared queues highest upward rank first, so the
    /// first free slots go to the roots with the most work behind them (as a list schedule
    /// starts), not to whichever a worker happened to pop first.
    /// </summary>
    private void SeedRootsByRank(double[] ranks)
    {
        var roots = new List<int>();
        for (int i = 0; i < Graph.Count; i++)
            if (Tasks.Pending[i] == 0) roots.Add(i);
        roots.Sort((a, b) => ranks[b].CompareTo(ranks[a]) is var c && c != 0 ? c : a.CompareTo(b));
        foreach (int i in roots)
        {
            _onReleased?.TaskReleased(i);
            EnqueueShared(i, Graph.PriorityByte(i));
        }
        _rootCursor.Value = Graph.Count;
    }

    /// <summary>Claims the next chunk of task indices to scan for roots; false when none are left.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private bool TryClaimRoots(out int start, out int end)
    {
        int n = Graph.Count;
        if (Volatile.Read(ref _rootCursor.Value) >= n)
        {
            start = end = 0;
            return false;
        }
        long claimed = Interlocked.Add(ref _rootCursor.Value, RootChunk) - RootChunk;
        start = (int)Math.Min(claimed, n);
        end = (int)Math.Min(claimed + RootChunk, n);
        return start < end;
    }

    /// <summary>Queues a ready task. <paramref name="w"/> is the current worker, or null off the workers.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void Enqueue(Worker? w, int node)
    {
        byte p = Graph.PriorityByte(node);
        if (p == (byte)TaskPriority.Normal)
        {
            if (w is not null) w.Deque.Push(node);
            else _injected.Enqueue(node);
        }
        else EnqueueShared(node, p);
        _notifier.NotifyOne();
    }

    private void EnqueueShared(int node, byte p)
    {
        switch ((TaskPriority)p)
        {
            case TaskPriority.Low: _low.Enqueue(node); break;
            case TaskPriority.Normal: _injected.Enqueue(node); break;
            case TaskPriority.High: _high.Enqueue(node); Interlocked.Increment(ref _urgentCount.Value); break;
            default: _critical.Enqueue(node); Interlocked.Increment(ref _urgentCount.Value); break;
        }
    }

    /// <summary>Next task for <paramref name="w"/>: urgent shared, own deque, released elsewhere, stolen, low; or <see cref="AttemptHost.NoTask"/>.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    private int TryTake(Worker w)
    {
        int node;
        if (Volatile.Read(ref _urgentCount.Value) > 0)
        {
            if (_critical.TryDequeue(out node) || _high.TryDequeue(out node))
            {
                Interlocked.Decrement(ref _urgentCount.Value);
                return node;
            }
        }
        if (w.Deque.TryPop(out node)) return node;
        if (_injected.TryDequeue(out node)) return node;
        var workers = _workers;
        for (int k = 1; k < workers.Length; k++)
        {
            int v = w.Id + k;
            if (v >= workers.Length) v -= workers.Length;
            if (workers[v].Deque.TrySteal(out node)) return node;
        }
        if (_low.TryDequeue(out node)) return node;
        return NoTask;
    }

    private readonly object _readyScan = new();
    private int _readyScanned, _rootsScanned, _rootTotal = -1;

    /// <summary>
    /// Tasks ready to run on the scheduler's workers and not started (queued, or roots the workers'
    /// scan has not reached yet), for gauges read now and then. Not exact while the run moves; the
    /// roots behind the scan are counted incrementally, so all calls of a run read the graph once.
    /// </summary>
    public long ReadyOnWorkers()
    {
        long queued = _injected.Count + _low.Count + Volatile.Read(ref _urgentCount.Value);
        foreach (var w in _workers) queued += w.Deque.Count;
        var inDegree = Graph.InDegree;
        int cursor = (int)Math.Min(Volatile.Read(ref _rootCursor.Value), Graph.Count);
        lock (_readyScan)
        {
            if (_rootTotal < 0) _rootTotal = inDegree.AsSpan().Count(0);
            for (int i = _readyScanned; i < cursor; i++)
                if (inDegree[i] == 0) _rootsScanned++;
            _readyScanned = Math.Max(_readyScanned, cursor);
            return queued + (_seedRootsByScan ? _rootTotal - _rootsScanned : 0);
        }
    }

    /// <summary>True when some queue may hold work or roots are left to scan (the re-check before sleeping).</summary>
    private bool MayHaveWork()
    {
        if (Volatile.Read(ref _rootCursor.Value) < Graph.Count) return true;
        if (Volatile.Read(ref _urgentCount.Value) > 0 || !_injected.IsEmpty || !_low.IsEmpty) return true;
        foreach (var w in _workers)
            if (w.Deque.Count > 0) return true;
        return false;
    }
}
