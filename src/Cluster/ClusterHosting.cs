using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using TaskMesh.Engine.Configuration;
using Orleans;
using Orleans.Configuration;
using Orleans.Hosting;
using Orleans.Runtime;
using TaskMesh.Engine;

namespace TaskMesh.Cluster;

/// <summary>The Orleans settings every TaskMesh silo shares: clustering, endpoints, failure detection, placement, logging.</summary>
internal static class Silos
{
    internal const string ServiceId = "taskmesh";

    /// <summary>
    /// Configures a silo at <paramref name="self"/>; development clustering whose membership the
    /// primary silo keeps — the coordinator (<paramref name="primary"/> null) or the one a worker joins.
    /// </summary>
    internal static void Configure(ISiloBuilder silo, ClusterSettings settings, IPEndPoint self, IPEndPoint? primary)
    {
        if (PostgresMembership.Names(settings.Membership))
        {
            PostgresMembership.Register();
            var connection = PostgresMembership.ConnectionString(settings.Membership!);
            silo.UseAdoNetClustering(o =>
            {
                o.Invariant = PostgresMembership.Invariant;
                o.ConnectionString = connection;
            });
        }
        else if (RedisMembership.Names(settings.Membership))
        {
            var options = RedisMembership.Options(settings.Membership!);
            silo.UseRedisClustering(o => o.ConfigurationOptions = options);
        }
        else silo.UseDevelopmentClustering(primary ?? self);
        silo.Configure<EndpointOptions>(o =>
        {
            o.AdvertisedIPAddress = self.Address;
            o.SiloPort = self.Port;
            o.GatewayPort = 0;   // no external clients: the coordinator is a silo (calls through a gateway would not fail when a worker dies)
        });
        silo.Configure<ClusterOptions>(o =>
        {
            o.ClusterId = settings.ClusterId;
            o.ServiceId = ServiceId;
        });
        silo.Configure<ClusterMembershipOptions>(o =>
        {
            // Tuned for a LAN: a killed or frozen silo is declared dead in about a second.
            o.ProbeTimeout = settings.ProbeTimeout;
            o.NumMissedProbesLimit = settings.MissedProbes;
            o.NumVotesForDeathDeclaration = settings.VotesForDeath;
            o.EnableConnectionLivenessCheck = false;
            o.TableRefreshTimeout = TimeSpan.FromSeconds(5);
            o.IAmAliveTablePublishTimeout = TimeSpan.FromSeconds(5);
        });
        silo.Configure<SiloMessagingOptions>(o => o.ResponseTimeout = TimeSpan.FromSeconds(30));
        silo.AddPlacementDirector<SiloPinnedPlacement, SiloPinnedPlacementDirector>();
        if (settings.Tls)
        {
            var certificate = ClusterCertificate(settings);
            silo.UseTls(certificate, o =>
            {
                // Mutual: both ends of every silo-to-silo connection present the cluster's certificate,
                // and each accepts only that certificate (pinned: the same public key), whatever its chain.
                o.RemoteCertificateMode = Orleans.Connections.Security.RemoteCertificateMode.RequireCertificate;
                o.ClientCertificateMode = Orleans.Connections.Security.RemoteCertificateMode.RequireCertificate;
                o.RemoteCertificateValidation = (presented, _, _) => presented is not null && presented.GetPublicKey().AsSpan().SequenceEqual(certificate.GetPublicKey());
                o.HandshakeTimeout = TimeSpan.FromSeconds(5);
            });
        }
    }

    /// <summary>The cluster's certificate with its key, from the PEM files of <paramref name="settings"/>.</summary>
    /// <exception cref="ArgumentException">A file is missing or is not a PEM certificate and its key.</exception>
    internal static System.Security.Cryptography.X509Certificates.X509Certificate2 ClusterCertificate(ClusterSettings settings)
    {
        try
        {
            using var pem = System.Security.Cryptography.X509Certificates.X509Certificate2.CreateFromPemFile(settings.TlsCertificate!, settings.TlsKey);
            // Through PKCS#12, so that the key is usable by TLS on every platform.
            return System.Security.Cryptography.X509Certificates.X509CertificateLoader.LoadPkcs12(pem.Export(System.Security.Cryptography.X509Certificates.X509ContentType.Pkcs12), null);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or System.Security.Cryptography.CryptographicException)
        {
            throw new ArgumentException($"cluster.tls_certificate / cluster.tls_key ({settings.TlsCertificate}, {settings.TlsKey}): {ex.Message}", ex);
        }
    }

