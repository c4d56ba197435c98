using System.Net;

namespace TaskMesh.Server;

/// <summary>
/// Settings of <c>taskmesh serve</c> (the config's <c>[api]</c> section, then the command line):
/// where it listens, what a request may carry, how long a shutdown waits for runs to finish.
/// </summary>
public sealed class ServerOptions
{
    /// <summary>
    /// The cluster coordinator the service also is (<c>--cluster-port</c>), or null: its silo starts and
    /// stops with the service's host, its workers are served at <c>/api/workers</c> and in the metrics.
    /// </summary>
    public Cluster.ClusterCoordinator? Cluster { get; set; }

    /// <summary>The address the HTTP API listens on (default 127.0.0.1: this machine only).</summary>
    public string Host { get; set; } = "127.0.0.1";

    /// <summary>The HTTP API's port (0: a free one, see <see cref="TaskMeshServer.HttpAddress"/>).</summary>
    public int HttpPort { get; set; } = DefaultHttpPort;

    /// <summary>The default of <see cref="HttpPort"/>.</summary>
    public const int DefaultHttpPort = 8080;

    /// <summary>The MessagePack socket protocol's port (docs/protocol.md; 0: a free one), or null for none.</summary>
    public int? SocketPort { get; set; } = DefaultSocketPort;

    /// <summary>The default of <see cref="SocketPort"/>.</summary>
    public const int DefaultSocketPort = 7400;

    /// <summary>The largest socket frame taken, in bytes; a longer length prefix closes the connection before anything is allocated.</summary>
    public int MaxFrameBytes { get; set; } = 4 << 20;

    /// <summary>How long a socket client has to send its hello before it is closed.</summary>
    public TimeSpan HandshakeTimeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Most socket connections at once; more are closed as they come.</summary>
    public int MaxConnections { get; set; } = 1_024;

    /// <summary>A PEM certificate (chain) file: with <see cref="TlsKeyFile"/>, both the HTTP API (https) and the socket protocol speak TLS.</summary>
    public string? TlsCertificateFile { get; set; }

    /// <summary>The PEM private key of <see cref="TlsCertificateFile"/>.</summary>
    public string? TlsKeyFile { get; set; }

    /// <summary>True when the service speaks TLS.</summary>
    public bool Tls => TlsCertificateFile is not null;

    /// <summary>
    /// Requests per second each caller (a token's subject; without tokens, a remote address) may
    /// make on the HTTP API, with bursts of twice that; past it: 429 with Retry-After. 0: no limit.
    /// </summary>
    public int RequestsPerSecond { get; set; } = 1_000;

    /// <summary>Handlers served by external workers, declared at start: graphs naming them are taken, and their tasks wait for a worker (<c>api.external_handlers</c>).</summary>
    public IReadOnlyList<string> ExternalHandlers { get; set; } = [];

    /// <summary>How long an external worker may stay silent (no result, no ping) before it is taken for gone and its leases go back to the queue.</summary>
    public TimeSpan LeaseTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Attempts the external layer takes at once (waiting for a worker or leased); more wait in the run.</summary>
    public int ExternalCapacity { get; set; } = 4_096;

    /// <summary>The external layer's price per second of a task (for cost and the router).</summary>
    public double ExternalPricePerSecond { get; set; }

    /// <summary>Allow listening on an address other than loopback without TLS (requests and tokens travel in clear text).</summary>
    public bool Insecure { get; set; }

    /// <summary>
    /// Browse the run store's history only (<c>taskmesh dashboard</c>): every change through the API
    /// (submit, cancel, escalate, rules, capacity, training) is refused with 405, and the socket
    /// protocol is not served. Default: false.
    /// </summary>
    public bool ReadOnly { get; set; }

    /// <summary>
    /// The key file bearer tokens are signed with (<see cref="Tokens"/>): with one, every request
    /// but <c>/health</c> needs a valid token whose role allows it (401 without, 403 beyond the
    /// role). Null: requests are not authenticated, and the service binds loopback only.
    /// </summary>
    public string? TokenKeyFile { get; set; }

    /// <summary>The largest request body taken (a graph, a task), in bytes; a larger one is refused with 413 before it is read.</summary>
    public long MaxRequestBytes { get; set; } = 16L << 20;

    /// <summary>How long a shutdown (SIGTERM) waits for runs that are going to finish before it cancels them.</summary>
    public TimeSpan DrainTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// The folder relative paths in submitted graphs resolve against (a circuit file, say); files
    /// outside it cannot be named. Default: the folder the service was started in.
    /// </summary>
    public string? GraphDirectory { get; set; }

    /// <summary>Finished runs kept in memory for the API, the newest (each with its tasks' details); older ones are read from the store, or forgotten without one.</summary>
    public int KeepFinishedRuns { get; set; } = 100;

    /// <summary>The longest a request may wait for a run or a task to end (<c>?wait=</c> seconds).</summary>
    public TimeSpan MaxWait { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Every problem with these settings, each naming the setting (empty when none).</summary>
    public IReadOnlyList<string> Problems()
    {
        var problems = new List<string>();
        if (!IPAddress.TryParse(Host, out var ip)) problems.Add($"host must be an IP address (127.0.0.1, ::1, 0.0.0.0, …), got '{Host}'");
        else if (!IPAddress.IsLoopback(ip) && !Insecure && !(Tls && TokenKeyFile is not null))
            problems.Add((Tls, TokenKeyFile is not null) switch
            {
                (false, false) => $"host {Host} is reachable from other machines, and requests are not authenticated and travel in clear text: bind a loopback address (127.0.0.1, ::1), give a token key and a TLS certificate, or pass --insecure",
                (false, true) => $"host {Host} is reachable from other machines, and tokens would travel in clear text: give a TLS certificate and key, bind a loopback address, or pass --insecure",
                _ => $"host {Host} is reachable from other machines, and requests are not authenticated: give a token key file, bind a loopback address, or pass --insecure",
            });
        if ((TlsCertificateFile is null) != (TlsKeyFile is null)) problems.Add("TLS needs both a certificate file and its key file");
        if (HttpPort is < 0 or > 65_535) problems.Add($"http port must be 0–65535, got {HttpPort}");
        if (SocketPort is < 0 or > 65_535) problems.Add($"socket port must be 0–65535, got {SocketPort}");
        if (SocketPort is int sp && sp != 0 && sp == HttpPort) problems.Add($"the socket and the HTTP API cannot share port {sp}");
        if (MaxFrameBytes is < 1024 or > 1 << 30) problems.Add($"max frame bytes must be 1024–1073741824, got {MaxFrameBytes}");
        if (HandshakeTimeout <= TimeSpan.Zero) problems.Add("handshake timeout must be positive");
        if (MaxConnections < 1) problems.Add($"max connections must be at least 1, got {MaxConnections}");
        if (LeaseTimeout <= TimeSpan.Zero) problems.Add("lease timeout must be positive");
        if (RequestsPerSecond < 0) problems.Add($"requests per second must not be negative, got {RequestsPerSecond}");
        if (ExternalCapacity < 1) problems.Add($"external capacity must be at least 1, got {ExternalCapacity}");
        if (!(ExternalPricePerSecond >= 0)) problems.Add("external price per second must not be negative");
        if (MaxRequestBytes < 1024) problems.Add($"max request bytes must be at least 1024, got {MaxRequestBytes}");
        if (DrainTimeout < TimeSpan.Zero) problems.Add("drain timeout must not be negative");
        if (KeepFinishedRuns < 0) problems.Add("keep finished runs must not be negative");
        if (MaxWait < TimeSpan.Zero) problems.Add("max wait must not be negative");
        return problems;
    }
}
