using TaskMesh.Engine.Graph;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Caps how many tasks hold each resource pool. A task takes all of its pools at once or none
/// (so two tasks can never each hold half of what the other needs); a task that cannot is parked
/// in priority order and dispatched when a release makes room. Only tasks that declare
/// <c>uses</c> come here, so a lock is fine.
/// </summary>
internal sealed class ResourceGate
{
    private readonly int[] _capacity;
    private readonly Func<int, int[]> _poolsOf;
    private readonly Func<int, byte> _priorityOf;
    private readonly int[] _inUse;
    private readonly List<int> _parked = new();
    private readonly object _lock = new();

    /// <summary>The pools of a graph's run.</summary>
    public ResourceGate(TaskGraph graph) : this(graph.PoolCapacity, n => graph.PoolsOf![n]!, graph.PriorityByte) { }

    /// <summary>Pools of <paramref name="capacity"/>; a task's pools and priority by its index.</summary>
    public ResourceGate(int[] capacity, Func<int, int[]> poolsOf, Func<int, byte> priorityOf)
    {
        _capacity = capacity;
        _poolsOf = poolsOf;
        _priorityOf = priorityOf;
        _inUse = new int[capacity.Length];
    }

    /// <summary>Peak holders per pool seen during the run (for checks and reports).</summary>
    public int[] Peak { get; private set; } = [];

    public bool TryAcquireOrPark(int node)
    {
        lock (_lock)
        {
            if (TryAcquire(node)) return true;
            // Insert behind tasks of the same or higher priority: FIFO within a priority.
            byte p = _priorityOf(node);
            int at = _parked.Count;
            while (at > 0 && _priorityOf(_parked[at - 1]) < p) at--;
            _parked.Insert(at, node);
            return false;
        }
    }

    /// <summary>Releases the node's pools and returns the parked tasks that now hold theirs.</summary>
    public List<int>? Release(int node)
    {
        lock (_lock)
        {
            foreach (var pool in _poolsOf(node)) _inUse[pool]--;
            List<int>? admitted = null;
            for (int i = 0; i < _parked.Count; i++)
            {
                if (TryAcquire(_parked[i]))
                {
                    (admitted ??= new()).Add(_parked[i]);
                    _parked.RemoveAt(i--);
                }
            }
            return admitted;
        }
    }

    public int ParkedCount { get { lock (_lock) return _parked.Count; } }

    /// <summary>Takes a parked task out (it was cancelled before it got its pools); false when it is not parked.</summary>
    public bool Unpark(int node)
    {
        lock (_lock) return _parked.Remove(node);
    }

    private bool TryAcquire(int node)
    {
        var pools = _poolsOf(node);
        foreach (var pool in pools)
            if (_inUse[pool] >= _capacity[pool]) return false;
        if (Peak.Length == 0) Peak = new int[_inUse.Length];
        foreach (var pool in pools)
        {
            _inUse[pool]++;
            if (_inUse[pool] > Peak[pool]) Peak[pool] = _inUse[pool];
        }
        return true;
    }
}
