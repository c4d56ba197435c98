using System.Text.Json;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// <c>taskmesh qsim</c> (in-process: nothing about a process is under test) and <c>taskmesh gen qaoa</c>
/// with the runs of its graphs (real processes: they use the default run store of their environment).
/// </summary>
public sealed class QsimCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-qsim-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static string Circuit(string name) => Path.Combine(AppContext.BaseDirectory, "Data", "qasm", "circuits", name);

    [Fact]
    public async Task Qsim_WritesTheDocumentedJson()
    {
        var json = Path.Combine(_dir, "r.json");
        var (code, stdout, stderr) = await CliTests.InProcess("qsim", Circuit("bell_n4.qasm"), "--shots", "10000", "--seed", "5",
            "--observable", "Z0 Z1", "--observable", "X2", "--json", json);
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("4 qubits", stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(json));
        var root = doc.RootElement;
        Assert.Equal(4, root.GetProperty("qubits").GetInt32());
        Assert.Equal(33, root.GetProperty("gates").GetInt32());
        Assert.Equal("double", root.GetProperty("precision").GetString());
        // The simulation's own time: more than nothing (33 gates on 16 amplitudes), well under the process's.
        Assert.InRange(root.GetProperty("elapsed_ms").GetDouble(), 1e-6, 60_000);
        Assert.Equal(1.0, root.GetProperty("norm").GetDouble(), 10);
        Assert.Equal(0.106694, root.GetProperty("probabilities").GetProperty("0010").GetDouble(), 5);
        Assert.Equal(10000, root.GetProperty("counts").EnumerateObject().Sum(p => p.Value.GetInt32()));
        Assert.True(root.GetProperty("expectations").TryGetProperty("Z0 Z1", out _));
        Assert.True(root.GetProperty("confidence").GetProperty("score").GetDouble() > 0.9);
    }

    [Fact]
    public async Task Qsim_BadCircuit_ExitsTwoNamingLineAndColumn()
    {
        var bad = Path.Combine(_dir, "bad.qasm");
        File.WriteAllText(bad, "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\ncx q[0], q[5];\n");
        var json = Path.Combine(_dir, "r.json");
        var (code, _, stderr) = await CliTests.InProcess("qsim", bad, "--json", json);
        Assert.Equal(2, code);
        Assert.Contains("bad.qasm:4:12: index 5 is out of range for register 'q' of size 2", stderr);
        Assert.False(File.Exists(json));
    }

    [Fact]
    public async Task Qsim_BadOptions_ExitTwo()
    {
        Assert.Equal(2, (await CliTests.InProcess("qsim", Circuit("qft_n4.qasm"), "--fusion", "9")).code);
        Assert.Equal(2, (await CliTests.InProcess("qsim", Circuit("qft_n4.qasm"), "--noise", "gremlins=1")).code);
        var (code, _, stderr) = await CliTests.InProcess("qsim", Circuit("qft_n4.qasm"), "--observable", "Z9");
        Assert.Equal(2, code);
        Assert.Contains("names qubit 9", stderr);
    }

    [Fact]
    public async Task Qsim_MissingHeader_WarnsAndRuns()
    {
        var (code, _, stderr) = await CliTests.InProcess("qsim", Circuit("sat_n11.qasm"));
        Assert.Equal(0, code);
        Assert.Contains("no 'OPENQASM 2.0;' header", stderr);
    }

    [Fact]
    public async Task Qsim_Noise_And_Export()
    {
        var exported = Path.Combine(_dir, "x.qasm");
        var (code, stdout, stderr) = await CliTests.InProcess("qsim", Circuit("adder_n10.qasm"), "--noise", "depolarizing=0.01,trajectories=20", "--seed", "1", "--export-qasm", exported);
        Assert.True(code == 0, stderr);
        Assert.Contains("noise: depolarizing=0.01,trajectories=20", stdout);
        var (code2, stdout2, _) = await CliTests.InProcess("qsim", exported);
        Assert.Equal(0, code2);
        Assert.Contains("1000000010", stdout2); // the adder's result, q[9]..q[0] (reference: 1000000010 with probability 1)
    }

    [Fact]
    public async Task Run_MainExample_QaoaSweep_WritesTheReport()
    {
        // A copy of the example, so the report lands in this test's folder.
        var graph = Path.Combine(_dir, "qaoa-sweep.json");
        File.Copy(Path.Combine(AppContext.BaseDirectory, "examples", "qaoa-sweep.json"), graph);
        var summary = Path.Combine(_dir, "s.json");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", graph, "--json", summary);
        Assert.True(code == 0, stderr + stdout);
        using var s = JsonDocument.Parse(File.ReadAllText(summary));
        Assert.Equal(274, s.RootElement.GetProperty("tasks").GetProperty("succeeded").GetInt32());
        Assert.Equal(256, s.RootElement.GetProperty("layers").GetProperty("quantum").GetProperty("tasks").GetInt32());
        using var r = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "out", "qaoa-report.json")));
        var best = r.RootElement.GetProperty("inputs")[0].GetProperty("output");
        Assert.Equal(256, 16 * best.GetProperty("candidates").GetInt32());
        var circuit = best.GetProperty("winner").GetProperty("winner");
        Assert.Equal(best.GetProperty("value").GetDouble(), circuit.GetProperty("objective").GetDouble());
        Assert.True(circuit.GetProperty("meta").GetProperty("gamma").GetDouble() > 0);
        // The best sample reaches the exact MaxCut of this 12-vertex graph.
        Assert.Equal(r.RootElement.GetProperty("meta").GetProperty("exact_maxcut").GetInt32(), circuit.GetProperty("best_cut").GetInt32());
    }

    [Fact]
    public async Task GenQaoa_MatchesTheCheckedInExample_AndRuns()
    {
        var graph = Path.Combine(_dir, "sweep.json");
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "gen", "qaoa", "--out", graph);
        Assert.True(code == 0, stderr);
        Assert.Contains("256 circuits", stdout);
        Assert.Equal(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "examples", "qaoa-sweep.json")), File.ReadAllText(graph));

        var small = Path.Combine(_dir, "small.json");
        Assert.Equal(0, (await CliTests.Taskmesh(_dir, "gen", "qaoa", "--vertices", "6", "--grid", "3x3", "--report", "rep.json", "--out", small)).code);
        var summary = Path.Combine(_dir, "s.json");
        (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "run", small, "--json", summary);
        Assert.True(code == 0, stderr + stdout);
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "rep.json")));
        var best = doc.RootElement.GetProperty("inputs")[0].GetProperty("output");
        int exact = doc.RootElement.GetProperty("meta").GetProperty("exact_maxcut").GetInt32();
        double objective = best.GetProperty("value").GetDouble();
        Assert.InRange(objective, 0.5 * exact, exact); // p=1 QAOA beats a random cut (exact/2 on average) on a 3-regular graph
        using var s = JsonDocument.Parse(File.ReadAllText(summary));
        Assert.Equal(9, s.RootElement.GetProperty("layers").GetProperty("quantum").GetProperty("tasks").GetInt32());
    }
}
