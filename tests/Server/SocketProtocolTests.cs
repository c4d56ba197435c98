using System.Buffers;
using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using MessagePack;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>The MessagePack socket protocol over real sockets on 127.0.0.1, written from docs/protocol.md's framing and message table.</summary>
public sealed class SocketProtocolTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-socket-").FullName;
    private TestService _service = null!;
    private TaskMeshServer _server = null!;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    // Message types (docs/protocol.md).
    private const int Error = 0, Hello = 1, Welcome = 2, Done = 3, Ping = 4, Pong = 5, SubmitGraph = 10, RunSubmitted = 11,
        SubmitTasks = 12, TasksSubmitted = 13, GetRun = 14, Run = 15, GetTask = 16, TaskMessage = 17, WaitTasks = 22, Subscribe = 24, Event = 25, ChangeTask = 26, Escalate = 28,
        Worker = 30, WorkerReady = 31, Leases = 33, Results = 34;

    public Task InitializeAsync() => StartAsync(new ServerOptions { HttpPort = 0, SocketPort = 0, HandshakeTimeout = TimeSpan.FromSeconds(2), MaxFrameBytes = 1 << 20, LeaseTimeout = TimeSpan.FromSeconds(1) });

    private async Task StartAsync(ServerOptions options)
    {
        _service = await TestService.StartAsync(options, HttpApiTests.BigLayer, Path.Combine(_dir, "runs.db"));
        _server = _service.Server;
    }

    public async Task DisposeAsync()
    {
        await _service.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    /// <summary>A client of the protocol: frames out, frames in, each message [type, request_id, body].</summary>
    private sealed class Client : IDisposable
    {
        private readonly TcpClient _tcp = new() { NoDelay = true };
        public NetworkStream Stream { get; private set; } = null!;

        public static async Task<Client> ConnectAsync(IPEndPoint at)
        {
            var c = new Client();
            await c._tcp.ConnectAsync(at);
            c.Stream = c._tcp.GetStream();
            return c;
        }

        public async Task SendRawAsync(byte[] bytes) => await Stream.WriteAsync(bytes);

        public async Task SendAsync(int type, uint id, params object?[] body)
        {
            var payload = MessagePackSerializer.Serialize(new object[] { type, id, body });
            var header = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(header, (uint)payload.Length);
            await Stream.WriteAsync(header);
            await Stream.WriteAsync(payload);
        }

        /// <summary>The next message, or null when the service closed the connection.</summary>
        public async Task<(int Type, uint Id, object?[] Body)?> ReadAsync()
        {
            using var cts = new CancellationTokenSource(Limit);
            var header = new byte[4];
            try
            {
                await Stream.ReadExactlyAsync(header, cts.Token);
            }
            catch (Exception ex) when (ex is EndOfStreamException or IOException)
            {
                return null;
            }
            var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
            await Stream.ReadExactlyAsync(payload, cts.Token);
            var message = MessagePackSerializer.Deserialize<object?[]>(payload);
            return (Convert.ToInt32(message[0]), Convert.ToUInt32(message[1]), (object?[])message[2]!);
        }

        public async Task<(int Type, uint Id, object?[] Body)> ExpectAsync(int type)
        {
            var m = await ReadAsync() ?? throw new Xunit.Sdk.XunitException($"the service closed the connection; expected message {type}");
            Assert.True(m.Type == type, $"expected message {type}, got {m.Type}: {string.Join(", ", m.Body.Select(Describe))}");
            return m;
        }

        /// <summary>The hello; returns the welcome's body.</summary>
        public async Task<object?[]> HandshakeAsync(string? token = null)
        {
            await SendAsync(Hello, 0, 1, token, "tests");
            return (await ExpectAsync(Welcome)).Body;
        }

        /// <summary>True once the service has closed the connection (reads to its end, bounded).</summary>
        public async Task<bool> ClosedAsync()
        {
            using var cts = new CancellationTokenSource(Limit);
            var buffer = new byte[4096];
            try
            {
                while (await Stream.ReadAsync(buffer, cts.Token) > 0) { }
                return true;
            }
            catch (IOException)
            {
                return true;
            }
        }

        public void Dispose() => _tcp.Dispose();
    }

    private static string Describe(object? o) => o switch
    {
        null => "nil",
        object?[] a => "[" + string.Join(", ", a.Select(Describe)) + "]",
        IDictionary<object, object> d => "{" + string.Join(", ", d.Select(kv => $"{kv.Key}: {Describe(kv.Value)}")) + "}",
        _ => o.ToString()!,
    };

    private static IDictionary<object, object> Map(object? o) => Assert.IsAssignableFrom<IDictionary<object, object>>(o);

    private IPEndPoint Endpoint => _server.SocketEndpoint!;

    [Fact]
    public async Task AGraphSubmittedOverTheSocket_RunsAndIsReadBack_WithPipelinedRequests()
    {
        using var c = await Client.ConnectAsync(Endpoint);
        var welcome = await c.HandshakeAsync();
        Assert.Equal(1, Convert.ToInt32(welcome[0]));
        Assert.Equal(_server.StandingRunId, welcome[2]);

        // The graph as a map (the same shape as the JSON file) and as JSON text.
        var graph = new Dictionary<string, object>
        {
            ["name"] = "socket",
            ["tasks"] = new object[]
            {
                new Dictionary<string, object> { ["id"] = "a", ["handler"] = "noop" },
                new Dictionary<string, object> { ["id"] = "b", ["handler"] = "noop", ["dependsOn"] = new object[] { "a" } },
            },
        };
        await c.SendAsync(SubmitGraph, 7, graph);
        await c.SendAsync(SubmitGraph, 8, """{ "name": "text", "tasks": [ { "id": "x", "handler": "noop" } ] }""");
        var first = await c.ExpectAsync(RunSubmitted);
        var second = await c.ExpectAsync(RunSubmitted);
        Assert.Equal([7u, 8u], new[] { first.Id, second.Id }.Order());

        // Many requests in flight on one connection; each answer carries its request id.
        string runA = (string)(first.Id == 7 ? first : second).Body[0]!;
        string runB = (string)(first.Id == 7 ? second : first).Body[0]!;
        await c.SendAsync(GetRun, 100, runA, 10);
        await c.SendAsync(Ping, 101);
        await c.SendAsync(GetRun, 102, runB, 10);
        var answers = new Dictionary<uint, (int Type, object?[] Body)>();
        for (int i = 0; i < 3; i++)
        {
            var m = (await c.ReadAsync())!.Value;
            answers[m.Id] = (m.Type, m.Body);
        }
        Assert.Equal(Pong, answers[101].Type);
        Assert.Equal(Run, answers[100].Type);
        var runMap = Map(answers[100].Body[0]);
        Assert.Equal("succeeded", runMap["status"]);
        Assert.Equal(2, Convert.ToInt32(Map(runMap["tasks"])["succeeded"]));
        Assert.Equal("text", Map(answers[102].Body[0])["graph"]);

        // An invalid graph: an error with each problem, and the connection goes on.
        await c.SendAsync(SubmitGraph, 9, new Dictionary<string, object> { ["name"] = "bad", ["tasks"] = new object[] { new Dictionary<string, object> { ["id"] = "q", ["handler"] = "nope" } } });
        var error = await c.ExpectAsync(Error);
        Assert.Equal(9u, error.Id);
        Assert.Equal(400, Convert.ToInt32(error.Body[0]));
        var problem = (object?[])((object?[])error.Body[3]!)[0]!;
        Assert.Equal(("unknown-handler", "q"), ((string)problem[0]!, (string)problem[2]!));
        Assert.Equal((null, null), (problem[3], problem[4]));   // a map has no lines of the client's
        // As JSON text, the problems name its lines.
        await c.SendAsync(SubmitGraph, 11, "{ \"name\": \"bad\",\n  \"tasks\": [ { \"id\": \"q\", \"handler\": \"nope\" } ] }");
        var textError = (object?[])((object?[])(await c.ExpectAsync(Error)).Body[3]!)[0]!;
        Assert.Equal(2, Convert.ToInt32(textError[3]));
        await c.SendAsync(Ping, 10);
        await c.ExpectAsync(Pong);
    }

    [Fact]
    public async Task TasksSubmittedInABatch_AreAnsweredEach_AndTheirResultsComeAsTheyEnd()
    {
        using var c = await Client.ConnectAsync(Endpoint);
        await c.HandshakeAsync();
        var tasks = new object[]
        {
            new Dictionary<string, object> { ["id"] = "p1", ["handler"] = "hash", ["args"] = new Dictionary<string, object> { ["bytes"] = 64 } },
            new Dictionary<string, object> { ["id"] = "p2", ["handler"] = "noop", ["dependsOn"] = new object[] { new Dictionary<string, object> { ["id"] = "p1", ["type"] = "data" } } },
            new Dictionary<string, object> { ["id"] = "p3", ["handler"] = "noop", ["dependsOn"] = new object[] { "never-submitted" } },
            new Dictionary<string, object> { ["handler"] = "noop" },
        };
        await c.SendAsync(SubmitTasks, 1, [tasks]);
        var submitted = await c.ExpectAsync(TasksSubmitted);
        var results = ((object?[])submitted.Body[0]!).Cast<object?[]>().ToList();
        Assert.Equal(4, results.Count);
        Assert.Equal("p1", results[0][0]);
        Assert.Equal("p2", results[1][0]);
        Assert.Null(results[2][0]);   // refused: the rest still went in
        Assert.Contains("never-submitted", (string)results[2][1]!);
        Assert.Equal("unknown-dependency", ((object?[])((object?[])results[2][2]!)[0]!)[0]);
        string generated = (string)results[3][0]!;
        Assert.StartsWith("#", generated);

        await c.SendAsync(WaitTasks, 2, [new object[] { "p1", "p2", generated }]);
        var ended = new HashSet<string>();
        for (int i = 0; i < 3; i++)
        {
            var m = await c.ExpectAsync(TaskMessage);
            Assert.Equal(2u, m.Id);
            var task = Map(m.Body[0]);
            Assert.Equal("succeeded", task["status"]);
            ended.Add((string)task["id"]);
        }
        Assert.Equal(new[] { "p1", "p2", generated }.Order(StringComparer.Ordinal), ended.Order(StringComparer.Ordinal));
        Assert.Equal(2u, (await c.ExpectAsync(Done)).Id);

        await c.SendAsync(GetTask, 3, "p2", 0);
        Assert.Equal("succeeded", Map((await c.ExpectAsync(TaskMessage)).Body[0])["status"]);
    }

    [Fact]
    public async Task AWaitingTaskChangesItsArgs_ARunningOneRefuses_AndAnEndedRunsTaskIsEscalated()
    {
        using var c = await Client.ConnectAsync(Endpoint);
        await c.HandshakeAsync();
        var tasks = new object[]
        {
            new Dictionary<string, object> { ["id"] = "hold", ["handler"] = "sleep", ["args"] = new Dictionary<string, object> { ["millis"] = 1500 } },
            new Dictionary<string, object> { ["id"] = "changed", ["handler"] = "fail", ["args"] = new Dictionary<string, object> { ["message"] = "as first sent" }, ["dependsOn"] = new object[] { "hold" } },
        };
        await c.SendAsync(SubmitTasks, 1, [tasks]);
        await c.ExpectAsync(TasksSubmitted);
        await c.SendAsync(ChangeTask, 2, "changed", "high", new Dictionary<string, object> { ["message"] = "as changed" });
        Assert.Equal(2u, (await c.ExpectAsync(Done)).Id);
        await c.SendAsync(ChangeTask, 3, "changed", "urgent", null);
        Assert.Equal(400, Convert.ToInt32((await c.ExpectAsync(Error)).Body[0]));
        await c.SendAsync(ChangeTask, 4, "nosuch", "low", null);
        Assert.Equal(404, Convert.ToInt32((await c.ExpectAsync(Error)).Body[0]));

        await c.SendAsync(GetTask, 5, "changed", 10);
        var ended = Map((await c.ExpectAsync(TaskMessage)).Body[0]);
        Assert.Equal("failed", ended["status"]);
        Assert.Contains("as changed", (string)ended["error"]);
        await c.SendAsync(ChangeTask, 6, "hold", "low", null);
        var refused = await c.ExpectAsync(Error);
        Assert.Equal(409, Convert.ToInt32(refused.Body[0]));
        Assert.Contains("ended", (string)refused.Body[2]!);

        // Manual escalation of an ended run's task: a new run, recorded as manual.
        await c.SendAsync(SubmitGraph, 7, """{ "name": "esc", "tasks": [ { "id": "a", "handler": "noop" } ] }""");
        string run = (string)(await c.ExpectAsync(RunSubmitted)).Body[0]!;
        await c.SendAsync(GetRun, 8, run, 10);
        Assert.Equal("succeeded", Map((await c.ExpectAsync(Run)).Body[0])["status"]);
        await c.SendAsync(Escalate, 9, run, "a", "big", "checked again");
        string again = (string)(await c.ExpectAsync(RunSubmitted)).Body[0]!;
        Assert.NotEqual(run, again);
        await c.SendAsync(GetRun, 10, again, 10);
        var rerun = Map((await c.ExpectAsync(Run)).Body[0]);
        Assert.Equal("succeeded", rerun["status"]);
        await c.SendAsync(Escalate, 11, "nosuchrun", "a", "local", null);
        Assert.Equal(404, Convert.ToInt32((await c.ExpectAsync(Error)).Body[0]));
    }

    [Fact]
    public async Task ASubscriptionStreamsARunsEvents_ThenDone()
    {
        using var c = await Client.ConnectAsync(Endpoint);
        await c.HandshakeAsync();
        await c.SendAsync(SubmitGraph, 1, """{ "name": "watch", "tasks": [ { "id": "g", "handler": "sleep", "args": { "millis": 1000 } }, { "id": "z", "handler": "noop", "dependsOn": ["g"] } ] }""");
        string run = (string)(await c.ExpectAsync(RunSubmitted)).Body[0]!;
        await c.SendAsync(Subscribe, 2, run);
        var kinds = new List<(string Kind, string Task)>();
        while (true)
        {
            var m = (await c.ReadAsync())!.Value;
            Assert.Equal(2u, m.Id);
            if (m.Type == Done) break;
            Assert.Equal(Event, m.Type);
            var e = Map(m.Body[0]);
            kinds.Add(((string)e["kind"], (string)e["task"]));
        }
        Assert.Contains(("succeeded", "g"), kinds);
        Assert.Contains(("succeeded", "z"), kinds);
    }

    [Fact]
    public async Task AWorkerSilentPastItsLease_IsDropped_AndItsTaskGoesToAnother_WhoseResultEndsIt()
    {
        using var silent = await Client.ConnectAsync(Endpoint);
        await silent.HandshakeAsync();
        await silent.SendAsync(Worker, 1, new object[] { "ext.f" }, 1);
        Assert.Equal(1u, (await silent.ExpectAsync(WorkerReady)).Id);

        using var client = await Client.ConnectAsync(Endpoint);
        await client.HandshakeAsync();
        await client.SendAsync(SubmitTasks, 2, [new object[] { new Dictionary<string, object> { ["id"] = "x1", ["handler"] = "ext.f", ["args"] = new Dictionary<string, object> { ["n"] = 3 } } }]);
        Assert.Equal("x1", ((object?[])((object?[])(await client.ExpectAsync(TasksSubmitted)).Body[0]!)[0]!)[0]);

        // The silent worker pings until it gets the lease (however long the submission took on a
        // loaded machine), then never answers, and is dropped after the lease time.
        using var gotLease = new CancellationTokenSource();
        var pinging = Task.Run(async () =>
        {
            while (!gotLease.IsCancellationRequested)
            {
                await silent.SendAsync(4, 99);
                try { await Task.Delay(200, gotLease.Token); } catch (OperationCanceledException) { }
            }
        });
        (int Type, uint Id, object?[] Body) leased;
        do leased = (await silent.ReadAsync())!.Value;
        while (leased.Type == 5);   // pongs
        gotLease.Cancel();
        await pinging;
        Assert.Equal(Leases, leased.Type);
        var lease = (object?[])((object?[])leased.Body[0]!)[0]!;
        Assert.Equal(("x1", "ext.f"), ((string)lease[1]!, (string)lease[2]!));
        Assert.Equal(3, Convert.ToInt32(Map(lease[3])["n"]));
        Assert.True(await silent.ClosedAsync());

        using var second = await Client.ConnectAsync(Endpoint);
        await second.HandshakeAsync();
        await second.SendAsync(Worker, 1, new object[] { "ext.f" }, 2);
        await second.ExpectAsync(WorkerReady);
        var again = (object?[])((object?[])(await second.ExpectAsync(Leases)).Body[0]!)[0]!;
        Assert.Equal("x1", again[1]);
        Assert.NotEqual(Convert.ToInt64(lease[0]), Convert.ToInt64(again[0]));   // a new lease
        await second.SendAsync(Results, 0, [new object?[] { new object?[] { Convert.ToInt64(again[0]), true, new Dictionary<string, object> { ["answer"] = 42 }, 0.9 } }]);

        await client.SendAsync(GetTask, 3, "x1", 10);
        var task = Map((await client.ExpectAsync(TaskMessage)).Body[0]);
        Assert.Equal(("succeeded", "external"), ((string)task["status"], (string)task["layer"]));
        Assert.Equal(0.9, Convert.ToDouble(task["confidence"]), 6);
        Assert.Contains("42", (string)task["output_summary"]);

        // A handler the service runs itself cannot be taken over by a worker; a worker serves one set of handlers per connection.
        using var third = await Client.ConnectAsync(Endpoint);
        await third.HandshakeAsync();
        await third.SendAsync(Worker, 5, new object[] { "noop" }, 1);
        var taken = await third.ExpectAsync(Error);
        Assert.Equal((409, "handler taken"), (Convert.ToInt32(taken.Body[0]), (string)taken.Body[1]!));
        await second.SendAsync(Worker, 6, new object[] { "ext.g" }, 1);
        var again2 = await second.ExpectAsync(Error);
        Assert.Equal((409, "already a worker"), (Convert.ToInt32(again2.Body[0]), (string)again2.Body[1]!));
    }

    [Fact]
    public async Task AHandlerTheConfigSaysWorkersServe_IsTakenBeforeAnyWorker_AndItsTasksWaitForOne()
    {
        await DisposeAsync();
        Directory.CreateDirectory(_dir);
        await StartAsync(new ServerOptions { HttpPort = 0, SocketPort = 0, ExternalHandlers = ["ext.known"] });
        using var client = await Client.ConnectAsync(Endpoint);
        await client.HandshakeAsync();
        await client.SendAsync(SubmitGraph, 1, """{ "name": "waits", "tasks": [ { "id": "k", "handler": "ext.known", "args": { "n": 1 } }, { "id": "after", "handler": "noop", "dependsOn": ["k"] } ] }""");
        string run = (string)(await client.ExpectAsync(RunSubmitted)).Body[0]!;
        await client.SendAsync(GetRun, 2, run, 0.5);
        Assert.Equal("running", Map((await client.ExpectAsync(Run)).Body[0])["status"]);   // no worker yet: it waits

        using var worker = await Client.ConnectAsync(Endpoint);
        await worker.HandshakeAsync();
        await worker.SendAsync(Worker, 1, new object[] { "ext.known" }, 1);
        await worker.ExpectAsync(WorkerReady);
        var lease = (object?[])((object?[])(await worker.ExpectAsync(Leases)).Body[0]!)[0]!;
        await worker.SendAsync(Results, 0, [new object?[] { new object?[] { Convert.ToInt64(lease[0]), true, "done", null } }]);
        await client.SendAsync(GetRun, 3, run, 10);
        var ended = Map((await client.ExpectAsync(Run)).Body[0]);
        Assert.Equal("succeeded", ended["status"]);
        Assert.Equal(2, Convert.ToInt32(Map(ended["tasks"])["succeeded"]));

        // An output JSON cannot hold fails its attempt; the worker's connection goes on.
        await client.SendAsync(SubmitTasks, 4, [new object[] { new Dictionary<string, object> { ["id"] = "nan", ["handler"] = "ext.known", ["retries"] = 0 } }]);
        await client.ExpectAsync(TasksSubmitted);
        var second = (object?[])((object?[])(await worker.ExpectAsync(Leases)).Body[0]!)[0]!;
        await worker.SendAsync(Results, 0, [new object?[] { new object?[] { Convert.ToInt64(second[0]), true, double.NaN, null } }]);
        await client.SendAsync(GetTask, 5, "nan", 10);
        var failed = Map((await client.ExpectAsync(TaskMessage)).Body[0]);
        Assert.Equal("failed", failed["status"]);
        Assert.Contains("NaN", (string)failed["error"]);
        await worker.SendAsync(Ping, 6);
        await worker.ExpectAsync(Pong);
    }

    /// <summary>Each way of breaking the protocol is answered with an error and a closed connection, while a healthy client goes on.</summary>
    [Fact]
    public async Task BadFrames_CloseTheirConnectionOnly_WhileAHealthyClientCompletes()
    {
        using var healthy = await Client.ConnectAsync(Endpoint);
        await healthy.HandshakeAsync();

        async Task ExpectRefused(Func<Client, Task> misbehave, int? status)
        {
            using var bad = await Client.ConnectAsync(Endpoint);
            await misbehave(bad);
            if (status is int s)
            {
                var error = await bad.ExpectAsync(Error);
                Assert.Equal(s, Convert.ToInt32(error.Body[0]));
            }
            Assert.True(await bad.ClosedAsync());
            await healthy.SendAsync(Ping, 1);
            await healthy.ExpectAsync(Pong);
        }

        // A wrong protocol version.
        await ExpectRefused(c => c.SendAsync(Hello, 0, 99, null, "old"), 400);
        // A length prefix over the cap (nothing of that size is allocated), and one of 0.
        await ExpectRefused(c => c.SendRawAsync([0x7f, 0xff, 0xff, 0xff]), 400);
        await ExpectRefused(c => c.SendRawAsync([0, 0, 0, 0]), 400);
        // A truncated frame: the length says 100, 10 bytes come, then the client stops sending.
        await ExpectRefused(async c => { await c.SendRawAsync([0, 0, 0, 100, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]); c.Stream.Socket.Shutdown(SocketShutdown.Send); }, 400);
        // Garbage that is not MessagePack at all.
        await ExpectRefused(c => c.SendRawAsync([0, 0, 0, 4, 0xc1, 0xc1, 0xc1, 0xc1]), 400);
        // Valid MessagePack of the wrong shape: a map, a too-short array, a string type.
        await ExpectRefused(async c =>
        {
            var payload = MessagePackSerializer.Serialize(new Dictionary<string, int> { ["type"] = 1 });
            await c.SendRawAsync([.. BitConverter.GetBytes((uint)payload.Length).Reverse(), .. payload]);
        }, 400);
        await ExpectRefused(c => c.SendAsync(Hello, 0), 400);
        await ExpectRefused(async c => { await c.HandshakeAsync(); await c.SendAsync(SubmitGraph, 5, 12345); }, 400);
        // An unknown message type after the handshake; a second hello.
        await ExpectRefused(async c => { await c.HandshakeAsync(); await c.SendAsync(77, 5); }, 400);
        await ExpectRefused(async c => { await c.HandshakeAsync(); await c.SendAsync(Hello, 6, 1, null, "again"); }, 400);
        // A client that connects and sends nothing: closed after the handshake timeout.
        await ExpectRefused(_ => Task.CompletedTask, 408);

        await healthy.SendAsync(SubmitGraph, 2, """{ "name": "still", "tasks": [ { "id": "a", "handler": "noop" } ] }""");
        string run = (string)(await healthy.ExpectAsync(RunSubmitted)).Body[0]!;
        await healthy.SendAsync(GetRun, 3, run, 10);
        Assert.Equal("succeeded", Map((await healthy.ExpectAsync(Run)).Body[0])["status"]);
    }

    [Fact]
    public async Task ThousandsOfRandomAndMutatedFrames_NeverStopTheService_AndMemoryStaysFlat()
    {
        var random = new Random(12345);
        // Valid messages of each shape the parser reads, mutated: a graph, tasks read straight from
        // MessagePack (with arguments and dependencies), a change, an escalation, a worker's results, a read.
        var valid = new[]
        {
            MessagePackSerializer.Serialize(new object[] { SubmitGraph, 1u, new object[] { new Dictionary<string, object> { ["name"] = "f", ["tasks"] = new object[] { new Dictionary<string, object> { ["id"] = "a", ["handler"] = "noop" } } } } }),
            MessagePackSerializer.Serialize(new object[] { SubmitTasks, 2u, new object[] { new object[] {
                new Dictionary<string, object> { ["handler"] = "noop", ["args"] = new Dictionary<string, object> { ["n"] = new object[] { 1, "x", 2.5 } } },
                new Dictionary<string, object> { ["handler"] = "noop", ["dependsOn"] = new object[] { "a", new Dictionary<string, object> { ["id"] = "b", ["type"] = "data" } } } } } }),
            MessagePackSerializer.Serialize(new object?[] { ChangeTask, 3u, new object?[] { "t", "high", new Dictionary<string, object> { ["n"] = 1 } } }),
            MessagePackSerializer.Serialize(new object?[] { Escalate, 4u, new object?[] { "r", "a", "big", null } }),
            MessagePackSerializer.Serialize(new object?[] { Results, 5u, new object?[] { new object?[] { new object?[] { 1L, true, new Dictionary<string, object> { ["k"] = new object[] { 1 } }, 0.5 } } } }),
            MessagePackSerializer.Serialize(new object?[] { 36, 6u, new object?[] { "runs/a%2Fb/tasks", new Dictionary<string, object> { ["limit"] = 5, ["status"] = "failed" } } }),
        };
        var hello = MessagePackSerializer.Serialize(new object?[] { Hello, 0u, new object?[] { 1, null, "fuzz" } });
        GC.Collect();
        long before = GC.GetTotalMemory(forceFullCollection: true);
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        int sent = 0;
        for (int round = 0; round < 4_000 && DateTime.UtcNow < deadline; round++)
        {
            using var c = await Client.ConnectAsync(Endpoint);
            // Half the rounds pass the handshake first, so the fuzz reaches the request parser too.
            bool greet = round % 2 == 0;
            var frames = new List<byte[]>();
            if (greet) frames.Add(hello);
            for (int k = 0; k < 3; k++)
            {
                byte[] payload = (round % 3) switch
                {
                    0 => RandomBytes(random, random.Next(1, 64)),
                    1 => Mutate(random, valid[random.Next(valid.Length)]),
                    _ => Mutate(random, hello),
                };
                frames.Add(payload);
            }
            try
            {
                foreach (var f in frames)
                {
                    var header = new byte[4];
                    // Now and then a lying length prefix.
                    BinaryPrimitives.WriteUInt32BigEndian(header, random.Next(20) == 0 ? (uint)random.Next() : (uint)f.Length);
                    await c.SendRawAsync([.. header, .. f]);
                    sent++;
                }
                c.Stream.Socket.Shutdown(SocketShutdown.Send);
                await c.ClosedAsync();
            }
            catch (IOException)
            {
                // Closed on us mid-send: as refused frames should be.
            }
        }
        Assert.True(sent > 1_000, $"only {sent} frames were sent in the time given");

        // Still serving: a proper client gets its run done.
        using var healthy = await Client.ConnectAsync(Endpoint);
        await healthy.HandshakeAsync();
        await healthy.SendAsync(SubmitGraph, 1, """{ "name": "after-fuzz", "tasks": [ { "id": "a", "handler": "noop" } ] }""");
        string run = (string)(await healthy.ExpectAsync(RunSubmitted)).Body[0]!;
        await healthy.SendAsync(GetRun, 2, run, 10);
        Assert.Equal("succeeded", Map((await healthy.ExpectAsync(Run)).Body[0])["status"]);
        GC.Collect();
        long after = GC.GetTotalMemory(forceFullCollection: true);
        Assert.True(after - before < 64L << 20, $"managed memory grew by {(after - before) >> 20} MB over the fuzz");
    }

    private static byte[] RandomBytes(Random random, int n)
    {
        var b = new byte[n];
        random.NextBytes(b);
        return b;
    }

    private static byte[] Mutate(Random random, byte[] source)
    {
        var b = (byte[])source.Clone();
        int flips = random.Next(1, 4);
        for (int i = 0; i < flips; i++) b[random.Next(b.Length)] = (byte)random.Next(256);
        if (random.Next(4) == 0) Array.Resize(ref b, random.Next(1, b.Length));
        return b;
    }
}