    /// <summary>A host with no configuration sources of its own, logging through <paramref name="logs"/>, Orleans' lines from <paramref name="orleansLevel"/> up.</summary>
    internal static HostApplicationBuilder Builder(ILoggerFactory? logs, LogLevel orleansLevel)
    {
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        // The command owns SIGTERM and Ctrl+C (a worker drains, a run finishes): the silo's host does not stop on them.
        builder.Services.AddSingleton<IHostLifetime, CommandOwnsSignals>();
        builder.Logging.ClearProviders();
        if (logs is not null) builder.Logging.AddProvider(new ForwardingLoggerProvider(logs));
        builder.Logging.SetMinimumLevel(LogLevel.Trace);
        builder.Logging.AddFilter("Orleans", orleansLevel);
        builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
        builder.Logging.AddFilter("Polly", orleansLevel);
        if (orleansLevel > LogLevel.Information)
        {
            // Startup notes that are not problems here: Server GC advice, and the watchdog's first check on a busy machine.
            builder.Logging.AddFilter("Orleans.Runtime.Silo", LogLevel.Error);
            builder.Logging.AddFilter("Orleans.Runtime.Watchdog", LogLevel.Error);
        }
        return builder;
    }

    private sealed class CommandOwnsSignals : IHostLifetime
    {
        public Task WaitForStartAsync(CancellationToken cancellationToken) => Task.CompletedTask;
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>A shared membership's tables, made when the database has none (nothing to do for development clustering or Redis).</summary>
    /// <exception cref="ArgumentException">The membership URL is not one, or its database cannot be reached.</exception>
    internal static async Task PrepareMembershipAsync(ClusterSettings settings, CancellationToken ct)
    {
        if (RedisMembership.Names(settings.Membership))
        {
            try { RedisMembership.Options(settings.Membership!); }
            catch (FormatException ex) { throw new ArgumentException(ex.Message, nameof(settings), ex); }
            return;
        }
        if (!PostgresMembership.Names(settings.Membership)) return;
        try
        {
            await PostgresMembership.EnsureSchemaAsync(PostgresMembership.ConnectionString(settings.Membership!), ct).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is FormatException or Npgsql.NpgsqlException or TimeoutException)
        {
            throw new ArgumentException($"cluster.membership: {ex.Message}", nameof(settings), ex);
        }
    }

