using System.Text;
using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Tests.Host;
using Xunit;

namespace TaskMesh.Tests.Engine.Graph;

public sealed class WfFormatTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-wf-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>
    /// split → (align1, align2) → merge, and a lonely "report" that reads merge's output without
    /// declaring it: align1 declares its parent on the child's end (split.children), align2 on its
    /// own (parents); files a.fa / b.fa / merged.txt pass between them.
    /// </summary>
    private const string Instance15 = """
        {
          "name": "tiny", "schemaVersion": "1.5",
          "workflow": {
            "specification": {
              "tasks": [
                { "id": "split_ID1", "name": "split", "children": ["align_ID2"], "parents": [], "inputFiles": ["in.fa"], "outputFiles": ["a.fa", "b.fa"] },
                { "id": "align_ID2", "name": "align_ID2", "parents": [], "children": ["merge_ID4"], "inputFiles": ["a.fa"], "outputFiles": ["a.out"] },
                { "id": "align_ID3", "name": "align_ID3", "parents": ["split_ID1"], "children": [], "inputFiles": ["b.fa", "ref.db"], "outputFiles": ["b.out"] },
                { "id": "merge_ID4", "name": "merge", "parents": ["align_ID3"], "children": [], "inputFiles": ["a.out", "b.out"], "outputFiles": ["merged.txt"] },
                { "id": "report_ID5", "name": "report", "parents": [], "children": [], "inputFiles": ["merged.txt"], "outputFiles": [] },
                { "id": "note_ID6", "name": "note", "parents": ["split_ID1"], "children": [], "inputFiles": [], "outputFiles": [] }
              ],
              "files": [ { "id": "in.fa", "sizeInBytes": 10 } ]
            },
            "execution": {
              "makespanInSeconds": 9, "executedAt": "2020-04-01T00:00:00Z",
              "tasks": [
                { "id": "split_ID1", "runtimeInSeconds": 1.5 },
                { "id": "align_ID2", "runtimeInSeconds": 4.04 },
                { "id": "align_ID3", "runtimeInSeconds": 2 },
                { "id": "merge_ID4", "runtimeInSeconds": 0.25 },
                { "id": "report_ID5", "runtimeInSeconds": 0 },
                { "id": "note_ID6", "runtimeInSeconds": 0.1 }
              ]
            }
          }
        }
        """;

    private static WfInstance Read(string json) => WfFormat.Read(Encoding.UTF8.GetBytes(json), "i.json");

    [Fact]
    public void Import_KeepsIdsNamesAndRuntimes_DependenciesFromEitherEnd_SharedFilesAsDataEdges()
    {
        var instance = Read(Instance15);
        Assert.Equal(["split_ID1", "align_ID2", "align_ID3", "merge_ID4", "report_ID5", "note_ID6"], instance.Tasks.Select(t => t.Id));
        Assert.Equal(7.89, instance.TotalRuntimeSeconds, 9);

        var graph = WfFormat.ToGraphJson(instance, msPerSecond: 10);
        var g = GraphLoader.Load(graph, "tiny.json").Build();
        Assert.Equal("tiny", g.Name);
        (string, string, EdgeKind)[] edges = [.. Enumerable.Range(0, g.Count).SelectMany(v =>
            Enumerable.Range(g.SuccStart[v], g.SuccStart[v + 1] - g.SuccStart[v]).Select(e => (g.IdOf(v), g.IdOf(g.Succ[e]), g.KindOfSucc(e))))];
        Assert.Equal(new HashSet<(string, string, EdgeKind)>
        {
            ("split_ID1", "align_ID2", EdgeKind.Data),      // split.children, and a.fa
            ("split_ID1", "align_ID3", EdgeKind.Data),      // align_ID3.parents, and b.fa
            ("align_ID2", "merge_ID4", EdgeKind.Data),      // align_ID2.children, and a.out
            ("align_ID3", "merge_ID4", EdgeKind.Data),
            ("merge_ID4", "report_ID5", EdgeKind.Data),     // undeclared: merged.txt alone implies it
            ("split_ID1", "note_ID6", EdgeKind.Hard),       // declared, no file: a plain edge
        }, edges.ToHashSet());

        using var doc = JsonDocument.Parse(graph);
        var tasks = doc.RootElement.GetProperty("tasks").EnumerateArray().ToDictionary(t => t.GetProperty("id").GetString()!);
        Assert.Equal("sleep", tasks["align_ID2"].GetProperty("handler").GetString());
        Assert.Equal(40, tasks["align_ID2"].GetProperty("args").GetProperty("millis").GetInt64());   // 4.04 s × 10 ms/s, rounded
        Assert.Equal(3, tasks["merge_ID4"].GetProperty("args").GetProperty("millis").GetInt64());    // 2.5 → 3
        Assert.Equal(["split"], tasks["split_ID1"].GetProperty("tags").EnumerateArray().Select(e => e.GetString()));   // its name
        Assert.False(tasks["align_ID2"].TryGetProperty("tags", out _));                              // name = id

        using var spin = JsonDocument.Parse(WfFormat.ToGraphJson(instance, msPerSecond: 10, handler: "spin"));
        Assert.Equal(40_400, spin.RootElement.GetProperty("tasks")[1].GetProperty("args").GetProperty("micros").GetInt64());
    }

    [Fact]
    public void Import_Schema14_RefersByName_AndReadsFilesFromEachTask()
    {
        var instance = Read("""
            {
              "name": "old", "schemaVersion": "1.4",
              "workflow": {
                "makespanInSeconds": 3, "executedAt": "2019-01-01T00:00:00Z",
                "tasks": [
                  { "name": "prep_ID01", "id": "ID01", "type": "compute", "runtimeInSeconds": 1, "parents": [], "children": ["run_ID02"],
                    "files": [ { "link": "output", "name": "x.dat", "sizeInBytes": 5 } ] },
                  { "name": "run_ID02", "id": "ID02", "type": "compute", "runtimeInSeconds": 2, "parents": ["prep_ID01"],
                    "files": [ { "link": "input", "name": "x.dat", "sizeInBytes": 5 } ] },
                  { "name": "tidy_ID03", "type": "compute", "runtimeInSeconds": 0.5, "parents": ["run_ID02"] }
                ]
              }
            }
            """);
        Assert.Equal("1.4", instance.SchemaVersion);
        Assert.Equal(["ID01", "ID02", "tidy_ID03"], instance.Tasks.Select(t => t.Id));
        Assert.Equal(["prep_ID01", "run_ID02", "tidy_ID03"], instance.Tasks.Select(t => t.Name));
        Assert.Equal([0], instance.Tasks[1].Parents);
        Assert.Contains(0, instance.Tasks[1].DataParents);
        Assert.Equal([1], instance.Tasks[2].Parents);
        Assert.Empty(instance.Tasks[2].DataParents);
    }

    [Theory]
    [InlineData("""{ "name": "x", "schemaVersion": "2.0", "workflow": {} }""", "schemaVersion: is '2.0'; this importer reads WfFormat 1.4, 1.5, 1.6")]
    [InlineData("""{ "name": "x", "workflow": {} }""", "instance.schemaVersion: missing")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.5", "workflow": { "specification": { "tasks": [ { "id": "a" } ] }, "execution": { "tasks": [] } } }""",
        "workflow.specification.tasks[0].id: task 'a' has no entry in workflow.execution.tasks")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.5", "workflow": { "specification": { "tasks": [ { "id": "a", "parents": ["zz"] } ] }, "execution": { "tasks": [ { "id": "a", "runtimeInSeconds": 1 } ] } } }""",
        "workflow.specification.tasks[0].parents[0]: names task 'zz', which the instance does not have")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.5", "workflow": { "specification": { "tasks": [ { "id": "a" } ] }, "execution": { "tasks": [ { "id": "a", "runtimeInSeconds": -2 } ] } } }""",
        "workflow.execution.tasks[0].runtimeInSeconds: is -2; it must be 0 or more")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.5", "workflow": { "specification": { "tasks": [ { "id": "a" }, { "id": "a" } ] }, "execution": { "tasks": [ { "id": "a", "runtimeInSeconds": 1 } ] } } }""",
        "workflow.specification.tasks[1].id: 'a' is the id of workflow.specification.tasks[0] too")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.5", "workflow": { "specification": { "tasks": [ { "id": "a", "parents": "b" } ] }, "execution": { "tasks": [ { "id": "a", "runtimeInSeconds": "1" } ] } } }""",
        "workflow.execution.tasks[0].runtimeInSeconds: must be a number, got string")]
    [InlineData("""{ "name": "x", "schemaVersion": "1.4", "workflow": { "tasks": [ { "name": "a", "runtimeInSeconds": 1, "files": [ { "name": "f", "link": "sideways" } ] } ] } }""",
        "workflow.tasks[0].files[0].link: is 'sideways'; it must be input or output")]
    [InlineData("""[1, 2]""", "(root): must be an object, got array")]
    public void Import_BadInstance_IsRefusedWithTheFieldNamed(string json, string expected)
    {
        var ex = Assert.Throws<GraphValidationException>(() => Read(json));
        Assert.Contains(expected, ex.Message);
        Assert.Contains("problem(s) in i.json", ex.Message);
    }

    [Fact]
    public async Task Cli_WritesTheGraph_ThatRuns_AndRefusesABadInstanceWritingNothing()
    {
        var good = Path.Combine(_dir, "tiny.json");
        File.WriteAllText(good, Instance15);
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "import", "wfformat", good, "--out", "g.json", "--time-scale", "2");
        Assert.True(code == 0, stderr);
        Assert.Contains("wrote g.json: 6 tasks, 6 edges (5 data)", stdout);
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", "g.json", "--no-store", "--progress", "none", "--json", "s.json");
        Assert.True(code == 0, stderr + stdout);
        using (var s = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "s.json"))))
            Assert.Equal(6, s.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());

        // A cycle among the dependencies: named, exit 2, and no graph file.
        var cyclic = Path.Combine(_dir, "cyclic.json");
        File.WriteAllText(cyclic, """
            { "name": "c", "schemaVersion": "1.5", "workflow": {
              "specification": { "tasks": [ { "id": "a", "parents": ["b"] }, { "id": "b", "parents": ["a"] } ] },
              "execution": { "tasks": [ { "id": "a", "runtimeInSeconds": 1 }, { "id": "b", "runtimeInSeconds": 1 } ] } } }
            """);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "import", "wfformat", cyclic, "--out", "c.json");
        Assert.Equal(2, code);
        Assert.Contains("cycle", stderr);
        Assert.Contains("cyclic.json", stderr);
        Assert.False(File.Exists(Path.Combine(_dir, "c.json")));

        (code, _, stderr) = await CliTests.Taskmesh(_dir, "import", "wfformat", good, "--out", good);
        Assert.Equal(2, code);
        Assert.Contains("is an input of this command", stderr);
        (code, _, stderr) = await CliTests.Taskmesh(_dir, "import", "wfformat", good, "--out", "x.json", "--time-scale", "0");
        Assert.Equal(2, code);
        Assert.Contains("--time-scale", stderr);
        Assert.Equal(Instance15, File.ReadAllText(good));
    }
}
