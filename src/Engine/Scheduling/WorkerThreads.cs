using System.Collections.Concurrent;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Scheduler threads kept between runs: a run takes parked threads (or starts new ones) for its
/// workers and gives them back when its loops end, so a run of ten tasks does not pay for creating
/// two OS threads. A thread parked for <see cref="IdleTimeout"/> exits.
/// </summary>
internal static class WorkerThreads
{
    /// <summary>How long a parked thread waits for another run before it exits.</summary>
    public static readonly TimeSpan IdleTimeout = TimeSpan.FromSeconds(30);

    private static readonly ConcurrentStack<Parked> s_idle = new();

    /// <summary>
    /// Runs <paramref name="work"/> on a scheduler thread, in the caller's execution context (its
    /// async-locals and current activity flow to the work, as with a thread started for it; a
    /// parked thread does not carry the context of the run it served before).
    /// </summary>
    public static void Run(Action<object?> work, object? state)
    {
        var context = ExecutionContext.Capture();
        while (s_idle.TryPop(out var parked))
            if (parked.TryAssign(work, state, context)) return;
        var fresh = new Parked();
        fresh.TryAssign(work, state, context);
        var thread = new Thread(static p => ((Parked)p!).Loop())
        {
            IsBackground = true,
            Name = "taskmesh-worker",
        };
        thread.UnsafeStart(fresh);
    }

    private sealed class Parked
    {
        private const int Idle = 0, Assigned = 1, Exited = 2;
        private readonly SemaphoreSlim _go = new(0);
        private int _state = Idle;
        private Action<object?>? _work;
        private object? _argument;
        private ExecutionContext? _context;

        public bool TryAssign(Action<object?> work, object? state, ExecutionContext? context)
        {
            if (Interlocked.CompareExchange(ref _state, Assigned, Idle) != Idle) return false;
            _work = work;
            _argument = state;
            _context = context;
            _go.Release();
            return true;
        }

        public void Loop()
        {
            while (true)
            {
                if (!_go.Wait(IdleTimeout))
                {
                    // Nobody came: leave, unless a run claimed this thread at the last moment.
                    if (Interlocked.CompareExchange(ref _state, Exited, Idle) == Idle) return;
                    _go.Wait();
                }
                var (work, state, context) = (_work!, _argument, _context);
                _work = null;
                _argument = null;
                _context = null;
                try
                {
                    if (context is null) work(state);
                    else ExecutionContext.Run(context, static s => { var (w, a) = ((Action<object?>, object?))s!; w(a); }, (work, state));
                }
                catch { /* the work reports its own faults; a thread must survive to be reused */ }
                Volatile.Write(ref _state, Idle);
                s_idle.Push(this);
            }
        }
    }
}
