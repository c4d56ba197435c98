namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Tasks a run takes as already done (resuming a run from its store): they are not run; they end
/// as succeeded at once, hand their restored outputs along their data edges, and are counted as
/// restored in the run's record.
/// </summary>
public sealed class RestoredTasks
{
    private readonly ulong[] _bits;
    private readonly Dictionary<int, object?> _outputs = new();

    /// <summary>An empty set for a graph of <paramref name="taskCount"/> tasks.</summary>
    public RestoredTasks(int taskCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(taskCount);
        TaskCount = taskCount;
        _bits = new ulong[(taskCount + 63) / 64];
    }

    /// <summary>The graph's task count this set was made for.</summary>
    public int TaskCount { get; }

    /// <summary>How many tasks are restored.</summary>
    public int Count { get; private set; }

    /// <summary>Marks a task as done, with the output its data successors read.</summary>
    public void Add(int task, object? output = null)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)task, (uint)TaskCount, nameof(task));
        ref ulong word = ref _bits[task >> 6];
        ulong bit = 1UL << (task & 63);
        if ((word & bit) == 0) Count++;
        word |= bit;
        if (output is not null) _outputs[task] = output;
    }

    /// <summary>Takes a task out of the set (it runs again).</summary>
    public void Remove(int task)
    {
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual((uint)task, (uint)TaskCount, nameof(task));
        ref ulong word = ref _bits[task >> 6];
        ulong bit = 1UL << (task & 63);
        if ((word & bit) != 0) Count--;
        word &= ~bit;
        _outputs.Remove(task);
    }

    /// <summary>Whether <paramref name="task"/> is restored.</summary>
    public bool Contains(int task) => (_bits[task >> 6] & (1UL << (task & 63))) != 0;

    internal object? OutputOf(int task) => _outputs.GetValueOrDefault(task);
}
