using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Observability;
using TaskMesh.Tests.Engine.Observability;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>Metrics over real HTTP from a real <c>taskmesh run</c>, promtool on them and on the alert rules, the Grafana dashboard, JSON logs.</summary>
public sealed class ObservabilityCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-obs-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string RepoFile(string relative)
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Engine.sln"))) return Path.Combine(d.FullName, relative);
        throw new FileNotFoundException($"no Engine.sln above {AppContext.BaseDirectory}");
    }

    /// <summary>promtool's exit code and output for <paramref name="args"/>, with <paramref name="stdin"/> piped in.</summary>
    private static async Task<(int Code, string Output)> Promtool(string? stdin, params string[] args)
    {
        var psi = new ProcessStartInfo("promtool", args) { RedirectStandardInput = true, RedirectStandardOutput = true, RedirectStandardError = true };
        using var p = Process.Start(psi) ?? throw new InvalidOperationException("promtool did not start (Debian package prometheus; .ci/run installs it)");
        if (stdin is not null) await p.StandardInput.WriteAsync(stdin);
        p.StandardInput.Close();
        var output = p.StandardOutput.ReadToEndAsync();
        var errors = p.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await p.WaitForExitAsync(cts.Token);
        return (p.ExitCode, await output + await errors);
    }

    [Fact]
    public async Task Run_WithMetricsPort_ServesMetricsOverHttpDuringAndAfterTheRun_CountsMatchTheSummary_AndPromtoolAcceptsThem()
    {
        var graph = Path.Combine(_dir, "g.json");
        var tasks = Enumerable.Range(0, 12).Select(i => new Dictionary<string, object> { ["id"] = $"s{i}", ["handler"] = "sleep", ["args"] = new { millis = 500 } }).ToList();   // six waves of two: 3 s, time to scrape mid-run on a loaded machine
        tasks.Add(new() { ["id"] = "bad", ["handler"] = "fail", ["args"] = new { message = "no" } });
        tasks.Add(new() { ["id"] = "after", ["handler"] = "noop", ["dependsOn"] = new[] { "bad" } });
        File.WriteAllText(graph, JsonSerializer.Serialize(new { name = "scraped", tasks }));
        var summary = Path.Combine(_dir, "summary.json");
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = _dir };
        psi.Environment["TASKMESH_HOME"] = _dir;
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "taskmesh.dll"), "run", graph, "--json", summary, "--progress", "none",
                     "--max-parallel", "2", "--metrics-port", "0", "--metrics-linger", "4" })
            psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        var errors = p.StandardError.ReadToEndAsync();
        try
        {
            var lines = new List<string>();
            async Task<string> LineMatching(string pattern)
            {
                while (await p.StandardOutput.ReadLineAsync() is { } line)
                {
                    lines.Add(line);
                    if (Regex.IsMatch(line, pattern)) return line;
                }
                throw new Xunit.Sdk.XunitException($"no line matched {pattern}: {string.Join('\n', lines)}\n{await errors}");
            }
            var url = new Uri(Regex.Match(await LineMatching(@"^metrics at http://127\.0\.0\.1:\d+/metrics$"), @"http://\S+").Value);
            using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(20) };

            // During the run: the run is active, its slots busy, tasks waiting.
            Dictionary<string, double> during;
            var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
            do during = Exposition.Parse(await http.GetStringAsync(url));
            while (during.GetValueOrDefault("taskmesh_running_tasks{layer=\"local\"}") < 2 && DateTime.UtcNow < deadline);
            Assert.Equal(1, during["taskmesh_runs_active"]);
            Assert.Equal(2, during["taskmesh_running_tasks{layer=\"local\"}"]);
            Assert.True(during["taskmesh_ready_tasks{layer=\"local\"}"] >= 1);
            Assert.Equal(0, during.GetValueOrDefault("taskmesh_runs_total{status=\"failed\"}"));

            // After the run (the command lingers): the final figures, equal to the summary's.
            await LineMatching(@"^serving http://\S+ for 4 s more$");
            var text = await http.GetStringAsync(url);
            var after = Exposition.Parse(text);
            using (var doc = JsonDocument.Parse(File.ReadAllText(summary)))
            {
                var t = doc.RootElement.GetProperty("tasks");
                Assert.Equal(t.GetProperty("succeeded").GetInt32(), after["taskmesh_tasks_total{layer=\"local\",outcome=\"succeeded\"}"]);
                Assert.Equal(t.GetProperty("failed").GetInt32(), after["taskmesh_tasks_total{layer=\"local\",outcome=\"failed\"}"]);
                Assert.Equal(t.GetProperty("skipped").GetInt32(), after["taskmesh_tasks_total{layer=\"none\",outcome=\"skipped\"}"]);
                Assert.Equal((12, 1, 1), (t.GetProperty("succeeded").GetInt32(), t.GetProperty("failed").GetInt32(), t.GetProperty("skipped").GetInt32()));
            }
            Assert.Equal(0, after["taskmesh_runs_active"]);
            Assert.Equal(1, after["taskmesh_runs_total{status=\"failed\"}"]);
            Assert.Equal(13, after["taskmesh_task_duration_seconds_count{layer=\"local\"}"]);
            Assert.Equal(12, after["taskmesh_task_duration_seconds_count{layer=\"local\"}"] - after["taskmesh_task_duration_seconds_bucket{layer=\"local\",le=\"0.1\"}"]);
            Assert.True(after["taskmesh_store_records_total"] > 0);   // the default store, in the test's folder
            Assert.DoesNotContain("s11", text);                       // no task ids in labels

            var (code, output) = await Promtool(text, "check", "metrics");
            Assert.True(code == 0, output);
            Assert.Equal("", output.Trim());

            Assert.True(p.WaitForExit(30_000), "taskmesh did not exit after its linger");
            Assert.Equal(1, p.ExitCode);   // a task failed
        }
        finally
        {
            if (!p.HasExited) p.Kill(entireProcessTree: true);
        }
    }

    [Fact]
    public async Task AlertRulesAndScrapeConfig_PassPromtool()
    {
        var (code, output) = await Promtool(null, "check", "rules", RepoFile("docs/prometheus/alerts.yml"));
        Assert.True(code == 0, output);
        Assert.Contains("SUCCESS", output);
        (code, output) = await Promtool(null, "check", "config", RepoFile("docs/prometheus/prometheus.yml"));
        Assert.True(code == 0, output);
        using var rules = File.OpenText(RepoFile("docs/prometheus/alerts.yml"));
        var text = await rules.ReadToEndAsync();
        foreach (var alert in new[] { "TaskMeshTaskFailureRateHigh", "TaskMeshEscalationRateHigh", "TaskMeshDailyCostOverLimit", "TaskMeshStoreQueueBackingUp" })
            Assert.Contains($"alert: {alert}", text);
    }

    [Fact]
    public async Task GrafanaDashboard_Parses_AndEveryQueryNamesAMetricTaskMeshExports()
    {
        // The families a real scrape has, after a run.
        var metrics = new TaskMeshMetrics();
        var engine = new TaskMeshEngine();
        metrics.Watch(engine);
        var g = new GraphBuilder("g");
        g.Task("a", "noop");
        await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [metrics] });
        var families = (await Exposition.TextOf(metrics)).Split('\n').Where(l => l.StartsWith("# TYPE ", StringComparison.Ordinal))
            .Select(l => l.Split(' ')[2]).ToHashSet();

        using var doc = JsonDocument.Parse(File.ReadAllText(RepoFile("docs/grafana/taskmesh.json")));
        Assert.Equal("TaskMesh", doc.RootElement.GetProperty("title").GetString());
        var exprs = doc.RootElement.GetProperty("panels").EnumerateArray()
            .Where(p => p.TryGetProperty("targets", out _))
            .SelectMany(p => p.GetProperty("targets").EnumerateArray().Select(t => t.GetProperty("expr").GetString()!)).ToList();
        Assert.True(exprs.Count >= 15);
        foreach (var expr in exprs)
        {
            var names = Regex.Matches(expr, @"\b(taskmesh_[a-z_]+|process_[a-z_]+|dotnet_[a-z_]+)\b").Select(m => m.Value).ToList();
            Assert.True(names.Count > 0, $"no metric in '{expr}'");
            foreach (var name in names)
            {
                var family = Regex.Replace(name, "_(bucket|count|sum)$", "");
                Assert.True(families.Contains(family) || families.Contains(name), $"'{name}' in '{expr}' is not a metric TaskMesh exports");
            }
        }
        // The templating query too.
        Assert.Contains("taskmesh_runs_active", doc.RootElement.GetProperty("templating").GetRawText());
    }

    [Fact]
    public async Task LogFormatJson_WritesOneJsonObjectPerLine_WithTheRunAndItsFailures()
    {
        var example = Path.Combine(AppContext.BaseDirectory, "examples", "behaviours", "failure-skips.json");
        var (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", example, "--progress", "none", "--no-store", "--log-format", "json", "--log-level", "information");
        Assert.Equal(1, code);
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length >= 3, stderr);
        var entries = lines.Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();   // each line is one JSON object
        Assert.All(entries, e => Assert.Equal(JsonValueKind.Object, e.ValueKind));
        var failed = Assert.Single(entries, e => e.GetProperty("EventId").GetInt32() == 3);
        Assert.Equal("Warning", failed.GetProperty("LogLevel").GetString());
        Assert.Equal("bad", failed.GetProperty("State").GetProperty("TaskId").GetString());
        Assert.Contains(entries, e => e.GetProperty("EventId").GetInt32() == 1 && e.GetProperty("State").GetProperty("Graph").GetString() == "failure-skips");
        Assert.Contains(entries, e => e.GetProperty("EventId").GetInt32() == 2 && e.GetProperty("State").GetProperty("Status").GetString() == "failed");

        // An error message of the command line is a JSON line too.
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "run", Path.Combine(_dir, "missing.json"), "--log-format", "json");
        Assert.Equal(2, code);
        var error = JsonDocument.Parse(stderr.Trim().Split('\n')[0]).RootElement;
        Assert.Equal("Error", error.GetProperty("LogLevel").GetString());
        Assert.Contains("missing.json", error.GetProperty("Message").GetString());
    }
}
