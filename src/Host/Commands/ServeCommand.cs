using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Hosting;
using TaskMesh.Server;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh serve [--config F] [--store FILE] [--no-store] [--host H] [--http-port P] [--insecure]</c>:
/// TaskMesh as a service — graphs and single tasks submitted, watched and cancelled over the HTTP
/// API (docs/api.md), <c>/metrics</c>, <c>/health</c> and <c>/status</c> on the same port, the
/// composition root's store and learned router, until SIGTERM or Ctrl+C, which drain.
/// </summary>
internal static class ServeCommand
{
    public static Command Create(CliIO io)
    {
        var config = CliOptions.Config();
        var store = StoreInput.StoreOption();
        var noStore = StoreInput.NoStoreOption();
        var host = new Option<string?>("--host") { Description = "The address to listen on (default: api.host, 127.0.0.1 — this machine only).", HelpName = "IP" };
        var httpPort = CliOptions.Int("--http-port", 0, 65_535, "The HTTP API's port (default: api.http_port, 8080; 0: a free port).", "PORT");
        var port = CliOptions.Int("--port", 0, 65_535, "The MessagePack socket protocol's port (default: api.port, 7400; 0: a free port).", "PORT");
        var insecure = new Option<bool>("--insecure") { Description = "Allow an address other machines can reach without TLS." };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "A PEM certificate (chain): the HTTP API and the socket protocol speak TLS (default: api.tls_certificate).", HelpName = "FILE" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "The PEM private key of --tls-cert (default: api.tls_key).", HelpName = "FILE" };
        var clusterPort = CliOptions.Int("--cluster-port", 0, 65_535,
            "Be a cluster coordinator too: an Orleans silo on this port (0: a free one) that workers join (taskmesh worker --join HOST:PORT); default: cluster.port when cluster.enabled.", "PORT");
        var clusterHost = new Option<string?>("--cluster-host") { Description = "The address the coordinator's silo advertises to workers (default: cluster.host, 127.0.0.1 — workers on this machine only).", HelpName = "IP" };
        var tokenKey = new Option<string?>("--token-key-file") { Description = "Require bearer tokens signed with this key on every request but /health (default: api.token_key_file; taskmesh token key makes one).", HelpName = "FILE" };
        var command = new Command("serve", "Serve the HTTP API: submit graphs and tasks, watch and cancel runs, layers, health, metrics.")
        {
            config, store, noStore, host, httpPort, port, insecure, tokenKey, tlsCert, tlsKey, clusterPort, clusterHost,
        };
        command.SetAction((parse, ct) => RunAsync(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(noStore),
            parse.GetValue(host), parse.GetValue(httpPort), parse.GetValue(port), parse.GetValue(insecure), parse.GetValue(tokenKey),
            parse.GetValue(tlsCert), parse.GetValue(tlsKey), parse.GetValue(clusterPort), parse.GetValue(clusterHost)));
        return command;
    }

    private static async Task<int> RunAsync(CliIO io, string? configPath, string? storeOption, bool noStore, string? host, int? httpPort, int? port, bool insecure, string? tokenKey, string? tlsCert, string? tlsKey, int? clusterPort, string? clusterHost)
    {
        if (noStore && storeOption is not null) throw new UsageException("--store and --no-store exclude each other");
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        var options = ServerSettings.FromConfig(cfg, configPath);
        options.Host = host ?? options.Host;
        options.HttpPort = httpPort ?? options.HttpPort;
        options.SocketPort = port ?? options.SocketPort;
        options.Insecure = insecure;
        options.GraphDirectory = cfg.ApiGraphDirectory is { } dir ? ServerSettings.ResolveAgainstConfig(dir, configPath) : null;
        options.KeepFinishedRuns = cfg.ApiKeepFinishedRuns;
        options.ExternalHandlers = cfg.ApiExternalHandlers;
        options.TokenKeyFile = tokenKey ?? options.TokenKeyFile;
        options.TlsCertificateFile = tlsCert ?? options.TlsCertificateFile;
        options.TlsKeyFile = tlsKey ?? options.TlsKeyFile;
        if (options.Problems() is { Count: > 0 } problems) throw new UsageException(string.Join("; ", problems));
        // On SIGTERM the going runs get the drain, then the store is flushed: the process waits for that.
        io.StopGrace.Value = options.DrainTimeout + TimeSpan.FromSeconds(15);
        if (options.GraphDirectory is { } graphs && !Directory.Exists(graphs)) throw new UsageException($"api.graph_directory '{graphs}' is not a folder");
        bool storeOn = !noStore && (cfg.StoreEnabled || storeOption is not null);

        using var logs = Logs.Create(io.LogFormat ?? cfg.LogFormat, io.LogLevel ?? cfg.LogLevel, cfg.Cluster.Verbose);
        var services = new ServiceCollection();
        services.AddSingleton(logs);
        var taskmesh = services.AddTaskMesh(cfg).AddMetrics();
        if (storeOn) taskmesh.AddRunStore(StoreInput.PathOf(storeOption, cfg));
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = RunCommand.Resolve(provider);

        // The cluster coordinator: its layer in the engine before the standing run starts, its silo in the service's host.
        await using var coordinator = clusterPort is not null || clusterHost is not null || cfg.Cluster.Enabled ? StartCoordinator() : null;
        Cluster.ClusterCoordinator StartCoordinator()
        {
            try
            {
                var settings = cfg.Cluster with { Port = clusterPort ?? cfg.Cluster.Port, Host = clusterHost ?? cfg.Cluster.Host };
                var c = Cluster.ClusterCoordinator.Create(runtime.Engine, settings, logs);
                options.Cluster = c;
                return c;
            }
            catch (ArgumentException ex)
            {
                throw new UsageException(ex.Message);
            }
        }

        TaskMeshServer server;
        try
        {
            server = await TaskMeshServer.StartAsync(runtime, options, logs, io.Token);
        }
        catch (Exception ex) when (ex is IOException or ArgumentException)
        {
            throw new UsageException(ex.Message);
        }
        catch (Exception ex) when (coordinator is not null && ex is not OperationCanceledException)
        {
            // The silo did not start: its port is taken, its membership's database is out of reach, …
            throw new UsageException($"the cluster coordinator could not start at {coordinator.Endpoint}: {ex.GetType().Name}: {ex.Message}");
        }
        await using (server)
        {
            io.Out.WriteLine($"serving the HTTP API at {server.HttpAddress} (metrics at {server.HttpAddress}metrics); standing run {server.StandingRunId}"
                + (runtime.Store is { } s ? $"; store {s.Path}" : "; no store"));
            if (server.SocketEndpoint is { } socket) io.Out.WriteLine($"serving the socket protocol at {socket}");
            if (coordinator is not null) io.Out.WriteLine($"cluster coordinator at {coordinator.Endpoint}: workers join with taskmesh worker --join {coordinator.Endpoint}{(coordinator.Tls ? " (mutual TLS: with the cluster's certificate)" : "")}");
            io.Out.WriteLine(options.TokenKeyFile is null
                ? "requests are not authenticated (pass --token-key-file to require tokens)"
                : $"bearer tokens required (signed with {options.TokenKeyFile}); /health is open");
            if (options.Tls) io.Out.WriteLine($"TLS on both, with {options.TlsCertificateFile}");
            if (!System.Net.IPAddress.IsLoopback(System.Net.IPAddress.Parse(options.Host)) && !(options.Tls && options.TokenKeyFile is not null))
                io.Error.WriteLine(options.TokenKeyFile is null
                    ? $"taskmesh: warning: serving on {options.Host} without authentication (--insecure): anyone who reaches it may submit and cancel work"
                    : $"taskmesh: warning: serving on {options.Host} without TLS (--insecure): tokens travel in clear text");
            io.Out.Flush();
            try
            {
                await server.RunAsync(io.Token);
            }
            catch (OperationCanceledException) { }
            io.Out.WriteLine("stopped");
        }
        return ExitCodes.Ok;
    }
}
