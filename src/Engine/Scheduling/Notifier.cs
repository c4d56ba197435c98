namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// An event count that puts idle workers to sleep without losing a wake-up (the two-phase
/// protocol of Taskflow's <c>notifier.hpp</c>):
/// <list type="number">
/// <item>a worker that found nothing calls <see cref="PrepareWait"/> (announces itself, full fence),</item>
/// <item>checks every queue once more, and then either <see cref="CancelWait"/>s (found work) or
/// <see cref="CommitWait"/>s (sleeps until the epoch moves);</item>
/// <item>a producer publishes its item, then calls <see cref="NotifyOne"/>, which fences and, only
/// if someone announced itself, bumps the epoch under the lock.</item>
/// </list>
/// Either the producer's fence orders its push before it reads the waiter count (and it wakes
/// the waiter), or the waiter's fence orders its announcement before its re-check (and it sees
/// the item): the Dekker pattern, so no item is left with every worker asleep.
/// </summary>
internal sealed class Notifier
{
    private readonly object _gate = new();
    private int _waiters;
    private int _epoch;

    /// <summary>Announces a wait; returns the epoch to hand to <see cref="CommitWait"/>.</summary>
    public int PrepareWait()
    {
        Interlocked.Increment(ref _waiters); // full fence: the announcement precedes the re-check
        return Volatile.Read(ref _epoch);
    }

    /// <summary>Withdraws an announced wait (the re-check found work).</summary>
    public void CancelWait() => Interlocked.Decrement(ref _waiters);

    /// <summary>Sleeps until a notification after <see cref="PrepareWait"/> returned <paramref name="epoch"/>.</summary>
    public void CommitWait(int epoch)
    {
        lock (_gate)
        {
            while (Volatile.Read(ref _epoch) == epoch) Monitor.Wait(_gate);
        }
        Interlocked.Decrement(ref _waiters);
    }

    /// <summary>Wakes one sleeping worker, if any announced a wait. Call after publishing the work.</summary>
    public void NotifyOne()
    {
        Interlocked.MemoryBarrier(); // the published item precedes the read of the waiter count
        if (Volatile.Read(ref _waiters) == 0) return;
        lock (_gate)
        {
            _epoch++;
            Monitor.Pulse(_gate);
        }
    }

    /// <summary>Wakes every sleeping worker (stop, cancellation).</summary>
    public void NotifyAll()
    {
        lock (_gate)
        {
            _epoch++;
            Monitor.PulseAll(_gate);
        }
    }
}
