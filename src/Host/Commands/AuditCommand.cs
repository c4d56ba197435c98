using System.CommandLine;
using System.Text.Json;
using TaskMesh.Engine.IO;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh audit RUN [TASK] [--category C] [--json FILE] [--store FILE]</c>: a run's audit trail, in order.</summary>
internal static class AuditCommand
{
    public static Command Create(CliIO io)
    {
        var run = new Argument<string>("RUN") { Description = "A run id (or a unique prefix of one), or 'last'." };
        var task = new Argument<string?>("TASK") { Description = "Only this task's records.", Arity = ArgumentArity.ZeroOrOne };
        var category = CliOptions.OneOf("--category", "Only records of this category.", AuditCategory.All);
        var json = new Option<string?>("--json") { Description = "Write the records (JSON) to this file.", HelpName = "FILE" };
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var command = new Command("audit", "Print a run's audit trail in order: submissions, layer selections, attempts, confidences, escalations, completions, errors.")
        {
            run, task, category, json, store, config,
        };
        command.SetAction(parse =>
        {
            var jsonPath = parse.GetValue(json);
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath);
            var runId = s.ResolveRunId(parse.GetValue(run)!);
            var records = s.AuditOf(runId, parse.GetValue(task), parse.GetValue(category));
            foreach (var r in records)
                io.Out.WriteLine($"{r.Timestamp.UtcDateTime:HH:mm:ss.fff}  {r.Category,-21}  {r.TaskId ?? "(run)",-20}  {r.Detail}");
            io.Out.WriteLine($"{records.Count} record(s) of run {runId}");
            if (jsonPath is not null)
            {
                SafeFile.WriteAtomic(jsonPath, stream =>
                {
                    using var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = true });
                    w.WriteStartArray();
                    foreach (var r in records)
                    {
                        w.WriteStartObject();
                        w.WriteString("category", r.Category);
                        w.WriteString("timestamp", r.Timestamp);
                        w.WriteString("run_id", r.RunId);
                        if (r.TaskId is null) w.WriteNull("task_id"); else w.WriteString("task_id", r.TaskId);
                        w.WritePropertyName("detail");
                        w.WriteRawValue(r.Detail);
                        w.WriteEndObject();
                    }
                    w.WriteEndArray();
                });
                io.Out.WriteLine($"audit written to {jsonPath}");
            }
            return ExitCodes.Ok;
        });
        return command;
    }
}
