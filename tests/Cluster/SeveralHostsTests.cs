using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Nodes;
using TaskMesh.Tests.QuantumSim;
using Xunit;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace TaskMesh.Tests.Cluster;

/// <summary>
/// A fact that needs network namespaces (root, <c>ip netns</c>, a bridge): where they cannot be
/// made it is reported skipped with the reason, never passed without running.
/// </summary>
[XunitTestCaseDiscoverer("TaskMesh.Tests.Cluster.NamespacesFactDiscoverer", "TaskMesh.Tests")]
[AttributeUsage(AttributeTargets.Method)]
public sealed class NamespacesFactAttribute : FactAttribute;

public sealed class NamespacesFactDiscoverer(IMessageSink sink) : FactDiscoverer(sink)
{
    public override IEnumerable<IXunitTestCase> Discover(ITestFrameworkDiscoveryOptions options, ITestMethod method, IAttributeInfo attribute)
        => WhyNot() is { } why
            ? [new SkippedWidthTestCase(DiagnosticMessageSink, options.MethodDisplayOrDefault(), options.MethodDisplayOptionsOrDefault(), method, why)]
            : base.Discover(options, method, attribute);

    private static string? WhyNot()
    {
        string probe = $"tmprobe{Environment.ProcessId % 100000}";
        try
        {
            if (Run("ip", "netns", "add", probe) is { } problem) return $"network namespaces cannot be made here ({problem}): the several-hosts test needs root and ip netns";
            Run("ip", "netns", "del", probe);
            if (Run("ip", "link", "add", probe, "type", "bridge") is { } noBridge) return $"no bridge can be made here ({noBridge})";
            Run("ip", "link", "del", probe);
            return null;
        }
        catch (System.ComponentModel.Win32Exception ex)
        {
            return $"ip is not installed ({ex.Message}): the several-hosts test needs iproute2";
        }
    }

    private static string? Run(params string[] args)
    {
        var psi = new ProcessStartInfo(args[0]) { RedirectStandardError = true, RedirectStandardOutput = true };
        foreach (var a in args.Skip(1)) psi.ArgumentList.Add(a);
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        return p.ExitCode == 0 ? null : err.Trim();
    }
}

/// <summary>
/// Several hosts on this machine: the coordinator, PostgreSQL (the membership) and two workers, each
/// in a network namespace of its own with its own address, joined by a bridge. A run goes across
/// them; one worker's link is cut mid-run, and its tasks finish on the other.
/// </summary>
[Collection(ClusterProcesses.Name)]
public sealed class SeveralHostsTests : IAsyncLifetime
{
    private static readonly TimeSpan Limit = TimeSpan.FromSeconds(120);
    private readonly string _tag = (Environment.ProcessId % 100000).ToString();
    private readonly int _net = 20 + Environment.ProcessId % 200;
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-hosts-").FullName;
    private readonly TestProcesses _processes;
    private readonly List<string> _namespaces = new();
    private PostgresServer? _pg;

    private string Bridge => $"tmb{_tag}";
    private string Ip(int host) => $"10.213.{_net}.{host}";

    public SeveralHostsTests() => _processes = new TestProcesses(_dir);

    public Task InitializeAsync() => Task.CompletedTask;

    /// <summary>A host: a namespace with a veth pair to the bridge, its end named in the namespace <c>eth0</c>, at 10.213.N.<paramref name="host"/>.</summary>
    private async Task<string> HostAsync(string name, int host)
    {
        string ns = $"tm{_tag}{name}";
        string outside = $"tv{_tag}{name}";
        await PostgresServer.RunAsync("ip", "netns", "add", ns);
        _namespaces.Add(ns);
        await PostgresServer.RunAsync("ip", "link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", ns);
        await PostgresServer.RunAsync("ip", "link", "set", outside, "master", Bridge, "up");
        await PostgresServer.RunAsync("ip", "netns", "exec", ns, "ip", "addr", "add", $"{Ip(host)}/24", "dev", "eth0");
        await PostgresServer.RunAsync("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up");
        await PostgresServer.RunAsync("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up");
        return ns;
    }

    private Process Start(string ns, ConcurrentQueue<string> lines, params string[] args) => _processes.StartIn(ns, lines, args);

    private static Task<JsonElement> Get(HttpClient http, string path) => TestProcesses.Get(http, path);

