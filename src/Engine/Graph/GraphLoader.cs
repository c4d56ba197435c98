using System.Text;
using System.Text.Json;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// Reads the graph JSON (docs/graph-format.md) into a <see cref="GraphBuilder"/> with one forward pass of
/// <see cref="Utf8JsonReader"/>. Schema problems are collected with their line and column rather
/// than thrown one at a time, so a user sees all of them at once.
/// </summary>
public static class GraphLoader
{
    private static readonly JsonReaderOptions s_readerOptions = new()
    {
        CommentHandling = JsonCommentHandling.Skip,
        AllowTrailingCommas = true,
        MaxDepth = GraphLimits.MaxJsonDepth,
    };

    /// <summary>Loads a graph file; the builder's errors (if any) surface from <see cref="GraphBuilder.TryBuild"/>.</summary>
    /// <param name="path">The file: a regular file of at most <see cref="IO.SafeFile.MaxGraphBytes"/>.</param>
    /// <param name="ct">Cancels the read.</param>
    /// <exception cref="GraphValidationException">When the file cannot be read, is not a regular file, is too large, or is not well-formed JSON.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired.</exception>
    public static GraphBuilder LoadFile(string path, CancellationToken ct = default)
    {
        byte[] bytes;
        try
        {
            bytes = IO.SafeFile.ReadInput(path, IO.SafeFile.MaxGraphBytes, "graph file", ct);
        }
        catch (IO.UnsafeFileException ex)
        {
            throw new GraphValidationException([new GraphError(GraphErrorCodes.Unreadable, ex.Message)], path);
        }
        return Load(bytes, path);
    }

    /// <summary>Loads a graph from UTF-8 JSON text.</summary>
    public static GraphBuilder Load(ReadOnlySpan<byte> utf8, string? file = null)
    {
        var builder = new GraphBuilder(file is null ? "graph" : Path.GetFileNameWithoutExtension(file));
        // A UTF-8 byte order mark is allowed (editors write one; TOML accepts it too).
        if (utf8.StartsWith("\uFEFF"u8)) utf8 = utf8[3..];
        var state = new LoaderState(builder, utf8.Length);
        var reader = new Utf8JsonReader(utf8, isFinalBlock: true, new JsonReaderState(s_readerOptions));
        try
        {
            ReadRoot(ref reader, utf8, ref state);
        }
        catch (JsonException ex)
        {
            int line = (int)(ex.LineNumber ?? 0) + 1;
            int col = (int)(ex.BytePositionInLine ?? 0) + 1;
            var msg = ex.Message;
            int cut = msg.IndexOf(" LineNumber:", StringComparison.Ordinal);
            if (cut > 0) msg = msg[..cut];
            if (msg.Contains("maximum allowed depth", StringComparison.Ordinal) || msg.Contains("maximum configured depth", StringComparison.Ordinal))
                throw new GraphValidationException([new GraphError(GraphErrorCodes.Limit,
                    $"objects and arrays are nested deeper than {GraphLimits.MaxJsonDepth} levels, the limit for a graph file (arguments included)", null, line, col)], file);
            throw new GraphValidationException([new GraphError(GraphErrorCodes.MalformedJson, msg, null, line, col)], file);
        }
        return builder;
    }

    /// <summary>Loads a graph from JSON text.</summary>
    public static GraphBuilder LoadText(string json, string? file = null) => Load(Encoding.UTF8.GetBytes(json), file);

    private struct LoaderState(GraphBuilder builder, int length)
    {
        public readonly GraphBuilder Builder = builder;
        public readonly int Length = length;
        public int LineCursorOffset;
        public int Line = 1;
        public int LineStart;
        public string? LastHandler;
        public byte[]? LastHandlerUtf8;
        public List<(int Start, int Length, string? Escaped)>? Names;
        public Stack<int>? Scopes;
    }

