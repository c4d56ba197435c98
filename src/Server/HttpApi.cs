using System.Buffers;
using System.Globalization;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Server;

/// <summary>
/// The HTTP/JSON transport: ASP.NET Core minimal APIs over <see cref="TaskMeshService"/>.
/// Errors are problem details (RFC 9457, <c>application/problem+json</c>) with, for an invalid
/// graph or task, <c>errors</c>: every problem with its code, message, task id, line and column.
/// </summary>
internal static class HttpApi
{
    /// <summary>Maps every endpoint; with tokens required, each needs its role (<c>/health</c> none).</summary>
    public static void Map(IEndpointRouteBuilder app, TaskMeshService service, ServerOptions options, Access access)
    {
        var api = app.MapGroup("/api");

        // Runs (graphs).
        access.Require(api.MapPost("/runs", async (HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, options.MaxRequestBytes);
            string runId = service.SubmitGraph(body, Caller(http));
            http.Response.Headers.Location = $"/api/runs/{Uri.EscapeDataString(runId)}";
            return Json(w => { w.WriteStartObject(); w.WriteString("run_id", runId); w.WriteEndObject(); }, StatusCodes.Status201Created);
        }), Roles.Operator).Doc("Submit a graph (validated as a file; 400 with every problem and nothing runs)", 201, 400, 401, 403, 413, 429, 503).Takes("A graph file's JSON: name, defaults, tasks (id, handler, args, dependsOn, …) — docs/graph-format.md");
        access.Require(api.MapGet("/runs", (HttpContext http) => Json(Reads.Runs(service, Query(http)))), Roles.Viewer).Doc("List runs, newest first (limit, offset, status)", 200, 400, 401, 403, 429);
        access.Require(api.MapGet("/runs/{id}", async (string id, HttpContext http) =>
        {
            var run = await service.WaitForRunAsync(id, WaitOf(http.Request.Query), http.RequestAborted);
            return Json(run.Write);
        }), Roles.Viewer).Doc("A run: going, finished, or as the store keeps it (wait=S waits for its end)", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapPost("/runs/{id}/cancel", (string id, HttpContext http) => service.CancelRun(id, Caller(http))
            ? Results.Accepted($"/api/runs/{Uri.EscapeDataString(id)}")
            : Problem(409, "run ended", $"run {id} has ended: there is nothing to cancel")), Roles.Operator).Doc("Cancel a going run", 202, 401, 403, 404, 409, 429);
        access.Require(api.MapGet("/runs/{id}/events", (string id, HttpContext http) => ServerSentEvents.StreamAsync(http, service, id)), Roles.Viewer).Doc("A run's events as Server-Sent Events, ending with run_ended (or overflow)", 200, 401, 403, 404, 429);
        access.Require(api.MapGet("/runs/{id}/tasks", (string id, HttpContext http) => Json(Reads.RunTasks(service, id, Query(http)))), Roles.Viewer).Doc("A run's tasks (status, limit, offset): every task of a finished run the service keeps, else the rows the store keeps", 200, 400, 401, 403, 404, 409, 429);
        access.Require(api.MapGet("/runs/{id}/graph", (string id) => Json(Reads.RunGraph(service, id))), Roles.Viewer).Doc("A run's graph for drawing: each task's level (longest path from a source), its edges by kind, the estimated critical path; tasks and edges listed up to 5,000 tasks, levels alone up to 200,000", 200, 401, 403, 404, 409, 429);
        access.Require(api.MapGet("/runs/{id}/tasks/{task}", (string id, string task) => Json(service.GetRunTask(id, task).Write)), Roles.Viewer).Doc("One task of a run: outcome, layer, attempts, escalations, audit trail", 200, 401, 403, 404, 429);

