using System.Diagnostics;
using System.Globalization;

namespace TaskMesh.Engine.Store;

/// <summary>
/// The process that owns a run: the host, pid and start time it recorded in the run's row. A row
/// still <c>running</c> whose owner is gone (the pid is free, or now belongs to a process that
/// started at another time) was interrupted; one whose owner lives must not be resumed or
/// escalated by a second process. On another host the owner cannot be asked: its run is taken
/// as alive while its checkpoint (written every 250 ms while it runs) is fresher than
/// <see cref="StaleAfter"/>.
/// </summary>
public sealed record RunOwner(string Host, int Pid, string? Started)
{
    /// <summary>How old a run's last checkpoint may be before a run owned on another host counts as interrupted.</summary>
    public static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(2);

    /// <summary>This process.</summary>
    public static RunOwner Current { get; } = new(Environment.MachineName, Environment.ProcessId, StartOf(Environment.ProcessId));

    /// <summary>Whether the owner still runs: true, false, or null when it cannot be told from here (another host).</summary>
    public bool? IsAlive()
    {
        if (!string.Equals(Host, Environment.MachineName, StringComparison.Ordinal)) return null;
        var started = Pid == Environment.ProcessId ? Current.Started : StartOf(Pid);
        if (started is null) return false;
        return Started is null || Same(Started, started);
    }

    // Start times as two processes read them may differ by clock-tick rounding: within a second is the same process.
    private static bool Same(string a, string b)
        => DateTimeOffset.TryParse(a, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var x)
           && DateTimeOffset.TryParse(b, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var y)
           && Math.Abs((x - y).TotalSeconds) < 1;

    /// <summary>"pid 123 on host h".</summary>
    public override string ToString() => $"pid {Pid} on host {Graph.GraphLimits.Printable(Host)}";

    // A process's start in UTC: tells a live owner from a later process that got its pid.
    private static string? StartOf(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return new DateTimeOffset(p.StartTime.ToUniversalTime(), TimeSpan.Zero).ToString("O", CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception or NotSupportedException)
        {
            return null;   // no such process (or it ended while we asked)
        }
    }
}
