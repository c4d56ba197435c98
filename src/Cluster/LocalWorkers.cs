using System.Diagnostics;
using System.Net;
using System.Runtime.InteropServices;
using Microsoft.Extensions.Logging;

namespace TaskMesh.Cluster;

/// <summary>
/// Worker processes on this machine (<c>taskmesh run --workers N</c>, the embedded cluster): each
/// runs <c>taskmesh worker --join</c> the coordinator, and is stopped with the coordinator — asked
/// to drain first (SIGTERM), killed when it does not exit in time.
/// </summary>
public sealed partial class LocalWorkers : IAsyncDisposable
{
    private readonly List<Process> _processes = new();
    private readonly ILogger _log;

    private LocalWorkers(ILogger log) => _log = log;

    /// <summary>The workers' process ids.</summary>
    public IReadOnlyList<int> ProcessIds => _processes.Select(p => p.Id).ToList();

    /// <summary>
    /// Starts <paramref name="count"/> workers joining <paramref name="join"/>, each with
    /// <paramref name="slots"/> slots; <paramref name="command"/> is how to run taskmesh (default:
    /// this process's own program), <paramref name="extraArgs"/> go after <c>worker</c>'s own.
    /// </summary>
    public static LocalWorkers Start(int count, IPEndPoint join, int slots, ILogger? log = null, IReadOnlyList<string>? command = null, IReadOnlyList<string>? extraArgs = null)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(count, 1);
        var workers = new LocalWorkers(log ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var program = command ?? ThisProgram();
        try
        {
            for (int i = 0; i < count; i++)
            {
                var psi = new ProcessStartInfo(program[0]) { UseShellExecute = false };
                foreach (var a in program.Skip(1)) psi.ArgumentList.Add(a);
                foreach (var a in new[] { "worker", "--join", join.ToString(), "--slots", slots.ToString(System.Globalization.CultureInfo.InvariantCulture), "--host", join.Address.ToString(), "--port", "0" })
                    psi.ArgumentList.Add(a);
                foreach (var a in extraArgs ?? []) psi.ArgumentList.Add(a);
                workers._processes.Add(Process.Start(psi) ?? throw new InvalidOperationException($"could not start {program[0]}"));
            }
        }
        catch
        {
            workers.DisposeAsync().AsTask().GetAwaiter().GetResult();
            throw;
        }
        return workers;
    }

    /// <summary>The command line that runs this program again: its apphost, or <c>dotnet</c> and its assembly.</summary>
    public static IReadOnlyList<string> ThisProgram()
    {
        var path = Environment.ProcessPath ?? throw new InvalidOperationException("this process's program is unknown");
        var name = Path.GetFileNameWithoutExtension(path);
        if (name == "dotnet")
        {
            var entry = System.Reflection.Assembly.GetEntryAssembly()?.Location;
            if (string.IsNullOrEmpty(entry)) throw new InvalidOperationException("this process's assembly is unknown");
            return [path, entry];
        }
        return [path];
    }

    /// <summary>Asks each worker to drain (SIGTERM), waits up to <paramref name="grace"/>, then kills what is left.</summary>
    public async Task StopAsync(TimeSpan grace)
    {
        foreach (var p in _processes)
            if (!HasExited(p)) _ = Kill(p.Id, SigTerm);
        var until = DateTime.UtcNow + grace;
        foreach (var p in _processes)
        {
            var left = until - DateTime.UtcNow;
            if (left > TimeSpan.Zero)
            {
                using var cts = new CancellationTokenSource(left);
                try { await p.WaitForExitAsync(cts.Token).ConfigureAwait(false); }
                catch (OperationCanceledException) { }
            }
            if (!HasExited(p))
            {
                _log.LogWarning("worker pid {Pid} did not exit after {Grace} s: killed", p.Id, grace.TotalSeconds);
                try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                await p.WaitForExitAsync().ConfigureAwait(false);
            }
        }
    }

    private static bool HasExited(Process p)
    {
        try { return p.HasExited; }
        catch (InvalidOperationException) { return true; }
    }

    public async ValueTask DisposeAsync()
    {
        await StopAsync(TimeSpan.FromSeconds(15)).ConfigureAwait(false);
        foreach (var p in _processes) p.Dispose();
        _processes.Clear();
    }

    private const int SigTerm = 15;

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int Kill(int pid, int signal);
}
