using System.CommandLine;
using System.Globalization;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.IO;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh import wfformat INSTANCE.json --out GRAPH.json [--time-scale MS] [--handler sleep|spin]</c>:
/// turns a recorded scientific workflow (a WfFormat instance, schema 1.4 or 1.5) into a graph whose
/// tasks replay the recorded runtimes, <c>--time-scale</c> ms per recorded second (default 10).
/// The graph is checked (ids, cycles) before it is written, through a temporary file and a rename:
/// a bad instance leaves nothing behind.
/// </summary>
internal static class ImportCommand
{
    /// <summary>Largest instance read (the biggest public instances are tens of MB).</summary>
    private const long MaxInstanceBytes = 512L << 20;

    public static Command Create(CliIO io)
    {
        var import = new Command("import", "Make a graph from another tool's workflow description.");
        var instance = new Argument<string>("instance") { Description = "A WfFormat instance (JSON, schema 1.4 or 1.5).", HelpName = "INSTANCE.json" };
        var outPath = new Option<string?>("--out") { Description = "Write the graph here.", HelpName = "GRAPH.json", Required = true };
        var timeScale = new Option<double?>("--time-scale")
        {
            Description = "Milliseconds of replay per recorded second (default 10).",
            HelpName = "MS",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 && v <= 1_000_000) return v;
                r.AddError($"option --time-scale must be a number of ms per recorded second, more than 0 and at most 1000000, got '{text}'");
                return null;
            },
        };
        var handler = CliOptions.OneOf("--handler", "How a task replays its runtime: sleep (default; frees the core) or spin (busy CPU).", "sleep", "spin");
        var wfformat = new Command("wfformat", "A WfFormat instance (WfCommons): one task per instance task, its recorded runtime replayed; shared files become data edges.")
        {
            instance, outPath, timeScale, handler,
        };
        wfformat.SetAction(parse => Execute(io, parse.GetValue(instance)!, parse.GetValue(outPath)!, parse.GetValue(timeScale) ?? 10, parse.GetValue(handler) ?? "sleep"));
        import.Subcommands.Add(wfformat);
        return import;
    }

    private static int Execute(CliIO io, string instancePath, string outPath, double msPerSecond, string handler)
    {
        CliOptions.CheckOutput("--out", outPath, instancePath);
        var bytes = SafeFile.ReadInput(instancePath, MaxInstanceBytes, "WfFormat instance");
        var instance = WfFormat.Read(bytes, instancePath);
        // A runtime the handler cannot replay is refused now, with its field, not by a later validate.
        if (WfFormat.ReplayProblems(instance, msPerSecond, handler) is { Count: > 0 } problems)
            throw new GraphValidationException(problems, instancePath);
        var graph = WfFormat.ToGraphJson(instance, msPerSecond, handler);
        // The graph must load and build (a cycle among the instance's dependencies is refused here, named).
        TaskGraph built;
        try
        {
            built = GraphLoader.Load(graph, instancePath).Build();
        }
        catch (GraphValidationException ex)
        {
            throw new GraphValidationException(ex.Errors, instancePath);
        }
        SafeFile.WriteAtomic(outPath, s => s.Write(graph));
        int dataEdges = instance.Tasks.Sum(t => t.DataParents.Count);
        int barriers = instance.Tasks.Count(t => t.IsFileBarrier);
        io.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"wrote {outPath}: {built.Count} tasks{(barriers > 0 ? $" ({barriers} of them file barriers: files with more than {WfFormat.MaxFileEdges} writer-reader pairs)" : "")}, {built.EdgeCount} edges ({dataEdges} data), {instance.TotalRuntimeSeconds:0.###} s recorded replayed as {instance.TotalRuntimeSeconds * msPerSecond / 1000:0.###} s of {handler} (WfFormat {TerminalText.Safe(instance.SchemaVersion)}, '{TerminalText.Safe(instance.Name)}')"));
        return ExitCodes.Ok;
    }
}