    /// <summary>A free TCP port on <paramref name="address"/>, for a silo told to pick one.</summary>
    internal static int FreePort(IPAddress address)
    {
        using var l = new TcpListener(address, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    internal static IPEndPoint Endpoint(ClusterSettings s)
    {
        var ip = IPAddress.Parse(s.Host);
        return new IPEndPoint(ip, s.Port == 0 ? FreePort(ip) : s.Port);
    }

    /// <summary>Parses <c>host:port</c> (an IP address, or a name resolved now).</summary>
    /// <exception cref="FormatException">Not an endpoint.</exception>
    internal static IPEndPoint ParseEndpoint(string text)
    {
        if (IPEndPoint.TryParse(text, out var ep) && ep.Port > 0) return ep;
        int colon = text.LastIndexOf(':');
        if (colon > 0 && int.TryParse(text.AsSpan(colon + 1), out int port) && port is > 0 and <= 65_535)
        {
            var addresses = Dns.GetHostAddresses(text[..colon]);
            var ip = addresses.FirstOrDefault(a => a.AddressFamily == AddressFamily.InterNetwork) ?? addresses.FirstOrDefault();
            if (ip is not null) return new IPEndPoint(ip, port);
        }
        throw new FormatException($"'{text}' is not HOST:PORT");
    }

    private sealed class ForwardingLoggerProvider(ILoggerFactory logs) : ILoggerProvider
    {
        public ILogger CreateLogger(string categoryName) => logs.CreateLogger(categoryName);
        public void Dispose() { }
    }
}

/// <summary>
/// The coordinator: this process as an Orleans silo that owns the runs and sends their
/// <c>cluster</c> attempts to the worker silos that join it. Made with the <c>cluster</c> layer
/// already in the engine (down, its attempts run locally or wait, until workers join), so that runs
/// started before the silo is up — a service's standing run — have it too. Hosted in a host of its
/// own (<see cref="StartAsync"/>: <c>taskmesh run --workers N</c>) or in an application's
/// (<see cref="AddTo"/>: <c>taskmesh serve</c>, beside the HTTP API).
/// </summary>
public sealed class ClusterCoordinator : IAsyncDisposable
{
    private readonly ClusterSettings _settings;
    private readonly ClusterDispatcher _dispatcher;
    private readonly ClusterLayer _layer;
    private readonly CancellationTokenSource _stop = new();
    private readonly ILogger _log;
    private Task? _watch;
    private IHost? _ownHost;
    private Func<string, IWorkerGrain>? _grainOf;
    private int _disposed;

    private ClusterCoordinator(TaskMeshEngine engine, ClusterSettings settings, ILogger log)
    {
        _settings = settings;
        _log = log;
        Endpoint = Silos.Endpoint(settings);
        _dispatcher = new ClusterDispatcher(settings, log);
        _layer = new ClusterLayer(_dispatcher, settings, () => engine.Layers[0]);
        var configured = engine.Layers.FirstOrDefault(l => l.Name == ClusterLayer.LayerName);
        _layer.Configure(configured?.PricePerSecond ?? 0, configured?.Rank ?? ClusterLayer.DefaultRank, configured?.Tags);
        engine.AddLayer(_layer);
    }

    /// <summary>The address workers join: <c>taskmesh worker --join</c> this.</summary>
    public IPEndPoint Endpoint { get; }

    /// <summary>True when the silos speak mutual TLS (the cluster's certificate).</summary>
    public bool Tls => _settings.Tls;

    /// <summary>The <c>cluster</c> layer it added to the engine.</summary>
    public Engine.Layers.ExecutionLayer Layer => _layer;

    /// <summary>The workers there now.</summary>
    public IReadOnlyList<ClusterWorkerView> Workers => _dispatcher.Workers();

    /// <summary>Workers declared dead so far, and what became of their attempts.</summary>
    public IReadOnlyList<WorkerLoss> Losses => _dispatcher.Losses();

    /// <summary>Outcomes dropped because their attempt was no longer in flight on the worker that sent them.</summary>
    public long DroppedOutcomes => _dispatcher.Dropped;

    /// <summary>Attempts queued for the workers, not yet sent.</summary>
    internal int Queued => _dispatcher.Queued;

    /// <summary>The grain of the worker at <paramref name="endpoint"/> (the bench calls it directly, for Orleans' own figures).</summary>
    internal IWorkerGrain GrainOf(string endpoint) => _grainOf?.Invoke(endpoint) ?? throw new InvalidOperationException("the coordinator's silo has not started");

    /// <summary>Raised when a worker is declared dead, once its attempts were queued again.</summary>
    public event Action<WorkerLoss>? WorkerLost
    {
        add => _dispatcher.WorkerLost += value;
        remove => _dispatcher.WorkerLost -= value;
    }

    /// <summary>
    /// Per-worker metrics in <paramref name="registry"/>, read at each scrape: <c>taskmesh_cluster_workers</c>,
    /// <c>taskmesh_cluster_worker_slots</c>, <c>taskmesh_cluster_worker_in_flight</c>,
    /// <c>taskmesh_cluster_worker_tasks_total</c> (by outcome), <c>taskmesh_cluster_workers_lost_total</c>,
    /// <c>taskmesh_cluster_attempts_requeued_total</c>, <c>taskmesh_cluster_dropped_outcomes_total</c>.
    /// </summary>
    public void AddMetrics(Prometheus.CollectorRegistry registry)
    {
        ArgumentNullException.ThrowIfNull(registry);
        var f = Prometheus.Metrics.WithCustomRegistry(registry);
        var workers = f.CreateGauge("taskmesh_cluster_workers", "Workers joined to this coordinator, by status.", "status");
        var slots = f.CreateGauge("taskmesh_cluster_worker_slots", "Slots a worker offers.", "worker");
        var inFlight = f.CreateGauge("taskmesh_cluster_worker_in_flight", "Attempts a worker holds now.", "worker");
        var tasks = f.CreateGauge("taskmesh_cluster_worker_tasks_total", "Attempts a worker answered, by outcome (since it joined).", "worker", "outcome");
        var lost = f.CreateGauge("taskmesh_cluster_workers_lost_total", "Workers declared dead (or unreachable) since the coordinator started.");
        var requeued = f.CreateGauge("taskmesh_cluster_attempts_requeued_total", "Attempts sent again because their worker was lost.");
        var dropped = f.CreateGauge("taskmesh_cluster_dropped_outcomes_total", "Outcomes dropped: their attempt was no longer in flight on the worker that sent them.");
        var known = new HashSet<string>(StringComparer.Ordinal);
        registry.AddBeforeCollectCallback(() =>
        {
            var now = Workers;
            workers.WithLabels("active").Set(now.Count(w => !w.Draining));
            workers.WithLabels("draining").Set(now.Count(w => w.Draining));
            lock (known)
            {
                // A worker gone is gone from the series too.
                foreach (var gone in known.Except(now.Select(w => w.Endpoint)).ToList())
                {
                    slots.RemoveLabelled(gone);
                    inFlight.RemoveLabelled(gone);
                    tasks.RemoveLabelled(gone, "succeeded");
                    tasks.RemoveLabelled(gone, "failed");
                    known.Remove(gone);
                }
                foreach (var w in now)
                {
                    known.Add(w.Endpoint);
                    slots.WithLabels(w.Endpoint).Set(w.Slots);
                    inFlight.WithLabels(w.Endpoint).Set(w.InFlight);
                    tasks.WithLabels(w.Endpoint, "succeeded").Set(w.Succeeded);
                    tasks.WithLabels(w.Endpoint, "failed").Set(w.Failed);
                }
            }
            var losses = Losses;
            lost.Set(losses.Count);
            requeued.Set(losses.Sum(l => l.Requeued));
            dropped.Set(DroppedOutcomes);
        });
    }

    /// <summary>Adds the <c>cluster</c> layer to <paramref name="engine"/>; the silo starts with the host it is added to (<see cref="AddTo"/>).</summary>
    /// <exception cref="ArgumentException">Invalid settings (every problem listed).</exception>
    public static ClusterCoordinator Create(TaskMeshEngine engine, ClusterSettings settings, ILoggerFactory? logs = null)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(settings);
        if (settings.Problems() is { Count: > 0 } problems) throw new ArgumentException(string.Join("; ", problems), nameof(settings));
        if (settings.Tls) Silos.ClusterCertificate(settings).Dispose();   // unreadable files: said now, not when the silo starts
        return new ClusterCoordinator(engine, settings, logs?.CreateLogger("TaskMesh.Cluster") ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
    }

    /// <summary>Makes <paramref name="builder"/>'s host the coordinator's silo: it starts and stops with that host.</summary>
    public void AddTo(IHostApplicationBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        // Before the silo (hosted services start in order): a shared membership's tables.
        builder.Services.AddHostedService(_ => new MembershipSchema(_settings));
        builder.UseOrleans(silo => Silos.Configure(silo, _settings, Endpoint, primary: null));
        builder.Services.AddSingleton(_dispatcher);
        // After the silo (hosted services start in order): its grain factory and membership are ready.
        builder.Services.AddHostedService(sp => new Lifecycle(this, sp));
    }

    /// <summary>Starts the coordinator's silo in a host of its own and adds the <c>cluster</c> layer to <paramref name="engine"/>.</summary>
    /// <exception cref="ArgumentException">Invalid settings (every problem listed).</exception>
    public static async Task<ClusterCoordinator> StartAsync(TaskMeshEngine engine, ClusterSettings settings, ILoggerFactory? logs = null, CancellationToken ct = default)
    {
        var coordinator = Create(engine, settings, logs);
        var builder = Silos.Builder(logs, settings.Verbose ? LogLevel.Information : LogLevel.Warning);
        coordinator.AddTo(builder);
        var host = builder.Build();
        try
        {
            await host.StartAsync(ct).ConfigureAwait(false);
        }
        catch
        {
            host.Dispose();
            throw;
        }
        coordinator._ownHost = host;
        return coordinator;
    }

    /// <summary>Makes a shared membership's tables before the silo starts.</summary>
    private sealed class MembershipSchema(ClusterSettings settings) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken) => Silos.PrepareMembershipAsync(settings, cancellationToken);
        public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
    }

