using System.Diagnostics;
using System.Text;
using System.Text.Json;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// Crafted inputs that once crashed, hung, read without bound, lost data or escaped the graph's
/// folder: each must end in a clear message and exit 2 (or 130 on a signal) before anything runs,
/// with nothing written. Real <c>taskmesh</c> processes, every one bounded in time.
/// </summary>
public sealed class BadInputTests : IDisposable
{
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(30);
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-bad-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text);
        return path;
    }

    private static string Graph(params object[] tasks) => JsonSerializer.Serialize(new { name = "g", tasks });

    private async Task<(int code, string stdout, string stderr)> Refused(params string[] args)
    {
        var sw = Stopwatch.StartNew();
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, args);
        Assert.True(sw.Elapsed < Bound, $"took {sw.Elapsed}");
        Assert.True(code == 2, $"exit {code}\n{stderr}\n{stdout}");
        Assert.False(string.IsNullOrWhiteSpace(stderr));
        return (code, stdout, stderr);
    }

    private static void MakeFifo(string path)
    {
        using var p = Process.Start("mkfifo", [path])!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    // ------------------------------------------------------------------ crashes

    [Theory]
    [InlineData("minus")]
    [InlineData("parens")]
    [InlineData("plus-chain")]
    [InlineData("power-chain")]
    public async Task Qsim_DeeplyNestedExpression_IsRefusedWithItsPosition(string shape)
    {
        string expr = shape switch
        {
            "minus" => new string('-', 200_000) + "1",
            "parens" => new string('(', 200_000) + "1" + new string(')', 200_000),
            "plus-chain" => string.Join("+", Enumerable.Repeat("0", 200_000)),
            _ => string.Join("^", Enumerable.Repeat("1", 200_000)),
        };
        var qasm = Write("deep.qasm", $"OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\nrx({expr}) q[0];\n");
        var (_, _, stderr) = await Refused("qsim", qasm);
        Assert.Contains("deep.qasm:4:", stderr);
        Assert.Matches("nests deeper than 64|more than 1000 terms", stderr);

        // The same circuit inline in a graph: validate reports it with the task's id.
        var graph = Write("g.json", Graph(new { id = "c", handler = "quantum", args = new { qasm = $"OPENQASM 2.0; include \"qelib1.inc\"; qreg q[1]; rx({expr}) q[0];" } }));
        (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("task 'c'", stderr);
    }

    [Fact]
    public async Task Validate_SeventyThousandUnknownHandlers_IsAClearLimitError()
    {
        var tasks = Enumerable.Range(0, 70_000).Select(i => new { id = $"t{i}", handler = $"h{i}" }).ToArray();
        var graph = Write("many.json", Graph(tasks));
        var (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("error limit", stderr);
        Assert.Contains("distinct handler names", stderr);
    }

    [Fact]
    public async Task Run_OutputPathThatCannotBeWritten_IsRefusedBeforeRunning()
    {
        var marker = Path.Combine(_dir, "ran");
        var graph = Write("g.json", Graph(new { id = "a", handler = "noop" }));
        var (_, _, stderr) = await Refused("run", graph, "--json", _dir);
        Assert.Contains("is a directory", stderr);
        Assert.DoesNotContain("run ", (await CliTests.Taskmesh(_dir, "run", graph, "--json", _dir)).stdout);

        var file = Write("plain.txt", "x");
        (_, _, stderr) = await Refused("run", graph, "--json", Path.Combine(file, "sub", "s.json"));
        Assert.Contains("is not a directory", stderr);
        Assert.Equal("x", File.ReadAllText(file));
        Assert.False(File.Exists(marker));
    }

    // ------------------------------------------------------------------ hangs

    [Fact]
    public async Task Qsim_ExponentialGateDefinitions_AreRefusedAtTheCall()
    {
        var sb = new StringBuilder("OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[1];\ngate g0 a { }\n");
        for (int i = 1; i <= 60; i++) sb.Append($"gate g{i} a {{ g{i - 1} a; g{i - 1} a; }}\n");
        sb.Append("g60 q[0];\n");
        var (_, _, stderr) = await Refused("qsim", Write("exp.qasm", sb.ToString()));
        Assert.Contains("exp.qasm:65:", stderr);
        Assert.Contains("expands to", stderr);
    }

    [Fact]
    public async Task Validate_SigtermWhileParsingLargeCircuits_Exits130Promptly()
    {
        // Eight tasks each parse a million-gate circuit: about twenty seconds of parsing to interrupt.
        var lines = new StringBuilder("OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[26];\n");
        for (int i = 0; i < 999_000; i++) lines.Append("rz(0.1) q[").Append(i % 26).Append("];\n");
        Write("big.qasm", lines.ToString());
        var graph = Write("g.json", Graph(Enumerable.Range(0, 8).Select(i => (object)new { id = $"c{i}", handler = "quantum", args = new { qasm = "big.qasm" } }).ToArray()));
        await AssertSignalStops(["validate", graph], TimeSpan.FromSeconds(3), "SIGTERM");
    }

    [Fact]
    public async Task Qsim_SigintDuringALargeState_Exits130Promptly_AndWritesNothing()
    {
        // 28 qubits in single precision: a 2 GiB state, allocated and swept by 28 H gates.
        var qasm = Write("wide.qasm", "OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[28];\n" + string.Concat(Enumerable.Repeat("h q;\n", 16)));
        var json = Path.Combine(_dir, "r.json");
        await AssertSignalStops(["qsim", qasm, "--precision", "single", "--json", json], TimeSpan.FromSeconds(3), "SIGINT");
        Assert.False(File.Exists(json));
        Assert.Empty(Directory.GetFiles(_dir, "*.tmp"));
    }

    /// <summary>
    /// Starts taskmesh with <paramref name="args"/>, sends <paramref name="signal"/> after
    /// <paramref name="after"/>, and expects exit 130 within seconds. A shell does the timing and
    /// the signal, so the child is never delayed behind this test process's own process bookkeeping.
    /// </summary>
    private async Task AssertSignalStops(string[] args, TimeSpan after, string signal)
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "taskmesh.dll");
        var quoted = string.Join(' ', args.Select(a => "'" + a.Replace("'", "'\\''") + "'"));
        // Job control on: without it a shell starts background commands with SIGINT ignored; and
        // SIGINT set back to its default for the command, in case this test process was itself
        // started with it ignored (a disposition an exec keeps, and .NET then leaves alone).
        var script = $"""
            set -m
            env --default-signal=INT dotnet '{dll}' {quoted} >out.txt 2>err.txt &
            pid=$!
            sleep {after.TotalSeconds:0.###}
            if ! kill -0 $pid 2>/dev/null; then echo "ended-early"; exit 0; fi
            kill -{signal[3..]} $pid
            start=$(date +%s%N)
            wait $pid
            rc=$?
            echo "rc=$rc ms=$(( ($(date +%s%N) - start) / 1000000 ))"
            """;
        var line = await CliTests.Bash(_dir, script);
        var stderr = File.ReadAllText(Path.Combine(_dir, "err.txt"));
        Assert.NotEqual("ended-early", line);
        Assert.StartsWith("rc=130 ", line);
        Assert.True(int.Parse(line[(line.IndexOf("ms=") + 3)..]) < 8_000, line);
        Assert.Contains("cancelled", stderr);
    }

    // ------------------------------------------------------------------ unbounded reads

    [Theory]
    [InlineData("graph")]
    [InlineData("config")]
    [InlineData("qasm")]
    public async Task NonRegularInput_IsRefusedWithoutReading(string which)
    {
        var fifo = Path.Combine(_dir, "pipe");
        MakeFifo(fifo);
        var graph = Write("g.json", Graph(new { id = "a", handler = "noop" }));
        var (_, _, stderr) = which switch
        {
            "graph" => await Refused("validate", fifo),
            "config" => await Refused("validate", graph, "--config", fifo),
            _ => await Refused("qsim", fifo),
        };
        Assert.Contains("not a regular file", stderr);
        // /dev/zero too: refused at once instead of read to exhaustion.
        (_, _, stderr) = which switch
        {
            "graph" => await Refused("validate", "/dev/zero"),
            "config" => await Refused("validate", graph, "--config", "/dev/zero"),
            _ => await Refused("qsim", "/dev/zero"),
        };
        Assert.Contains("not a regular file", stderr);
    }

    [Fact]
    public async Task Qsim_HugeCircuit_IsRefusedAtTheGateCapQuickly()
    {
        var sb = new StringBuilder("OPENQASM 2.0;\ninclude \"qelib1.inc\";\nqreg q[2];\n");
        for (int i = 0; i < 2_600_000; i++) sb.Append("cx q[0],q[1];\n");   // ~40 MB
        var qasm = Write("huge.qasm", sb.ToString());
        var (_, _, stderr) = await Refused("qsim", qasm);
        Assert.Contains("more than 1000000 gates", stderr);
    }

    // ------------------------------------------------------------------ data loss

    [Fact]
    public async Task Outputs_NeverOverwriteAnInputOrASpecialFile()
    {
        var text = Graph(new { id = "a", handler = "noop" });
        var graph = Write("g.json", text);
        var (_, _, stderr) = await Refused("run", graph, "--json", graph);
        Assert.Contains("input of this command", stderr);
        (_, _, stderr) = await Refused("graph", graph, "--dot", graph);
        Assert.Contains("input of this command", stderr);
        Assert.Equal(text, File.ReadAllText(graph));

        var fifo = Path.Combine(_dir, "out.fifo");
        MakeFifo(fifo);
        (_, _, stderr) = await Refused("run", graph, "--json", fifo);
        Assert.Contains("not a regular file", stderr);
        Assert.Equal("fifo", FileKindOf(fifo));

        // A report task whose path is the graph file itself.
        var self = Write("self.json", Graph(new { id = "r", handler = "report", args = new { path = "self.json" } }));
        var before = File.ReadAllText(self);
        (_, _, stderr) = await Refused("run", self);
        Assert.Contains("input of this command", stderr);
        Assert.Equal(before, File.ReadAllText(self));
    }

    private static string FileKindOf(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("stat", ["-c", "%F", path]) { RedirectStandardOutput = true })!;
        var kind = p.StandardOutput.ReadToEnd().Trim();
        p.WaitForExit();
        return kind.Contains("fifo") ? "fifo" : kind;
    }

    // ------------------------------------------------------------------ containment

    [Fact]
    public async Task ReportThroughASymlink_AndCircuitsOutsideTheFolder_AreRefused()
    {
        var outside = Directory.CreateTempSubdirectory("taskmesh-outside-").FullName;
        try
        {
            var sub = Directory.CreateDirectory(Path.Combine(_dir, "graph")).FullName;
            File.CreateSymbolicLink(Path.Combine(sub, "link"), outside);
            var graph = Path.Combine(sub, "g.json");
            File.WriteAllText(graph, Graph(new { id = "r", handler = "report", args = new { path = "link/r.json" } }));
            var (_, _, stderr) = await Refused("run", graph);
            Assert.Contains("symbolic link", stderr);
            Assert.Empty(Directory.GetFileSystemEntries(outside));

            File.WriteAllText(graph, Graph(new { id = "c", handler = "quantum", args = new { qasm = "/etc/shadow" } }));
            (_, _, stderr) = await Refused("validate", graph);
            Assert.Contains("must stay inside the graph's folder", stderr);
            Assert.DoesNotContain("root:", stderr);

            File.WriteAllText(Path.Combine(outside, "c.qasm"), "OPENQASM 2.0; secret stuff");
            File.WriteAllText(graph, Graph(new { id = "c", handler = "quantum", args = new { qasm = "link/c.qasm" } }));
            (_, _, stderr) = await Refused("validate", graph);
            Assert.Contains("symbolic link", stderr);
            Assert.DoesNotContain("secret", stderr);
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }

    // ------------------------------------------------------------------ validation gaps

    [Theory]
    [InlineData("1e7")]
    [InlineData("1e20")]
    [InlineData("1e300")]
    public async Task HugeTimeout_IsABadValue(string seconds)
    {
        var graph = Write("g.json", $$"""{ "tasks": [ { "id": "a", "handler": "noop", "timeoutSeconds": {{seconds}} } ] }""");
        var (_, _, stderr) = await Refused("run", graph);
        Assert.Contains("bad-value", stderr);
        Assert.Contains("timeoutSeconds", stderr);
    }

    [Fact]
    public async Task HugeEdgeWeight_IsABadValue()
    {
        var graph = Write("g.json", """{ "tasks": [ { "id": "a", "handler": "noop" }, { "id": "b", "handler": "noop", "dependsOn": [ { "id": "a", "weight": 1e300 } ] } ] }""");
        var (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("weight", stderr);
        Assert.DoesNotContain("Infinity", stderr);
    }

    [Fact]
    public async Task DuplicateKeys_AreRefusedWithLineAndColumn()
    {
        var graph = Write("g.json", "{ \"name\": \"g\",\n  \"tasks\": [ { \"id\": \"a\", \"handler\": \"noop\" } ],\n  \"tasks\": [ { \"id\": \"b\", \"handler\": \"noop\" } ] }");
        var (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("g.json:3:3: error duplicate-key", stderr);

        graph = Write("h.json", "{ \"tasks\": [ { \"id\": \"a\", \"handler\": \"spin\",\n \"args\": { \"micros\": 1, \"micros\": 2 } } ] }");
        (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("h.json:2:", stderr);
        Assert.Contains("duplicate-key", stderr);
    }

    [Fact]
    public async Task ByteOrderMark_IsAccepted()
    {
        var path = Path.Combine(_dir, "bom.json");
        File.WriteAllText(path, Graph(new { id = "a", handler = "noop" }), new UTF8Encoding(encoderShouldEmitUTF8Identifier: true));
        Assert.Equal(0xEF, File.ReadAllBytes(path)[0]);
        var (code, stdout, stderr) = await CliTests.Taskmesh(_dir, "validate", path);
        Assert.True(code == 0, stderr);
        Assert.Contains("1 tasks", stdout);
    }

    [Theory]
    [InlineData("nul\u0000id")]
    [InlineData("esc\u001b[31mred")]
    [InlineData("new\nline")]
    [InlineData("bidi\u202eevil")]
    [InlineData("long")]
    public async Task BadIds_AreRefusedAndNeverEchoedRaw(string id)
    {
        if (id == "long") id = new string('x', 300);
        var graph = Write("g.json", Graph(new { id, handler = "noop" }));
        var (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("bad-id", stderr);
        Assert.DoesNotContain('\u0000', stderr);
        Assert.DoesNotContain('\u001b', stderr);
        Assert.DoesNotContain('\u202e', stderr);
    }

    [Fact]
    public async Task DeepArgs_NameTheNestingLimit()
    {
        string args = string.Concat(Enumerable.Repeat("{\"x\":", 70)) + "1" + new string('}', 70);
        var graph = Write("g.json", $$"""{ "tasks": [ { "id": "a", "handler": "noop", "args": {{args}} } ] }""");
        var (_, _, stderr) = await Refused("validate", graph);
        Assert.Contains("error limit", stderr);
        Assert.Contains("deeper than 64 levels", stderr);
    }

    [Fact]
    public async Task ConfigNan_SaysMustBeFinite()
    {
        var graph = Write("g.json", Graph(new { id = "a", handler = "noop" }));
        var config = Write("taskmesh.toml", "[execution]\ntimeout_seconds = nan\n");
        var (_, _, stderr) = await Refused("validate", graph, "--config", config);
        Assert.Contains("taskmesh.toml:2: key 'execution.timeout_seconds' must be finite", stderr);
    }
}
