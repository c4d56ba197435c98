using System.CommandLine;
using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Host.Commands;

/// <summary>
/// Commands that act on a service (<c>taskmesh serve</c>) over its HTTP API:
/// <c>taskmesh submit GRAPH --server URL [--wait]</c>, <c>taskmesh status RUN --server URL</c>,
/// <c>taskmesh cancel RUN --server URL</c>, <c>taskmesh escalate RUN TASK --to LAYER --server URL</c>; the
/// token from <c>--token-file</c> or <c>TASKMESH_TOKEN</c>.
/// </summary>
internal static class RemoteCommands
{
    internal static Option<string> Server(bool required = true) => new("--server")
    {
        Description = required ? "The service's HTTP address, e.g. http://127.0.0.1:8080." : "Act on a service (taskmesh serve) at this HTTP address instead of a local store.",
        Required = required,
        HelpName = "URL",
    };

    internal static Option<string?> TokenFile() => new("--token-file") { Description = "A file holding the bearer token (default: the TASKMESH_TOKEN variable).", HelpName = "FILE" };

    public static Command CreateSubmit(CliIO io)
    {
        var graph = new Argument<string>("GRAPH") { Description = "The graph file to run on the service." };
        var server = Server();
        var token = TokenFile();
        var wait = new Option<bool>("--wait") { Description = "Wait for the run to end; print its summary and exit 0 when every task succeeded, 1 when some did not." };
        var command = new Command("submit", "Submit a graph to a service (taskmesh serve) over its HTTP API.") { graph, server, token, wait };
        command.SetAction((parse, ct) => SubmitAsync(io, parse.GetValue(graph)!, parse.GetValue(server)!, parse.GetValue(token), parse.GetValue(wait)));
        return command;
    }

