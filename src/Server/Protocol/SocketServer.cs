using System.Buffers;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using MessagePack;
using Microsoft.Extensions.Logging;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Server.Protocol;

/// <summary>
/// The MessagePack socket transport (docs/protocol.md) over <see cref="TaskMeshService"/>: TCP,
/// frames of a 4-byte big-endian length and one MessagePack message, a handshake with the
/// protocol version and the token, request ids so a client pipelines many requests on one
/// connection. A frame the protocol refuses (too long, truncated, not MessagePack, of an unknown
/// type or shape, a wrong version or token) is answered with an error and its connection closed;
/// every other connection goes on.
/// </summary>
internal sealed class SocketServer : IAsyncDisposable
{
    private readonly TcpListener _listener;
    private readonly TaskMeshService _service;
    private readonly ServerOptions _options;
    private readonly byte[]? _key;
    private readonly ILogger _log;
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _accepting;
    private int _connections;

    private readonly System.Security.Cryptography.X509Certificates.X509Certificate2? _certificate;

    public SocketServer(TaskMeshService service, ServerOptions options, byte[]? key, System.Security.Cryptography.X509Certificates.X509Certificate2? certificate, ILogger log)
    {
        _service = service;
        _options = options;
        _key = key;
        _certificate = certificate;
        _log = log;
        _listener = new TcpListener(IPAddress.Parse(options.Host), options.SocketPort!.Value);
        _listener.Start(backlog: 512);
        Endpoint = (IPEndPoint)_listener.LocalEndpoint;
        _accepting = AcceptAsync();
    }

    /// <summary>Where it listens (the port bound when 0 was asked).</summary>
    public IPEndPoint Endpoint { get; }

