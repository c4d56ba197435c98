namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// <see cref="Environment.TickCount64"/> (milliseconds) kept in memory by a clock thread that
/// refreshes it every millisecond while some run needs it: workers time millions of tiny tasks
/// coarsely with a memory read (under a nanosecond) instead of a clock call (about 6 ns each,
/// measured here). The value lags the real clock by up to about a millisecond — more if the clock
/// thread is kept off the CPU — so a coarse duration may err short by that much.
/// </summary>
internal static class CoarseClock
{
    private static long s_now;
    private static int s_users;
    private static readonly object s_gate = new();
    private static Thread? s_thread;

    /// <summary>The last refreshed tick count (call <see cref="Acquire"/> first; never 0 then).</summary>
    public static long Now => Volatile.Read(ref s_now);

    /// <summary>Keeps the clock running until the matching <see cref="Release"/>.</summary>
    public static void Acquire()
    {
        lock (s_gate)
        {
            Volatile.Write(ref s_now, Environment.TickCount64);
            if (++s_users > 1) return;
            if (s_thread is null)
            {
                s_thread = new Thread(Tick) { IsBackground = true, Name = "TaskMesh coarse clock", Priority = ThreadPriority.AboveNormal };
                s_thread.Start();
            }
            else Monitor.PulseAll(s_gate);
        }
    }

    public static void Release()
    {
        lock (s_gate) s_users = Math.Max(0, s_users - 1);
    }

    private static void Tick()
    {
        while (true)
        {
            lock (s_gate)
                while (s_users == 0) Monitor.Wait(s_gate);   // parked between runs: no wake-ups at all
            Volatile.Write(ref s_now, Environment.TickCount64);
            Thread.Sleep(1);
        }
    }
}
