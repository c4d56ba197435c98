using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Prometheus;
using TaskMesh.Engine.Observability;

namespace TaskMesh.Host.Web;

/// <summary>
/// TaskMesh's HTTP host on Kestrel: <c>/metrics</c> (Prometheus text format, from
/// <see cref="TaskMeshMetrics.Registry"/>) and <c>/healthz</c>. One host per process, on
/// 127.0.0.1 unless told otherwise; the dashboard and the API add their routes to it
/// (<c>configure</c>). Requests are bounded: small headers, no bodies, a few connections.
/// </summary>
public sealed class TaskMeshWebHost : IAsyncDisposable
{
    private readonly WebApplication _app;

    private TaskMeshWebHost(WebApplication app, Uri address)
    {
        _app = app;
        Address = address;
    }

    /// <summary>Where the host listens, e.g. <c>http://127.0.0.1:9464/</c> (the port actually bound when 0 was asked).</summary>
    public Uri Address { get; }

    /// <summary>The metrics endpoint.</summary>
    public Uri MetricsUri => new(Address, "metrics");

    /// <summary>Starts listening on <paramref name="host"/>:<paramref name="port"/> (0: a free port).</summary>
    /// <exception cref="IOException">The address cannot be bound (in use, not this machine's, not permitted); the message says which.</exception>
    public static async Task<TaskMeshWebHost> StartAsync(string host, int port, TaskMeshMetrics metrics, ILoggerFactory? logs = null,
        Action<WebApplication>? configure = null, CancellationToken ct = default)
    {
        if (!IPAddress.TryParse(host, out var ip)) throw new IOException($"metrics host '{host}' is not an IP address");
        var builder = WebApplication.CreateSlimBuilder(new WebApplicationOptions { ContentRootPath = AppContext.BaseDirectory, Args = [] });
        builder.Logging.ClearProviders();
        // The host's own "failed to start" entry (a stack trace) is left out: a bind failure is
        // reported once, as the IOException below, in the command's words.
        if (logs is not null) builder.Services.AddSingleton<ILoggerFactory>(new WithoutHostLifetimeErrors(logs));
        builder.WebHost.ConfigureKestrel(o =>
        {
            o.Listen(ip, port);
            o.AddServerHeader = false;
            o.Limits.MaxConcurrentConnections = 64;
            o.Limits.MaxRequestHeadersTotalSize = 16 * 1024;
            o.Limits.MaxRequestBodySize = 64 * 1024;
            o.Limits.RequestHeadersTimeout = TimeSpan.FromSeconds(10);
        });
        var app = builder.Build();
        app.MapMetrics("/metrics", metrics.Registry);
        app.MapGet("/healthz", () => Results.Text("ok\n"));
        configure?.Invoke(app);
        try
        {
            await app.StartAsync(ct);
        }
        catch (Exception ex) when (ex is IOException or System.Net.Sockets.SocketException or InvalidOperationException)
        {
            await app.DisposeAsync();
            throw new IOException($"cannot serve metrics on {host}:{port}: {ex.Message}", ex);
        }
        var bound = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault()
            ?? $"http://{(ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{ip}]" : ip.ToString())}:{port}";
        return new TaskMeshWebHost(app, new Uri(bound.EndsWith('/') ? bound : bound + "/"));
    }

    public async ValueTask DisposeAsync()
    {
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try { await _app.StopAsync(stop.Token); }
        finally { await _app.DisposeAsync(); }
    }
}

/// <summary>A logger factory that passes everything but the generic host's start-up failures (reported by the caller instead).</summary>
internal sealed class WithoutHostLifetimeErrors(ILoggerFactory inner) : ILoggerFactory
{
    public ILogger CreateLogger(string categoryName)
        => categoryName == "Microsoft.Extensions.Hosting.Internal.Host" ? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance : inner.CreateLogger(categoryName);

    public void AddProvider(ILoggerProvider provider) => inner.AddProvider(provider);

    public void Dispose() { }   // the caller owns the inner factory
}

