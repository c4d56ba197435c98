using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Time.Testing;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>Bearer tokens and roles on the HTTP API (a real Kestrel on 127.0.0.1), and the <c>token</c> command.</summary>
public sealed class TokenTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-tokens-").FullName;
    private string KeyFile => Path.Combine(_dir, "api.key");
    private TestService _service = null!;
    private TaskMeshServer _server = null!;
    private HttpClient _http = null!;
    private byte[] _key = null!;

    public async Task InitializeAsync()
    {
        Tokens.CreateKeyFile(KeyFile);
        _key = Tokens.LoadKey(KeyFile);
        _service = await TestService.StartAsync(new ServerOptions { HttpPort = 0, SocketPort = 0, TokenKeyFile = KeyFile, GraphDirectory = _dir },
            store: Path.Combine(_dir, "runs.db"), metrics: true);
        _server = _service.Server;
        _http = new HttpClient { BaseAddress = _server.HttpAddress, Timeout = TimeSpan.FromSeconds(30) };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _service.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private async Task<HttpResponseMessage> Send(HttpMethod method, string path, string? token, string? body = null)
    {
        var request = new HttpRequestMessage(method, path);
        if (token is not null) request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
        if (body is not null) request.Content = new StringContent(body, Encoding.UTF8, "application/json");
        return await _http.SendAsync(request);
    }

    private string Token(string role, TimeSpan? lifetime = null, TimeProvider? clock = null) => Tokens.Create(_key, role, $"{role}-user", lifetime ?? TimeSpan.FromHours(1), clock);

    private const string Graph = """{ "name": "g", "tasks": [ { "id": "a", "handler": "noop" } ] }""";

    [Fact]
    public async Task EachRole_IsAllowedItsOwnAndTheLesserRolesRequests_AndRefusedTheRest()
    {
        string viewer = Token(Roles.Viewer), op = Token(Roles.Operator), admin = Token(Roles.Admin);

        // A viewer reads, and cannot submit or cancel.
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "status", viewer)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "api/layers", viewer)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "metrics", viewer)).StatusCode);
        var refused = await Send(HttpMethod.Post, "api/runs", viewer, Graph);
        Assert.Equal(HttpStatusCode.Forbidden, refused.StatusCode);
        Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        Assert.Contains("operator", await refused.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "api/tasks", viewer, """{ "handler": "noop" }""")).StatusCode);

        // An operator submits and cancels; an admin may too.
        var submitted = await Send(HttpMethod.Post, "api/runs", op, Graph);
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        using var doc = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync());
        string runId = doc.RootElement.GetProperty("run_id").GetString()!;
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, $"api/runs/{runId}?wait=10", viewer)).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "api/tasks", admin, """{ "handler": "noop" }""")).StatusCode);

        // Only an admin changes a layer.
        Assert.Equal(HttpStatusCode.Forbidden, (await Send(HttpMethod.Post, "api/layers/local", op, """{ "capacity": 2 }""")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "api/layers/local", admin, """{ "capacity": 2 }""")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "api/rules", viewer)).StatusCode);
    }

    /// <summary>Every endpoint with the least role it needs (and a request it may answer without running anything long).</summary>
    private static readonly (string Method, string Path, string Role, string? Body)[] Endpoints =
    [
        ("GET", "status", Roles.Viewer, null),
        ("GET", "metrics", Roles.Viewer, null),
        ("GET", "openapi/v1.json", Roles.Viewer, null),
        ("POST", "api/runs", Roles.Operator, Graph),
        ("GET", "api/runs", Roles.Viewer, null),
        ("GET", "api/runs/nosuchrun", Roles.Viewer, null),
        ("POST", "api/runs/nosuchrun/cancel", Roles.Operator, null),
        ("GET", "api/runs/nosuchrun/events", Roles.Viewer, null),
        ("GET", "api/runs/nosuchrun/tasks/a", Roles.Viewer, null),
        ("GET", "api/runs/nosuchrun/tasks", Roles.Viewer, null),
        ("GET", "api/runs/nosuchrun/graph", Roles.Viewer, null),
        ("POST", "api/runs/nosuchrun/tasks/a/escalate", Roles.Operator, """{ "to": "local" }"""),
        ("POST", "api/tasks", Roles.Operator, """{ "handler": "noop" }"""),
        ("GET", "api/tasks/nosuchtask", Roles.Viewer, null),
        ("POST", "api/tasks/nosuchtask/cancel", Roles.Operator, null),
        ("PUT", "api/tasks/nosuchtask", Roles.Operator, """{ "priority": "high" }"""),
        ("GET", "api/layers", Roles.Viewer, null),
        ("GET", "api/workers", Roles.Viewer, null),
        ("POST", "api/layers/local", Roles.Admin, """{ "capacity": 4 }"""),
        ("GET", "api/metrics", Roles.Viewer, null),
        ("GET", "api/metrics/escalations", Roles.Viewer, null),
        ("GET", "api/metrics/complexity", Roles.Viewer, null),
        ("GET", "api/session", Roles.Viewer, null),
        ("GET", "api/rules", Roles.Viewer, null),
        ("PUT", "api/rules", Roles.Admin, """{ "rules": [] }"""),
        ("GET", "api/learning/models", Roles.Viewer, null),
        ("POST", "api/learning/predict", Roles.Viewer, Graph),
        ("GET", "api/audit", Roles.Viewer, null),
        ("POST", "api/learning/train", Roles.Admin, null),
    ];

    /// <summary>The api rows of an audit trail (polled: the store writes them on its writer thread), as (action, caller, detail).</summary>
    private async Task<List<JsonElement>> ApiRows(string query, int atLeast)
    {
        var until = DateTime.UtcNow.AddSeconds(20);
        while (true)
        {
            var answer = await Send(HttpMethod.Get, "api/audit?" + query, Token(Roles.Viewer));
            Assert.Equal(HttpStatusCode.OK, answer.StatusCode);
            var rows = JsonDocument.Parse(await answer.Content.ReadAsStringAsync()).RootElement.GetProperty("audit").EnumerateArray()
                .Select(a => a.Clone()).ToList();
            if (rows.Count >= atLeast || DateTime.UtcNow > until) return rows;
            await Task.Delay(50);
        }
    }

    [Fact]
    public async Task WhoDidWhat_GoesIntoTheAuditTrail_UnderItsTokenSubject()
    {
        string op = Token(Roles.Operator), admin = Token(Roles.Admin);
        var submitted = await Send(HttpMethod.Post, "api/runs", op, Graph);
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;

        var run = await ApiRows($"run={runId}&category=api", 1);
        var submit = Assert.Single(run);
        Assert.Equal("api", submit.GetProperty("category").GetString());
        Assert.Equal("submit_graph", submit.GetProperty("detail").GetProperty("action").GetString());
        Assert.Equal("operator-user", submit.GetProperty("detail").GetProperty("caller").GetString());

        // A task of the standing run: its submission row names who submitted it.
        Assert.Equal(HttpStatusCode.Created, (await Send(HttpMethod.Post, "api/tasks", op, """{ "id": "audited", "handler": "noop" }""")).StatusCode);
        var submissions = await ApiRows($"run={_server.Service.Standing.RunId}&category=task_submission", 1);
        var task = Assert.Single(submissions, a => a.GetProperty("task_id").GetString() == "audited");
        Assert.Equal("operator-user", task.GetProperty("detail").GetProperty("submitted_by").GetString());

        // An action on the service itself: no run, newest first.
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Post, "api/layers/local", admin, """{ "capacity": 3 }""")).StatusCode);
        var service = await ApiRows("category=api", 1);
        var capacity = service[0].GetProperty("detail");
        Assert.Equal("set_layer_capacity", capacity.GetProperty("action").GetString());
        Assert.Equal("admin-user", capacity.GetProperty("caller").GetString());
        Assert.Equal(3, capacity.GetProperty("capacity").GetInt32());

        Assert.Equal(HttpStatusCode.BadRequest, (await Send(HttpMethod.Get, "api/audit?category=nosuch", op)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await Send(HttpMethod.Get, "api/audit?run=nosuchrun", op)).StatusCode);
    }

    [Fact]
    public async Task EveryEndpoint_RefusesNoTokenAndEachRoleBelowItsOwn_AndTakesItsRoleAndAbove()
    {
        foreach (var (method, path, role, body) in Endpoints)
        {
            var none = await Send(new HttpMethod(method), path, null, body);
            Assert.True(none.StatusCode == HttpStatusCode.Unauthorized, $"{method} {path} without a token: {none.StatusCode}");
            foreach (var held in Roles.All)
            {
                var answer = await Send(new HttpMethod(method), path, Token(held), body);
                bool allowed = Roles.Allows(held, role);
                Assert.True(allowed ? answer.StatusCode is not (HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden) : answer.StatusCode == HttpStatusCode.Forbidden,
                    $"{method} {path} as {held} (needs {role}): {answer.StatusCode}");
            }
        }
        // The table names every path the API serves (a new endpoint without a row fails here).
        var served = System.Text.Json.Nodes.JsonNode.Parse(await (await Send(HttpMethod.Get, "openapi/v1.json", Token(Roles.Viewer))).Content.ReadAsStringAsync())!["paths"]!.AsObject();
        foreach (var (path, operations) in served.Where(p => p.Key != "/health"))   // /health alone is open (tested below)
            foreach (var (verb, _) in operations!.AsObject())
            {
                string pattern = "^" + System.Text.RegularExpressions.Regex.Replace(path.TrimStart('/'), @"\{[^}]+\}", "[^/]+") + "$";
                Assert.True(Endpoints.Any(e => e.Method == verb.ToUpperInvariant() && System.Text.RegularExpressions.Regex.IsMatch(e.Path, pattern)), $"no role row for {verb} {path}");
            }
    }

    [Fact]
    public async Task NoWrongOrExpiredToken_Is401_AndHealthAloneStaysOpen()
    {
        Assert.Equal(HttpStatusCode.OK, (await Send(HttpMethod.Get, "health", null)).StatusCode);
        foreach (var path in new[] { "status", "metrics", "api/runs", "api/layers", "api/tasks/x" })
        {
            var none = await Send(HttpMethod.Get, path, null);
            Assert.True(none.StatusCode == HttpStatusCode.Unauthorized, $"{path}: {none.StatusCode}");
            Assert.Equal("Bearer", none.Headers.WwwAuthenticate.Single().Scheme);
        }
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Post, "api/runs", null, Graph)).StatusCode);

        // Signed with another key; tampered; expired; not a token at all.
        var otherKey = Path.Combine(_dir, "other.key");
        Tokens.CreateKeyFile(otherKey);
        string foreign = Tokens.Create(Tokens.LoadKey(otherKey), Roles.Admin, "mallory", TimeSpan.FromHours(1));
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Get, "status", foreign)).StatusCode);
        string good = Token(Roles.Admin);
        string tampered = good[..^4] + (good[^4] == 'A' ? "BBBB" : "AAAA");
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Get, "status", tampered)).StatusCode);
        var past = new FakeTimeProvider(DateTimeOffset.UtcNow - TimeSpan.FromHours(3));
        var expired = await Send(HttpMethod.Get, "status", Token(Roles.Admin, TimeSpan.FromHours(1), past));
        Assert.Equal(HttpStatusCode.Unauthorized, expired.StatusCode);
        Assert.Contains("expired", await expired.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.Unauthorized, (await Send(HttpMethod.Get, "status", "not.a.token")).StatusCode);
        Assert.Equal((null, null, "the token has expired"), await Tokens.Validate(_key, Token(Roles.Admin, TimeSpan.FromHours(1), past)));
        Assert.Equal(("viewer-user", "viewer", (string?)null), await Tokens.Validate(_key, Token(Roles.Viewer)));
    }

    /// <summary>One frame: a 4-byte big-endian length and a MessagePack message [type, request_id, body].</summary>
    private static byte[] Frame(params object?[] message)
    {
        var payload = MessagePack.MessagePackSerializer.Serialize(message);
        var header = new byte[4];
        System.Buffers.Binary.BinaryPrimitives.WriteUInt32BigEndian(header, (uint)payload.Length);
        return [.. header, .. payload];
    }

    private static async Task<object?[]?> ReadMessage(System.Net.Sockets.NetworkStream s)
    {
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var header = new byte[4];
        try { await s.ReadExactlyAsync(header, cts.Token); }
        catch (EndOfStreamException) { return null; }
        var payload = new byte[System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(header)];
        await s.ReadExactlyAsync(payload, cts.Token);
        return MessagePack.MessagePackSerializer.Deserialize<object?[]>(payload);
    }

    [Fact]
    public async Task TheSocketHandshake_ValidatesTokensAsHttpDoes_AndRolesApplyPerRequest()
    {
        async Task<(System.Net.Sockets.TcpClient, object?[])> Hello(string? token)
        {
            var tcp = new System.Net.Sockets.TcpClient();
            await tcp.ConnectAsync(_server.SocketEndpoint!);
            await tcp.GetStream().WriteAsync(Frame(1, 0u, new object?[] { 1, token, "tests" }));
            return (tcp, (await ReadMessage(tcp.GetStream()))!);
        }

        foreach (var bad in new string?[] { null, "not.a.token", Tokens.Create(_key, Roles.Admin, "x", TimeSpan.FromHours(1), new FakeTimeProvider(DateTimeOffset.UtcNow - TimeSpan.FromHours(2))) })
        {
            var (tcp, answer) = await Hello(bad);
            using (tcp)
            {
                Assert.Equal(0, Convert.ToInt32(answer[0]));   // an error
                Assert.Equal(401, Convert.ToInt32(((object?[])answer[2]!)[0]));
                Assert.Null(await ReadMessage(tcp.GetStream()));   // and closed
            }
        }

        var (viewer, welcome) = await Hello(Token(Roles.Viewer));
        using (viewer)
        {
            Assert.Equal(2, Convert.ToInt32(welcome[0]));
            Assert.Equal("viewer", ((object?[])welcome[2]!)[3]);
            var s = viewer.GetStream();
            // Every message that changes something needs an operator: submit graph and tasks, cancel run and task, worker, results.
            var changes = new (int Type, object[] Body)[]
            {
                (10, [Graph]), (12, [new object[] { new Dictionary<string, object> { ["handler"] = "noop" } }]), (18, ["r"]), (20, ["t"]), (26, ["t", "high", null!]), (28, ["r", "a", "local", null!]),
                (30, [new object[] { "ext.x" }, 1]), (34, [new object[] { new object?[] { 1L, true, 1, null } }]),
            };
            uint rid = 5;
            foreach (var (type, body) in changes)
            {
                await s.WriteAsync(Frame(type, rid, body));
                var refused = (await ReadMessage(s))!;
                Assert.True((0, rid) == (Convert.ToInt32(refused[0]), Convert.ToUInt32(refused[1])), $"message {type} as a viewer");
                Assert.Equal(403, Convert.ToInt32(((object?[])refused[2]!)[0]));
                rid++;
            }
            await s.WriteAsync(Frame(4, 99u, Array.Empty<object>()));   // the connection goes on: a ping
            Assert.Equal(5, Convert.ToInt32((await ReadMessage(s))![0]));
            // A viewer reads: get answers with the resource.
            await s.WriteAsync(Frame(36, 100u, new object?[] { "layers", null }));
            var read = (await ReadMessage(s))!;
            Assert.Equal((37, 100u), (Convert.ToInt32(read[0]), Convert.ToUInt32(read[1])));
        }

        var (op, _) = await Hello(Token(Roles.Operator));
        using (op)
        {
            await op.GetStream().WriteAsync(Frame(10, 7u, new object[] { Graph }));
            Assert.Equal(11, Convert.ToInt32((await ReadMessage(op.GetStream()))![0]));   // run submitted
        }
    }

    [Fact]
    public async Task TheTokenCommand_MakesAnOwnerOnlyKey_NeverOverwritesIt_AndSignsTokensTheServiceTakes()
    {
        var key = Path.Combine(_dir, "cli.key");
        var (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "key", "--key-file", key);
        Assert.True(code == 0, stderr);
        if (!OperatingSystem.IsWindows()) Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(key));
        string before = File.ReadAllText(key);
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "key", "--key-file", key);
        Assert.Equal(2, code);
        Assert.Contains("never overwritten", stderr);
        Assert.Equal(before, File.ReadAllText(key));

        (code, var token, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "create", "--role", "operator", "--subject", "ci", "--expires", "2h", "--key-file", key);
        Assert.True(code == 0, stderr);
        Assert.Equal(("ci", "operator", (string?)null), await Tokens.Validate(Tokens.LoadKey(key), token.Trim()));
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "create", "--role", "root", "--key-file", key);
        Assert.Equal(2, code);
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "create", "--role", "viewer", "--expires", "forever", "--key-file", key);
        Assert.Equal(2, code);
        Assert.Contains("--expires", stderr);
        File.WriteAllText(Path.Combine(_dir, "short.key"), Convert.ToBase64String(new byte[8]));
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("token", "create", "--role", "viewer", "--key-file", Path.Combine(_dir, "short.key"));
        Assert.Equal(2, code);
        Assert.Contains("at least 32", stderr);
    }
}
