using System.CommandLine;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Hosting;
using TaskMesh.Server;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh dashboard [--port P] [--host H] [--store FILE|URL] [--config F] [--token-key-file F]</c>:
/// the web dashboard over a run store's history, with nothing running — the store opened for
/// reading only, every change through the API refused, no socket protocol; until Ctrl+C or SIGTERM.
/// </summary>
internal static class DashboardCommand
{
    public static Command Create(CliIO io)
    {
        var config = CliOptions.Config();
        var store = StoreInput.StoreOption();
        var host = new Option<string?>("--host") { Description = "The address to listen on (default: api.host, 127.0.0.1 — this machine only).", HelpName = "IP" };
        var port = CliOptions.Int("--port", 0, 65_535, "The dashboard's HTTP port (default: api.http_port, 8080; 0: a free port).", "PORT");
        var insecure = new Option<bool>("--insecure") { Description = "Allow an address other machines can reach without TLS." };
        var tokenKey = new Option<string?>("--token-key-file") { Description = "Require tokens signed with this key (default: api.token_key_file): a viewer's token reads.", HelpName = "FILE" };
        var command = new Command("dashboard", "Browse the run store's history in the web dashboard (read-only; nothing runs).")
        {
            config, store, host, port, insecure, tokenKey,
        };
        command.SetAction((parse, ct) => RunAsync(io, parse.GetValue(config), parse.GetValue(store), parse.GetValue(host), parse.GetValue(port),
            parse.GetValue(insecure), parse.GetValue(tokenKey)));
        return command;
    }

    private static async Task<int> RunAsync(CliIO io, string? configPath, string? storeOption, string? host, int? port, bool insecure, string? tokenKey)
    {
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        string path = StoreInput.PathOf(storeOption, cfg);
        // The config's service settings; no socket protocol, nothing changes.
        var options = ServerSettings.FromConfig(cfg, configPath);
        options.Host = host ?? options.Host;
        options.HttpPort = port ?? options.HttpPort;
        options.SocketPort = null;
        options.ReadOnly = true;
        options.Insecure = insecure;
        options.TokenKeyFile = tokenKey ?? options.TokenKeyFile;
        if (options.Problems() is { Count: > 0 } problems) throw new UsageException(string.Join("; ", problems));

        using var logs = Logs.Create(io.LogFormat ?? cfg.LogFormat, io.LogLevel ?? cfg.LogLevel, cfg.Cluster.Verbose);
        var services = new ServiceCollection();
        services.AddSingleton(logs);
        // The store read-only: nothing this process does changes it (a missing store is exit 2).
        services.AddTaskMesh(cfg).AddRunStore(path, readOnly: true);
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = RunCommand.Resolve(provider);
        TaskMeshServer server;
        try
        {
            server = await TaskMeshServer.StartAsync(runtime, options, logs, io.Token);
        }
        catch (Exception ex) when (ex is IOException or ArgumentException)
        {
            throw new UsageException(ex.Message);
        }
        await using (server)
        {
            io.Out.WriteLine($"dashboard of the run store {runtime.Store!.Path} at {server.HttpAddress} (read-only: nothing runs; Ctrl+C stops it)");
            io.Out.WriteLine(options.TokenKeyFile is null ? "requests are not authenticated (pass --token-key-file to require tokens)" : $"tokens required (signed with {options.TokenKeyFile})");
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
