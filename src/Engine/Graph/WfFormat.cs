using System.Globalization;
using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>One task of a WfFormat instance, as the importer keeps it.</summary>
/// <param name="Id">The task's id (schema 1.5); in 1.4, its <c>id</c> when it has one, else its name.</param>
/// <param name="Name">The task's name.</param>
/// <param name="RuntimeSeconds">The recorded runtime (<c>runtimeInSeconds</c>).</param>
/// <param name="Parents">Tasks it depends on, by index (declared on either end, or implied by a file it reads that they write).</param>
/// <param name="DataParents">Those of <paramref name="Parents"/> that write a file it reads.</param>
public sealed record WfTask(string Id, string Name, double RuntimeSeconds, IReadOnlyList<int> Parents, IReadOnlySet<int> DataParents)
{
    /// <summary>Where its runtime is in the instance (<c>workflow.execution.tasks[3].runtimeInSeconds</c>), for messages.</summary>
    public string RuntimePath { get; init; } = "";

    /// <summary>
    /// Not a task of the instance: the barrier that stands for a file many tasks write and many read
    /// (<see cref="WfFormat.MaxFileEdges"/>); its writers feed it, its readers wait for it. Its
    /// <see cref="Name"/> is the file's.
    /// </summary>
    public bool IsFileBarrier { get; init; }
}

/// <summary>A WfFormat instance (schema 1.4, 1.5 or 1.6): its name and tasks.</summary>
public sealed record WfInstance(string Name, string SchemaVersion, IReadOnlyList<WfTask> Tasks)
{
    /// <summary>Sum of the recorded runtimes, seconds.</summary>
    public double TotalRuntimeSeconds => Tasks.Sum(t => t.RuntimeSeconds);
}

/// <summary>
/// Reads WfFormat workflow instances — the WfCommons community's JSON format for recorded
/// executions of scientific workflows — and turns them into TaskMesh graphs that replay the
/// recorded runtimes. Schema 1.5 (and 1.6, which only adds optional fields): the graph from
/// <c>workflow.specification.tasks</c> (<c>id</c>, <c>name</c>, <c>parents</c>, <c>children</c>,
/// <c>inputFiles</c>, <c>outputFiles</c>), the runtimes from <c>workflow.execution.tasks</c>
/// (<c>id</c>, <c>runtimeInSeconds</c>). Schema 1.4: <c>workflow.tasks</c> with <c>name</c>,
/// optional <c>id</c>, <c>parents</c> and <c>children</c> by name, <c>files</c>
/// (<c>link</c> input/output, <c>name</c>) and <c>runtimeInSeconds</c>. Dependencies declared on
/// either end count once; a task that reads a file another writes depends on it over a data edge.
/// Every problem is reported with the path of the field (<c>workflow.specification.tasks[3].parents[0]</c>).
/// </summary>
public static class WfFormat
{
    /// <summary>The schema versions read.</summary>
    public static readonly IReadOnlyList<string> Versions = ["1.4", "1.5", "1.6"];

    private const int MaxErrors = 50;

