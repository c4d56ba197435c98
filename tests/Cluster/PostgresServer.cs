using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace TaskMesh.Tests.Cluster;

/// <summary>
/// A throwaway PostgreSQL server (Debian's <c>postgresql</c>, which scripts/test.sh installs) on a
/// free port of 127.0.0.1, run as the <c>postgres</c> user from a fresh data folder; stopped and
/// deleted when disposed.
/// </summary>
internal sealed class PostgresServer : IAsyncDisposable
{
    private readonly string _bin;
    private readonly string _dir;

    private PostgresServer(string bin, string dir, int port) => (_bin, _dir, Port) = (bin, dir, port);

    public int Port { get; }

    /// <summary>The membership URL of its <c>postgres</c> database, as user <c>taskmesh</c> (trusted on loopback).</summary>
    public string Url => $"postgresql://taskmesh@{Address}:{Port}/postgres";

    /// <summary>Listens on 127.0.0.1 (default), or on <paramref name="address"/> inside network namespace <paramref name="netns"/>, trusting <paramref name="subnet"/>.</summary>
    public static async Task<PostgresServer> StartAsync(string address = "127.0.0.1", string? netns = null, string? subnet = null)
    {
        var bin = Directory.Exists("/usr/lib/postgresql")
            ? Directory.GetDirectories("/usr/lib/postgresql").Select(d => Path.Combine(d, "bin")).Where(b => File.Exists(Path.Combine(b, "pg_ctl"))).OrderDescending().FirstOrDefault()
            : null;
        if (bin is null) throw new InvalidOperationException("PostgreSQL is not installed (Debian's postgresql; scripts/test.sh installs it)");
        var dir = Directory.CreateTempSubdirectory("taskmesh-pg-").FullName;
        int port;
        using (var l = new TcpListener(IPAddress.Loopback, 0))
        {
            l.Start();
            port = ((IPEndPoint)l.LocalEndpoint).Port;
        }
        var server = new PostgresServer(bin, dir, port) { _netns = netns, Address = address };
        await RunAsync("chown", "-R", "postgres", dir);
        await server.AsPostgresAsync(Path.Combine(bin, "initdb"), "-D", Path.Combine(dir, "data"), "-A", "trust", "-U", "taskmesh", "--no-sync");
        if (subnet is not null) File.AppendAllText(Path.Combine(dir, "data", "pg_hba.conf"), $"host all all {subnet} trust\n");
        await server.AsPostgresAsync(Path.Combine(bin, "pg_ctl"), "-D", Path.Combine(dir, "data"), "-l", Path.Combine(dir, "log"), "-w", "-t", "60",
            "-o", $"-p {port} -k {dir} -c listen_addresses={address} -c fsync=off", "start");
        return server;
    }

    private string? _netns;

    /// <summary>The address it listens on.</summary>
    public string Address { get; private init; } = "127.0.0.1";

    private Task AsPostgresAsync(params string[] args)
        => _netns is null ? RunAsync("runuser", ["-u", "postgres", "--", .. args]) : RunAsync("ip", ["netns", "exec", _netns, "runuser", "-u", "postgres", "--", .. args]);

    internal static async Task RunAsync(string program, params string[] args)
    {
        var psi = new ProcessStartInfo(program) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var output = p.StandardOutput.ReadToEndAsync();
        var errors = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(90));
        await p.WaitForExitAsync(cts.Token);
        if (p.ExitCode != 0) throw new InvalidOperationException($"{program} {string.Join(' ', args)}: exit {p.ExitCode}: {await output}{await errors}");
    }

    public async ValueTask DisposeAsync()
    {
        try { await AsPostgresAsync(Path.Combine(_bin, "pg_ctl"), "-D", Path.Combine(_dir, "data"), "-m", "immediate", "-w", "stop"); }
        catch (InvalidOperationException) { }
        Directory.Delete(_dir, recursive: true);
    }
}