    public int Connections => Volatile.Read(ref _connections);

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException || (ex is SocketException && _stop.IsCancellationRequested))
            {
                break;
            }
            catch (SocketException ex)
            {
                // A failed accept (out of file handles, a connection reset before it was taken): listening goes on.
                _log.LogWarning("socket accept failed: {Why}", ex.Message);
                await Task.Delay(50).ConfigureAwait(false);
                continue;
            }
            if (Interlocked.Increment(ref _connections) > _options.MaxConnections)
            {
                Interlocked.Decrement(ref _connections);
                client.Dispose();   // over the bound: refused at once
                continue;
            }
            _ = ServeAsync(client);
        }
    }

    private async Task ServeAsync(TcpClient client)
    {
        var peer = client.Client.RemoteEndPoint?.ToString() ?? "?";
        try
        {
            client.NoDelay = true;
            using (client)
            {
                Stream stream = client.GetStream();
                if (_certificate is not null)
                {
                    // TLS first, within the handshake time: a client that does not speak it is dropped.
                    var ssl = new System.Net.Security.SslStream(stream, leaveInnerStreamOpen: false);
                    using var handshake = CancellationTokenSource.CreateLinkedTokenSource(_stop.Token);
                    handshake.CancelAfter(_options.HandshakeTimeout);
                    try
                    {
                        await ssl.AuthenticateAsServerAsync(new System.Net.Security.SslServerAuthenticationOptions { ServerCertificate = _certificate }, handshake.Token).ConfigureAwait(false);
                    }
                    catch (Exception ex) when (ex is System.Security.Authentication.AuthenticationException or IOException or OperationCanceledException)
                    {
                        _log.LogDebug("socket {Peer}: no TLS handshake ({Why}); closed", peer, ex.Message);
                        await ssl.DisposeAsync().ConfigureAwait(false);
                        return;
                    }
                    stream = ssl;
                }
                await using var connection = new Connection(this, stream, peer);
                await connection.RunAsync(_stop.Token).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or OperationCanceledException or ObjectDisposedException)
        {
            // The client went away, or the service is stopping.
        }
        catch (Exception ex)
        {
            _log.LogError("socket connection {Peer}: {Error}", peer, ex.Message);
        }
        finally
        {
            Interlocked.Decrement(ref _connections);
        }
    }

    private int _disposed;

    /// <summary>Stops listening and closes every connection (once).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return;
        _stop.Cancel();
        _listener.Stop();
        await _accepting.ConfigureAwait(false);
    }

    /// <summary>One client: its handshake, then its requests, answered as they complete (in any order: each answer carries its request id).</summary>
    private sealed class Connection(SocketServer server, Stream stream, string peer) : IAsyncDisposable
    {
        private readonly SemaphoreSlim _writing = new(1, 1);
        private readonly SemaphoreSlim _inFlight = new(MaxInFlight, MaxInFlight);
        private readonly CancellationTokenSource _closed = new();
        private string? _role;       // the token's role; null when the service takes no tokens (everything allowed)
        private string? _subject;
        private Workers.WorkerSession? _worker;   // once the client declared itself a worker
        private long _lastHeard = System.Diagnostics.Stopwatch.GetTimestamp();

        /// <summary>Requests that wait (a run's end, a task's, a subscription) at once on one connection; reading pauses above it.</summary>
        private const int MaxInFlight = 1024;

        public async Task RunAsync(CancellationToken stopping)
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(stopping, _closed.Token);
            var ct = linked.Token;
            if (!await HandshakeAsync(ct).ConfigureAwait(false)) return;
            while (!ct.IsCancellationRequested)
            {
                Request request;
                try
                {
                    var frame = await Frames.ReadAsync(stream, server._options.MaxFrameBytes, ct).ConfigureAwait(false);
                    if (frame is not { } f) return;   // the client closed
                    Volatile.Write(ref _lastHeard, System.Diagnostics.Stopwatch.GetTimestamp());
                    try { request = Messages.Read(f.Buffer.AsMemory(0, f.Length)); }
                    finally { ArrayPool<byte>.Shared.Return(f.Buffer); }
                }
                catch (ProtocolException ex)
                {
                    await RefuseAsync(0, 400, "protocol error", ex.Message).ConfigureAwait(false);
                    return;
                }
                if (request.Type == MessageType.Hello)
                {
                    await RefuseAsync(request.Id, 400, "protocol error", "hello is the first message only").ConfigureAwait(false);
                    return;
                }
                await HandleAsync(request, ct).ConfigureAwait(false);
            }
        }

        /// <summary>The first frame must be a hello with this protocol's version (and a valid token when the service requires one), within the handshake timeout.</summary>
        private async Task<bool> HandshakeAsync(CancellationToken ct)
        {
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(ct);
            timeout.CancelAfter(server._options.HandshakeTimeout);
            Request hello;
            try
            {
                var frame = await Frames.ReadAsync(stream, server._options.MaxFrameBytes, timeout.Token).ConfigureAwait(false);
                if (frame is not { } f) return false;
                try { hello = Messages.Read(f.Buffer.AsMemory(0, f.Length)); }
                finally { ArrayPool<byte>.Shared.Return(f.Buffer); }
            }
            catch (OperationCanceledException) when (!ct.IsCancellationRequested)
            {
                await RefuseAsync(0, 408, "handshake timeout", $"no hello within {server._options.HandshakeTimeout.TotalSeconds:0.#} s").ConfigureAwait(false);
                return false;
            }
            catch (ProtocolException ex)
            {
                await RefuseAsync(0, 400, "protocol error", ex.Message).ConfigureAwait(false);
                return false;
            }
            if (hello.Type != MessageType.Hello)
            {
                await RefuseAsync(hello.Id, 400, "protocol error", "the first message must be hello [version, token, client]").ConfigureAwait(false);
                return false;
            }
            if (hello.Version != Messages.Version)
            {
                await RefuseAsync(hello.Id, 400, "unsupported version", $"protocol version {hello.Version} is not served; this service speaks {Messages.Version}").ConfigureAwait(false);
                return false;
            }
            if (server._key is { } key)
            {
                if (hello.Token is null)
                {
                    await RefuseAsync(hello.Id, 401, "unauthenticated", "this service needs a bearer token in the hello").ConfigureAwait(false);
                    return false;
                }
                var (subject, role, problem) = await Tokens.Validate(key, hello.Token).ConfigureAwait(false);
                if (problem is not null)
                {
                    await RefuseAsync(hello.Id, 401, "unauthenticated", problem).ConfigureAwait(false);
                    return false;
                }
                (_subject, _role) = (subject, role);
            }
            await SendAsync(Messages.Write(MessageType.Welcome, hello.Id, 5, (ref MessagePackWriter w) =>
            {
                w.Write(Messages.Version);
                w.Write(typeof(SocketServer).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");
                w.Write(server._service.Standing.RunId);
                if (_role is null) w.WriteNil(); else w.Write(_role);
                w.Write(server._options.MaxFrameBytes);
            })).ConfigureAwait(false);
            return true;
        }

        private async Task HandleAsync(Request r, CancellationToken ct)
        {
            string needed = r.Type is MessageType.SubmitGraph or MessageType.SubmitTasks or MessageType.CancelRun or MessageType.CancelTask or MessageType.Worker or MessageType.Results
                or MessageType.ChangeTask or MessageType.Escalate
                ? Roles.Operator : Roles.Viewer;
            if (_role is not null && !Roles.Allows(_role, needed))
            {
                await SendAsync(Messages.Error(r.Id, 403, "forbidden", $"the token's role ({_role}) does not allow this: it needs {needed}")).ConfigureAwait(false);
                return;
            }
            switch (r.Type)
            {
                case MessageType.Ping:
                    await SendAsync(Messages.Write(MessageType.Pong, r.Id)).ConfigureAwait(false);
                    return;
                case MessageType.SubmitGraph:
                    // Inline: the read loop waits, so a client that submits faster than graphs are validated is held back.
                    await AnswerAsync(r.Id, () =>
                    {
                        string runId;
                        try
                        {
                            runId = server._service.SubmitGraph(System.Text.Encoding.UTF8.GetBytes(r.GraphJson!), _subject);
                        }
                        catch (ApiException ex) when (r.GraphFromMap && ex.Errors is { Count: > 0 } errors)
                        {
                            // A graph sent as a map was made JSON text here: its lines and columns are that text's, not the client's.
                            throw new ApiException(ex.Status, ex.Title, ex.Message, errors.Select(e => e with { Line = null, Column = null }).ToList());
                        }
                        return Task.FromResult(Messages.Write(MessageType.RunSubmitted, r.Id, 1, (ref MessagePackWriter w) => w.Write(runId)));
                    }).ConfigureAwait(false);
                    return;
                case MessageType.SubmitTasks:
                    await SendAsync(await SubmitTasksAsync(r, ct).ConfigureAwait(false)).ConfigureAwait(false);
                    return;
                case MessageType.Worker:
                    await BecomeWorkerAsync(r, ct).ConfigureAwait(false);
                    return;
                case MessageType.Results:
                    TakeResults(r);
                    return;
                case MessageType.CancelRun:
                    await AnswerAsync(r.Id, () => Task.FromResult(server._service.CancelRun(r.Text!, _subject)
                        ? Messages.Write(MessageType.Done, r.Id)
                        : Messages.Error(r.Id, 409, "run ended", $"run {r.Text} has ended: there is nothing to cancel"))).ConfigureAwait(false);
                    return;
                case MessageType.CancelTask:
                    await AnswerAsync(r.Id, () => Task.FromResult(server._service.CancelTask(r.Text!, _subject)
                        ? Messages.Write(MessageType.Done, r.Id)
                        : Messages.Error(r.Id, 409, "task ended", $"task {r.Text} has ended: there is nothing to cancel"))).ConfigureAwait(false);
                    return;
                case MessageType.ChangeTask:
                    await AnswerAsync(r.Id, () =>
                    {
                        TaskPriority? priority = null;
                        if (r.Layer is not null)
                            priority = GraphNames.TryParsePriority(r.Layer, out var p) ? p : throw new ApiException(400, "invalid request", "priority must be low, normal, high or critical");
                        JsonElement? args = null;
                        if (r.ArgsJson is not null)
                        {
                            try { args = JsonDocument.Parse(r.ArgsJson).RootElement.Clone(); }
                            catch (JsonException) { throw new ApiException(400, "invalid request", "args is a map (or JSON text of an object)"); }
                        }
                        server._service.ChangeTask(r.Text!, priority, args, _subject);
                        return Task.FromResult(Messages.Write(MessageType.Done, r.Id));
                    }).ConfigureAwait(false);
                    return;
                case MessageType.Escalate:
                    await AnswerAsync(r.Id, () =>
                    {
                        string runId = server._service.Escalate(r.Text!, r.Task!, r.Layer!, r.Reason, _subject);
                        return Task.FromResult(Messages.Write(MessageType.RunSubmitted, r.Id, 1, (ref MessagePackWriter w) => w.Write(runId)));
                    }).ConfigureAwait(false);
                    return;
            }
            // Requests that may wait run beside the read loop, a bounded number at once.
            await _inFlight.WaitAsync(ct).ConfigureAwait(false);
            _ = Task.Run(async () =>
            {
                try
                {
                    switch (r.Type)
                    {
                        case MessageType.GetRun:
                            await AnswerAsync(r.Id, async () =>
                            {
                                var run = await server._service.WaitForRunAsync(r.Text!, TimeSpan.FromSeconds(r.Wait), ct).ConfigureAwait(false);
                                return Messages.Write(MessageType.Run, r.Id, 1, (ref MessagePackWriter w) => Messages.WriteJsonAsMap(ref w, run.Write));
                            }).ConfigureAwait(false);
                            break;
                        case MessageType.GetTask:
                            await AnswerAsync(r.Id, async () =>
                            {
                                var task = await server._service.GetTaskAsync(r.Text!, TimeSpan.FromSeconds(r.Wait), ct).ConfigureAwait(false);
                                return Messages.Write(MessageType.Task, r.Id, 1, (ref MessagePackWriter w) => Messages.WriteJsonAsMap(ref w, task.Write));
                            }).ConfigureAwait(false);
                            break;
                        case MessageType.WaitTasks:
                            await WaitTasksAsync(r, ct).ConfigureAwait(false);
                            break;
                        case MessageType.Subscribe:
                            await SubscribeAsync(r, ct).ConfigureAwait(false);
                            break;
                        case MessageType.Get:
                            await AnswerAsync(r.Id, () =>
                            {
                                var (read, values) = Reads.Find(r.Text!)
                                    ?? throw new ApiException(404, "not found", $"no read at '{GraphLimits.Printable(r.Text!)}': the paths are {Reads.Paths}");
                                var query = r.Query;
                                var write = read(server._service, server._options, values, name => query is not null && query.TryGetValue(name, out var v) ? v : null);
                                return Task.FromResult(Messages.Write(MessageType.Resource, r.Id, 1, (ref MessagePackWriter w) => Messages.WriteJsonAsMap(ref w, write)));
                            }).ConfigureAwait(false);
                            break;
                    }
                }
                catch (Exception ex) when (ex is IOException or OperationCanceledException or ObjectDisposedException)
                {
                    // The connection is gone.
                }
                finally
                {
                    try { _inFlight.Release(); } catch (ObjectDisposedException) { }
                }
            }, CancellationToken.None);
        }

        /// <summary>
        /// The client serves handlers: they are declared (tasks of them are taken, and run on the
        /// external layer only), and leases of their attempts are pushed to it as it has free slots.
        /// </summary>
        private async Task BecomeWorkerAsync(Request r, CancellationToken ct)
        {
            if (_worker is not null)
            {
                await SendAsync(Messages.Error(r.Id, 409, "already a worker", "this connection serves handlers already; open another to serve others")).ConfigureAwait(false);
                return;
            }
            try
            {
                foreach (var h in r.Ids!) server._service.DeclareExternalHandler(h, _subject);
            }
            catch (ApiException ex)
            {
                await SendAsync(Messages.Error(r.Id, ex.Status, ex.Title, ex.Message)).ConfigureAwait(false);
                return;
            }
            var session = new Workers.WorkerSession(Guid.NewGuid().ToString("N")[..12], r.Ids!.Distinct().ToList(), r.Slots);
            await SendAsync(Messages.Write(MessageType.WorkerReady, r.Id, 2, (ref MessagePackWriter w) =>
            {
                w.Write(session.Id);
                w.Write(server._options.LeaseTimeout.TotalSeconds);
            })).ConfigureAwait(false);
            _worker = session;
            server._service.Work.Attach(session);
            server._log.LogInformation("worker {Worker} ({Peer}) serves {Handlers} with {Slots} slot(s)", session.Id, peer, string.Join(", ", session.Handlers.Select(GraphLimits.Printable)), session.Slots);
            _ = PushLeasesAsync(session, r.Id, ct);
            _ = WatchAsync(session, ct);
        }

        /// <summary>Sends the worker leases as it has free slots: [[lease_id, task_id, handler, args, attempt], …] under its worker request's id.</summary>
        private async Task PushLeasesAsync(Workers.WorkerSession session, uint id, CancellationToken ct)
        {
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    await session.WaitAsync(Timeout.InfiniteTimeSpan, ct).ConfigureAwait(false);
                    var granted = server._service.Work.Lease(session);
                    if (granted.Count == 0) continue;
                    await SendAsync(Messages.Write(MessageType.Leases, id, 1, (ref MessagePackWriter w) =>
                    {
                        w.WriteArrayHeader(granted.Count);
                        foreach (var (lease, work) in granted)
                        {
                            w.WriteArrayHeader(5);
                            w.Write(lease);
                            w.Write(work.TaskId);
                            w.Write(work.Handler);
                            MessagePackJson.Write(ref w, work.Args);
                            w.Write(work.Attempt);
                        }
                    })).ConfigureAwait(false);
                }
            }
            catch (Exception ex) when (ex is OperationCanceledException or IOException or ObjectDisposedException)
            {
                // The connection is gone: its leases go back when it is disposed.
            }
        }

        /// <summary>A worker silent (no result, no ping) past the lease time is taken for gone: its connection is closed and its leases go back.</summary>
        private async Task WatchAsync(Workers.WorkerSession session, CancellationToken ct)
        {
            var limit = server._options.LeaseTimeout;
            try
            {
                while (!ct.IsCancellationRequested)
                {
                    await Task.Delay(limit / 4, ct).ConfigureAwait(false);
                    if (System.Diagnostics.Stopwatch.GetElapsedTime(Volatile.Read(ref _lastHeard)) > limit)
                    {
                        server._log.LogWarning("worker {Worker} ({Peer}) was silent for {Seconds} s: taken for gone", session.Id, peer, limit.TotalSeconds);
                        _closed.Cancel();
                        return;
                    }
                }
            }
            catch (OperationCanceledException) { }
        }

        /// <summary>A worker's results: each ends its lease's attempt, if the lease is still this worker's (else it is dropped).</summary>
        private void TakeResults(Request r)
        {
            if (_worker is not { } session) return;
            using var together = Engine.Layers.LayerAttempt.EndTogether();   // the batch's slots given back at once
            foreach (var x in r.Results!)
            {
                if (!server._service.Work.Complete(session, x.Lease, new Workers.WorkResult(x.Ok, x.Output, x.Error, x.Confidence)))
                    server._log.LogDebug("worker {Worker}: result of lease {Lease} dropped (it went back, or its attempt ended)", session.Id, x.Lease);
            }
        }

        /// <summary>Sends what <paramref name="answer"/> makes, or the error the service refused the request with.</summary>
        private async Task AnswerAsync(uint id, Func<Task<byte[]>> answer)
        {
            byte[] message;
            try
            {
                message = await answer().ConfigureAwait(false);
            }
            catch (ApiException ex)
            {
                message = Messages.Error(id, ex.Status, ex.Title, ex.Message, ex.Errors);
            }
            await SendAsync(message).ConfigureAwait(false);
        }

        /// <summary>Tasks for the standing run, in order: each answered [task_id, sequence], or [nil, detail, errors] when refused (the rest still go in).</summary>
        private async Task<byte[]> SubmitTasksAsync(Request r, CancellationToken ct)
        {
            var results = new List<(string? Id, int Sequence, string? Detail, IReadOnlyList<GraphError>? Errors)>(r.Tasks!.Count);
            foreach (var item in r.Tasks)
            {
                try
                {
                    SubmittedTask? task;
                    if (item.Request is { } request)
                    {
                        if (!server._service.TrySubmitTask(request, _subject, out task))
                            task = await server._service.SubmitTaskAsync(request, _subject, ct).ConfigureAwait(false);
                    }
                    else
                    {
                        using var doc = JsonDocument.Parse(item.Json!, new JsonDocumentOptions { MaxDepth = GraphLimits.MaxJsonDepth });
                        task = await server._service.SubmitTaskAsync(doc.RootElement, _subject, ct).ConfigureAwait(false);
                    }
                    results.Add((task.Id, task.SequenceNumber, null, null));
                }
                catch (JsonException ex)
                {
                    results.Add((null, 0, $"not JSON: {ex.Message}", null));
                }
                catch (ApiException ex) when (ex.Status == 400)
                {
                    results.Add((null, 0, ex.Message, ex.Errors));
                }
                catch (ApiException ex)
                {
                    // Out of room or shutting down: this task and the rest are not taken.
                    return Messages.Error(r.Id, ex.Status, ex.Title, $"{ex.Message} ({results.Count} of {r.Tasks.Count} tasks were taken)");
                }
            }
            return Messages.Write(MessageType.TasksSubmitted, r.Id, 1, (ref MessagePackWriter w) =>
            {
                w.WriteArrayHeader(results.Count);
                foreach (var (id, sequence, detail, errors) in results)
                {
                    if (id is not null)
                    {
                        w.WriteArrayHeader(2);
                        w.Write(id);
                        w.Write(sequence);
                    }
                    else
                    {
                        w.WriteArrayHeader(3);
                        w.WriteNil();
                        w.Write(detail);
                        Messages.WriteErrors(ref w, errors);
                    }
                }
            });
        }

        /// <summary>A task message for each task as it ends (in the order they end), then done.</summary>
        private async Task WaitTasksAsync(Request r, CancellationToken ct)
        {
            var pending = new List<Task>(r.Ids!.Count);
            foreach (var id in r.Ids)
                pending.Add(AnswerAsync(r.Id, async () =>
                {
                    var task = await server._service.GetTaskAsync(id, TimeSpan.FromDays(1), ct, capWait: false).ConfigureAwait(false);
                    return Messages.Write(MessageType.Task, r.Id, 1, (ref MessagePackWriter w) => Messages.WriteJsonAsMap(ref w, task.Write));
                }));
            await Task.WhenAll(pending).ConfigureAwait(false);
            await SendAsync(Messages.Write(MessageType.Done, r.Id)).ConfigureAwait(false);
        }

        /// <summary>A run's events as event messages, then done when it ends (or an error when this reader fell too far behind).</summary>
        private async Task SubscribeAsync(Request r, CancellationToken ct)
        {
            EventHub? hub;
            try { hub = server._service.EventsOf(r.Text!); }
            catch (ApiException ex)
            {
                await SendAsync(Messages.Error(r.Id, ex.Status, ex.Title, ex.Message)).ConfigureAwait(false);
                return;
            }
            if (hub is null)
            {
                await SendAsync(Messages.Write(MessageType.Done, r.Id)).ConfigureAwait(false);
                return;
            }
            var subscription = hub.Subscribe();
            try
            {
                await foreach (var e in subscription.Reader.ReadAllAsync(ct).ConfigureAwait(false))
                {
                    await SendAsync(Messages.Write(MessageType.Event, r.Id, 1, (ref MessagePackWriter w) =>
                    {
                        w.WriteMapHeader(6);
                        w.Write("kind"); w.Write(ServerSentEvents.KindName(e.Kind));
                        w.Write("task"); w.Write(e.TaskId);
                        w.Write("index"); w.Write(e.Task);
                        w.Write("layer"); if (e.Layer is null) w.WriteNil(); else w.Write(e.Layer);
                        w.Write("attempt"); w.Write(e.Attempt);
                        w.Write("message"); if (e.Message is null) w.WriteNil(); else w.Write(e.Message);
                    })).ConfigureAwait(false);
                }
                await SendAsync(subscription.Overflowed
                    ? Messages.Error(r.Id, 429, "overflow", $"this subscriber fell {EventHub.SubscriberCapacity} events behind and was cut off; read the run's state and subscribe again")
                    : Messages.Write(MessageType.Done, r.Id)).ConfigureAwait(false);
            }
            finally
            {
                hub.Unsubscribe(subscription);
            }
        }

        private async Task RefuseAsync(uint id, int status, string title, string detail)
        {
            server._log.LogDebug("socket {Peer}: {Title}: {Detail}; closing", peer, title, detail);
            try { await SendAsync(Messages.Error(id, status, title, detail)).ConfigureAwait(false); }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException) { }
        }

        private async Task SendAsync(byte[] message)
        {
            await _writing.WaitAsync().ConfigureAwait(false);
            try
            {
                using var timeout = new CancellationTokenSource(WriteTimeout);
                await Frames.WriteAsync(stream, message, timeout.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // A client that does not read its answers for this long is dropped.
                _closed.Cancel();
                throw new IOException("the client did not read its answers");
            }
            finally
            {
                _writing.Release();
            }
        }

        /// <summary>How long one answer may wait for the client to read.</summary>
        private static readonly TimeSpan WriteTimeout = TimeSpan.FromSeconds(30);

        public async ValueTask DisposeAsync()
        {
            _closed.Cancel();
            if (_worker is { } session)
            {
                int back = server._service.Work.Detach(session);
                server._log.LogInformation("worker {Worker} ({Peer}) left; {Count} lease(s) went back to the queue", session.Id, peer, back);
            }
            // Let handlers that are writing finish before the stream goes.
            for (int i = 0; i < MaxInFlight; i++)
                if (!await _inFlight.WaitAsync(TimeSpan.FromSeconds(1)).ConfigureAwait(false)) break;
            await stream.DisposeAsync().ConfigureAwait(false);
            _closed.Dispose();
        }
    }
}