    public static Command CreateStatus(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "The run's id." };
        var server = Server();
        var token = TokenFile();
        var command = new Command("status", "Print a run of a service as JSON (exit 0 succeeded or running, 1 failed or cancelled).") { run, server, token };
        command.SetAction((parse, ct) => StatusAsync(io, parse.GetValue(run)!, parse.GetValue(server)!, parse.GetValue(token)));
        return command;
    }

    public static Command CreateWorkers(CliIO io)
    {
        var server = Server();
        var token = TokenFile();
        var json = new Option<bool>("--json") { Description = "Print the service's answer as JSON." };
        var command = new Command("workers", "The cluster's workers of a service (taskmesh serve --cluster-port): slots, memory, in flight, tasks done; the workers lost.") { server, token, json };
        command.SetAction((parse, ct) => WorkersAsync(io, parse.GetValue(server)!, parse.GetValue(token), parse.GetValue(json)));
        return command;
    }

    private static async Task<int> WorkersAsync(CliIO io, string server, string? tokenFile, bool json)
    {
        using var http = Client(server, tokenFile);
        using var response = await Send(http, () => http.GetAsync("api/workers", io.Token), server);
        using var doc = await ReadJsonAsync(response, io.Token);
        Fail(response, doc);
        var root = doc.RootElement;
        if (json)
        {
            io.Out.WriteLine(root.GetRawText());
            return ExitCodes.Ok;
        }
        var workers = root.GetProperty("workers").EnumerateArray().ToList();
        io.Out.WriteLine($"coordinator {root.GetProperty("coordinator").GetString()}: {workers.Count} workers");
        var o = io.Out;
        if (workers.Count > 0)
            o.WriteLine($"{"worker",-22}  {"host",-16}  {"pid",7}  {"status",-8}  {"slots",5}  {"memory MB",9}  {"qubits",6}  {"in flight",9}  {"succeeded",10}  {"failed",7}  {"up s",8}");
        foreach (var w in workers)
            o.WriteLine(string.Create(System.Globalization.CultureInfo.InvariantCulture,
                $"{w.GetProperty("endpoint").GetString(),-22}  {w.GetProperty("host").GetString(),-16}  {w.GetProperty("pid").GetInt32(),7}  {w.GetProperty("status").GetString(),-8}  {w.GetProperty("slots").GetInt32(),5}  {w.GetProperty("memory_mb").GetInt64(),9}  {w.GetProperty("max_qubits").GetInt32(),6}  {w.GetProperty("in_flight").GetInt32(),9}  {w.GetProperty("succeeded").GetInt64(),10}  {w.GetProperty("failed").GetInt64(),7}  {w.GetProperty("up_seconds").GetDouble(),8:0.0}"));
        foreach (var l in root.GetProperty("lost").EnumerateArray())
            io.Out.WriteLine($"lost {l.GetProperty("endpoint").GetString()} at {l.GetProperty("at").GetString()} ({l.GetProperty("why").GetString()}): {l.GetProperty("requeued").GetInt32()} attempts sent again, {l.GetProperty("poisoned").GetInt32()} failed as poison");
        return ExitCodes.Ok;
    }

    public static Command CreateCancel(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "The run's id." };
        var server = Server();
        var token = TokenFile();
        var command = new Command("cancel", "Cancel a run of a service.") { run, server, token };
        command.SetAction((parse, ct) => CancelAsync(io, parse.GetValue(run)!, parse.GetValue(server)!, parse.GetValue(token)));
        return command;
    }

    private static HttpClient Client(string server, string? tokenFile)
    {
        if (!Uri.TryCreate(server.EndsWith('/') ? server : server + "/", UriKind.Absolute, out var uri) || uri.Scheme is not ("http" or "https"))
            throw new UsageException($"--server must be an http:// or https:// address, got '{server}'");
        string? token = null;
        if (tokenFile is not null)
        {
            try { token = File.ReadAllText(tokenFile).Trim(); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { throw new UsageException($"--token-file: {ex.Message}"); }
        }
        else token = Environment.GetEnvironmentVariable("TASKMESH_TOKEN");
        var http = new HttpClient { BaseAddress = uri, Timeout = TimeSpan.FromSeconds(90) };
        if (!string.IsNullOrWhiteSpace(token)) http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", token.Trim());
        return http;
    }

    private static async Task<int> SubmitAsync(CliIO io, string graphPath, string server, string? tokenFile, bool wait)
    {
        byte[] body;
        try { body = TaskMesh.Engine.IO.SafeFile.ReadInput(graphPath, TaskMesh.Engine.IO.SafeFile.MaxGraphBytes, "graph file", io.Token); }
        catch (TaskMesh.Engine.IO.UnsafeFileException ex) { throw new UsageException(ex.Message); }
        using var http = Client(server, tokenFile);
        using var response = await Send(http, () => http.PostAsync("api/runs", new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } }, io.Token), server);
        using var doc = await ReadJsonAsync(response, io.Token);
        if (response.StatusCode == HttpStatusCode.BadRequest && doc.RootElement.TryGetProperty("errors", out var errors))
        {
            // As `taskmesh validate` prints a file's problems: file:line:column: task 'id': message.
            foreach (var e in errors.EnumerateArray())
            {
                string where = e.TryGetProperty("line", out var l) ? $"{graphPath}:{l.GetInt32()}" + (e.TryGetProperty("column", out var c) ? $":{c.GetInt32()}" : "") : graphPath;
                string task = e.TryGetProperty("task_id", out var t) ? $" task '{GraphLimits.Printable(t.GetString() ?? "")}':" : "";
                io.Error.WriteLine($"{where}:{task} {GraphLimits.Printable(e.GetProperty("message").GetString() ?? "")}");
            }
            return ExitCodes.BadInput;
        }
        Fail(response, doc);
        string runId = doc.RootElement.GetProperty("run_id").GetString()!;
        if (!wait)
        {
            io.Out.WriteLine(GraphLimits.Printable(runId));   // the service's words: never raw to a terminal
            return ExitCodes.Ok;
        }
        return await WaitAsync(io, http, runId, server);
    }

    private static async Task<int> WaitAsync(CliIO io, HttpClient http, string runId, string server)
    {
        while (true)
        {
            using var response = await Send(http, () => http.GetAsync($"api/runs/{Uri.EscapeDataString(runId)}?wait=30", io.Token), server);
            using var doc = await ReadJsonAsync(response, io.Token);
            Fail(response, doc);
            string status = doc.RootElement.GetProperty("status").GetString()!;
            if (status is "running" or "open") continue;
            io.Out.WriteLine(doc.RootElement.GetRawText());
            return status == "succeeded" ? ExitCodes.Ok : status == "cancelled" ? ExitCodes.Cancelled : ExitCodes.TasksFailed;
        }
    }

    private static async Task<int> StatusAsync(CliIO io, string runId, string server, string? tokenFile)
    {
        using var http = Client(server, tokenFile);
        using var response = await Send(http, () => http.GetAsync($"api/runs/{Uri.EscapeDataString(runId)}", io.Token), server);
        using var doc = await ReadJsonAsync(response, io.Token);
        Fail(response, doc);
        io.Out.WriteLine(doc.RootElement.GetRawText());
        return doc.RootElement.GetProperty("status").GetString() is "succeeded" or "running" or "open" ? ExitCodes.Ok : ExitCodes.TasksFailed;
    }

    private static async Task<int> CancelAsync(CliIO io, string runId, string server, string? tokenFile)
    {
        using var http = Client(server, tokenFile);
        using var response = await Send(http, () => http.PostAsync($"api/runs/{Uri.EscapeDataString(runId)}/cancel", null, io.Token), server);
        if (response.StatusCode == HttpStatusCode.Accepted)
        {
            io.Out.WriteLine($"run {GraphLimits.Printable(runId)}: cancel requested");
            return ExitCodes.Ok;
        }
        using var doc = await ReadJsonAsync(response, io.Token);
        Fail(response, doc);
        return ExitCodes.Ok;
    }

    /// <summary>Manual escalation on a service: a new run resumes the ended one with the task run again on <paramref name="layer"/>; prints its id (or, with <paramref name="wait"/>, its end).</summary>
    internal static async Task<int> EscalateAsync(CliIO io, string runId, string taskId, string layer, string? reason, string server, string? tokenFile, bool wait)
    {
        using var http = Client(server, tokenFile);
        var body = JsonSerializer.SerializeToUtf8Bytes(new Dictionary<string, string?> { ["to"] = layer, ["reason"] = reason });
        using var response = await Send(http, () => http.PostAsync($"api/runs/{Uri.EscapeDataString(runId)}/tasks/{Uri.EscapeDataString(taskId)}/escalate",
            new ByteArrayContent(body) { Headers = { ContentType = new MediaTypeHeaderValue("application/json") } }, io.Token), server);
        using var doc = await ReadJsonAsync(response, io.Token);
        Fail(response, doc);
        string escalated = doc.RootElement.GetProperty("run_id").GetString()!;
        if (!wait)
        {
            io.Out.WriteLine(GraphLimits.Printable(escalated));
            return ExitCodes.Ok;
        }
        return await WaitAsync(io, http, escalated, server);
    }

    private static async Task<HttpResponseMessage> Send(HttpClient http, Func<Task<HttpResponseMessage>> send, string server)
    {
        try { return await send(); }
        catch (HttpRequestException ex) { throw new UsageException($"cannot reach the service at {server}: {ex.Message}"); }
    }

    private static async Task<JsonDocument> ReadJsonAsync(HttpResponseMessage response, CancellationToken ct)
    {
        var text = await response.Content.ReadAsStringAsync(ct);
        try { return JsonDocument.Parse(text.Length == 0 ? "{}" : text); }
        catch (JsonException) { throw new UsageException($"the service answered {(int)response.StatusCode} with something that is not JSON"); }
    }

    /// <summary>A problem-details answer as the command's error (exit 2), naming the status and the service's words.</summary>
    private static void Fail(HttpResponseMessage response, JsonDocument doc)
    {
        if (response.IsSuccessStatusCode) return;
        string detail = doc.RootElement.TryGetProperty("detail", out var d) ? d.GetString() ?? "" : response.ReasonPhrase ?? "";
        throw new UsageException($"the service refused: {(int)response.StatusCode} {GraphLimits.Printable(detail)}");
    }
}
