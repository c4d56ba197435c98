using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Prometheus;
using TaskMesh.Hosting;

namespace TaskMesh.Server;

/// <summary>
/// <c>taskmesh serve</c>'s host: the application service behind the HTTP API on Kestrel, with
/// <c>/metrics</c>, <c>/health</c> and <c>/status</c>, on the Generic Host. Stopping it (or
/// SIGTERM to a process that runs it with <see cref="RunAsync"/>) drains: new work is refused,
/// going runs get <see cref="ServerOptions.DrainTimeout"/> to finish, then what is left is
/// cancelled and the store flushed.
/// </summary>
public sealed class TaskMeshServer : IAsyncDisposable
{
    private readonly WebApplication _app;
    private readonly TaskMeshService _service;

    private readonly Protocol.SocketServer? _socket;

    private TaskMeshServer(WebApplication app, TaskMeshService service, Uri address, Protocol.SocketServer? socket)
    {
        _app = app;
        _service = service;
        HttpAddress = address;
        _socket = socket;
    }

    /// <summary>Where the MessagePack socket protocol listens (the port bound when 0 was asked), or null when it is off.</summary>
    public IPEndPoint? SocketEndpoint => _socket?.Endpoint;

    /// <summary>Where the HTTP API listens, e.g. <c>http://127.0.0.1:8080/</c> (the port bound when 0 was asked).</summary>
    public Uri HttpAddress { get; }

    /// <summary>The standing open run's id (tasks submitted one at a time go there).</summary>
    public string StandingRunId => _service.Standing.RunId;

    internal TaskMeshService Service => _service;

    /// <summary>Shows a run started elsewhere in this process (with events on) in the dashboard and API, read-only.</summary>
    public void Watch(TaskMesh.Engine.RunHandle handle, TaskMesh.Engine.Graph.PreparedGraph graph, string? hash) => _service.Watch(handle, graph, hash);