    /// <summary>Starts and stops the dispatch with the silo's host.</summary>
    private sealed class Lifecycle(ClusterCoordinator coordinator, IServiceProvider services) : IHostedService
    {
        public Task StartAsync(CancellationToken cancellationToken)
        {
            coordinator.Started(services);
            return Task.CompletedTask;
        }

        public Task StopAsync(CancellationToken cancellationToken) => coordinator.StopDispatchAsync();
    }

    private void Started(IServiceProvider services)
    {
        var grains = services.GetRequiredService<IGrainFactory>();
        _grainOf = endpoint => grains.GetGrain<IWorkerGrain>(endpoint);
        _dispatcher.Start(_grainOf);
        var membership = services.GetRequiredService<IClusterMembershipService>();
        _watch = Task.Run(() => WatchMembershipAsync(membership));
        _log.LogInformation("cluster coordinator at {Endpoint} (cluster {ClusterId}): workers join with taskmesh worker --join {Endpoint}", Endpoint, _settings.ClusterId, Endpoint);
    }

    /// <summary>Waits until <paramref name="count"/> workers are there; false when <paramref name="timeout"/> passed first.</summary>
    public async Task<bool> WaitForWorkersAsync(int count, TimeSpan timeout, CancellationToken ct = default)
    {
        var until = DateTime.UtcNow + timeout;
        while (_dispatcher.Totals().Workers < count)
        {
            if (DateTime.UtcNow >= until) return false;
            await Task.Delay(25, ct).ConfigureAwait(false);
        }
        return true;
    }

