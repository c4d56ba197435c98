using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Cluster;
using TaskMesh.Hosting;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh worker --join HOST:PORT [--slots N] [--host IP] [--port P] [--tls-cert F --tls-key F] [--config F] [--verbose]</c>:
/// this process as a worker silo of a coordinator's cluster, running the attempts it sends until
/// SIGTERM (then it drains) or until the coordinator is gone.
/// </summary>
internal static class WorkerCommand
{
    public static Command Create(CliIO io)
    {
        var join = new Option<string>("--join") { Description = "The coordinator's cluster address (taskmesh serve or taskmesh run --workers logs it).", HelpName = "HOST:PORT", Required = true };
        var slots = CliOptions.Int("--slots", 1, 100_000, "Tasks this worker runs at once (default: its cores).", "N");
        var host = new Option<string?>("--host") { Description = "The address this worker's silo advertises and listens on (default: cluster.host, 127.0.0.1).", HelpName = "IP" };
        var port = CliOptions.Int("--port", 0, 65_535, "This worker's silo port (default 0: a free one).", "PORT");
        var config = CliOptions.Config();
        var verbose = new Option<bool>("--verbose") { Description = "Show Orleans' own log lines from Information up (default: warnings)." };
        var tlsCert = new Option<string?>("--tls-cert") { Description = "The cluster's certificate (PEM): silos speak mutual TLS and accept only it (default: cluster.tls_certificate).", HelpName = "FILE" };
        var tlsKey = new Option<string?>("--tls-key") { Description = "The PEM private key of --tls-cert (default: cluster.tls_key).", HelpName = "FILE" };
        var command = new Command("worker", "Join a coordinator's cluster as a worker and run the tasks it sends; SIGTERM drains.")
        {
            join, slots, host, port, tlsCert, tlsKey, config, verbose,
        };
        command.SetAction((parse, ct) => RunAsync(io, parse.GetValue(join)!, parse.GetValue(slots), parse.GetValue(host), parse.GetValue(port),
            parse.GetValue(tlsCert), parse.GetValue(tlsKey), parse.GetValue(config), parse.GetValue(verbose)));
        return command;
    }

    private static async Task<int> RunAsync(CliIO io, string joinText, int? slots, string? host, int? port, string? tlsCert, string? tlsKey, string? configPath, bool verbose)
    {
        System.Net.IPEndPoint join;
        try { join = Silos.ParseEndpoint(joinText); }
        catch (Exception ex) when (ex is FormatException or System.Net.Sockets.SocketException)
        {
            throw new UsageException($"--join must be HOST:PORT of a coordinator, got '{joinText}' ({ex.Message})");
        }
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        int n = slots ?? Environment.ProcessorCount;
        cfg.MaxParallelTasks = n;
        if (cfg.WorkerThreads > n) cfg.WorkerThreads = n;
        var settings = cfg.Cluster with
        {
            Host = host ?? cfg.Cluster.Host,
            Port = port ?? 0,
            Verbose = verbose || cfg.Cluster.Verbose,
        };
        if (tlsCert is not null || tlsKey is not null)
            settings = settings with
            {
                TlsCertificate = tlsCert is null ? settings.TlsCertificate : Path.GetFullPath(tlsCert),
                TlsKey = tlsKey is null ? settings.TlsKey : Path.GetFullPath(tlsKey),
            };
        if (settings.Problems() is { Count: > 0 } problems) throw new UsageException(string.Join("; ", problems));
        // On SIGTERM it drains: the attempts it holds are run and reported first.
        io.StopGrace.Value = ClusterWorker.DrainTimeout + TimeSpan.FromSeconds(15);

        using var logs = Logs.Create(io.LogFormat ?? cfg.LogFormat, io.LogLevel ?? cfg.LogLevel, settings.Verbose);
        var services = new ServiceCollection();
        services.AddSingleton(logs);
        services.AddTaskMesh(cfg);
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = RunCommand.Resolve(provider);
        try
        {
            return await ClusterWorker.RunAsync(runtime.Engine, join, settings, n, logs, ct: io.Token);
        }
        catch (ArgumentException ex) when (ex.Message.StartsWith("cluster.", StringComparison.Ordinal))
        {
            // The settings (their problems, the TLS files): said before any silo starts.
            throw new UsageException(ex.Message);
        }
    }
}