    // Lines are counted incrementally: tokens only move forward, so each byte is scanned once.
    private static (int line, int col) Position(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        int at = (int)r.TokenStartIndex;
        if (at > s.LineCursorOffset)
        {
            var chunk = utf8[s.LineCursorOffset..at];
            int count = chunk.Count((byte)'\n');
            if (count > 0)
            {
                s.Line += count;
                s.LineStart = s.LineCursorOffset + chunk.LastIndexOf((byte)'\n') + 1;
            }
            s.LineCursorOffset = at;
        }
        return (s.Line, at - s.LineStart + 1);
    }

    private static void ReadRoot(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        var b = s.Builder;
        if (!r.Read()) throw new JsonException("the file is empty", null, 0, 0);
        if (r.TokenType != JsonTokenType.StartObject)
        {
            var (l, c) = Position(ref r, utf8, ref s);
            b.AddError(new GraphError(GraphErrorCodes.Schema, "a graph file must hold one JSON object", null, l, c));
            r.Skip();
            return;
        }
        bool sawTasks = false;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            var (line, col) = Position(ref r, utf8, ref s);
            string name = r.GetString()!;
            r.Read();
            if (!seen.Add(name))
            {
                b.AddError(Duplicate(name, null, line, col));
                r.Skip();
                continue;
            }
            switch (name)
            {
                case "name":
                    if (ExpectString(ref r, b, "name", null, line, col) is string n) b.Name = n;
                    break;
                case "defaults":
                    ReadDefaults(ref r, utf8, ref s);
                    break;
                case "resources":
                    ReadResources(ref r, utf8, ref s);
                    break;
                case "tasks":
                    sawTasks = true;
                    ReadTasks(ref r, utf8, ref s);
                    break;
                default:
                    b.AddError(new GraphError(GraphErrorCodes.Schema, $"unknown field '{name}' (expected name, defaults, resources, tasks)", null, line, col));
                    r.Skip();
                    break;
            }
        }
        if (r.Read())
        {
            var (l, c) = Position(ref r, utf8, ref s);
            throw new JsonException("unexpected data after the graph object", null, l - 1, c - 1);
        }
        if (!sawTasks)
            b.AddError(new GraphError(GraphErrorCodes.Schema, "the graph has no 'tasks' array", null, 1, 1));
    }

    private static void ReadDefaults(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        var b = s.Builder;
        if (!ExpectObject(ref r, utf8, ref s, "defaults", null)) return;
        var seen = new HashSet<string>(StringComparer.Ordinal);
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            var (line, col) = Position(ref r, utf8, ref s);
            string name = r.GetString()!;
            r.Read();
            if (!seen.Add(name))
            {
                b.AddError(Duplicate("defaults." + name, null, line, col));
                r.Skip();
                continue;
            }
            switch (name)
            {
                case "timeoutSeconds": b.Defaults.TimeoutSeconds = ExpectNumber(ref r, b, "defaults.timeoutSeconds", null, line, col); break;
                case "retries": b.Defaults.Retries = ExpectInt(ref r, b, "defaults.retries", null, line, col); break;
                case "layer": b.Defaults.Layer = ExpectString(ref r, b, "defaults.layer", null, line, col); break;
                case "cache": b.Defaults.Cache = ExpectBool(ref r, b, "defaults.cache", null, line, col); break;
                default:
                    b.AddError(new GraphError(GraphErrorCodes.Schema, $"unknown field 'defaults.{name}' (expected timeoutSeconds, retries, layer, cache)", null, line, col));
                    r.Skip();
                    break;
            }
        }
    }

    private static void ReadResources(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        var b = s.Builder;
        if (!ExpectObject(ref r, utf8, ref s, "resources", null)) return;
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            var (line, col) = Position(ref r, utf8, ref s);
            string name = r.GetString()!;
            r.Read();
            if (ExpectInt(ref r, b, $"resources.{name}", null, line, col) is int cap)
            {
                if (!b.Resources.TryAdd(name, cap))
                    b.AddError(Duplicate("resources." + name, null, line, col));
            }
        }
    }

    private static void ReadTasks(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        var b = s.Builder;
        if (r.TokenType != JsonTokenType.StartArray)
        {
            var (l, c) = Position(ref r, utf8, ref s);
            b.AddError(new GraphError(GraphErrorCodes.Schema, "'tasks' must be an array", null, l, c));
            r.Skip();
            return;
        }
        // A rough guess from the file size keeps the lists from regrowing many times on big graphs.
        int guess = Math.Min(s.Length / 48, 1 << 24);
        b.EnsureCapacity(guess, guess);
        while (r.Read() && r.TokenType != JsonTokenType.EndArray)
            ReadTask(ref r, utf8, ref s);
    }

    private static void ReadTask(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s)
    {
        var b = s.Builder;
        var (taskLine, taskCol) = Position(ref r, utf8, ref s);
        if (r.TokenType != JsonTokenType.StartObject)
        {
            b.AddError(new GraphError(GraphErrorCodes.Schema, "each task must be a JSON object", null, taskLine, taskCol));
            r.Skip();
            return;
        }

        string? id = null, handler = null, priority = null, layer = null;
        double? timeout = null, minConfidence = null, estimateMs = null;
        bool? cache = null;
        int? retries = null;
        JsonElement args = default;
        string[]? uses = null, tags = null, requires = null;
        List<Dependency>? deps = null;

        // Property names are matched as UTF-8 bytes: a million tasks allocate no name strings.
        // Each known field has a bit in 'seen', so a field given twice is an error, not last-wins.
        int seen = 0;
        while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
        {
            var (line, col) = Position(ref r, utf8, ref s);
            int field = FieldBit(ref r);
            if (field != 0 && (seen & field) != 0)
            {
                b.AddError(Duplicate(r.GetString()!, id, line, col));
                r.Read();
                r.Skip();
                continue;
            }
            seen |= field;
            if (r.ValueTextEquals("id"u8)) { r.Read(); id = ExpectString(ref r, b, "id", null, line, col); }
            else if (r.ValueTextEquals("handler"u8)) { r.Read(); handler = ReadHandlerName(ref r, ref s, id, line, col); }
            else if (r.ValueTextEquals("args"u8))
            {
                r.Read();
                if (r.TokenType is JsonTokenType.StartObject)
                {
                    CheckDuplicateKeys(r, utf8, ref s, id);
                    args = JsonElement.ParseValue(ref r);
                }
                else
                {
                    b.AddError(new GraphError(GraphErrorCodes.Schema, "'args' must be an object", id, line, col));
                    r.Skip();
                }
            }
            else if (r.ValueTextEquals("dependsOn"u8)) { r.Read(); deps = ReadDependencies(ref r, utf8, ref s, id); }
            else if (r.ValueTextEquals("priority"u8)) { r.Read(); priority = ExpectString(ref r, b, "priority", id, line, col); }
            else if (r.ValueTextEquals("timeoutSeconds"u8)) { r.Read(); timeout = ExpectNumber(ref r, b, "timeoutSeconds", id, line, col); }
            else if (r.ValueTextEquals("retries"u8)) { r.Read(); retries = ExpectInt(ref r, b, "retries", id, line, col); }
            else if (r.ValueTextEquals("layer"u8)) { r.Read(); layer = ExpectString(ref r, b, "layer", id, line, col); }
            else if (r.ValueTextEquals("minConfidence"u8)) { r.Read(); minConfidence = ExpectNumber(ref r, b, "minConfidence", id, line, col); }
            else if (r.ValueTextEquals("estimateMs"u8)) { r.Read(); estimateMs = ExpectNumber(ref r, b, "estimateMs", id, line, col); }
            else if (r.ValueTextEquals("cache"u8)) { r.Read(); cache = ExpectBool(ref r, b, "cache", id, line, col); }
            else if (r.ValueTextEquals("uses"u8)) { r.Read(); uses = ExpectStringArray(ref r, b, "uses", id, line, col); }
            else if (r.ValueTextEquals("tags"u8)) { r.Read(); tags = ExpectStringArray(ref r, b, "tags", id, line, col); }
            else if (r.ValueTextEquals("requires"u8)) { r.Read(); requires = ExpectStringArray(ref r, b, "requires", id, line, col); }
            else
            {
                b.AddError(new GraphError(GraphErrorCodes.Schema, $"unknown field '{r.GetString()}'", id, line, col));
                r.Read();
                r.Skip();
            }
        }

        if (id is null)
            b.AddError(new GraphError(GraphErrorCodes.MissingId, "task has no 'id'", null, taskLine, taskCol));
        if (handler is null)
            b.AddError(new GraphError(GraphErrorCodes.MissingHandler, "task has no 'handler'", id, taskLine, taskCol));

        var t = b.Add(id, handler ?? "", taskLine);
        if (args.ValueKind != JsonValueKind.Undefined || timeout is not null || retries is not null || layer is not null
            || minConfidence is not null || uses is not null || tags is not null || cache is not null || requires is not null || estimateMs is not null)
        {
            var spec = b.SpecOf(t.Index);
            spec.Args = args;
            spec.TimeoutSeconds = timeout;
            spec.Retries = retries;
            spec.Layer = layer;
            spec.MinConfidence = minConfidence;
            spec.EstimateMs = estimateMs;
            spec.Cache = cache;
            spec.Uses = uses;
            spec.Tags = tags;
            spec.Requires = requires;
        }
        if (priority is not null)
        {
            if (GraphNames.TryParsePriority(priority, out var p)) t.WithPriority(p);
            else b.AddError(new GraphError(GraphErrorCodes.BadValue, $"priority is '{priority}'; it must be low, normal, high or critical", id, taskLine, taskCol));
        }
        if (deps is not null)
        {
            foreach (var d in deps)
            {
                if (d.Source >= 0) b.AddEdge(d.Source, t.Index, d.Kind, d.Weight);
                else b.AddNamedDependency(t.Index, d.Id!, d.Kind, d.Weight, d.Line);
            }
        }
    }

    /// <summary>A dependency as read: resolved to <see cref="Source"/> when its task came earlier in the file, else by <see cref="Id"/> later.</summary>
    private readonly record struct Dependency(int Source, string? Id, EdgeKind Kind, float Weight, int Line);

    // Graphs repeat a few handler names many times: reuse the string when the bytes match the last one.
    private static string? ReadHandlerName(ref Utf8JsonReader r, ref LoaderState s, string? owner, int line, int col)
    {
        if (r.TokenType == JsonTokenType.String && s.LastHandlerUtf8 is not null && r.ValueTextEquals(s.LastHandlerUtf8))
            return s.LastHandler;
        var name = ExpectString(ref r, s.Builder, "handler", owner, line, col);
        if (name is not null)
        {
            s.LastHandler = name;
            s.LastHandlerUtf8 = Encoding.UTF8.GetBytes(name);
        }
        return name;
    }

    private static List<Dependency>? ReadDependencies(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s, string? owner)
    {
        var b = s.Builder;
        var (line, col) = Position(ref r, utf8, ref s);
        if (r.TokenType != JsonTokenType.StartArray)
        {
            b.AddError(new GraphError(GraphErrorCodes.Schema, "'dependsOn' must be an array", owner, line, col));
            r.Skip();
            return null;
        }
        var list = new List<Dependency>(4);
        Span<char> buffer = stackalloc char[128];
        while (r.Read() && r.TokenType != JsonTokenType.EndArray)
        {
            (line, col) = Position(ref r, utf8, ref s);
            if (r.TokenType == JsonTokenType.String)
            {
                // Most dependencies name a task defined above: resolve it without allocating a string.
                if (!r.ValueIsEscaped && !r.HasValueSequence && r.ValueSpan.Length <= buffer.Length)
                {
                    int n = Encoding.UTF8.GetChars(r.ValueSpan, buffer);
                    if (b.TryGetIndex(buffer[..n], out int source))
                    {
                        list.Add(new Dependency(source, null, EdgeKind.Hard, 0f, line));
                        continue;
                    }
                }
                list.Add(new Dependency(-1, r.GetString()!, EdgeKind.Hard, 0f, line));
                continue;
            }
            if (r.TokenType != JsonTokenType.StartObject)
            {
                b.AddError(new GraphError(GraphErrorCodes.Schema, "a dependency is a task id or an object {id, type, weight}", owner, line, col));
                r.Skip();
                continue;
            }
            string? depId = null, type = null;
            double weight = 0;
            bool sawId = false, sawType = false, sawWeight = false;
            while (r.Read() && r.TokenType == JsonTokenType.PropertyName)
            {
                var (pl, pc) = Position(ref r, utf8, ref s);
                string name = r.GetString()!;
                r.Read();
                ref bool saw = ref (name == "id" ? ref sawId : ref name == "type" ? ref sawType : ref sawWeight);
                if (name is "id" or "type" or "weight")
                {
                    if (saw)
                    {
                        b.AddError(Duplicate("dependsOn." + name, owner, pl, pc));
                        r.Skip();
                        continue;
                    }
                    saw = true;
                }
                switch (name)
                {
                    case "id": depId = ExpectString(ref r, b, "dependsOn.id", owner, pl, pc); break;
                    case "type": type = ExpectString(ref r, b, "dependsOn.type", owner, pl, pc); break;
                    case "weight": weight = ExpectNumber(ref r, b, "dependsOn.weight", owner, pl, pc) ?? 0; break;
                    default:
                        b.AddError(new GraphError(GraphErrorCodes.Schema, $"unknown field 'dependsOn.{name}' (expected id, type, weight)", owner, pl, pc));
                        r.Skip();
                        break;
                }
            }
            if (depId is null)
            {
                b.AddError(new GraphError(GraphErrorCodes.Schema, "a dependency object needs an 'id'", owner, line, col));
                continue;
            }
            if (!GraphNames.TryParseEdgeKind(type, out var kind))
                b.AddError(new GraphError(GraphErrorCodes.BadValue, $"dependency type is '{type}'; it must be hard, soft or data", owner, line, col));
            list.Add(new Dependency(-1, depId, kind, (float)weight, line));
        }
        return list;
    }

    private static GraphError Duplicate(string name, string? owner, int line, int col)
        => new(GraphErrorCodes.DuplicateKey, $"field '{GraphLimits.Printable(name)}' appears more than once in the same object (JSON keys must be unique)", owner, line, col);

    private static int FieldBit(ref Utf8JsonReader r)
    {
        if (r.ValueTextEquals("id"u8)) return 1;
        if (r.ValueTextEquals("handler"u8)) return 2;
        if (r.ValueTextEquals("args"u8)) return 4;
        if (r.ValueTextEquals("dependsOn"u8)) return 8;
        if (r.ValueTextEquals("priority"u8)) return 16;
        if (r.ValueTextEquals("timeoutSeconds"u8)) return 32;
        if (r.ValueTextEquals("retries"u8)) return 64;
        if (r.ValueTextEquals("layer"u8)) return 128;
        if (r.ValueTextEquals("minConfidence"u8)) return 256;
        if (r.ValueTextEquals("cache"u8)) return 4096;
        if (r.ValueTextEquals("uses"u8)) return 512;
        if (r.ValueTextEquals("tags"u8)) return 1024;
        if (r.ValueTextEquals("requires"u8)) return 8192;
        if (r.ValueTextEquals("estimateMs"u8)) return 16384;
        return 0;
    }

    /// <summary>
    /// Reports keys that repeat within one object anywhere inside an <c>args</c> value. Reads a
    /// copy of the reader (the caller parses the value afterwards); names are compared as the
    /// bytes of the file, so no strings are made unless a name is escaped.
    /// </summary>
    private static void CheckDuplicateKeys(Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s, string? owner)
    {
        var names = s.Names ??= new List<(int Start, int Length, string? Escaped)>();
        var scopes = s.Scopes ??= new Stack<int>();
        names.Clear();
        scopes.Clear();
        int depth = r.CurrentDepth;
        scopes.Push(0);
        while (r.Read())
        {
            switch (r.TokenType)
            {
                case JsonTokenType.StartObject:
                    scopes.Push(names.Count);
                    break;
                case JsonTokenType.EndObject:
                    names.RemoveRange(scopes.Peek(), names.Count - scopes.Peek());
                    scopes.Pop();
                    if (r.CurrentDepth == depth) return;
                    break;
                case JsonTokenType.PropertyName:
                    bool plain = !r.ValueIsEscaped && !r.HasValueSequence;
                    int start = (int)r.TokenStartIndex + 1;
                    string? escaped = plain ? null : r.GetString();
                    int len = plain ? r.ValueSpan.Length : 0;
                    for (int k = scopes.Peek(); k < names.Count; k++)
                    {
                        var n = names[k];
                        bool same = plain && n.Escaped is null
                            ? utf8.Slice(n.Start, n.Length).SequenceEqual(r.ValueSpan)
                            : (n.Escaped ?? System.Text.Encoding.UTF8.GetString(utf8.Slice(n.Start, n.Length))) == (escaped ?? r.GetString());
                        if (!same) continue;
                        var (line, col) = Position(ref r, utf8, ref s);
                        s.Builder.AddError(Duplicate("args." + (escaped ?? r.GetString()), owner, line, col));
                        break;
                    }
                    names.Add((start, len, escaped));
                    break;
            }
        }
    }

    private static bool ExpectObject(ref Utf8JsonReader r, ReadOnlySpan<byte> utf8, ref LoaderState s, string what, string? owner)
    {
        if (r.TokenType == JsonTokenType.StartObject) return true;
        var (l, c) = Position(ref r, utf8, ref s);
        s.Builder.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be an object", owner, l, c));
        r.Skip();
        return false;
    }

    private static string? ExpectString(ref Utf8JsonReader r, GraphBuilder b, string what, string? owner, int line, int col)
    {
        if (r.TokenType == JsonTokenType.String) return r.GetString();
        b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be a string", owner, line, col));
        r.Skip();
        return null;
    }

    private static double? ExpectNumber(ref Utf8JsonReader r, GraphBuilder b, string what, string? owner, int line, int col)
    {
        if (r.TokenType == JsonTokenType.Number && r.TryGetDouble(out var d)) return d;
        b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be a number", owner, line, col));
        r.Skip();
        return null;
    }

    private static bool? ExpectBool(ref Utf8JsonReader r, GraphBuilder b, string what, string? owner, int line, int col)
    {
        if (r.TokenType is JsonTokenType.True or JsonTokenType.False) return r.GetBoolean();
        b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be true or false", owner, line, col));
        r.Skip();
        return null;
    }

    private static int? ExpectInt(ref Utf8JsonReader r, GraphBuilder b, string what, string? owner, int line, int col)
    {
        if (r.TokenType == JsonTokenType.Number && r.TryGetInt32(out var i)) return i;
        b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be an integer", owner, line, col));
        r.Skip();
        return null;
    }

    private static string[]? ExpectStringArray(ref Utf8JsonReader r, GraphBuilder b, string what, string? owner, int line, int col)
    {
        if (r.TokenType != JsonTokenType.StartArray)
        {
            b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be an array of strings", owner, line, col));
            r.Skip();
            return null;
        }
        var list = new List<string>();
        while (r.Read() && r.TokenType != JsonTokenType.EndArray)
        {
            if (r.TokenType == JsonTokenType.String) list.Add(r.GetString()!);
            else
            {
                b.AddError(new GraphError(GraphErrorCodes.Schema, $"'{what}' must be an array of strings", owner, line, col));
                r.Skip();
            }
        }
        return list.ToArray();
    }
}