    /// <summary>Follows Orleans' membership: a worker silo declared dead loses its attempts to the others.</summary>
    private async Task WatchMembershipAsync(IClusterMembershipService membership)
    {
        try
        {
            await foreach (var snapshot in membership.MembershipUpdates.WithCancellation(_stop.Token).ConfigureAwait(false))
                foreach (var (silo, member) in snapshot.Members)
                    if (member.Status == SiloStatus.Dead)
                        _dispatcher.SiloDied(silo.ToParsableString(), "declared dead by the cluster");
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        catch (Exception ex)
        {
            _log.LogError(ex, "following the cluster's membership stopped");
        }
    }

    private async Task StopDispatchAsync()
    {
        if (!_stop.IsCancellationRequested) _stop.Cancel();
        // Orleans' membership stream ends at its next update after the cancellation: not waited for longer than a moment.
        if (_watch is not null)
            try { await _watch.WaitAsync(TimeSpan.FromSeconds(2)).ConfigureAwait(false); }
            catch (TimeoutException) { }
        await _dispatcher.DisposeAsync().ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        await StopDispatchAsync().ConfigureAwait(false);
        if (_ownHost is { } host)
        {
            try
            {
                using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                await host.StopAsync(quick.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException) { }
            host.Dispose();
        }
        _stop.Dispose();
    }
}

/// <summary>
/// A worker: this process as an Orleans silo that joins a coordinator's cluster and runs the
/// attempts it sends (<c>taskmesh worker --join HOST:PORT</c>). It leaves on its token (SIGTERM):
/// it tells the coordinator it drains, finishes and reports what it holds, then stops its silo.
/// It stops by itself when the coordinator is gone.
/// </summary>
public static class ClusterWorker
{
    /// <summary>How long a worker tries to join before it gives up.</summary>
    public static readonly TimeSpan JoinTimeout = TimeSpan.FromSeconds(30);

    /// <summary>How long a draining worker waits for what it holds.</summary>
    public static readonly TimeSpan DrainTimeout = TimeSpan.FromSeconds(60);

    /// <summary>
    /// Joins <paramref name="join"/> and serves until <paramref name="ct"/> fires (then drains) or the
    /// coordinator is gone. <paramref name="ready"/> is called with this worker's endpoint once it serves.
    /// Returns 0 after a drain, 1 when the coordinator went away or could not be joined.
    /// </summary>
    public static async Task<int> RunAsync(TaskMeshEngine engine, IPEndPoint join, ClusterSettings settings, int slots,
        ILoggerFactory? logs = null, Action<IPEndPoint>? ready = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(engine);
        ArgumentNullException.ThrowIfNull(join);
        ArgumentOutOfRangeException.ThrowIfLessThan(slots, 1);
        if (settings.Problems() is { Count: > 0 } problems) throw new ArgumentException(string.Join("; ", problems), nameof(settings));
        if (settings.Tls) Silos.ClusterCertificate(settings).Dispose();   // unreadable files: said now, not when the silo starts
        var log = logs?.CreateLogger("TaskMesh.Worker") ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
        try
        {
            await Silos.PrepareMembershipAsync(settings, ct).ConfigureAwait(false);
        }
        catch (ArgumentException ex)
        {
            log.LogError("could not reach the cluster's membership: {Error}", ex.Message);
            return 1;
        }
        var self = Silos.Endpoint(settings);
        await using var executor = new WorkerExecutor(engine, slots, settings.BatchSize, log);
        var builder = Silos.Builder(logs, settings.Verbose ? LogLevel.Information : LogLevel.Warning);
        builder.Services.AddSingleton(executor);
        builder.UseOrleans(silo =>
        {
            Silos.Configure(silo, settings, self, join);
            silo.Configure<ClusterMembershipOptions>(o => o.MaxJoinAttemptTime = JoinTimeout);
        });
        using var host = builder.Build();
        try
        {
            using var joining = CancellationTokenSource.CreateLinkedTokenSource(ct);
            joining.CancelAfter(JoinTimeout + TimeSpan.FromSeconds(5));
            await host.StartAsync(joining.Token).ConfigureAwait(false);
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            log.LogError("could not join the coordinator at {Join}: {Error}", join, ex.Message);
            return 1;
        }
        catch (OperationCanceledException)
        {
            return 0;
        }
        var local = host.Services.GetRequiredService<ILocalSiloDetails>().SiloAddress;
        string endpoint = SiloPinnedPlacementDirector.EndpointOf(local);
        var coordinator = host.Services.GetRequiredService<IGrainFactory>().GetGrain<ICoordinatorGrain>(join.ToString());
        executor.Start(coordinator, endpoint);
        var info = executor.Describe(endpoint, local.ToParsableString());
        try
        {
            await coordinator.Join(info).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            log.LogError("the coordinator at {Join} did not take this worker: {Error}", join, ex.Message);
            await StopAsync(host).ConfigureAwait(false);
            return 1;
        }
        log.LogInformation("worker {Endpoint} joined the coordinator at {Join}: {Slots} slots, {Qubits} qubits at most, pid {Pid}",
            endpoint, join, slots, info.MaxQubits, Environment.ProcessId);
        ready?.Invoke(local.Endpoint);

        // Serve until told to stop, or until the coordinator (or this silo) is gone.
        var lifetime = host.Services.GetRequiredService<IHostApplicationLifetime>();
        using var gone = CancellationTokenSource.CreateLinkedTokenSource(ct, lifetime.ApplicationStopping);
        var membership = host.Services.GetRequiredService<IClusterMembershipService>();
        // Joins again now and then: what it offers (free memory) stays current, and a coordinator that
        // stopped sending to it after a failed call takes it back.
        using var stopBeat = new CancellationTokenSource();
        bool coordinatorLost = false;
        var heartbeat = HeartbeatAsync(coordinator, executor, info, log, () => { coordinatorLost = true; gone.Cancel(); }, stopBeat.Token);
        try
        {
            await foreach (var snapshot in membership.MembershipUpdates.WithCancellation(gone.Token).ConfigureAwait(false))
            {
                var status = snapshot.Members.Where(m => m.Key.Endpoint.Equals(join)).Select(m => m.Value.Status).DefaultIfEmpty(SiloStatus.Active).ToList();
                if (status.All(s => s is SiloStatus.Dead or SiloStatus.ShuttingDown or SiloStatus.Stopping))
                {
                    coordinatorLost = true;
                    break;
                }
            }
        }
        catch (OperationCanceledException) { }
        stopBeat.Cancel();
        await heartbeat.ConfigureAwait(false);
        if (!ct.IsCancellationRequested && (coordinatorLost || lifetime.ApplicationStopping.IsCancellationRequested))
        {
            log.LogWarning("the coordinator at {Join} is gone: this worker stops ({Held} attempts it held are lost to it)", join, executor.Held);
            await StopAsync(host).ConfigureAwait(false);
            return 1;
        }
        log.LogInformation("worker {Endpoint} drains: {Held} attempts to finish", endpoint, executor.Held);
        try { await coordinator.Leave(endpoint).WaitAsync(TimeSpan.FromSeconds(5)).ConfigureAwait(false); }
        catch (Exception ex) { log.LogWarning("telling the coordinator that this worker drains failed: {Error}", ex.Message); }
        bool drained = await executor.DrainAsync(DrainTimeout).ConfigureAwait(false);
        log.LogInformation("worker {Endpoint} {How} after {Ran} attempts; leaving the cluster", endpoint, drained ? "drained" : "did not drain in time", executor.Ran);
        await StopAsync(host).ConfigureAwait(false);
        return 0;
    }

    /// <summary>How often a worker tells the coordinator again what it offers.</summary>
    public static readonly TimeSpan HeartbeatEvery = TimeSpan.FromSeconds(5);

    /// <summary>Heartbeats in a row the coordinator may leave unanswered before the worker takes it for gone.</summary>
    public const int MissedHeartbeats = 3;

    // Joins again every HeartbeatEvery. The membership says when the coordinator died — except where
    // the coordinator keeps the member list itself (development clustering, the embedded cluster):
    // killed, it leaves nobody to declare it dead. So MissedHeartbeats unanswered beats in a row
    // count as its death too (lost is called once).
    private static async Task HeartbeatAsync(ICoordinatorGrain coordinator, WorkerExecutor executor, WorkerInfo joined, ILogger log, Action lost, CancellationToken ct)
    {
        try
        {
            int missed = 0;
            while (true)
            {
                await Task.Delay(HeartbeatEvery, ct).ConfigureAwait(false);
                try
                {
                    // What it offers now (the memory left for state vectors changes).
                    await coordinator.Join(executor.Describe(joined.Endpoint, joined.Silo)).WaitAsync(HeartbeatEvery, ct).ConfigureAwait(false);
                    missed = 0;
                }
                catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
                {
                    log.LogWarning("telling the coordinator what this worker offers failed: {Error}", ex.Message);
                    if (++missed >= MissedHeartbeats)
                    {
                        log.LogWarning("the coordinator answered none of the last {Missed} heartbeats", missed);
                        lost();
                        return;
                    }
                }
            }
        }
        catch (OperationCanceledException) { }
    }

    private static async Task StopAsync(IHost host)
    {
        try
        {
            using var quick = new CancellationTokenSource(TimeSpan.FromSeconds(10));
            await host.StopAsync(quick.Token).ConfigureAwait(false);
        }
        catch (Exception) { }
    }
}