    /// <summary>Starts the service over <paramref name="runtime"/> (the composition root's: engine, store, rules, router, metrics).</summary>
    /// <exception cref="ArgumentException">The options have problems (each named).</exception>
    /// <exception cref="IOException">The address cannot be bound.</exception>
    public static async Task<TaskMeshServer> StartAsync(TaskMeshRuntime runtime, ServerOptions options, ILoggerFactory? logs = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(runtime);
        ArgumentNullException.ThrowIfNull(options);
        if (options.Problems() is { Count: > 0 } problems) throw new ArgumentException(string.Join("; ", problems), nameof(options));
        var ip = IPAddress.Parse(options.Host);

        byte[]? key = null;
        if (options.TokenKeyFile is { } keyFile)
        {
            try { key = Tokens.LoadKey(keyFile); }
            catch (Exception ex) when (ex is IOException or InvalidDataException or UnauthorizedAccessException)
            {
                throw new ArgumentException($"token key file: {ex.Message}", nameof(options), ex);
            }
        }

        System.Security.Cryptography.X509Certificates.X509Certificate2? certificate = null;
        if (options.TlsCertificateFile is { } certFile && options.TlsKeyFile is { } keyPem)
        {
            try { certificate = Protocol.TlsCertificates.Load(certFile, keyPem); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException or ArgumentException)
            {
                throw new ArgumentException($"TLS certificate: {ex.Message}", nameof(options), ex);
            }
        }

        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, Args = [] });
        builder.Logging.ClearProviders();
        if (logs is not null) builder.Services.AddSingleton(logs);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = options.DrainTimeout + TimeSpan.FromSeconds(15));
        builder.WebHost.ConfigureKestrel(k =>
        {
            k.Listen(ip, options.HttpPort, listen =>
            {
                if (certificate is not null) listen.UseHttps(certificate);
            });
            k.AddServerHeader = false;
            k.Limits.MaxRequestBodySize = options.MaxRequestBytes;
            k.Limits.MaxRequestHeadersTotalSize = 32 * 1024;
            k.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
            k.Limits.MaxConcurrentConnections = 1024;
        });
        if (key is not null) Authentication.Add(builder.Services, key);
        Dashboard.Dashboard.AddServices(builder.Services);
        if (options.RequestsPerSecond > 0) RateLimits.Add(builder.Services, options.RequestsPerSecond);
        // The API's OpenAPI document (docs/openapi.json is this document, checked by a test); no
        // server address in it, so it is the same wherever the service listens.
        builder.Services.AddOpenApi(o => o.AddDocumentTransformer((document, _, _) =>
        {
            document.Servers?.Clear();
            document.Info.Title = "TaskMesh";
            document.Info.Version = "v1";
            document.Info.Description = "taskmesh serve: runs, single tasks, events, layers, metrics (docs/api.md)";
            return Task.CompletedTask;
        }));
        var service = new TaskMeshService(runtime, options, logs);
        builder.Services.AddSingleton(service);
        builder.Services.AddHostedService<DrainOnStop>();
        if (options.Cluster is { } cluster)
        {
            cluster.AddTo(builder);
            if (runtime.Metrics is { } m) cluster.AddMetrics(m.Registry);
        }

        var app = builder.Build();
        app.Use(HttpApi.HandleErrorsAsync);
        app.Use(CrossOrigin.Guard(tokensRequired: key is not null, loopback: IPAddress.IsLoopback(ip)));
        if (options.ReadOnly) app.Use(RefuseChangesAsync);
        if (key is not null)
        {
            app.UseAuthentication();
            app.UseAuthorization();
            app.Use(Dashboard.Dashboard.CheckForgeryAsync);
        }
        if (options.RequestsPerSecond > 0) app.UseRateLimiter();   // after authentication: callers are told apart by their token
        var access = new Access(key is not null);
        if (runtime.Metrics is { } metrics) access.Require(app.MapMetrics("/metrics", metrics.Registry), Roles.Viewer);
        HttpApi.Map(app, service, options, access);
        Dashboard.Dashboard.Map(app, key, access, options.ReadOnly);
        access.Require(app.MapOpenApi("/openapi/{documentName}.json"), Roles.Viewer);
        try
        {
            await app.StartAsync(ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            await service.DisposeAsync().ConfigureAwait(false);
            await app.DisposeAsync().ConfigureAwait(false);
            throw new IOException($"cannot serve on {options.Host}:{options.HttpPort}: {ex.Message}", ex);
        }
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? $"http://{options.Host}:{options.HttpPort}";
        Protocol.SocketServer? socket = null;
        if (options.SocketPort is not null && !options.ReadOnly)
        {
            try
            {
                socket = new Protocol.SocketServer(service, options, key, certificate, (logs ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger("TaskMesh.Socket"));
            }
            catch (System.Net.Sockets.SocketException ex)
            {
                await app.StopAsync(CancellationToken.None).ConfigureAwait(false);
                await service.DisposeAsync().ConfigureAwait(false);
                await app.DisposeAsync().ConfigureAwait(false);
                throw new IOException($"cannot serve the socket protocol on {options.Host}:{options.SocketPort}: {ex.Message}", ex);
            }
        }
        return new TaskMeshServer(app, service, new Uri(bound.EndsWith('/') ? bound : bound + "/"), socket);
    }

    // A service that browses its store's history: no change through the API (signing in and out aside).
    private static Task RefuseChangesAsync(HttpContext http, RequestDelegate next)
    {
        var method = http.Request.Method;
        bool change = !(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method));
        if (change && !http.Request.Path.Equals("/api/session", StringComparison.Ordinal))
            return HttpApi.Problem(StatusCodes.Status405MethodNotAllowed, "read-only",
                "this service only browses the run store's history (taskmesh dashboard): submit, cancel and change through taskmesh serve").ExecuteAsync(http);
        return next(http);
    }

    /// <summary>Serves until the process is told to stop (SIGTERM, SIGINT) or <paramref name="ct"/> fires, then drains.</summary>
    public async Task RunAsync(CancellationToken ct = default)
    {
        await _app.WaitForShutdownAsync(ct).ConfigureAwait(false);
        await StopAsync().ConfigureAwait(false);
    }

    /// <summary>Drains (see the class) and stops listening.</summary>
    public async Task StopAsync()
    {
        await _service.DrainAsync().ConfigureAwait(false);
        if (_socket is not null) await _socket.DisposeAsync().ConfigureAwait(false);
        await _app.StopAsync(CancellationToken.None).ConfigureAwait(false);
    }

    /// <inheritdoc/>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        await _app.DisposeAsync().ConfigureAwait(false);
        await _service.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Drains the service when the host stops (SIGTERM): in the stopping phase, before any hosted
    /// service — the web server among them — stops, so the API answers (503 to new work) meanwhile.
    /// </summary>
    private sealed class DrainOnStop(TaskMeshService service) : IHostedLifecycleService
    {
        public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StoppingAsync(CancellationToken cancellationToken) => service.DrainAsync();
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }
}
