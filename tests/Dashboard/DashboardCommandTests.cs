using System.Diagnostics;
using System.Net;
using System.Text;
using System.Text.Json;
using OpenQA.Selenium;
using OpenQA.Selenium.Support.UI;
using TaskMesh.Tests.Host;
using Xunit;

namespace TaskMesh.Tests.Dashboard;

/// <summary><c>taskmesh dashboard</c>: a store's history browsed through the real command, in a browser; nothing in it changes.</summary>
[Collection(BrowserCollection.Name)]
public sealed class DashboardCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-dashcmd-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task TheHistoryOfAStore_IsBrowsed_AndNothingCanChangeIt()
    {
        var store = Path.Combine(_dir, "runs.db");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Path.Combine(AppContext.BaseDirectory, "examples", "etl.json"), "--store", store, "--progress", "none");
        Assert.True(code == 0, stderr);
        byte[] before = File.ReadAllBytes(store);
        string runId;
        using (var s = TaskMesh.Engine.Store.RunStore.Open(store, readOnly: true)) runId = s.ResolveRunId("last");

        // A missing store is exit 2, nothing made.
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "dashboard", "--store", Path.Combine(_dir, "none.db"), "--port", "0");
        Assert.Equal(2, code);
        Assert.Contains("no store", stderr);
        Assert.False(File.Exists(Path.Combine(_dir, "none.db")));

        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        psi.Environment["TASKMESH_HOME"] = _dir;
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "dashboard", "--store", store, "--port", "0"]) psi.ArgumentList.Add(a);
        using var process = Process.Start(psi)!;
        var errors = process.StandardError.ReadToEndAsync();
        try
        {
            string? line = await process.StandardOutput.ReadLineAsync().WaitAsync(TimeSpan.FromSeconds(60));
            var match = System.Text.RegularExpressions.Regex.Match(line ?? "", @" at (http://\S+) ");
            Assert.True(match.Success, $"{line}\n{(process.HasExited ? await errors : "")}");
            var address = new Uri(match.Groups[1].Value);
            using var http = new HttpClient { BaseAddress = address, Timeout = TimeSpan.FromSeconds(30) };
            using (var runs = JsonDocument.Parse(await http.GetStringAsync("api/runs")))
                Assert.Contains(runs.RootElement.GetProperty("runs").EnumerateArray(), r => r.GetProperty("run_id").GetString() == runId);
            using (var refused = await http.PostAsync("api/runs", new StringContent("""{"name": "x", "tasks": [{"id": "a", "handler": "noop"}]}""", Encoding.UTF8, "application/json")))
            {
                Assert.Equal(HttpStatusCode.MethodNotAllowed, refused.StatusCode);
                Assert.Contains("taskmesh serve", await refused.Content.ReadAsStringAsync());
            }
            using (var graph = JsonDocument.Parse(await http.GetStringAsync($"api/runs/{runId}/graph")))
                Assert.Equal(11, graph.RootElement.GetProperty("tasks").GetArrayLength());   // from the graph file the store names

            // In the browser: the run, its graph and its timeline.
            var profile = Directory.CreateTempSubdirectory("taskmesh-chromium-").FullName;
            try
            {
                using var browser = HeadlessChromium.Start(profile);
                var wait = new WebDriverWait(browser, TimeSpan.FromSeconds(20));
                wait.IgnoreExceptionTypes(typeof(StaleElementReferenceException));
                browser.Navigate().GoToUrl(address.ToString());
                wait.Until(d => d.FindElements(By.CssSelector($"#runs tr[data-run='{runId}']")).Count == 1);
                browser.Navigate().GoToUrl(new Uri(address, $"/runs/{runId}").ToString());
                wait.Until(d => d.FindElements(By.CssSelector("#graph g.node.succeeded")).Count == 11 && d.FindElements(By.CssSelector("#gantt rect.bar")).Count == 11);
                Directory.CreateDirectory(DashboardFixture.Screenshots);
                browser.GetScreenshot().SaveAsFile(Path.Combine(DashboardFixture.Screenshots, "history-run.png"));
                browser.Navigate().GoToUrl(new Uri(address, "/submit").ToString());
                wait.Until(d => d.FindElement(By.TagName("main")).Text.Contains("history", StringComparison.Ordinal));
                browser.Quit();
            }
            finally
            {
                try { Directory.Delete(profile, recursive: true); } catch (IOException) { }
            }
        }
        finally
        {
            if (!process.HasExited)
            {
                using (var kill = Process.Start("kill", ["-TERM", process.Id.ToString()])!) await kill.WaitForExitAsync();
                await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
        }
        Assert.Equal(0, process.ExitCode);
        Assert.Equal(before, File.ReadAllBytes(store));   // the store as it was
    }
}

