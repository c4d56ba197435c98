using System.Text.Json;
using TaskMesh.Engine.Store;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// <c>taskmesh open</c>, in-process through <see cref="Cli.RunAsync"/> with writers of the test's
/// own (no signal or process under test here; the SIGKILL of an open run is in StoreHardeningTests).
/// Every path is absolute: the process's working directory is not the test's.
/// </summary>
public sealed class OpenCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-open-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static Task<(int code, string stdout, string stderr)> Run(params string[] args) => CliTests.InProcess(args);

    [Fact]
    public async Task Open_RunsEachGoodLine_ReportsEachBadOneWithItsLine_AndExits2()
    {
        var store = Path.Combine(_dir, "s.db");
        var tasks = Write("tasks.jsonl", string.Join('\n',
            """{"id":"a","handler":"noop"}""",
            """{"id":"b","handler":"noop","dependsOn":["a"]""",
            """{"id":"c","handler":"noop","colour":"red"}""",
            """{"id":"d","handler":"no-such"}""",
            "",
            """{"id":"e","handler":"noop","dependsOn":["nowhere"]}""",
            """{"id":"f","handler":"fail","retries":0}""",
            """{"id":"g","handler":"noop","dependsOn":[{"id":"f","type":"soft"}]}""",
            """{"id":"h\u001b[31m","handler":"noop"}""",
            "{\"id\":\"huge\",\"handler\":\"noop\",\"args\":{\"s\":\"" + new string('a', 1_100_000) + "\"}}") + "\n");
        var (code, stdout, stderr) = await Run("open", tasks, "--store", store);

        Assert.Equal(2, code);
        Assert.Contains($"{tasks}:2: not JSON", stderr);
        Assert.Contains($"{tasks}:3: task 'c': unknown field 'colour'", stderr);
        Assert.Contains($"{tasks}:4: task 'd': handler 'no-such' is not registered", stderr);
        Assert.Contains($"{tasks}:6: task 'e': depends on 'nowhere', which is not in the run", stderr);
        Assert.Contains($"{tasks}:9:", stderr);                 // an id with an escape sequence is refused ...
        Assert.Contains($"{tasks}:10: the line is longer than 1,048,576 characters: skipped", stderr);
        Assert.DoesNotContain("\u001b", stderr + stdout);       // ... and never reaches the terminal raw
        Assert.Contains("3 submitted, 2 succeeded, 1 failed", stderr);   // a, f and g ('b' is line 2, not JSON)
        Assert.Contains("6 line(s) refused", stderr);
        var ends = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement)
            .ToDictionary(e => e.GetProperty("id").GetString()!, e => e.GetProperty("outcome").GetString());
        Assert.Equal(new Dictionary<string, string?> { ["a"] = "succeeded", ["f"] = "failed", ["g"] = "succeeded" }, ends);
        using var s = RunStore.Open(store, readOnly: true);
        var run = s.ListRuns(1).Single();
        Assert.Equal(("open", "failed", 3), (run.Graph, run.Status, run.Tasks.Total));
        var (showCode, shown, _) = await Run("runs", "show", run.RunId, "--store", store);
        Assert.Equal(0, showCode);
        Assert.Contains("no graph, no critical path", shown);
    }

    [Fact]
    public async Task Open_GarbageBetweenTasks_IsRefusedLineByLine_AndTheTasksAroundItRun()
    {
        // Random bytes (invalid UTF-8, NULs, control characters), deep nesting, huge numbers, wrong
        // shapes: each line is refused on its own, and the run goes on to the next.
        var rng = new Random(7);
        var lines = new List<byte[]>();
        int good = 0;
        for (int i = 0; i < 300; i++)
        {
            if (i % 3 == 0)
            {
                lines.Add(System.Text.Encoding.UTF8.GetBytes(JsonSerializer.Serialize(new { id = $"ok{good++}", handler = "noop" })));
                continue;
            }
            var junk = new byte[rng.Next(1, 400)];
            rng.NextBytes(junk);
            for (int k = 0; k < junk.Length; k++) if (junk[k] == (byte)'\n') junk[k] = 0;
            lines.Add(junk);
        }
        lines.Add(System.Text.Encoding.UTF8.GetBytes(new string('[', 10_000) + new string(']', 10_000)));
        lines.Add(System.Text.Encoding.UTF8.GetBytes("{\"id\":\"n\",\"handler\":\"sleep\",\"args\":{\"millis\":1e400}}"));
        lines.Add(System.Text.Encoding.UTF8.GetBytes("{\"id\":\"d\",\"handler\":\"noop\",\"dependsOn\":[{\"id\":7}]}"));
        lines.Add(System.Text.Encoding.UTF8.GetBytes("[\"not\",\"an\",\"object\"]"));
        var path = Path.Combine(_dir, "garbage.jsonl");
        File.WriteAllBytes(path, lines.SelectMany(l => l.Append((byte)'\n')).ToArray());

        var (code, stdout, stderr) = await Run("open", path, "--no-store");

        Assert.Equal(2, code);
        Assert.DoesNotContain("   at ", stderr);   // messages, not stack traces
        Assert.Contains($"{good} submitted, {good} succeeded", stderr);
        Assert.Equal(good, stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Count(l => JsonDocument.Parse(l).RootElement.GetProperty("outcome").GetString() == "succeeded"));
        Assert.DoesNotContain("\u001b", stderr + stdout);
        Assert.Contains($"{path}:{lines.Count - 3}: not JSON", stderr);   // 10,000 levels deep: refused, not a stack overflow
    }

    [Fact]
    public async Task Open_Resume_OfARunThatIsNotAnOpenRun_IsRefusedWithTheReason()
    {
        var store = Path.Combine(_dir, "s.db");
        var graph = Write("g.json", """{"name":"g","tasks":[{"id":"a","handler":"noop"}]}""");
        Assert.Equal(0, (await Run("run", graph, "--store", store, "--progress", "none")).code);
        string runId;
        using (var s = RunStore.Open(store, readOnly: true)) runId = s.ListRuns(1)[0].RunId;
        var (code, _, stderr) = await Run("open", Write("t.jsonl", ""), "--store", store, "--resume", runId);
        Assert.Equal(2, code);
        Assert.Contains($"holds no open run '{runId}'", stderr);
        (code, _, stderr) = await Run("open", Write("u.jsonl", ""), "--no-store", "--resume", runId);
        Assert.Equal(2, code);
        Assert.Contains("--resume needs the run store", stderr);
    }
}