    [NamespacesFact]
    public async Task ARunAcrossHosts_SurvivesAWorkersLinkCutMidRun()
    {
        await PostgresServer.RunAsync("ip", "link", "add", Bridge, "type", "bridge");
        await PostgresServer.RunAsync("ip", "addr", "add", $"{Ip(1)}/24", "dev", Bridge);   // this test's own address: it talks to the coordinator's API
        await PostgresServer.RunAsync("ip", "link", "set", Bridge, "up");
        var db = await HostAsync("pg", 2);
        var coordinator = await HostAsync("co", 3);
        var w1 = await HostAsync("w1", 4);
        var w2 = await HostAsync("w2", 5);
        _pg = await PostgresServer.StartAsync(Ip(2), db, $"10.213.{_net}.0/24");

        // The coordinator keeps its run store in the same database as the membership: it outlives the coordinator's host.
        File.WriteAllText(Path.Combine(_dir, "coordinator.toml"), $"[cluster]\nmembership = \"{_pg.Url}\"\n[store]\nurl = \"{_pg.Url}\"\n");
        File.WriteAllText(Path.Combine(_dir, "worker.toml"), $"[cluster]\nmembership = \"{_pg.Url}\"\n");
        var lines = new ConcurrentQueue<string>();
        Start(coordinator, lines, "serve", "--host", Ip(3), "--insecure", "--http-port", "8080", "--port", "0", "--cluster-host", Ip(3), "--cluster-port", "11111", "--config", "coordinator.toml");
        using var http = new HttpClient { BaseAddress = new Uri($"http://{Ip(3)}:8080/"), Timeout = TimeSpan.FromSeconds(10) };
        var until = DateTime.UtcNow + Limit;
        while (true)
        {
            try
            {
                await http.GetStringAsync("health");
                break;
            }
            catch (HttpRequestException) when (DateTime.UtcNow < until)
            {
                await Task.Delay(100);
            }
            catch (HttpRequestException ex)
            {
                throw new TimeoutException($"the coordinator did not serve: {ex.Message}\n{string.Join("\n", lines)}");
            }
        }
        var workerLines = new ConcurrentQueue<string>();
        Start(w1, workerLines, "worker", "--join", $"{Ip(3)}:11111", "--host", Ip(4), "--port", "11112", "--slots", "2", "--config", "worker.toml");
        Start(w2, workerLines, "worker", "--join", $"{Ip(3)}:11111", "--host", Ip(5), "--port", "11112", "--slots", "2", "--config", "worker.toml");
        while ((await Get(http, "api/workers")).GetProperty("workers").GetArrayLength() < 2)
        {
            Assert.True(DateTime.UtcNow < until, "the workers did not join: " + string.Join("\n", workerLines));
            await Task.Delay(100);
        }
        var endpoints = (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray().Select(w => w.GetProperty("endpoint").GetString()).Order().ToList();
        Assert.Equal([$"{Ip(4)}:11112", $"{Ip(5)}:11112"], endpoints);

        var graph = new JsonObject
        {
            ["name"] = "hosts",
            // 600 tasks of 20 ms on four slots: about 3 s, long enough to cut a link in the middle.
            ["tasks"] = new JsonArray([.. Enumerable.Range(0, 600).Select(i => (JsonNode)new JsonObject
            {
                ["id"] = $"t{i:D3}", ["handler"] = "sleep", ["args"] = new JsonObject { ["millis"] = 20 }, ["layer"] = "cluster",
            })]),
        };
        using var submitted = await http.PostAsync("api/runs", new StringContent(graph.ToJsonString(), System.Text.Encoding.UTF8, "application/json"));
        string runId = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
        while ((await Get(http, $"api/runs/{runId}")).GetProperty("tasks").GetProperty("ended").GetInt32() < 100) await Task.Delay(10);

        // The first worker's host drops off the network while it holds work.
        var held = (await Get(http, "api/workers")).GetProperty("workers").EnumerateArray().Single(w => w.GetProperty("endpoint").GetString() == $"{Ip(4)}:11112");
        Assert.True(held.GetProperty("in_flight").GetInt32() > 0, $"the first worker holds nothing: {held}");
        await PostgresServer.RunAsync("ip", "netns", "exec", w1, "ip", "link", "set", "eth0", "down");
        JsonElement run;
        do
        {
            await Task.Delay(100);
            run = await Get(http, $"api/runs/{runId}");
            Assert.True(DateTime.UtcNow < until + Limit, "the run did not end");
        }
        while (run.GetProperty("status").GetString() == "running");
        Assert.Equal("succeeded", run.GetProperty("status").GetString());
        Assert.Equal(600, run.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        var after = await Get(http, "api/workers");
        Assert.True(after.GetProperty("lost").GetArrayLength() == 1, $"the cut worker was not declared dead: {after}");
        Assert.True(after.GetProperty("lost")[0].GetProperty("requeued").GetInt32() > 0, $"nothing was sent again: {after}");
        Assert.Equal($"{Ip(5)}:11112", Assert.Single(after.GetProperty("workers").EnumerateArray()).GetProperty("endpoint").GetString());
        Assert.Equal($"{Ip(4)}:11112", Assert.Single(after.GetProperty("lost").EnumerateArray()).GetProperty("endpoint").GetString());

        // The run is in the database, read from this host as another coordinator would.
        using var store = TaskMesh.Engine.Store.RunStore.Open(_pg.Url, readOnly: true);
        var stored = store.GetRun(runId);
        for (var by = DateTime.UtcNow + TimeSpan.FromSeconds(10); stored.Status != "succeeded" && DateTime.UtcNow < by; stored = store.GetRun(runId)) await Task.Delay(100);
        Assert.Equal(("succeeded", 600), (stored.Status, stored.Tasks.Succeeded));
    }

    public async Task DisposeAsync()
    {
        _processes.Dispose();
        if (_pg is not null) await _pg.DisposeAsync();
        foreach (var ns in _namespaces)
        {
            // The outside end of its link: a namespace whose sockets still linger (a cut link's) outlives its name, and its link with it.
            try { await PostgresServer.RunAsync("ip", "link", "del", "tv" + ns[2..]); }
            catch (InvalidOperationException) { }
            try { await PostgresServer.RunAsync("ip", "netns", "del", ns); }
            catch (InvalidOperationException) { }
        }
        try { await PostgresServer.RunAsync("ip", "link", "del", Bridge); }
        catch (InvalidOperationException) { }
        Directory.Delete(_dir, recursive: true);
    }
}