    /// <summary>Reads an instance.</summary>
    /// <exception cref="GraphValidationException">Malformed JSON, an unsupported schema, a missing or mistyped field, an unknown or repeated task (each named by its field's path).</exception>
    public static WfInstance Read(ReadOnlySpan<byte> utf8, string? file = null)
    {
        var errors = new List<GraphError>();
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(utf8.ToArray(), new JsonDocumentOptions { MaxDepth = GraphLimits.MaxJsonDepth });
        }
        catch (JsonException ex)
        {
            throw new GraphValidationException([new GraphError(GraphErrorCodes.MalformedJson, ex.Message, null, (int?)ex.LineNumber + 1, (int?)ex.BytePositionInLine + 1)], file);
        }
        using (doc)
        {
            var reader = new Reader(errors);
            var instance = reader.Instance(doc.RootElement);
            if (errors.Count > 0 || instance is null) throw new GraphValidationException(errors.Take(MaxErrors).ToList(), file);
            return instance;
        }
    }

    /// <summary>
    /// The TaskMesh graph (JSON) that replays <paramref name="instance"/>: one task per instance
    /// task, with its id, its name as a tag when it differs from the id, and a handler that takes
    /// its recorded runtime scaled to <paramref name="msPerSecond"/> ms per second —
    /// <c>sleep</c> (<c>millis</c>, rounded to whole ms) or <c>spin</c> (<c>micros</c>, busy CPU).
    /// A dependency over which a file passes is a data edge.
    /// </summary>
    public static byte[] ToGraphJson(WfInstance instance, double msPerSecond, string handler = "sleep")
    {
        if (!(msPerSecond > 0) || !double.IsFinite(msPerSecond)) throw new ArgumentOutOfRangeException(nameof(msPerSecond), "the time scale must be a positive number of ms per second");
        if (handler is not ("sleep" or "spin")) throw new ArgumentException("the handler is sleep or spin", nameof(handler));
        var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Indented = true }))
        {
            w.WriteStartObject();
            w.WriteString("name", instance.Name);
            w.WriteStartArray("tasks");
            foreach (var t in instance.Tasks)
            {
                w.WriteStartObject();
                w.WriteString("id", t.Id);
                if (t.IsFileBarrier)
                {
                    // Waits for the file's writers, takes no time; its readers wait for it.
                    w.WriteString("handler", "noop");
                    WriteDependencies(w, instance, t);
                    w.WriteStartArray("tags");
                    w.WriteStringValue("file-barrier");
                    w.WriteEndArray();
                    w.WriteEndObject();
                    continue;
                }
                w.WriteString("handler", handler);
                w.WriteStartObject("args");
                if (handler == "sleep") w.WriteNumber("millis", ScaledMillis(t.RuntimeSeconds, msPerSecond));
                else w.WriteNumber("micros", ScaledMicros(t.RuntimeSeconds, msPerSecond));
                w.WriteEndObject();
                WriteDependencies(w, instance, t);
                if (t.Name != t.Id)
                {
                    w.WriteStartArray("tags");
                    w.WriteStringValue(t.Name);
                    w.WriteEndArray();
                }
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteEndObject();
        }
        return buffer.ToArray();
    }

    /// <summary>
    /// Most edges one file may add between the tasks that write it and those that read it: past this
    /// (writers × readers), the file becomes one barrier task — writers → barrier → readers, as many
    /// edges as tasks — so a graph stays linear in the size of its instance (3,000 writers and 3,000
    /// readers of one file: 6,000 edges, not 9 million).
    /// </summary>
    public const int MaxFileEdges = 256;

    /// <summary>
    /// Each task whose runtime, at <paramref name="msPerSecond"/> ms per recorded second, is more
    /// than <paramref name="handler"/> takes (sleep: a day; spin: 600 s), named by its field; empty
    /// when the whole instance can be replayed.
    /// </summary>
    public static List<GraphError> ReplayProblems(WfInstance instance, double msPerSecond, string handler = "sleep")
    {
        ArgumentNullException.ThrowIfNull(instance);
        var problems = new List<GraphError>();
        foreach (var t in instance.Tasks)
        {
            if (t.IsFileBarrier) continue;
            double scaledMs = t.RuntimeSeconds * msPerSecond;
            double limitMs = handler == "sleep" ? MaxSleepMillis : MaxSpinMicros / 1000.0;
            if (scaledMs <= limitMs) continue;
            problems.Add(new GraphError(GraphErrorCodes.BadValue,
                $"{t.RuntimePath}: {t.RuntimeSeconds.ToString("G6", CultureInfo.InvariantCulture)} s at --time-scale {msPerSecond.ToString(CultureInfo.InvariantCulture)} is {scaledMs.ToString("G4", CultureInfo.InvariantCulture)} ms of {handler}; it takes at most {limitMs.ToString(CultureInfo.InvariantCulture)} ms (a smaller --time-scale replays it)",
                t.Id));
            if (problems.Count >= MaxErrors) break;
        }
        return problems;
    }

    // The sleep and spin handlers' own limits (BuiltInHandlers).
    private const long MaxSleepMillis = 86_400_000;
    private const long MaxSpinMicros = 600_000_000;

    private static void WriteDependencies(Utf8JsonWriter w, WfInstance instance, WfTask t)
    {
        if (t.Parents.Count == 0) return;
        w.WriteStartArray("dependsOn");
        foreach (int p in t.Parents)
        {
            if (!t.DataParents.Contains(p)) { w.WriteStringValue(instance.Tasks[p].Id); continue; }
            w.WriteStartObject();
            w.WriteString("id", instance.Tasks[p].Id);
            w.WriteString("type", "data");
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }

    /// <summary>A runtime replayed by <c>sleep</c>: whole milliseconds.</summary>
    public static long ScaledMillis(double runtimeSeconds, double msPerSecond) => (long)Math.Round(runtimeSeconds * msPerSecond, MidpointRounding.AwayFromZero);

    /// <summary>A runtime replayed by <c>spin</c>: whole microseconds.</summary>
    public static long ScaledMicros(double runtimeSeconds, double msPerSecond) => (long)Math.Round(runtimeSeconds * msPerSecond * 1000, MidpointRounding.AwayFromZero);

    /// <summary>Reads the fields, collecting every problem with its path.</summary>
    private sealed class Reader(List<GraphError> errors)
    {
        private void Error(string path, string message, string? task = null)
        {
            if (errors.Count < MaxErrors) errors.Add(new GraphError("wfformat", $"{path}: {message}", task));
        }

        private bool Has(JsonElement obj, string name, string path, JsonValueKind kind, out JsonElement value, bool required = true)
        {
            if (!obj.TryGetProperty(name, out value) || value.ValueKind == JsonValueKind.Null)
            {
                if (required) Error(path + "." + name, $"missing (a{(kind is JsonValueKind.Array or JsonValueKind.Object ? "n" : "")} {KindName(kind)} is required)");
                return false;
            }
            if (value.ValueKind != kind && !(kind == JsonValueKind.True && value.ValueKind == JsonValueKind.False))
            {
                Error(path + "." + name, $"must be {Article(kind)} {KindName(kind)}, got {KindName(value.ValueKind)}");
                return false;
            }
            return true;
        }

        private static string Article(JsonValueKind k) => k is JsonValueKind.Array or JsonValueKind.Object ? "an" : "a";

        private static string KindName(JsonValueKind k) => k switch
        {
            JsonValueKind.Object => "object",
            JsonValueKind.Array => "array",
            JsonValueKind.String => "string",
            JsonValueKind.Number => "number",
            JsonValueKind.True or JsonValueKind.False => "boolean",
            _ => "null",
        };

        private List<string> Strings(JsonElement obj, string name, string path)
        {
            var list = new List<string>();
            if (!Has(obj, name, path, JsonValueKind.Array, out var array, required: false)) return list;
            int i = 0;
            foreach (var e in array.EnumerateArray())
            {
                if (e.ValueKind == JsonValueKind.String) list.Add(e.GetString()!);
                else Error($"{path}.{name}[{i}]", $"must be a string, got {KindName(e.ValueKind)}");
                i++;
            }
            return list;
        }

        public WfInstance? Instance(JsonElement root)
        {
            if (root.ValueKind != JsonValueKind.Object)
            {
                Error("(root)", $"must be an object, got {KindName(root.ValueKind)}");
                return null;
            }
            Has(root, "name", "instance", JsonValueKind.String, out var name);
            if (!Has(root, "schemaVersion", "instance", JsonValueKind.String, out var version)) return null;
            string v = version.GetString()!;
            if (!Versions.Contains(v))
            {
                Error("schemaVersion", $"is '{GraphLimits.Printable(v)}'; this importer reads WfFormat {string.Join(", ", Versions)}");
                return null;
            }
            if (!Has(root, "workflow", "instance", JsonValueKind.Object, out var workflow)) return null;
            var raw = v == "1.4" ? Tasks14(workflow) : Tasks15(workflow);
            if (raw is null) return null;
            var tasks = Link(raw);
            return tasks is null ? null : new WfInstance(name.ValueKind == JsonValueKind.String ? name.GetString()! : "workflow", v, tasks);
        }

        /// <summary>A task before its references are resolved.</summary>
        private sealed record Raw(string Id, string Name, string Path, double Runtime, List<string> Parents, List<string> Children, List<string> Inputs, List<string> Outputs,
            List<string> ParentPaths, List<string> ChildPaths)
        {
            public string RuntimePath { get; init; } = Path + ".runtimeInSeconds";
        }

        private List<Raw>? Tasks15(JsonElement workflow)
        {
            const string Spec = "workflow.specification", Exec = "workflow.execution";
            if (!Has(workflow, "specification", "workflow", JsonValueKind.Object, out var spec)) return null;
            if (!Has(spec, "tasks", Spec, JsonValueKind.Array, out var specTasks)) return null;
            var runtimes = new Dictionary<string, double>(StringComparer.Ordinal);
            var runtimePaths = new Dictionary<string, string>(StringComparer.Ordinal);
            if (Has(workflow, "execution", "workflow", JsonValueKind.Object, out var exec) && Has(exec, "tasks", Exec, JsonValueKind.Array, out var execTasks))
            {
                int i = 0;
                foreach (var t in execTasks.EnumerateArray())
                {
                    string path = $"{Exec}.tasks[{i++}]";
                    if (t.ValueKind != JsonValueKind.Object) { Error(path, $"must be an object, got {KindName(t.ValueKind)}"); continue; }
                    if (!Has(t, "id", path, JsonValueKind.String, out var id)) continue;
                    if (Runtime(t, path) is double r)
                    {
                        if (!runtimes.TryAdd(id.GetString()!, r)) Error(path + ".id", $"'{GraphLimits.Printable(id.GetString()!)}' has a second execution entry", id.GetString());
                        else runtimePaths[id.GetString()!] = path + ".runtimeInSeconds";
                    }
                }
            }
            else return null;
            var list = new List<Raw>();
            int k = 0;
            foreach (var t in specTasks.EnumerateArray())
            {
                string path = $"{Spec}.tasks[{k++}]";
                if (t.ValueKind != JsonValueKind.Object) { Error(path, $"must be an object, got {KindName(t.ValueKind)}"); continue; }
                if (!Has(t, "id", path, JsonValueKind.String, out var idElement)) continue;
                string id = idElement.GetString()!;
                string name = Has(t, "name", path, JsonValueKind.String, out var n, required: false) ? n.GetString()! : id;
                if (!runtimes.TryGetValue(id, out double runtime))
                {
                    Error(path + ".id", $"task '{GraphLimits.Printable(id)}' has no entry in {Exec}.tasks (its runtimeInSeconds is what is replayed)", id);
                    continue;
                }
                list.Add(RawTask(t, id, name, path, runtime, Strings(t, "inputFiles", path), Strings(t, "outputFiles", path)) with { RuntimePath = runtimePaths[id] });
            }
            return list;
        }

        private List<Raw>? Tasks14(JsonElement workflow)
        {
            if (!Has(workflow, "tasks", "workflow", JsonValueKind.Array, out var tasks)) return null;
            var list = new List<Raw>();
            int k = 0;
            foreach (var t in tasks.EnumerateArray())
            {
                string path = $"workflow.tasks[{k++}]";
                if (t.ValueKind != JsonValueKind.Object) { Error(path, $"must be an object, got {KindName(t.ValueKind)}"); continue; }
                if (!Has(t, "name", path, JsonValueKind.String, out var n)) continue;
                string name = n.GetString()!;
                string id = Has(t, "id", path, JsonValueKind.String, out var i, required: false) ? i.GetString()! : name;
                if (Runtime(t, path) is not double runtime) continue;
                var inputs = new List<string>();
                var outputs = new List<string>();
                if (Has(t, "files", path, JsonValueKind.Array, out var files, required: false))
                {
                    int f = 0;
                    foreach (var file in files.EnumerateArray())
                    {
                        string fp = $"{path}.files[{f++}]";
                        if (file.ValueKind != JsonValueKind.Object) { Error(fp, $"must be an object, got {KindName(file.ValueKind)}"); continue; }
                        if (!Has(file, "name", fp, JsonValueKind.String, out var fileName) || !Has(file, "link", fp, JsonValueKind.String, out var link)) continue;
                        string full = (file.TryGetProperty("path", out var dir) && dir.ValueKind == JsonValueKind.String ? dir.GetString() : "") + fileName.GetString();
                        switch (link.GetString())
                        {
                            case "input": inputs.Add(full); break;
                            case "output": outputs.Add(full); break;
                            default: Error(fp + ".link", $"is '{GraphLimits.Printable(link.GetString()!)}'; it must be input or output", id); break;
                        }
                    }
                }
                list.Add(RawTask(t, id, name, path, runtime, inputs, outputs));
            }
            return list;
        }

        /// <summary>A task with its <c>parents</c> and <c>children</c> as the instance names them (both schemas use these two fields).</summary>
        private Raw RawTask(JsonElement t, string id, string name, string path, double runtime, List<string> inputs, List<string> outputs)
        {
            var parents = Strings(t, "parents", path);
            var children = Strings(t, "children", path);
            return new Raw(id, name, path, runtime, parents, children, inputs, outputs,
                parents.Select((_, j) => $"{path}.parents[{j}]").ToList(), children.Select((_, j) => $"{path}.children[{j}]").ToList());
        }

        private double? Runtime(JsonElement task, string path)
        {
            if (!Has(task, "runtimeInSeconds", path, JsonValueKind.Number, out var r)) return null;
            double x = r.GetDouble();
            if (x >= 0 && double.IsFinite(x)) return x;
            Error(path + ".runtimeInSeconds", $"is {x.ToString(CultureInfo.InvariantCulture)}; it must be 0 or more");
            return null;
        }

        /// <summary>Ids checked and made unique, references resolved (1.4 refers by name, 1.5 by id), file producers linked.</summary>
        private List<WfTask>? Link(List<Raw> raw)
        {
            var index = new Dictionary<string, int>(StringComparer.Ordinal);
            var byName = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < raw.Count; i++)
            {
                var t = raw[i];
                if (GraphLimits.IdProblem(t.Id) is string problem) Error(t.Path + ".id", $"'{GraphLimits.Printable(t.Id)}' cannot be a task id: it {problem}", t.Id);
                if (!index.TryAdd(t.Id, i)) Error(t.Path + ".id", $"'{GraphLimits.Printable(t.Id)}' is the id of {raw[index[t.Id]].Path} too", t.Id);
                byName.TryAdd(t.Name, i);
            }
            if (errors.Count > 0) return null;
            int Resolve(string reference, string path, string owner)
            {
                if (index.TryGetValue(reference, out int j) || byName.TryGetValue(reference, out j)) return j;
                Error(path, $"names task '{GraphLimits.Printable(reference)}', which the instance does not have", owner);
                return -1;
            }
            var parents = raw.Select(_ => new List<int>()).ToArray();
            var seen = raw.Select(_ => new HashSet<int>()).ToArray();
            void Edge(int from, int to)
            {
                if (from >= 0 && to >= 0 && seen[to].Add(from)) parents[to].Add(from);
            }
            for (int i = 0; i < raw.Count; i++)
            {
                for (int j = 0; j < raw[i].Parents.Count; j++) Edge(Resolve(raw[i].Parents[j], raw[i].ParentPaths[j], raw[i].Id), i);
                for (int j = 0; j < raw[i].Children.Count; j++) Edge(i, Resolve(raw[i].Children[j], raw[i].ChildPaths[j], raw[i].Id));
            }
            // Files: a task that reads a file another task writes depends on it, over a data edge.
            var producers = new Dictionary<string, List<int>>(StringComparer.Ordinal);
            for (int i = 0; i < raw.Count; i++)
                foreach (var f in raw[i].Outputs)
                    (producers.TryGetValue(f, out var l) ? l : producers[f] = new List<int>()).Add(i);
            var readers = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < raw.Count; i++)
                foreach (var f in raw[i].Inputs)
                    if (producers.ContainsKey(f)) readers[f] = readers.GetValueOrDefault(f) + 1;
            // A file with more writer-reader pairs than MaxFileEdges becomes a barrier task (appended after the instance's tasks).
            var barrierOf = new Dictionary<string, int>(StringComparer.Ordinal);
            var barriers = new List<(string Id, string File)>();
            foreach (var (f, writers) in producers)
                if ((long)writers.Count * readers.GetValueOrDefault(f) > MaxFileEdges)
                {
                    string id = $"file-barrier-{barriers.Count + 1}";
                    while (index.ContainsKey(id)) id += "_";
                    barrierOf[f] = raw.Count + barriers.Count;
                    barriers.Add((id, f));
                }
            int total = raw.Count + barriers.Count;
            Array.Resize(ref parents, total);
            Array.Resize(ref seen, total);
            for (int b = raw.Count; b < total; b++) { parents[b] = new List<int>(); seen[b] = new HashSet<int>(); }
            var data = new HashSet<int>[total];
            for (int i = 0; i < total; i++) data[i] = new HashSet<int>();
            foreach (var (f, b) in barrierOf)
                foreach (int p in producers[f])
                {
                    Edge(p, b);
                    data[b].Add(p);
                }
            for (int i = 0; i < raw.Count; i++)
                foreach (var f in raw[i].Inputs)
                {
                    if (barrierOf.TryGetValue(f, out int b))
                    {
                        // A task that reads and writes the file waits for the others' writes, not for itself.
                        if (!producers[f].Contains(i)) { Edge(b, i); data[i].Add(b); }
                        continue;
                    }
                    if (producers.TryGetValue(f, out var from))
                        foreach (int p in from)
                            if (p != i)
                            {
                                Edge(p, i);
                                data[i].Add(p);
                            }
                }
            if (errors.Count > 0) return null;
            var tasks = raw.Select((t, i) => new WfTask(t.Id, t.Name, t.Runtime, parents[i], data[i]) { RuntimePath = t.RuntimePath }).ToList();
            for (int b = 0; b < barriers.Count; b++)
                tasks.Add(new WfTask(barriers[b].Id, barriers[b].File, 0, parents[raw.Count + b], data[raw.Count + b]) { IsFileBarrier = true });
            return tasks;
        }
    }
}
