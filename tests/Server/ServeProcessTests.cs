using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary><c>taskmesh serve</c> as a real process: signals, exit, and the store left behind.</summary>
public sealed partial class ServeProcessTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-serve-").FullName;
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(30);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A <c>taskmesh serve</c> process on a free port of 127.0.0.1, killed (with its children) when disposed if still running.</summary>
    private sealed class Service : IAsyncDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _stdout = new();
        private readonly Task<string> _stderr;

        private Service(Process process, Uri address, Task<string> stderr) => (_process, Address, _stderr) = (process, address, stderr);

        public Uri Address { get; }
        public HttpClient Http { get; private init; } = null!;
        public int Pid => _process.Id;

        public static async Task<Service> StartAsync(string dir, params string[] args)
        {
            var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dir };
            psi.Environment["TASKMESH_HOME"] = dir;
            psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"));
            foreach (var a in (string[])["serve", "--http-port", "0", "--port", "0", .. args]) psi.ArgumentList.Add(a);
            var p = new Process { StartInfo = psi };
            var serving = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
            var stdout = new StringBuilder();
            p.OutputDataReceived += (_, e) =>
            {
                if (e.Data is null) return;
                lock (stdout) stdout.AppendLine(e.Data);
                if (Serving().Match(e.Data) is { Success: true } m) serving.TrySetResult(new Uri(m.Groups[1].Value));
            };
            p.Start();
            p.BeginOutputReadLine();
            var stderr = p.StandardError.ReadToEndAsync();
            Uri address;
            try
            {
                address = await serving.Task.WaitAsync(Limit);
            }
            catch (TimeoutException)
            {
                p.Kill(entireProcessTree: true);
                throw new InvalidOperationException($"the service did not start: {await stderr}");
            }
            return new Service(p, address, stderr) { Http = new HttpClient { BaseAddress = address, Timeout = Limit } };
        }

        public async Task SignalAsync(string signal)
        {
            using var kill = Process.Start("kill", [$"-{signal}", _process.Id.ToString()])!;
            await kill.WaitForExitAsync();
        }

        public async Task<int> ExitCodeAsync()
        {
            using var cts = new CancellationTokenSource(Limit);
            await _process.WaitForExitAsync(cts.Token);
            return _process.ExitCode;
        }

        public async Task<int> ExitCodeWithinAsync(CancellationToken ct)
        {
            await _process.WaitForExitAsync(ct);
            return _process.ExitCode;
        }

        public string Errors => _stderr.IsCompleted ? _stderr.Result : "";

        public async ValueTask DisposeAsync()
        {
            Http.Dispose();
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
            _process.Dispose();
        }
    }

    [GeneratedRegex(@"serving the HTTP API at (\S+)")]
    private static partial Regex Serving();

    private static StringContent JsonBody(string json) => new(json, Encoding.UTF8, "application/json");

    private static async Task<JsonElement> ReadJson(HttpResponseMessage response)
    {
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        return doc.RootElement.Clone();
    }

    private static bool Recorded(string store, string runId, string taskId)
    {
        using var s = TaskMesh.Engine.Store.RunStore.Open(store, readOnly: true);
        return s.TasksOf(runId).Any(t => t.Id == taskId && t.Status == "succeeded");
    }

    [Fact]
    public async Task Sigterm_RefusesNewWork_LetsTheGoingRunFinish_AndExitsZero()
    {
        var store = Path.Combine(_dir, "runs.db");
        await using var service = await Service.StartAsync(_dir, "--store", store);
        var submitted = await service.Http.PostAsync("api/runs", JsonBody("""
            { "name": "drain", "tasks": [
              { "id": "w1", "handler": "sleep", "args": { "millis": 700 } },
              { "id": "w2", "handler": "sleep", "args": { "millis": 700 }, "dependsOn": ["w1"] } ] }
            """));
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        string runId = (await ReadJson(submitted)).GetProperty("run_id").GetString()!;

        await service.SignalAsync("TERM");
        // Draining (once the signal is handled): the API still answers, says so, and refuses new work.
        var deadline = DateTime.UtcNow + Limit;
        while (DateTime.UtcNow < deadline)
        {
            var status = await ReadJson(await service.Http.GetAsync("status"));
            if (status.GetProperty("status").GetString() == "not_ready")
            {
                Assert.Contains("shutting down", status.GetProperty("problems")[0].GetString());
                break;
            }
            await Task.Delay(20);
        }
        var refused = await service.Http.PostAsync("api/runs", JsonBody("""{ "name": "late", "tasks": [ { "id": "n", "handler": "noop" } ] }"""));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Equal(0, await service.ExitCodeAsync());

        // What the going run did is in the store: it finished, and its standing run was closed.
        var (code, stdout, stderr) = await TaskMesh.Tests.Host.CliTests.InProcess("runs", "show", runId, "--store", store);
        Assert.True(code == 0, stderr);
        Assert.Contains("succeeded", stdout);
    }

    /// <summary>
    /// The drain is the service's (<c>api.drain_seconds</c>), not the command line's own grace of 10 s
    /// after a signal: a run still going 12 s after SIGTERM finishes, is recorded, and the process exits 0.
    /// </summary>
    [Fact]
    public async Task Sigterm_ADrainLongerThanTenSeconds_IsNotCut()
    {
        var store = Path.Combine(_dir, "runs.db");
        await using var service = await Service.StartAsync(_dir, "--store", store);
        var submitted = await service.Http.PostAsync("api/runs", JsonBody("""
            { "name": "long-drain", "tasks": [ { "id": "slow", "handler": "sleep", "args": { "millis": 12500 } } ] }
            """));
        Assert.Equal(HttpStatusCode.Created, submitted.StatusCode);
        string runId = (await ReadJson(submitted)).GetProperty("run_id").GetString()!;
        var started = System.Diagnostics.Stopwatch.StartNew();
        await service.SignalAsync("TERM");
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        int code = await service.ExitCodeWithinAsync(cts.Token);
        Assert.True(code == 0, $"exit {code} after {started.Elapsed.TotalSeconds:0.0} s: {service.Errors}");
        Assert.True(started.Elapsed > TimeSpan.FromSeconds(11), $"exited after {started.Elapsed.TotalSeconds:0.0} s: the run cannot have finished");
        Assert.True(Recorded(store, runId, "slow"), "the run's task is in the store, succeeded");
    }

    [Fact]
    public async Task AfterSigkill_TheNextServiceTakesOverTheStandingRun_AndATaskThatCompletedIsNotRunTwice()
    {
        var store = Path.Combine(_dir, "runs.db");
        string standing;
        const string Task1 = """{ "id": "once", "handler": "hash", "args": { "bytes": 1024 } }""";
        await using (var first = await Service.StartAsync(_dir, "--store", store))
        {
            var created = await first.Http.PostAsync("api/tasks", JsonBody(Task1));
            Assert.Equal(HttpStatusCode.Created, created.StatusCode);
            standing = (await ReadJson(created)).GetProperty("run_id").GetString()!;
            var done = await ReadJson(await first.Http.GetAsync("api/tasks/once?wait=10"));
            Assert.Equal("succeeded", done.GetProperty("status").GetString());
            Assert.Null(done.TryGetProperty("error", out var note) ? note.GetString() : null);
            // Its row is in the store (the writer commits within milliseconds) before the kill.
            var deadline = DateTime.UtcNow + Limit;
            while (!Recorded(store, standing, "once") && DateTime.UtcNow < deadline) await Task.Delay(50);
            Assert.True(Recorded(store, standing, "once"));
            await first.SignalAsync("KILL");
            await first.ExitCodeAsync();
        }

        await using var second = await Service.StartAsync(_dir, "--store", store);
        var status = await ReadJson(await second.Http.GetAsync("status"));
        Assert.Equal(standing, status.GetProperty("standing_run").GetProperty("run_id").GetString());
        Assert.Equal(standing, status.GetProperty("standing_run").GetProperty("took_over").GetString());

        // The same task again: answered from the store, not run.
        var again = await second.Http.PostAsync("api/tasks", JsonBody(Task1));
        Assert.Equal(HttpStatusCode.Created, again.StatusCode);
        var answered = await ReadJson(await second.Http.GetAsync("api/tasks/once?wait=10"));
        Assert.Equal("succeeded", answered.GetProperty("status").GetString());
        Assert.Contains("answered from the store", answered.GetProperty("error").GetString());
        // The same id with other arguments names another task: refused.
        var other = await second.Http.PostAsync("api/tasks", JsonBody("""{ "id": "once", "handler": "hash", "args": { "bytes": 2048 } }"""));
        Assert.Equal(HttpStatusCode.BadRequest, other.StatusCode);
    }
}
