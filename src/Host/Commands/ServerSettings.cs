using TaskMesh.Engine.Configuration;
using TaskMesh.Server;

namespace TaskMesh.Host.Commands;

/// <summary>
/// The service's settings from the config's <c>[api]</c> table, one way for every command that
/// serves HTTP (<c>serve</c>, <c>dashboard</c>, <c>run --dashboard</c>): the address, the limits on
/// requests and frames, the token key and TLS files (relative paths against the config's folder).
/// Each command then sets what is its own (ports, read-only, the service's run settings).
/// </summary>
internal static class ServerSettings
{
    public static ServerOptions FromConfig(TaskMeshConfig cfg, string? configPath) => new()
    {
        Host = cfg.ApiHost,
        HttpPort = cfg.ApiHttpPort,
        SocketPort = cfg.ApiPort,
        MaxFrameBytes = cfg.ApiMaxFrameBytes,
        HandshakeTimeout = TimeSpan.FromSeconds(cfg.ApiHandshakeSeconds),
        DrainTimeout = TimeSpan.FromSeconds(cfg.ApiDrainSeconds),
        MaxRequestBytes = cfg.ApiMaxRequestBytes,
        RequestsPerSecond = cfg.ApiRequestsPerSecond,
        TokenKeyFile = cfg.ApiTokenKeyFile is { } k ? ResolveAgainstConfig(k, configPath) : null,
        TlsCertificateFile = cfg.ApiTlsCertificate is { } c ? ResolveAgainstConfig(c, configPath) : null,
        TlsKeyFile = cfg.ApiTlsKey is { } tk ? ResolveAgainstConfig(tk, configPath) : null,
    };

    /// <summary>A path from the config: as written when absolute (or without a config file), else against the config file's folder.</summary>
    public static string ResolveAgainstConfig(string path, string? configPath)
        => Path.IsPathRooted(path) || configPath is null ? Path.GetFullPath(path) : Path.GetFullPath(Path.Combine(Path.GetDirectoryName(Path.GetFullPath(configPath))!, path));
}