        access.Require(api.MapPost("/runs/{id}/tasks/{task}/escalate", async (string id, string task, HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, 64 * 1024);
            string? to, reason = null;
            try
            {
                using var doc = JsonDocument.Parse(body);
                to = doc.RootElement.GetProperty("to").GetString();
                if (doc.RootElement.TryGetProperty("reason", out var r)) reason = r.GetString();
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new ApiException(400, "invalid request", "the body is {\"to\": LAYER, \"reason\": TEXT} (reason optional)");
            }
            if (string.IsNullOrEmpty(to)) throw new ApiException(400, "invalid request", "\"to\" names the layer to run the task on");
            string runId = service.Escalate(id, task, to, reason, Caller(http));
            http.Response.Headers.Location = $"/api/runs/{Uri.EscapeDataString(runId)}";
            return Json(w => { w.WriteStartObject(); w.WriteString("run_id", runId); w.WriteEndObject(); }, StatusCodes.Status201Created);
        }), Roles.Operator).Doc("Manual escalation: a new run that resumes this one with the task (and its data-edge readers) run again on a layer", 201, 400, 401, 403, 404, 409, 429, 503).Takes("The layer to run the task on, and why", ("to", Microsoft.OpenApi.JsonSchemaType.String, "a layer"), ("reason", Microsoft.OpenApi.JsonSchemaType.String | Microsoft.OpenApi.JsonSchemaType.Null, "kept with the escalation; default: who asked"));

        // Single tasks: the standing run.
        access.Require(api.MapPost("/tasks", async (HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, options.MaxRequestBytes);
            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(body, new JsonDocumentOptions { MaxDepth = GraphLimits.MaxJsonDepth });
            }
            catch (JsonException ex)
            {
                throw new ApiException(400, "invalid task", $"not JSON: {ex.Message}", [new GraphError(GraphErrorCodes.MalformedJson, $"not JSON: {ex.Message}")]);
            }
            using (doc)
            {
                var task = await service.SubmitTaskAsync(doc.RootElement, Caller(http), http.RequestAborted);
                http.Response.Headers.Location = $"/api/tasks/{Uri.EscapeDataString(task.Id)}";
                return Json(w =>
                {
                    w.WriteStartObject();
                    w.WriteString("id", task.Id);
                    w.WriteNumber("sequence", task.SequenceNumber);
                    w.WriteString("run_id", service.Standing.RunId);
                    w.WriteEndObject();
                }, StatusCodes.Status201Created);
            }
        }), Roles.Operator).Doc("Submit one task (a graph file task object) to the standing run", 201, 400, 401, 403, 413, 429, 503).Takes("One task object as in a graph file: id, handler, args, dependsOn (ids or {id, type}), priority, timeoutSeconds, retries, layer, minConfidence, cache, uses, tags, requires");
        access.Require(api.MapGet("/tasks/{id}", async (string id, HttpContext http) =>
            Json((await service.GetTaskAsync(id, WaitOf(http.Request.Query), http.RequestAborted)).Write)), Roles.Viewer).Doc("A task of the standing run (wait=S waits for its end)", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapPut("/tasks/{id}", async (string id, HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, options.MaxRequestBytes);
            TaskPriority? priority = null;
            JsonElement? args = null;
            try
            {
                using var doc = JsonDocument.Parse(body);
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new FormatException();
                foreach (var p in doc.RootElement.EnumerateObject())
                {
                    switch (p.Name)
                    {
                        case "priority" when p.Value.ValueKind == JsonValueKind.String && GraphNames.TryParsePriority(p.Value.GetString()!, out var parsed):
                            priority = parsed;
                            break;
                        case "priority":
                            throw new ApiException(400, "invalid request", "priority must be low, normal, high or critical");
                        case "args":
                            args = p.Value.Clone();
                            break;
                        default:
                            throw new ApiException(400, "invalid request", $"a task's priority and args can change; '{GraphLimits.Printable(p.Name)}' cannot");
                    }
                }
            }
            catch (Exception ex) when (ex is JsonException or FormatException)
            {
                throw new ApiException(400, "invalid request", "the body is a JSON object: {\"priority\": \"high\", \"args\": {…}} (either or both)");
            }
            service.ChangeTask(id, priority, args, Caller(http));
            return Json((await service.GetTaskAsync(id, TimeSpan.Zero, http.RequestAborted)).Write);
        }), Roles.Operator).Doc("Change a waiting task of the standing run: its priority and/or args (409 once it is ready, running or ended)", 200, 400, 401, 403, 404, 409, 413, 429).Takes("Either or both", ("priority", Microsoft.OpenApi.JsonSchemaType.String, "low, normal, high or critical"), ("args", Microsoft.OpenApi.JsonSchemaType.Object, "the task's new arguments, validated by its handler"));
        access.Require(api.MapPost("/tasks/{id}/cancel", (string id, HttpContext http) => service.CancelTask(id, Caller(http))
            ? Results.Accepted($"/api/tasks/{Uri.EscapeDataString(id)}")
            : Problem(409, "task ended", $"task {id} has ended: there is nothing to cancel")), Roles.Operator).Doc("Cancel a task of the standing run", 202, 401, 403, 404, 409, 429);

        // Layers.
        access.Require(api.MapGet("/layers", () => Json(Reads.Layers(service))), Roles.Viewer).Doc("Every layer: status, capacity, running, queue depth, price, today", 200, 401, 403, 429);

        // The cluster's workers (when the service is a coordinator).
        access.Require(api.MapGet("/workers", () => Json(Reads.Workers(options))), Roles.Viewer)
            .Doc("The cluster's workers: slots, memory, in flight, tasks done; and the workers lost", 200, 401, 403, 404, 429);

        // A layer's capacity (admin): how many of its attempts run at once, changed while runs go on.
        access.Require(api.MapPost("/layers/{name}", async (string name, HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, 4096);
            int capacity;
            try
            {
                using var doc = JsonDocument.Parse(body);
                capacity = doc.RootElement.GetProperty("capacity").GetInt32();
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
            {
                throw new ApiException(400, "invalid request", "the body is {\"capacity\": N} with N a whole number");
            }
            service.SetLayerCapacity(name, capacity, Caller(http));
            return Json(w => Status.WriteLayers(w, service));
        }), Roles.Admin).Doc("Set a layer's capacity (admin)", 200, 400, 401, 403, 404, 429).Takes("How many attempts the layer runs at once", ("capacity", Microsoft.OpenApi.JsonSchemaType.Integer, "1–1000000"));

        // History and what decides: daily figures per layer, the escalation rules in force, the trained models.
        access.Require(api.MapGet("/metrics", (HttpContext http) => Json(Reads.Metrics(service, Query(http)))), Roles.Viewer).Doc("Daily figures per layer over the last days", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapGet("/metrics/escalations", (HttpContext http) => Json(Reads.Escalations(service, Query(http)))), Roles.Viewer).Doc("Escalations by day and route (from, to) over the last days", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapGet("/metrics/complexity", (HttpContext http) => Json(Reads.Complexity(service, Query(http)))), Roles.Viewer).Doc("The kept task rows of the last days by complexity (tenths of 0–100): how many, and their cost", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapGet("/rules", () => Json(Reads.Rules(service))), Roles.Viewer).Doc("The escalation rules in force", 200, 401, 403, 429);
        access.Require(api.MapPut("/rules", async (HttpContext http) =>
        {
            var rules = ReadRules(await ReadBodyAsync(http, 1 << 20));
            await service.SetRulesAsync(rules, Caller(http), http.RequestAborted);
            return Json(Reads.Rules(service));
        }), Roles.Admin).Doc("Replace the escalation rules (admin): kept in the store, in force at once for every run", 200, 400, 401, 403, 409, 413, 429).Takes("The new rules (none: the defaults), as GET /api/rules gives them", ("rules", Microsoft.OpenApi.JsonSchemaType.Array, "each {from, to, trigger, threshold, priority, active}"));
        access.Require(api.MapGet("/audit", (HttpContext http) => Json(Reads.Audit(service, Query(http)))), Roles.Viewer).Doc("The audit trail: a run's (run=ID, in order) or, without run, the actions on the service (newest first); who did what through the API is category api", 200, 400, 401, 403, 404, 429);
        access.Require(api.MapGet("/learning/models", () => Json(Reads.Models(service))), Roles.Viewer).Doc("The trained model versions", 200, 401, 403, 404, 429);
        access.Require(api.MapPost("/learning/train", async (HttpContext http) =>
        {
            var published = await service.TrainAsync(Caller(http), http.RequestAborted);
            var model = service.Runtime.Store!.Models().First(m => m.Version == published.Version);
            return Json(w => Reads.WriteModel(w, model), StatusCodes.Status201Created);
        }), Roles.Admin).Doc("Train a new model version from the store's history now (admin); later runs route with it", 201, 401, 403, 404, 409, 429);

        access.Require(api.MapPost("/learning/predict", async (HttpContext http) =>
        {
            var body = await ReadBodyAsync(http, options.MaxRequestBytes);
            var q = http.Request.Query;
            string? objective = q["objective"].FirstOrDefault();
            if (objective is not null && !Engine.Configuration.RoutingObjectives.All.Contains(objective))
                throw new ApiException(400, "invalid request", $"objective must be one of {string.Join(", ", Engine.Configuration.RoutingObjectives.All)}");
            int limit = Reads.IntOf(Query(http), "limit", 1000);
            if (limit is < 0 or > 100_000) throw new ApiException(400, "invalid request", $"limit must be 0–100000, got {limit}");
            var (plan, model) = service.Predict(body, objective);
            var graph = plan.Graph;
            return Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("graph", graph.Graph.Name);
                w.WriteString("model", model);
                w.WriteNumber("tasks_total", graph.Count);
                w.WriteStartObject("by_layer");
                foreach (var g in Enumerable.Range(0, graph.Count).GroupBy(plan.LayerOf).OrderBy(g => g.Key, StringComparer.Ordinal)) w.WriteNumber(g.Key, g.Count());
                w.WriteEndObject();
                w.WriteStartArray("tasks");
                for (int i = 0; i < Math.Min(limit, graph.Count); i++)
                {
                    w.WriteStartObject();
                    w.WriteString("task_id", graph.Graph.IdOf(i));
                    w.WriteString("handler", graph.Graph.HandlerOfTask(i));
                    w.WriteString("layer", plan.LayerOf(i));
                    w.WriteString("reason", plan.ReasonOf(i));
                    if (plan.DecisionOf(i) is { } d)
                    {
                        if (d.Confidence is double c) w.WriteNumber("confidence", c);
                        if (d.PredictedCost is double cost) w.WriteNumber("predicted_cost", cost);
                    }
                    w.WriteEndObject();
                }
                w.WriteEndArray();
                w.WriteEndObject();
            });
        }), Roles.Viewer).Doc("Where each task of a graph would run, and why (nothing runs)", 200, 400, 401, 403, 413, 429).Takes("A graph file's JSON, as for POST /api/runs");

        // Liveness and readiness.
        app.MapGet("/health", () => Results.Text("ok\n")).Doc("Liveness (never needs a token)", 200);
        access.Require(app.MapGet("/status", () =>
        {
            var problems = Status.Problems(service);
            return Json(w => Status.Write(w, service, problems), problems.Count == 0 ? 200 : 503);
        }), Roles.Viewer).Doc("Readiness: 200 ready, 503 not (draining, store, layers)", 200, 401, 403, 429, 503);
    }

    private static List<Engine.Escalation.EscalationRule> ReadRules(byte[] body)
    {
        const string Shape = "the body is {\"rules\": [{\"from\": LAYER or \"*\", \"to\": LAYER or \"next\", \"trigger\": TRIGGER, \"threshold\": N, \"priority\": N, \"active\": true}, …]}";
        try
        {
            using var doc = JsonDocument.Parse(body);
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("rules", out var list) || list.ValueKind != JsonValueKind.Array)
                throw new ApiException(400, "invalid request", Shape);
            if (list.GetArrayLength() > 1000) throw new ApiException(400, "invalid rules", "at most 1000 rules");
            var rules = new List<Engine.Escalation.EscalationRule>();
            int n = 0;
            foreach (var e in list.EnumerateArray())
            {
                n++;
                if (e.ValueKind != JsonValueKind.Object) throw new ApiException(400, "invalid rules", $"rule {n} is not an object; {Shape}");
                string? from = null, to = null, trigger = null;
                double? threshold = null;
                int priority = 0;
                bool active = true;
                foreach (var p in e.EnumerateObject())
                {
                    switch (p.Name)
                    {
                        case "from": from = p.Value.GetString(); break;
                        case "to": to = p.Value.GetString(); break;
                        case "trigger": trigger = p.Value.GetString(); break;
                        case "threshold": threshold = p.Value.ValueKind == JsonValueKind.Null ? null : p.Value.GetDouble(); break;
                        case "priority": priority = p.Value.GetInt32(); break;
                        case "active": active = p.Value.GetBoolean(); break;
                        case "text": break;   // what GET writes beside the fields: a rule read back can be sent again
                        default: throw new ApiException(400, "invalid rules", $"rule {n}: unknown field '{GraphLimits.Printable(p.Name)}'");
                    }
                }
                if (from is null || to is null || trigger is null) throw new ApiException(400, "invalid rules", $"rule {n} needs from, to and trigger");
                var rule = new Engine.Escalation.EscalationRule(from, to, trigger, threshold, priority, active);
                if (rule.Problem() is { } problem) throw new ApiException(400, "invalid rules", $"rule {n}: {GraphLimits.Printable(problem)}");
                rules.Add(rule);
            }
            return rules;
        }
        catch (Exception ex) when (ex is JsonException or InvalidOperationException or FormatException)
        {
            throw new ApiException(400, "invalid request", Shape);
        }
    }

    /// <summary>An endpoint's line in the OpenAPI document: what it does, its success status, the problems it may answer.</summary>
    private static RouteHandlerBuilder Doc(this RouteHandlerBuilder endpoint, string summary, int ok, params int[] problems)
    {
        // A tag of its own: the default is the host program's name, which differs between taskmesh and a test host.
        endpoint.WithTags("taskmesh").WithSummary(summary).Produces(ok, contentType: ok is 202 ? null : "application/json");
        foreach (int p in problems) endpoint.ProducesProblem(p);
        return endpoint;
    }

    /// <summary>
    /// The request body an endpoint reads itself (from the raw body, so the document would not know
    /// it): a JSON object described in words, with its fields when it has a fixed few.
    /// </summary>
    private static RouteHandlerBuilder Takes(this RouteHandlerBuilder endpoint, string description, params (string Name, Microsoft.OpenApi.JsonSchemaType Type, string About)[] fields)
        => endpoint.AddOpenApiOperationTransformer((operation, _, _) =>
        {
            var schema = new Microsoft.OpenApi.OpenApiSchema { Type = Microsoft.OpenApi.JsonSchemaType.Object };
            if (fields.Length > 0)
            {
                schema.Properties = new Dictionary<string, Microsoft.OpenApi.IOpenApiSchema>(StringComparer.Ordinal);
                foreach (var (name, type, about) in fields)
                    schema.Properties[name] = new Microsoft.OpenApi.OpenApiSchema { Type = type, Description = about };
            }
            operation.RequestBody = new Microsoft.OpenApi.OpenApiRequestBody
            {
                Required = true,
                Description = description,
                Content = new Dictionary<string, Microsoft.OpenApi.OpenApiMediaType>(StringComparer.Ordinal)
                {
                    ["application/json"] = new() { Schema = schema },
                },
            };
            return Task.CompletedTask;
        });

    /// <summary>Turns what the service refuses into problem details, and anything else into a 500 that names no internals.</summary>
    public static async Task HandleErrorsAsync(HttpContext http, Func<Task> next)
    {
        try
        {
            await next();
        }
        catch (ApiException ex) when (!http.Response.HasStarted)
        {
            await WriteProblemAsync(http, ex.Status, ex.Title, ex.Message, ex.Errors);
        }
        catch (BadHttpRequestException ex) when (!http.Response.HasStarted)
        {
            await WriteProblemAsync(http, ex.StatusCode, ex.StatusCode == 413 ? "request too large" : "bad request", ex.Message, null);
        }
    }

    private static async Task WriteProblemAsync(HttpContext http, int status, string title, string detail, IReadOnlyList<GraphError>? errors)
    {
        http.Response.StatusCode = status;
        if (status == 429) http.Response.Headers.RetryAfter = "1";
        await Problem(status, title, detail, errors).ExecuteAsync(http);
    }

    internal static IResult Problem(int status, string title, string detail, IReadOnlyList<GraphError>? errors = null)
    {
        var buffer = new ArrayBufferWriter<byte>(256);
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("type", "about:blank");
            w.WriteString("title", title);
            w.WriteNumber("status", status);
            w.WriteString("detail", detail);
            if (errors is not null)
            {
                w.WriteStartArray("errors");
                foreach (var e in errors)
                {
                    w.WriteStartObject();
                    w.WriteString("code", e.Code);
                    w.WriteString("message", e.Message);
                    if (e.TaskId is not null) w.WriteString("task_id", e.TaskId);
                    if (e.Line is int line) w.WriteNumber("line", line);
                    if (e.Column is int column) w.WriteNumber("column", column);
                    w.WriteEndObject();
                }
                w.WriteEndArray();
            }
            w.WriteEndObject();
        }
        return new Body(buffer.WrittenMemory.ToArray(), "application/problem+json", status);
    }

    internal static IResult Json(Action<Utf8JsonWriter> write, int status = StatusCodes.Status200OK)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var w = new Utf8JsonWriter(buffer)) write(w);
        return new Body(buffer.WrittenMemory.ToArray(), "application/json", status);
    }

    /// <summary>A response of a status code and a body already written.</summary>
    private sealed class Body(byte[] bytes, string contentType, int status) : IResult
    {
        public Task ExecuteAsync(HttpContext http)
        {
            http.Response.StatusCode = status;
            http.Response.ContentType = contentType;
            http.Response.ContentLength = bytes.Length;
            return http.Response.Body.WriteAsync(bytes, http.RequestAborted).AsTask();
        }
    }

    /// <summary>The request's body, at most <paramref name="max"/> bytes (past it: 413, before more is read).</summary>
    internal static async Task<byte[]> ReadBodyAsync(HttpContext http, long max)
    {
        if (http.Request.ContentLength is long declared && declared > max)
            throw new ApiException(413, "request too large", $"the body has {declared:N0} bytes; the service takes at most {max:N0}");
        using var buffer = new MemoryStream();
        var chunk = ArrayPool<byte>.Shared.Rent(16 * 1024);
        try
        {
            int n;
            while ((n = await http.Request.Body.ReadAsync(chunk, http.RequestAborted)) > 0)
            {
                if (buffer.Length + n > max) throw new ApiException(413, "request too large", $"the body is over {max:N0} bytes, the most the service takes");
                buffer.Write(chunk, 0, n);
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(chunk);
        }
        return buffer.ToArray();
    }

    /// <summary>The token's subject, or null when the service takes no tokens.</summary>
    private static string? Caller(HttpContext http) => http.User.Identity?.IsAuthenticated == true ? http.User.Identity.Name ?? "" : null;

    /// <summary>A request's query parameters, by name (the first value of each).</summary>
    private static Func<string, string?> Query(HttpContext http)
    {
        var q = http.Request.Query;
        return name => q[name].FirstOrDefault();
    }

    /// <summary>The <c>wait</c> query parameter: seconds to wait for an end (0: answer now).</summary>
    private static TimeSpan WaitOf(IQueryCollection q)
    {
        if (q["wait"].FirstOrDefault() is not { } text) return TimeSpan.Zero;
        return double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double s) && s >= 0 && s <= 86_400
            ? TimeSpan.FromSeconds(s)
            : throw new ApiException(400, "invalid request", $"wait must be a number of seconds (0–86400), got '{GraphLimits.Printable(text)}'");
    }
}

