namespace TaskMesh.Engine.Configuration;

/// <summary>How the cluster layer picks a worker for the next batch.</summary>
public static class ClusterStrategies
{
    /// <summary>Workers in turn.</summary>
    public const string RoundRobin = "round_robin";

    /// <summary>The worker with the fewest attempts outstanding per slot.</summary>
    public const string LeastOutstanding = "least_outstanding";

    /// <summary>A circuit to the worker with the most memory left for state vectors; other tasks as <see cref="LeastOutstanding"/>.</summary>
    public const string ResourceAware = "resource_aware";

    public static readonly IReadOnlyList<string> All = [RoundRobin, LeastOutstanding, ResourceAware];
}

/// <summary>
/// The cluster's settings (<c>[cluster]</c> in the config): where the coordinator's silo listens,
/// how work is batched and spread, and how fast a lost worker is declared dead. The failure
/// detector's defaults suit a LAN (a dead or frozen worker is declared dead in about a second);
/// on a network with long pauses, or processes with long GC pauses, raise <see cref="ProbeTimeout"/>
/// and <see cref="MissedProbes"/>: a worker wrongly declared dead is killed and its tasks run again elsewhere.
/// </summary>
public sealed record ClusterSettings
{
    /// <summary><c>taskmesh serve</c> is a cluster coordinator too (default false; <c>--cluster-port</c> says so as well).</summary>
    public bool Enabled { get; init; }

    /// <summary>The address the silo advertises and listens on (default 127.0.0.1: this machine only).</summary>
    public string Host { get; init; } = "127.0.0.1";

    /// <summary>The silo's port (silo-to-silo traffic); 0 picks a free one.</summary>
    public int Port { get; init; } = 11111;

    /// <summary>
    /// Where the member list lives: null (the default) keeps it in the coordinator's silo (development
    /// clustering: one machine, or workers that all reach the coordinator);
    /// <c>postgresql://user:password@host:port/database</c> keeps it in PostgreSQL, <c>redis://[:password@]host:port[/database]</c>
    /// in Redis — a server every silo reaches.
    /// </summary>
    public string? Membership { get; init; }

    /// <summary>The Orleans cluster's id: silos of other clusters on the same membership are not seen.</summary>
    public string ClusterId { get; init; } = "taskmesh";

    /// <summary>See <see cref="ClusterStrategies"/>.</summary>
    public string Strategy { get; init; } = ClusterStrategies.LeastOutstanding;

    /// <summary>Most attempts in one grain call, either way.</summary>
    public int BatchSize { get; init; } = 512;

    /// <summary>Attempts a worker may hold beyond its slots (credit flow control: a slow worker is not flooded).</summary>
    public int Prefetch { get; init; } = 64;

    /// <summary>A task in flight on this many workers that died fails as poison.</summary>
    public int PoisonLimit { get; init; } = 3;

    /// <summary>With no worker left, the layer's attempts run on <c>local</c> (false: they wait for a worker).</summary>
    public bool FallbackToLocal { get; init; } = true;

    /// <summary>How long a probe of a silo may take before it counts as missed.</summary>
    public TimeSpan ProbeTimeout { get; init; } = TimeSpan.FromMilliseconds(400);

    /// <summary>Missed probes before a silo is suspected.</summary>
    public int MissedProbes { get; init; } = 2;

    /// <summary>Silos that must suspect a silo before it is declared dead (at most the silos there are).</summary>
    public int VotesForDeath { get; init; } = 2;

    /// <summary>Orleans' own log lines from Information up (false, the default: its warnings and errors only).</summary>
    public bool Verbose { get; init; }

    /// <summary>
    /// The cluster's certificate (a PEM file, with <see cref="TlsKey"/>; a relative path in a config
    /// file is the config file's neighbour): every silo-to-silo connection
    /// speaks mutual TLS, and a silo that does not present this same certificate cannot connect or
    /// join — the coordinator and every worker are given it. Null (the default): plain TCP, which
    /// anyone who reaches a silo's port may speak.
    /// </summary>
    public string? TlsCertificate { get; init; }

    /// <summary>The PEM private key of <see cref="TlsCertificate"/>.</summary>
    public string? TlsKey { get; init; }

    /// <summary>True when silos speak mutual TLS (<see cref="TlsCertificate"/>).</summary>
    public bool Tls => TlsCertificate is not null;

    /// <summary>True when <paramref name="url"/> names a membership TaskMesh keeps: PostgreSQL or Redis.</summary>
    public static bool IsMembershipUrl(string url)
        => url.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase)
        || url.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) || url.StartsWith("rediss://", StringComparison.OrdinalIgnoreCase);

    /// <summary>Every problem with the settings (empty: none).</summary>
    public IReadOnlyList<string> Problems()
    {
        var p = new List<string>();
        if (!System.Net.IPAddress.TryParse(Host, out var ip)) p.Add($"cluster.host must be an IP address, got '{Host}'");
        else if (ip.Equals(System.Net.IPAddress.Any) || ip.Equals(System.Net.IPAddress.IPv6Any))
            p.Add($"cluster.host must be an address the other silos can reach (it is advertised to them), not '{Host}'");
        if (Port is < 0 or > 65_535) p.Add($"cluster.port must be 0–65535, got {Port}");
        if (!ClusterStrategies.All.Contains(Strategy)) p.Add($"cluster.strategy must be one of {string.Join(", ", ClusterStrategies.All)}, got '{Strategy}'");
        if (BatchSize is < 1 or > 65_536) p.Add($"cluster.batch_size must be 1–65536, got {BatchSize}");
        if (Prefetch is < 0 or > 1_000_000) p.Add($"cluster.prefetch must be 0–1000000, got {Prefetch}");
        if (PoisonLimit is < 1 or > 100) p.Add($"cluster.poison_limit must be 1–100, got {PoisonLimit}");
        if (ProbeTimeout < TimeSpan.FromMilliseconds(50) || ProbeTimeout > TimeSpan.FromMinutes(5)) p.Add($"cluster.probe_timeout_ms must be 50–300000, got {ProbeTimeout.TotalMilliseconds}");
        if (MissedProbes is < 1 or > 100) p.Add($"cluster.missed_probes must be 1–100, got {MissedProbes}");
        if (VotesForDeath is < 1 or > 100) p.Add($"cluster.votes_for_death must be 1–100, got {VotesForDeath}");
        if (string.IsNullOrWhiteSpace(ClusterId)) p.Add("cluster.cluster_id must not be empty");
        if ((TlsCertificate is null) != (TlsKey is null)) p.Add("cluster.tls_certificate and cluster.tls_key go together (--tls-cert and --tls-key)");
        if (Membership is { } m && !IsMembershipUrl(m))
            p.Add($"cluster.membership must be a postgresql://user:password@host:port/database or redis://[:password@]host:port[/database] URL, got '{(m.Contains('@') ? "…" + m[m.IndexOf('@')..] : m)}'");
        return p;
    }
}