/// <summary><c>taskmesh run g.json --dashboard [PORT] [--keep-open]</c>: a plain run's own page, followed live in a browser.</summary>
[Collection(BrowserCollection.Name)]
public sealed class RunDashboardTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-rundash-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public async Task ARunsOwnPage_FollowsItLive_AndStaysOpenUntilInterrupted()
    {
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Path.Combine(AppContext.BaseDirectory, "examples", "etl.json"), "--keep-open");
        Assert.Equal(2, code);
        Assert.Contains("--keep-open needs --dashboard", stderr);

        var graph = Path.Combine(_dir, "slow.json");
        // Two chains of 20 tasks of 200 ms: about 4 s, long enough to be seen going.
        var tasks = Enumerable.Range(0, 40).Select(i => new { id = $"s{i:D2}", handler = "sleep", args = new { millis = 200 }, dependsOn = i < 2 ? Array.Empty<string>() : new[] { $"s{i - 2:D2}" } });
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "followed", tasks }));
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        psi.Environment["TASKMESH_HOME"] = _dir;
        foreach (var a in (string[])[Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "run", graph, "--dashboard", "--keep-open", "--progress", "none", "--max-parallel", "2"])
            psi.ArgumentList.Add(a);
        // The browser first: it takes a moment to start, and the run is short.
        var profile = Directory.CreateTempSubdirectory("taskmesh-chromium-").FullName;
        using var browser = HeadlessChromium.Start(profile);
        using var process = Process.Start(psi)!;
        var lines = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var pageAt = new TaskCompletionSource<string>(TaskCreationOptions.RunContinuationsAsynchronously);
        process.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lines.Enqueue(e.Data);
            if (e.Data.StartsWith("dashboard at ", StringComparison.Ordinal)) pageAt.TrySetResult(e.Data["dashboard at ".Length..]);
        };
        process.BeginOutputReadLine();
        var errors = process.StandardError.ReadToEndAsync();
        try
        {
            string page = await pageAt.Task.WaitAsync(TimeSpan.FromSeconds(60));
            var wait = new WebDriverWait(browser, TimeSpan.FromSeconds(30));
            wait.IgnoreExceptionTypes(typeof(StaleElementReferenceException));
            browser.Navigate().GoToUrl(page);
            // Live: the page sees it going, then every node in its final state.
            wait.Until(d => d.FindElements(By.CssSelector("#graph g.node")).Count == 40);
            Assert.Equal("running", wait.Until(d => d.FindElement(By.Id("run-status")).Text is { Length: > 0 } t ? t : null));
            // The timeline grows while it goes, from the events' times.
            string statusWhenDrawn = wait.Until(d => d.FindElements(By.CssSelector("#gantt rect.bar")).Count > 0 ? d.FindElement(By.Id("run-status")).Text : null)!;
            Assert.Equal("running", statusWhenDrawn);
            wait.Until(d => d.FindElement(By.Id("run-status")).Text == "succeeded"
                && d.FindElements(By.CssSelector("#graph g.node")).All(n => n.GetAttribute("class")!.Contains("succeeded", StringComparison.Ordinal)));
            Directory.CreateDirectory(DashboardFixture.Screenshots);
            browser.GetScreenshot().SaveAsFile(Path.Combine(DashboardFixture.Screenshots, "run-dashboard.png"));
            // It stays open after the run, read-only.
            var until = DateTime.UtcNow + TimeSpan.FromSeconds(30);
            while (!lines.Any(l => l.StartsWith("the dashboard stays open", StringComparison.Ordinal)) && DateTime.UtcNow < until) await Task.Delay(50);
            Assert.Contains(lines, l => l.StartsWith("the dashboard stays open", StringComparison.Ordinal));
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(30) };
            using (var refused = await http.PostAsync(new Uri(new Uri(page), "/api/runs"), new StringContent("{}", Encoding.UTF8, "application/json")))
                Assert.Equal(HttpStatusCode.MethodNotAllowed, refused.StatusCode);
        }
        finally
        {
            browser.Quit();
            try { Directory.Delete(profile, recursive: true); } catch (IOException) { }
            if (!process.HasExited)
            {
                using (var interrupt = Process.Start("kill", ["-INT", process.Id.ToString()])!) await interrupt.WaitForExitAsync();
                try { await process.WaitForExitAsync().WaitAsync(TimeSpan.FromSeconds(30)); }
                catch (TimeoutException) { process.Kill(entireProcessTree: true); throw; }
            }
        }
        Assert.True(process.ExitCode == 0, $"exit {process.ExitCode}: {await errors}");
        Assert.Contains(lines, l => l.Contains("40 total, 40 succeeded", StringComparison.Ordinal));
    }
}