/// <summary>What <c>/status</c> and <c>/api/layers</c> say.</summary>
internal static class Status
{
    /// <summary>Why the service is not ready (empty when it is): draining, a store that stopped writing, a layer of its own down.</summary>
    public static List<string> Problems(TaskMeshService service)
    {
        var problems = new List<string>();
        if (service.Draining) problems.Add("shutting down: no new work is taken");
        if (service.Runtime.Store is { } store)
        {
            if (store.IsReadOnly && !service.ReadOnly) problems.Add($"the run store {store.Path} is open read-only");   // expected when it only browses history
            else if (store.WriteFault is { } fault) problems.Add($"the run store {store.Path} stopped writing: {fault}");
        }
        // The external layer is down while no worker is connected: not the service's fault, so not a readiness problem.
        foreach (var layer in service.Runtime.Engine.Layers)
            // Layers of workers that come and go (external workers, the cluster's) are down while none is there: not a fault of the service.
            if (layer.Status == Engine.Layers.LayerStatus.Down && layer.Kind is not (Workers.ExternalLayer.LayerName or "cluster")) problems.Add($"layer {layer.Name} is down");
        return problems;
    }

    public static void Write(Utf8JsonWriter w, TaskMeshService service, IReadOnlyList<string> problems)
    {
        w.WriteStartObject();
        w.WriteString("status", problems.Count == 0 ? "ready" : "not_ready");
        w.WriteStartArray("problems");
        foreach (var p in problems) w.WriteStringValue(p);
        w.WriteEndArray();
        w.WriteString("version", typeof(Status).Assembly.GetName().Version?.ToString(3) ?? "0.0.0");
        w.WriteNumber("uptime_seconds", Math.Round(service.Uptime.TotalSeconds, 3));
        w.WriteStartObject("store");
        if (service.Runtime.Store is { } store)
        {
            w.WriteString("path", store.Path);
            w.WriteBoolean("writable", !store.IsReadOnly && store.WriteFault is null);
        }
        else w.WriteBoolean("enabled", false);
        w.WriteEndObject();
        w.WriteNumber("runs_going", service.LiveRuns);
        w.WriteStartObject("standing_run");
        w.WriteString("run_id", service.Standing.RunId);
        w.WriteNumber("submitted", service.Standing.Submitted);
        w.WriteNumber("pending", service.Standing.Pending);
        if (service.ResumedStanding is { } resumed) w.WriteString("took_over", resumed);
        w.WriteEndObject();
        w.WriteStartArray("layers");
        foreach (var layer in service.Runtime.Engine.Layers)
        {
            w.WriteStartObject();
            w.WriteString("name", layer.Name);
            w.WriteString("status", layer.Status.ToString().ToLowerInvariant());
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }

    /// <summary>The cluster's workers and the workers it lost (<c>GET /api/workers</c>; <c>taskmesh workers</c> prints it).</summary>
    public static void WriteWorkers(Utf8JsonWriter w, Cluster.ClusterCoordinator cluster)
    {
        w.WriteStartObject();
        w.WriteString("coordinator", cluster.Endpoint.ToString());
        w.WriteStartArray("workers");
        foreach (var x in cluster.Workers)
        {
            w.WriteStartObject();
            w.WriteString("endpoint", x.Endpoint);
            w.WriteString("host", x.HostName);
            w.WriteNumber("pid", x.ProcessId);
            w.WriteString("status", x.Draining ? "draining" : "active");
            w.WriteNumber("slots", x.Slots);
            w.WriteNumber("cores", x.Cores);
            w.WriteNumber("memory_mb", x.MemoryBytes >> 20);
            w.WriteNumber("max_qubits", x.MaxQubits);
            w.WriteNumber("in_flight", x.InFlight);
            w.WriteNumber("sent", x.Sent);
            w.WriteNumber("succeeded", x.Succeeded);
            w.WriteNumber("failed", x.Failed);
            w.WriteNumber("up_seconds", Math.Round(x.UpSeconds, 1));
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteStartArray("lost");
        foreach (var l in cluster.Losses)
        {
            w.WriteStartObject();
            w.WriteString("endpoint", l.Endpoint);
            w.WriteString("why", l.Why);
            w.WriteNumber("requeued", l.Requeued);
            w.WriteNumber("poisoned", l.Poisoned);
            w.WriteString("at", l.At);
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteNumber("dropped_outcomes", cluster.DroppedOutcomes);
        w.WriteEndObject();
    }

    /// <summary>Every layer: status, capacity, running, queue depth, price; with a store, today's requests, success rate and mean confidence.</summary>
    public static void WriteLayers(Utf8JsonWriter w, TaskMeshService service)
    {
        var today = service.Runtime.Store?.DailyMetrics(1).ToDictionary(d => d.Layer, StringComparer.Ordinal);
        w.WriteStartObject();
        w.WriteStartArray("layers");
        foreach (var layer in service.Runtime.Engine.Layers)
        {
            w.WriteStartObject();
            w.WriteString("name", layer.Name);
            w.WriteString("kind", layer.Kind);
            w.WriteString("status", layer.Status.ToString().ToLowerInvariant());
            w.WriteNumber("capacity", layer.Capacity);
            w.WriteNumber("running", layer.Running);
            w.WriteNumber("queue_depth", layer.QueueDepth);
            w.WriteNumber("price_per_second", layer.PricePerSecond);
            w.WriteNumber("rank", layer.Rank);
            if (today is not null)
            {
                w.WriteStartObject("today");
                if (today.TryGetValue(layer.Name, out var d)) JsonParts.WriteFigures(w, d);
                else w.WriteNumber("requests", 0);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        w.WriteEndArray();
        w.WriteEndObject();
    }
}
