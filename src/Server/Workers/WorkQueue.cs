namespace TaskMesh.Server.Workers;

/// <summary>
/// The attempts waiting for external workers, by handler, and the leases granted: a worker takes
/// at most its free slots (its credits); a lease ends with the worker's result, or goes back to
/// the front of its queue when its worker leaves (its connection closed, or silent past the lease
/// time) — so an attempt is never lost, and a late result of a lease that went back is dropped,
/// never reported twice.
/// </summary>
internal sealed class WorkQueue
{
    private readonly object _lock = new();
    private readonly Dictionary<string, LinkedList<ExternalWork>> _waiting = new(StringComparer.Ordinal);
    private readonly Dictionary<long, (ExternalWork Work, WorkerSession Session)> _leased = [];
    private readonly List<WorkerSession> _sessions = [];
    private string[] _handlers = [];
    private long _nextLease;

    /// <summary>Every handler a worker (or the config) declared.</summary>
    public IReadOnlyList<string> Handlers => Volatile.Read(ref _handlers);

    public int Workers { get { lock (_lock) return _sessions.Count; } }

    public int Waiting { get { lock (_lock) return _waiting.Values.Sum(q => q.Count); } }

    public int Leased { get { lock (_lock) return _leased.Count; } }

    /// <summary>Most handlers workers may declare over the service's life (each stays registered).</summary>
    public const int MaxHandlers = 10_000;

    /// <summary>Adds a handler to those external workers serve (true when it is new).</summary>
    /// <exception cref="InvalidOperationException"><see cref="MaxHandlers"/> were declared already.</exception>
    public bool Declare(string handler)
    {
        lock (_lock)
        {
            if (_handlers.Contains(handler)) return false;
            if (_handlers.Length >= MaxHandlers) throw new InvalidOperationException($"workers have declared {MaxHandlers:N0} handlers, the most this service takes");
            Volatile.Write(ref _handlers, [.. _handlers, handler]);
            return true;
        }
    }

    /// <summary>Queues attempts (skipping any the engine ended meanwhile), under one lock, and rings the workers that serve them.</summary>
    public void Enqueue(ReadOnlySpan<ExternalWork> works)
    {
        lock (_lock)
        {
            string? last = null;
            LinkedList<ExternalWork>? q = null;
            foreach (var work in works)
            {
                if (work.IsDone) continue;
                if (work.Handler != last)
                {
                    if (!_waiting.TryGetValue(work.Handler, out q)) _waiting[work.Handler] = q = new LinkedList<ExternalWork>();
                    last = work.Handler;
                    // Ringing is a semaphore release at most: done under the lock, with no list made per attempt.
                    foreach (var s in _sessions)
                        if (s.Serves(work.Handler)) s.Ring();
                }
                q!.AddLast(work);
            }
        }
    }

    /// <summary>The engine ended the attempt (its timeout, its run's or its task's cancellation): taken out of its queue or its lease, and ended.</summary>
    public void Cancel(ExternalWork work)
    {
        WorkerSession? freed = null;
        lock (_lock)
        {
            if (work.Lease == 0) _waiting.GetValueOrDefault(work.Handler)?.Remove(work);
            else if (_leased.Remove(work.Lease, out var held))
            {
                freed = held.Session;
                freed.Outstanding--;
            }
            work.Lease = 0;
        }
        work.TryCancel();
        freed?.Ring();
    }

    public void Attach(WorkerSession session)
    {
        lock (_lock) _sessions.Add(session);
        session.Ring();
    }

    /// <summary>A worker left: its leases go back to the front of their queues, for the others.</summary>
    public int Detach(WorkerSession session)
    {
        List<ExternalWork> back = [];
        HashSet<string> handlers = new(StringComparer.Ordinal);
        WorkerSession[] ring;
        lock (_lock)
        {
            _sessions.Remove(session);
            foreach (var (lease, held) in _leased.Where(kv => kv.Value.Session == session).ToList())
            {
                _leased.Remove(lease);
                held.Work.Lease = 0;
                if (held.Work.IsDone) continue;
                back.Add(held.Work);
                handlers.Add(held.Work.Handler);
            }
            // Back to the front, in the order they were granted.
            foreach (var w in back.AsEnumerable().Reverse())
            {
                if (!_waiting.TryGetValue(w.Handler, out var q)) _waiting[w.Handler] = q = new LinkedList<ExternalWork>();
                q.AddFirst(w);
            }
            session.Outstanding = 0;
            ring = _sessions.Where(s => handlers.Any(s.Serves)).ToArray();
        }
        foreach (var s in ring) s.Ring();
        return back.Count;
    }

    /// <summary>Grants <paramref name="session"/> up to its free slots of waiting attempts of its handlers (oldest first, handlers in turn).</summary>
    public List<(long Lease, ExternalWork Work)> Lease(WorkerSession session)
    {
        var granted = new List<(long, ExternalWork)>();
        lock (_lock)
        {
            // A worker that left (its connection's pusher may not know yet) is granted nothing: a
            // lease to it would be held by no one, and its task never end.
            if (!_sessions.Contains(session)) return granted;
            int free = session.Slots - session.Outstanding;
            bool any = true;
            while (free > 0 && any)
            {
                any = false;
                var handlers = session.Handlers;
                for (int k = 0; k < handlers.Count; k++)   // (by index: no enumerator boxed on every grant)
                {
                    if (free == 0) break;
                    string h = handlers[k];
                    if (!_waiting.TryGetValue(h, out var q) || q.First is not { } node) continue;
                    q.RemoveFirst();
                    var w = node.Value;
                    if (w.IsDone) { any = true; continue; }
                    w.Lease = ++_nextLease;
                    _leased[w.Lease] = (w, session);
                    session.Outstanding++;
                    granted.Add((w.Lease, w));
                    free--;
                    any = true;
                }
            }
        }
        return granted;
    }

    /// <summary>A worker's result for <paramref name="lease"/>: taken when the lease is still its own (false: dropped — it went back or ended).</summary>
    public bool Complete(WorkerSession session, long lease, WorkResult result)
    {
        ExternalWork work;
        lock (_lock)
        {
            if (!_leased.TryGetValue(lease, out var held) || held.Session != session) return false;
            _leased.Remove(lease);
            session.Outstanding--;
            held.Work.Lease = 0;
            work = held.Work;
        }
        session.Ring();
        return work.TryComplete(result);
    }
}

/// <summary>A connected worker: the handlers it serves, its slots, its leases out, and a doorbell rung when there may be work for it.</summary>
internal sealed class WorkerSession(string id, IReadOnlyList<string> handlers, int slots)
{
    private readonly SemaphoreSlim _doorbell = new(0, 1);

    public string Id { get; } = id;
    public IReadOnlyList<string> Handlers { get; } = handlers;
    public int Slots { get; } = slots;

    /// <summary>Leases granted and not ended (guarded by the queue's lock).</summary>
    public int Outstanding { get; set; }

    public bool Serves(string handler) => Handlers.Contains(handler);

    public void Ring()
    {
        try { if (_doorbell.CurrentCount == 0) _doorbell.Release(); }
        catch (SemaphoreFullException) { }
        catch (ObjectDisposedException) { }
    }

    public Task WaitAsync(TimeSpan timeout, CancellationToken ct) => _doorbell.WaitAsync(timeout, ct);
}
