using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using TaskMesh.Hosting;
using TaskMesh.Server;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>The HTTP API on a real Kestrel (127.0.0.1, a free port), over the composition root's runtime and a real store.</summary>
public sealed class HttpApiTests : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-api-").FullName;
    private TestService _service = null!;
    private TaskMeshRuntime _runtime = null!;
    private TaskMeshServer _server = null!;
    private HttpClient _http = null!;

    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    public async Task InitializeAsync() => await StartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, GraphDirectory = _dir });

    /// <summary>A second local layer, ranked above local and priced: somewhere to escalate to.</summary>
    internal const string BigLayer = "[layers.big]\nkind = \"local\"\nrank = 10\nprice_per_second = 1\n";

    /// <summary>The test's service stopped and another started in a fresh folder, with <paramref name="options"/> and <paramref name="config"/>.</summary>
    private async Task RestartAsync(ServerOptions options, string config = "")
    {
        await DisposeAsync();
        Directory.CreateDirectory(_dir);
        await StartAsync(options, config);
    }

    private async Task StartAsync(ServerOptions options, string config = "")
    {
        _service = await TestService.StartAsync(options, config, Path.Combine(_dir, "runs.db"), metrics: true);
        (_runtime, _server) = (_service.Runtime, _service.Server);
        _http = new HttpClient { BaseAddress = _server.HttpAddress, Timeout = Limit };
    }

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _service.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }

    private static StringContent JsonBody(string json) => new(json, Encoding.UTF8, "application/json");

    private async Task<JsonElement> ReadJson(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    private async Task<string> SubmitAsync(string graph)
    {
        var response = await _http.PostAsync("api/runs", JsonBody(graph));
        var body = await ReadJson(response);
        Assert.True(response.StatusCode == HttpStatusCode.Created, body.ToString());
        string id = body.GetProperty("run_id").GetString()!;
        Assert.Equal($"/api/runs/{id}", response.Headers.Location?.ToString());
        return id;
    }

    private async Task<JsonElement> WaitForRunAsync(string id)
    {
        var deadline = DateTime.UtcNow + Limit;
        while (true)
        {
            var run = await ReadJson(await _http.GetAsync($"api/runs/{id}?wait=10"));
            if (run.GetProperty("status").GetString() != "running" || DateTime.UtcNow > deadline) return run;
        }
    }

    private const string Diamond = """
        { "name": "diamond", "tasks": [
          { "id": "a", "handler": "noop" },
          { "id": "b", "handler": "spin", "args": { "micros": 100 }, "dependsOn": ["a"] },
          { "id": "c", "handler": "fail", "dependsOn": ["a"], "retries": 0 },
          { "id": "d", "handler": "noop", "dependsOn": ["b", "c"] },
          { "id": "e", "handler": "noop", "dependsOn": [{ "id": "c", "type": "soft" }] } ] }
        """;

    [Fact]
    public async Task AGraphSubmitted_RunsAsTheEngineRunsIt_AndItsRunAndTasksAreReadBack()
    {
        string id = await SubmitAsync(Diamond);
        var run = await WaitForRunAsync(id);

        // The same graph run by the engine in this process: the same outcome for every task.
        var local = await _runtime.Engine.RunAsync(TaskMesh.Engine.Graph.GraphLoader.LoadText(Diamond));
        Assert.Equal(local.StatusName, run.GetProperty("status").GetString());
        var tasks = run.GetProperty("tasks");
        Assert.Equal((local.Total, local.Succeeded, local.Failed, local.Skipped), (tasks.GetProperty("total").GetInt32(),
            tasks.GetProperty("succeeded").GetInt32(), tasks.GetProperty("failed").GetInt32(), tasks.GetProperty("skipped").GetInt32()));
        foreach (var t in local.Tasks)
        {
            var task = await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks/{t.Id}"));
            Assert.Equal(t.Status, task.GetProperty("status").GetString());
            Assert.Equal(t.Handler, task.GetProperty("handler").GetString());
        }
        var skipped = await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks/d"));
        Assert.Equal("c", skipped.GetProperty("skipped_because").GetString());

        // Listed, and found in the store (the same run, as the store keeps it).
        var list = await ReadJson(await _http.GetAsync("api/runs?limit=5&status=failed"));
        Assert.Contains(list.GetProperty("runs").EnumerateArray(), r => r.GetProperty("run_id").GetString() == id);
        Assert.Equal("failed", _runtime.Store!.GetRun(id).Status);
        var missing = await _http.GetAsync("api/runs/nosuchrun");
        Assert.Equal(HttpStatusCode.NotFound, missing.StatusCode);
        Assert.Equal("application/problem+json", missing.Content.Headers.ContentType?.MediaType);
    }

    [Fact]
    public async Task ARunsGraph_HasTheEstimatedCriticalPathWhileItGoes_AndTheMeasuredOneWhenItEnded()
    {
        // The estimates point the wrong way: `looks-long` is estimated at 5 s and takes 10 ms, `looks-short` at 1 ms and takes 1.5 s.
        string id = await SubmitAsync("""
            { "name": "misjudged", "tasks": [
              { "id": "a", "handler": "noop" },
              { "id": "looks-long", "handler": "sleep", "args": { "millis": 10 }, "estimateMs": 5000, "dependsOn": ["a"] },
              { "id": "looks-short", "handler": "sleep", "args": { "millis": 1500 }, "estimateMs": 1, "dependsOn": ["a"] },
              { "id": "z", "handler": "noop", "dependsOn": ["looks-long", "looks-short"] } ] }
            """);
        var going = await ReadJson(await _http.GetAsync($"api/runs/{id}/graph"));
        Assert.Equal("estimated", going.GetProperty("critical_path_source").GetString());
        var estimated = going.GetProperty("critical_path").EnumerateArray().Select(t => t.GetString()).ToList();
        Assert.Contains("looks-long", estimated);
        Assert.DoesNotContain("looks-short", estimated);
        await WaitForRunAsync(id);
        var ended = await ReadJson(await _http.GetAsync($"api/runs/{id}/graph"));
        Assert.Equal("measured", ended.GetProperty("critical_path_source").GetString());
        Assert.Equal(["a", "looks-short", "z"], ended.GetProperty("critical_path").EnumerateArray().Select(t => t.GetString()));
    }

    [Fact]
    public async Task ARunsTasksAreListed_ByStatus_FromTheRunOrFromTheStore()
    {
        string id = await SubmitAsync(Diamond);
        await WaitForRunAsync(id);
        var all = await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks"));
        Assert.Equal(("run", 5), (all.GetProperty("source").GetString(), all.GetProperty("total").GetInt32()));
        Assert.Equal(["a", "b", "c", "d", "e"], all.GetProperty("tasks").EnumerateArray().Select(t => t.GetProperty("id").GetString()));
        var failed = await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks?status=failed"));
        var c = Assert.Single(failed.GetProperty("tasks").EnumerateArray());
        Assert.Equal(("c", "fail", "local"), (c.GetProperty("id").GetString(), c.GetProperty("handler").GetString(), c.GetProperty("layer").GetString()));
        Assert.Contains("failed on purpose", c.GetProperty("error").GetString());
        var page = await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks?limit=2&offset=3"));
        Assert.Equal(["d", "e"], page.GetProperty("tasks").EnumerateArray().Select(t => t.GetProperty("id").GetString()));
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync($"api/runs/{id}/tasks?status=lost")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync("api/runs/nosuchrun/tasks")).StatusCode);

        // The standing run's tasks with ids of their own are rows of the store.
        Assert.Equal(HttpStatusCode.Created, (await _http.PostAsync("api/tasks", JsonBody("""{ "id": "listed", "handler": "noop" }"""))).StatusCode);
        var ended = await ReadJson(await _http.GetAsync("api/tasks/listed?wait=10"));
        await _runtime.Store!.FlushAsync();
        var standing = await ReadJson(await _http.GetAsync($"api/runs/{_server.StandingRunId}/tasks"));
        Assert.Equal("store", standing.GetProperty("source").GetString());
        Assert.True(standing.GetProperty("tasks").EnumerateArray().Any(t => t.GetProperty("id").GetString() == "listed"), $"{ended} / {standing}");
    }

    [Fact]
    public async Task AnInvalidGraph_IsRefusedWithEveryProblemItsLineAndTask_AndNothingRuns()
    {
        await _runtime.Store!.FlushAsync();
        int before = _runtime.Store.ListRuns(100).Count;
        var response = await _http.PostAsync("api/runs", JsonBody("""
            { "name": "bad", "tasks": [
              { "id": "x", "handler": "nope" },
              { "id": "y", "handler": "noop", "dependsOn": ["z"] },
              { "id": "p", "handler": "quantum", "args": { "qasm": "../../etc/passwd", "shots": 1 } } ] }
            """));
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await ReadJson(response);
        Assert.Equal(400, problem.GetProperty("status").GetInt32());
        var errors = problem.GetProperty("errors").EnumerateArray().ToList();
        Assert.Contains(errors, e => e.GetProperty("code").GetString() == "unknown-handler" && e.GetProperty("task_id").GetString() == "x" && e.GetProperty("line").GetInt32() == 2);
        Assert.Contains(errors, e => e.GetProperty("code").GetString() == "unknown-dependency" && e.GetProperty("task_id").GetString() == "y" && e.GetProperty("line").GetInt32() == 3);
        // A circuit file outside the service's graph directory is not read.
        Assert.Contains(errors, e => e.GetProperty("task_id").GetString() == "p" && e.GetProperty("message").GetString()!.Contains("outside", StringComparison.Ordinal));
        await _runtime.Store.FlushAsync();
        Assert.Equal(before, _runtime.Store.ListRuns(100).Count);

        var garbage = await _http.PostAsync("api/runs", new ByteArrayContent([0xff, 0x00, 0x7b, 0x22]));
        Assert.True(garbage.StatusCode == HttpStatusCode.BadRequest, $"{garbage.StatusCode}: {await garbage.Content.ReadAsStringAsync()}");
    }

    [Fact]
    public async Task TasksSubmittedOneAtATime_RunAfterTheirDependencies_AndRefusalsSayWhy()
    {
        var first = await _http.PostAsync("api/tasks", JsonBody("""{ "id": "t1", "handler": "hash", "args": { "bytes": 64 } }"""));
        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        var second = await _http.PostAsync("api/tasks", JsonBody("""{ "id": "t2", "handler": "noop", "dependsOn": [{ "id": "t1", "type": "data" }] }"""));
        Assert.Equal(HttpStatusCode.Created, second.StatusCode);
        Assert.Equal(_server.StandingRunId, (await ReadJson(second)).GetProperty("run_id").GetString());

        var t2 = await ReadJson(await _http.GetAsync("api/tasks/t2?wait=10"));
        Assert.Equal("succeeded", t2.GetProperty("status").GetString());
        var t1 = await ReadJson(await _http.GetAsync("api/tasks/t1"));
        Assert.Equal("succeeded", t1.GetProperty("status").GetString());
        Assert.True(t1.TryGetProperty("output_summary", out _));

        var duplicate = await _http.PostAsync("api/tasks", JsonBody("""{ "id": "t1", "handler": "noop" }"""));
        Assert.Equal(HttpStatusCode.BadRequest, duplicate.StatusCode);
        Assert.Equal("duplicate-id", (await ReadJson(duplicate)).GetProperty("errors")[0].GetProperty("code").GetString());
        var unknown = await _http.PostAsync("api/tasks", JsonBody("""{ "handler": "noop", "dependsOn": ["never"] }"""));
        Assert.Equal(HttpStatusCode.BadRequest, unknown.StatusCode);
        Assert.Equal("unknown-dependency", (await ReadJson(unknown)).GetProperty("errors")[0].GetProperty("code").GetString());
        var notAnObject = await _http.PostAsync("api/tasks", JsonBody("[1, 2]"));
        Assert.Equal(HttpStatusCode.BadRequest, notAnObject.StatusCode);
        var none = await _http.GetAsync("api/tasks/never");
        Assert.Equal(HttpStatusCode.NotFound, none.StatusCode);

        // The run goes on after the refusals.
        var third = await _http.PostAsync("api/tasks", JsonBody("""{ "id": "t3", "handler": "noop", "dependsOn": ["t2"] }"""));
        Assert.Equal(HttpStatusCode.Created, third.StatusCode);
        Assert.Equal("succeeded", (await ReadJson(await _http.GetAsync("api/tasks/t3?wait=10"))).GetProperty("status").GetString());
    }

    [Fact]
    public async Task AWaitingTaskIsChangedWithPut_AndAStartedOneIsRefusedWithTheReason()
    {
        Assert.Equal(HttpStatusCode.Created, (await _http.PostAsync("api/tasks", JsonBody("""{ "id": "hold", "handler": "sleep", "args": { "millis": 1500 } }"""))).StatusCode);
        Assert.Equal(HttpStatusCode.Created, (await _http.PostAsync("api/tasks", JsonBody("""{ "id": "later", "handler": "fail", "args": { "message": "as first sent" }, "dependsOn": ["hold"] }"""))).StatusCode);

        var changed = await _http.PutAsync("api/tasks/later", JsonBody("""{ "priority": "critical", "args": { "message": "as changed" } }"""));
        Assert.Equal(HttpStatusCode.OK, changed.StatusCode);
        Assert.Equal("pending", (await ReadJson(changed)).GetProperty("status").GetString());
        var badArgs = await _http.PutAsync("api/tasks/later", JsonBody("""{ "args": { "message": 5 } }"""));
        Assert.Equal(HttpStatusCode.BadRequest, badArgs.StatusCode);
        var unknownField = await _http.PutAsync("api/tasks/later", JsonBody("""{ "handler": "noop" }"""));
        Assert.Equal(HttpStatusCode.BadRequest, unknownField.StatusCode);
        Assert.Contains("'handler' cannot", (await ReadJson(unknownField)).GetProperty("detail").GetString());
        var running = await _http.PutAsync("api/tasks/hold", JsonBody("""{ "priority": "low" }"""));
        Assert.Equal(HttpStatusCode.Conflict, running.StatusCode);
        Assert.Contains("running", (await ReadJson(running)).GetProperty("detail").GetString());
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PutAsync("api/tasks/never", JsonBody("""{ "priority": "low" }"""))).StatusCode);

        var ended = await ReadJson(await _http.GetAsync("api/tasks/later?wait=10"));
        Assert.Equal("failed", ended.GetProperty("status").GetString());
        Assert.Contains("as changed", ended.GetProperty("error").GetString());
    }

    [Fact]
    public async Task AGoingRunIsCancelled_AndAnEndedOneCannotBe()
    {
        string id = await SubmitAsync("""
            { "name": "long", "tasks": [
              { "id": "w", "handler": "sleep", "args": { "millis": 60000 } },
              { "id": "after", "handler": "noop", "dependsOn": ["w"] } ] }
            """);
        var cancel = await _http.PostAsync($"api/runs/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.Accepted, cancel.StatusCode);
        var run = await WaitForRunAsync(id);
        Assert.Equal("cancelled", run.GetProperty("status").GetString());
        var again = await _http.PostAsync($"api/runs/{id}/cancel", null);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
    }

    [Fact]
    public async Task HealthStatusLayersAndMetrics_AreServed()
    {
        Assert.Equal("ok", (await _http.GetStringAsync("health")).Trim());
        var status = await ReadJson(await _http.GetAsync("status"));
        Assert.Equal("ready", status.GetProperty("status").GetString());
        Assert.True(status.GetProperty("store").GetProperty("writable").GetBoolean());
        Assert.Equal(_server.StandingRunId, status.GetProperty("standing_run").GetProperty("run_id").GetString());

        string id = await SubmitAsync(Diamond);
        await WaitForRunAsync(id);
        var layers = await ReadJson(await _http.GetAsync("api/layers"));
        var local = layers.GetProperty("layers").EnumerateArray().Single(l => l.GetProperty("name").GetString() == "local");
        Assert.True(local.GetProperty("capacity").GetInt32() > 0);
        Assert.True(local.GetProperty("today").GetProperty("requests").GetInt64() >= 4);   // a, b, c and e ran there
        Assert.Contains(layers.GetProperty("layers").EnumerateArray(), l => l.GetProperty("name").GetString() == "quantum");

        var metrics = await _http.GetStringAsync("metrics");
        Assert.Contains("taskmesh_tasks_total", metrics);
    }

    [Fact]
    public async Task DailyMetricsRulesModelsAndLayerCapacity_AreServed()
    {
        string id = await SubmitAsync(Diamond);
        await WaitForRunAsync(id);
        var metrics = await ReadJson(await _http.GetAsync("api/metrics?days=3"));
        var local = metrics.GetProperty("layers").EnumerateArray().First(l => l.GetProperty("layer").GetString() == "local");
        Assert.True(local.GetProperty("requests").GetInt64() >= 4);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.GetAsync("api/metrics?days=0")).StatusCode);

        var rules = await ReadJson(await _http.GetAsync("api/rules"));
        Assert.False(string.IsNullOrEmpty(rules.GetProperty("source").GetString()));
        Assert.Equal(_runtime.Rules.Count, rules.GetProperty("rules").GetArrayLength());
        var models = await ReadJson(await _http.GetAsync("api/learning/models"));
        Assert.Equal(_runtime.Store!.Models().Count, models.GetProperty("models").GetArrayLength());

        // Training now: a new version from the store's rows, listed with the others.
        var trained = await _http.PostAsync("api/learning/train", null);
        var model = await ReadJson(trained);
        Assert.True(trained.StatusCode == HttpStatusCode.Created, model.ToString());
        int version = model.GetProperty("version").GetInt32();
        Assert.True(model.GetProperty("rows").GetInt32() > 0);
        Assert.Equal(JsonValueKind.Array, model.GetProperty("metrics").ValueKind);
        models = await ReadJson(await _http.GetAsync("api/learning/models"));
        Assert.Equal(version, models.GetProperty("models")[0].GetProperty("version").GetInt32());

        var set = await _http.PostAsync("api/layers/local", JsonBody("""{ "capacity": 3 }"""));
        Assert.Equal(HttpStatusCode.OK, set.StatusCode);
        Assert.Equal(3, _runtime.Engine.Layers.Single(l => l.Name == "local").Capacity);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync("api/layers/nope", JsonBody("""{ "capacity": 3 }"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("api/layers/local", JsonBody("""{ "capacity": "many" }"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("api/layers/local", JsonBody("""{ "capacity": 0 }"""))).StatusCode);
    }

    [Fact]
    public async Task ARequestOverTheBodyCap_IsRefusedWith413()
    {
        await RestartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, MaxRequestBytes = 4096 });
        var big = "{\"name\":\"big\",\"tasks\":[" + string.Join(",", Enumerable.Range(0, 200).Select(i => $"{{\"id\":\"t{i}\",\"handler\":\"noop\"}}")) + "]}";
        var response = await _http.PostAsync("api/runs", JsonBody(big));
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, response.StatusCode);
        // Without a length announced (chunked), the body is cut at the cap too.
        var chunked = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes(big)));
        chunked.Headers.ContentType = new MediaTypeHeaderValue("application/json");
        var request = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = chunked };
        request.Headers.TransferEncodingChunked = true;
        // The service answers 413 once the cap is passed and closes the connection: a client still
        // sending may see the connection cut instead of the answer. Either way nothing was taken.
        try
        {
            Assert.Equal(HttpStatusCode.RequestEntityTooLarge, (await _http.SendAsync(request)).StatusCode);
        }
        catch (HttpRequestException ex) when (ex.InnerException is IOException or HttpIOException)
        {
        }
        await _runtime.Store!.FlushAsync();
        Assert.DoesNotContain(_runtime.Store.ListRuns(10), r => r.Graph == "big");
        Assert.Equal("ok", (await _http.GetStringAsync("health")).Trim());
    }

    [Fact]
    public async Task Stopping_DrainsAGoingRun_AndRefusesNewWork()
    {
        string id = await SubmitAsync("""{ "name": "short", "tasks": [ { "id": "w", "handler": "sleep", "args": { "millis": 800 } } ] }""");
        var stopping = _server.StopAsync();
        var refused = await _http.PostAsync("api/runs", JsonBody(Diamond));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        await stopping.WaitAsync(Limit);
        Assert.Equal("succeeded", _runtime.Store!.GetRun(id).Status);
    }

    /// <summary>Reads server-sent events until one named <paramref name="last"/> (or the stream's end), at most a minute.</summary>
    private async Task<List<(string Event, JsonElement Data)>> ReadEventsAsync(Stream stream, string last, TimeSpan? pauseFirst = null)
    {
        var events = new List<(string, JsonElement)>();
        using var reader = new StreamReader(stream);
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        Assert.Equal(": subscribed", await reader.ReadLineAsync(cts.Token));
        if (pauseFirst is { } pause) await Task.Delay(pause);
        string? name = null;
        while (await reader.ReadLineAsync(cts.Token) is { } line)
        {
            if (line.StartsWith("event: ", StringComparison.Ordinal)) name = line[7..];
            else if (line.StartsWith("data: ", StringComparison.Ordinal))
            {
                using var doc = JsonDocument.Parse(line[6..]);
                events.Add((name!, doc.RootElement.Clone()));
                if (name == last) break;
            }
        }
        return events;
    }

    [Fact]
    public async Task ARunsEvents_AreStreamedAsServerSentEvents_EndingWithTheRun()
    {
        string id = await SubmitAsync("""
            { "name": "watched", "tasks": [
              { "id": "gate", "handler": "sleep", "args": { "millis": 1000 } },
              { "id": "ok", "handler": "noop", "dependsOn": ["gate"] },
              { "id": "bad", "handler": "fail", "retries": 0, "dependsOn": ["gate"] },
              { "id": "after", "handler": "noop", "dependsOn": ["bad"] } ] }
            """);
        using var response = await _http.GetAsync($"api/runs/{id}/events", HttpCompletionOption.ResponseHeadersRead);
        Assert.Equal("text/event-stream", response.Content.Headers.ContentType?.MediaType);
        var events = await ReadEventsAsync(await response.Content.ReadAsStreamAsync(), "run_ended");
        Assert.Contains(events, e => e.Event == "succeeded" && e.Data.GetProperty("task").GetString() == "ok");
        Assert.Contains(events, e => e.Event == "failed" && e.Data.GetProperty("task").GetString() == "bad");
        Assert.Contains(events, e => e.Event == "skipped" && e.Data.GetProperty("task").GetString() == "after");
        var (last, run) = events[^1];
        Assert.Equal("run_ended", last);
        Assert.Equal("failed", run.GetProperty("status").GetString());

        // Subscribing to an ended run: its end at once. To no run: 404.
        using var late = await _http.GetAsync($"api/runs/{id}/events", HttpCompletionOption.ResponseHeadersRead);
        var text = await late.Content.ReadAsStringAsync();
        Assert.StartsWith("event: run_ended", text);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.GetAsync("api/runs/nosuchrun/events")).StatusCode);
    }

    [Fact]
    public async Task TheStandingRunsEvents_TellEachSubmittedTasksEnd()
    {
        using var response = await _http.GetAsync($"api/runs/{_server.StandingRunId}/events", HttpCompletionOption.ResponseHeadersRead);
        var reading = ReadEventsAsync(await response.Content.ReadAsStreamAsync(), "failed");
        // s1 takes 200 ms: a subscription is in place once its headers are read, but a noop could end
        // before the service has registered it on a loaded machine (seen once).
        await _http.PostAsync("api/tasks", JsonBody("""{ "id": "s1", "handler": "sleep", "args": { "millis": 200 } }"""));
        await _http.PostAsync("api/tasks", JsonBody("""{ "id": "s2", "handler": "fail", "retries": 0, "dependsOn": [{ "id": "s1", "type": "soft" }] }"""));
        var events = await reading;
        Assert.Contains(events, e => e.Event == "succeeded" && e.Data.GetProperty("task").GetString() == "s1");
        Assert.Equal("s2", events[^1].Data.GetProperty("task").GetString());
    }

    [Fact]
    public void TheStandingRunWritesEvents_OnlyWhileSomeoneSubscribes()
    {
        var service = _server.Service;
        Assert.False(service.Standing.PublishEvents);
        var first = service.StandingEvents.Subscribe();
        var second = service.StandingEvents.Subscribe();
        Assert.True(service.Standing.PublishEvents);
        service.StandingEvents.Unsubscribe(first);
        Assert.True(service.Standing.PublishEvents);
        service.StandingEvents.Unsubscribe(second);
        Assert.False(service.Standing.PublishEvents);
    }

    [Fact]
    public async Task AReaderThatFallsBehind_IsCutOffWithAnOverflowMark_AndTheRunIsNotSlowed()
    {
        // 20,000 tasks released at once after a gate (long enough for the subscription to be in
        // place on a loaded machine): far more events than a reader may lag behind.
        var tasks = string.Join(",", Enumerable.Range(0, 20_000).Select(i => $$"""{"id":"t{{i}}","handler":"noop","dependsOn":["gate"]}"""));
        string id = await SubmitAsync($$"""{ "name": "burst", "tasks": [ { "id": "gate", "handler": "sleep", "args": { "millis": 1500 } }, {{tasks}} ] }""");
        using var response = await _http.GetAsync($"api/runs/{id}/events", HttpCompletionOption.ResponseHeadersRead);
        // The reader stops reading for a while; the run goes on without it.
        var events = await ReadEventsAsync(await response.Content.ReadAsStreamAsync(), "overflow", pauseFirst: TimeSpan.FromSeconds(3));
        Assert.Equal("overflow", events[^1].Event);
        Assert.Contains("fell", events[^1].Data.GetProperty("detail").GetString());
        var run = await WaitForRunAsync(id);
        Assert.Equal("succeeded", run.GetProperty("status").GetString());
    }

    [Fact]
    public async Task TheSubmitStatusAndCancelCommands_ActOnTheService()
    {
        string server = _server.HttpAddress.ToString();
        var graph = Path.Combine(_dir, "g.json");
        File.WriteAllText(graph, Diamond);
        var (code, stdout, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("submit", graph, "--server", server, "--wait");
        Assert.True(code == 1, stderr + stdout);   // the diamond's c fails: exit 1, as taskmesh run
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal("failed", doc.RootElement.GetProperty("status").GetString());
            string runId = doc.RootElement.GetProperty("run_id").GetString()!;
            (code, stdout, _) = await TaskMesh.Tests.Host.CliTests.InProcess("status", runId, "--server", server);
            Assert.Equal(1, code);
            Assert.Contains(runId, stdout);
        }

        var bad = Path.Combine(_dir, "bad.json");
        File.WriteAllText(bad, "{ \"name\": \"bad\", \"tasks\": [\n  { \"id\": \"x\", \"handler\": \"nope\" } ] }");
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("submit", bad, "--server", server);
        Assert.Equal(2, code);
        Assert.Contains($"{bad}:2:", stderr);
        Assert.Contains("task 'x':", stderr);

        var slow = Path.Combine(_dir, "slow.json");
        File.WriteAllText(slow, """{ "name": "slow", "tasks": [ { "id": "w", "handler": "sleep", "args": { "millis": 60000 } } ] }""");
        (code, stdout, _) = await TaskMesh.Tests.Host.CliTests.InProcess("submit", slow, "--server", server);
        Assert.Equal(0, code);
        string slowRun = stdout.Trim();
        (code, _, _) = await TaskMesh.Tests.Host.CliTests.InProcess("cancel", slowRun, "--server", server);
        Assert.Equal(0, code);
        Assert.Equal("cancelled", (await WaitForRunAsync(slowRun)).GetProperty("status").GetString());
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("status", "nosuchrun", "--server", server);
        Assert.Equal(2, code);
        Assert.Contains("404", stderr);
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("status", "x", "--server", "http://127.0.0.1:1");
        Assert.Equal(2, code);
        Assert.Contains("cannot reach", stderr);
    }

    [Fact]
    public async Task ACallerOverItsRequestRate_IsRefusedWith429_AndHealthIsNotLimited()
    {
        await RestartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, RequestsPerSecond = 5 });
        var codes = new List<HttpStatusCode>();
        for (int i = 0; i < 30; i++) codes.Add((await _http.GetAsync("api/layers")).StatusCode);
        Assert.Contains(HttpStatusCode.OK, codes);
        Assert.Contains(HttpStatusCode.TooManyRequests, codes);
        var refused = await _http.GetAsync("api/layers");
        if (refused.StatusCode == HttpStatusCode.TooManyRequests)
        {
            Assert.Equal("1", refused.Headers.GetValues("Retry-After").Single());
            Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
        }
        for (int i = 0; i < 30; i++) Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync("health")).StatusCode);
    }

    [Fact]
    public async Task AFinishedTaskIsEscalatedToAnotherLayer_InANewRunThatReusesTheRest()
    {
        await RestartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, GraphDirectory = _dir }, BigLayer);
        string first = await SubmitAsync("""
            { "name": "esc", "tasks": [
              { "id": "a", "handler": "hash", "args": { "bytes": 1000 } },
              { "id": "b", "handler": "noop", "dependsOn": [{ "id": "a", "type": "data" }] },
              { "id": "c", "handler": "noop" } ] }
            """);
        Assert.Equal("succeeded", (await WaitForRunAsync(first)).GetProperty("status").GetString());

        var escalated = await _http.PostAsync($"api/runs/{first}/tasks/a/escalate", JsonBody("""{ "to": "big", "reason": "check it on the big layer" }"""));
        Assert.True(escalated.StatusCode == HttpStatusCode.Created, await escalated.Content.ReadAsStringAsync());
        string second = (await ReadJson(escalated)).GetProperty("run_id").GetString()!;
        var run = await WaitForRunAsync(second);
        Assert.Equal("succeeded", run.GetProperty("status").GetString());
        Assert.Equal(1, run.GetProperty("tasks").GetProperty("restored").GetInt32());   // c reused; a and its reader b ran again
        var a = await ReadJson(await _http.GetAsync($"api/runs/{second}/tasks/a"));
        Assert.Equal("big", a.GetProperty("layer").GetString());
        var esc = a.GetProperty("escalations")[0];
        Assert.Equal(("manual", "big", "check it on the big layer"), (esc.GetProperty("trigger").GetString(), esc.GetProperty("to").GetString(), esc.GetProperty("reason").GetString()));

        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync($"api/runs/{first}/tasks/zz/escalate", JsonBody("""{ "to": "big" }"""))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync($"api/runs/{first}/tasks/a/escalate", JsonBody("""{ "to": "moon" }"""))).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await _http.PostAsync("api/runs/nosuchrun/tasks/a/escalate", JsonBody("""{ "to": "big" }"""))).StatusCode);

        // The same from the command line: taskmesh escalate RUN TASK --to LAYER --server URL [--wait].
        var (code, stdout, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("escalate", first, "a", "--to", "big", "--server", _server.HttpAddress.ToString(), "--wait");
        Assert.True(code == 0, stderr + stdout);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal("succeeded", doc.RootElement.GetProperty("status").GetString());
            Assert.NotEqual(second, doc.RootElement.GetProperty("run_id").GetString());
        }
        (code, _, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("escalate", first, "a", "--to", "moon", "--server", _server.HttpAddress.ToString());
        Assert.Equal(2, code);
        Assert.Contains("moon", stderr);
    }

    [Fact]
    public async Task RulesReplacedOverTheApi_AreInForceForTheNextDecision_AndKeptInTheStore()
    {
        await RestartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, GraphDirectory = _dir }, BigLayer);
        const string Failing = """{ "name": "f", "tasks": [ { "id": "x", "handler": "fail", "retries": 0 } ] }""";
        async Task<int> EscalationsOfX()
        {
            string id = await SubmitAsync(Failing);
            await WaitForRunAsync(id);
            return (await ReadJson(await _http.GetAsync($"api/runs/{id}/tasks/x"))).GetProperty("escalations").GetArrayLength();
        }

        Assert.Equal("defaults", (await ReadJson(await _http.GetAsync("api/rules"))).GetProperty("source").GetString());
        Assert.Equal(1, await EscalationsOfX());   // the defaults: an error moves it up to big

        var put = await _http.PutAsync("api/rules", JsonBody("""{ "rules": [ { "from": "*", "to": "next", "trigger": "timeout", "priority": 1 }, { "from": "local", "to": "big", "trigger": "error", "active": false } ] }"""));
        var rules = await ReadJson(put);
        Assert.True(put.StatusCode == HttpStatusCode.OK, rules.ToString());
        Assert.Equal("store", rules.GetProperty("source").GetString());
        Assert.Equal(2, rules.GetProperty("rules").GetArrayLength());
        Assert.Equal("* → next on timeout", rules.GetProperty("rules")[0].GetProperty("text").GetString());
        Assert.False(rules.GetProperty("rules")[1].GetProperty("active").GetBoolean());
        Assert.Equal(2, _runtime.Store!.RulesWithIds().Count);
        Assert.Equal(0, await EscalationsOfX());   // no rule fires on an error any more

        // What GET says can be sent back; no rules are the defaults again.
        Assert.Equal(HttpStatusCode.OK, (await _http.PutAsync("api/rules", JsonBody(rules.ToString()))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.PutAsync("api/rules", JsonBody("""{ "rules": [] }"""))).StatusCode);
        Assert.Equal("defaults", (await ReadJson(await _http.GetAsync("api/rules"))).GetProperty("source").GetString());
        Assert.Equal(1, await EscalationsOfX());

        foreach (var bad in new[] { """{ "rules": [ { "from": "*", "to": "moon", "trigger": "error" } ] }""", """{ "rules": [ { "from": "*", "to": "next", "trigger": "sunrise" } ] }""",
                 """{ "rules": [ { "from": "*", "to": "next" } ] }""", """{ "rules": {} }""", """[1]""" })
        {
            var refused = await _http.PutAsync("api/rules", JsonBody(bad));
            Assert.True(refused.StatusCode == HttpStatusCode.BadRequest, bad + ": " + refused.StatusCode);
        }
        Assert.Equal("defaults", (await ReadJson(await _http.GetAsync("api/rules"))).GetProperty("source").GetString());
    }

    [Fact]
    public async Task APredictionSaysWhereEachTaskWouldRun_AndRunsNothing()
    {
        await _runtime.Store!.FlushAsync();
        int runsBefore = _runtime.Store.ListRuns(100).Count;
        var response = await _http.PostAsync("api/learning/predict?limit=2", JsonBody(Diamond));
        var plan = await ReadJson(response);
        Assert.True(response.StatusCode == HttpStatusCode.OK, plan.ToString());
        Assert.Equal(5, plan.GetProperty("tasks_total").GetInt32());
        Assert.Equal(5, plan.GetProperty("by_layer").GetProperty("local").GetInt32());
        Assert.Equal(2, plan.GetProperty("tasks").GetArrayLength());
        Assert.False(string.IsNullOrEmpty(plan.GetProperty("tasks")[0].GetProperty("reason").GetString()));
        await _runtime.Store.FlushAsync();
        Assert.Equal(runsBefore, _runtime.Store.ListRuns(100).Count);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("api/learning/predict?objective=luck", JsonBody(Diamond))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await _http.PostAsync("api/learning/predict", JsonBody("{ \"tasks\": 3 }"))).StatusCode);
    }

    [Fact]
    public async Task TheOpenApiDocument_IsTheOneCheckedIn()
    {
        var served = System.Text.Json.Nodes.JsonNode.Parse(await _http.GetStringAsync("openapi/v1.json"));
        var root = new DirectoryInfo(AppContext.BaseDirectory);
        while (root is not null && !File.Exists(Path.Combine(root.FullName, "Engine.sln"))) root = root.Parent;
        Assert.NotNull(root);
        var checkedIn = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(root!.FullName, "docs", "openapi.json")));
        // When an endpoint changes, regenerate it: taskmesh serve --no-store, then curl http://127.0.0.1:8080/openapi/v1.json > docs/openapi.json
        Assert.True(System.Text.Json.Nodes.JsonNode.DeepEquals(served, checkedIn), "docs/openapi.json differs from the document the service serves");
        Assert.Contains("/api/runs/{id}/events", served!["paths"]!.AsObject().Select(p => p.Key));
    }

    [Fact]
    public void AnAddressOtherMachinesReach_IsRefusedUnlessInsecure()
    {
        var open = new ServerOptions { Host = "0.0.0.0" };
        Assert.Contains(open.Problems(), p => p.Contains("--insecure", StringComparison.Ordinal));
        Assert.Empty(new ServerOptions { Host = "0.0.0.0", Insecure = true }.Problems());
        Assert.Empty(new ServerOptions { Host = "::1" }.Problems());
        Assert.Contains(new ServerOptions { Host = "localhost" }.Problems(), p => p.Contains("IP address", StringComparison.Ordinal));
    }
}
