using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using MessagePack;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Server.Protocol;

/// <summary>The message types of the socket protocol (docs/protocol.md), client's and service's.</summary>
internal static class MessageType
{
    // Service → client.
    public const int Error = 0;
    public const int Welcome = 2;
    public const int Done = 3;
    public const int Pong = 5;
    public const int RunSubmitted = 11;
    public const int TasksSubmitted = 13;
    public const int Run = 15;
    public const int Task = 17;
    public const int Event = 25;
    public const int WorkerReady = 31;
    public const int Leases = 33;
    public const int Resource = 37;

    // Client → service.
    public const int Hello = 1;
    public const int Ping = 4;
    public const int SubmitGraph = 10;
    public const int SubmitTasks = 12;
    public const int GetRun = 14;
    public const int GetTask = 16;
    public const int CancelRun = 18;
    public const int CancelTask = 20;
    public const int WaitTasks = 22;
    public const int Subscribe = 24;
    public const int ChangeTask = 26;
    public const int Escalate = 28;
    public const int Worker = 30;
    public const int Results = 34;
    public const int Get = 36;
}

/// <summary>A request as read off a frame: its type, id and fields (what a type does not use is null).</summary>
internal sealed record Request(int Type, uint Id)
{
    public int Version { get; init; }
    public string? Token { get; init; }
    public string? Text { get; init; }            // a run or task id; a client's name in a hello
    public double Wait { get; init; }
    public string? GraphJson { get; init; }
    public bool GraphFromMap { get; init; }        // submit_graph: sent as a map (its JSON text is ours: no lines of the client's)
    public List<TaskItem>? Tasks { get; init; }   // submit_tasks: each task, read or as JSON text
    public List<string>? Ids { get; init; }
    public int Slots { get; init; }
    public List<WorkerResult>? Results { get; init; }
    public string? Task { get; init; }             // escalate: the task
    public string? Layer { get; init; }            // escalate: the layer asked; change_task: the new priority
    public string? ArgsJson { get; init; }         // change_task: the new arguments (a JSON object), or null
    public string? Reason { get; init; }           // escalate: why, for the record (null: who asked)
    public Dictionary<string, string>? Query { get; init; }   // get: the query parameters
}

/// <summary>
/// A task of a batched submit: read straight from MessagePack (<see cref="Request"/>) when it has
/// the common shape — <c>handler</c>, <c>id</c>, <c>priority</c>, <c>dependsOn</c>, <c>args</c>, each
/// well formed — else its JSON text (<see cref="Json"/>), read as a graph file's task is, with
/// every check and every problem named.
/// </summary>
internal readonly record struct TaskItem(TaskRequest? Request, string? Json);

/// <summary>One result a worker sent: its lease, success or not, the output (as JSON) or the error, the confidence it reported.</summary>
/// <param name="Output">As <see cref="Workers.WorkResult.Output"/>: a scalar as itself, a map or an array as a <see cref="JsonElement"/>.</param>
internal readonly record struct WorkerResult(long Lease, bool Ok, object? Output, string? Error, double? Confidence);

/// <summary>Reads requests and writes messages of the socket protocol with MessagePack-CSharp (untrusted data: bounded depth).</summary>
internal static class Messages
{
    /// <summary>The protocol version this service speaks.</summary>
    public const int Version = 1;

    /// <summary>Most tasks in one batched submit, or ids in one wait.</summary>
    public const int MaxBatch = 100_000;

    private static readonly MessagePackSerializerOptions Untrusted = MessagePackSerializerOptions.Standard.WithSecurity(MessagePackSecurity.UntrustedData);

    /// <summary>The request in <paramref name="frame"/>.</summary>
    /// <exception cref="ProtocolException">Not a request this protocol knows, or of the wrong shape (the message says what).</exception>
    public static Request Read(ReadOnlyMemory<byte> frame)
    {
        try
        {
            var reader = new MessagePackReader(frame);
            if (reader.NextMessagePackType != MessagePackType.Array) throw new ProtocolException("a message is an array [type, request_id, body]");
            if (reader.ReadArrayHeader() != 3) throw new ProtocolException("a message is an array of three: [type, request_id, body]");
            if (reader.NextMessagePackType != MessagePackType.Integer) throw new ProtocolException("a message's type is an integer");
            int type = reader.ReadInt32();
            if (reader.NextMessagePackType != MessagePackType.Integer) throw new ProtocolException("a message's request id is an integer");
            uint id = reader.ReadUInt32();
            if (reader.NextMessagePackType != MessagePackType.Array) throw new ProtocolException("a message's body is an array");
            int fields = reader.ReadArrayHeader();
            Request request;
            switch (type)
            {
                case MessageType.Hello:
                    Expect(fields, 3, "hello [version, token, client]");
                    request = new Request(type, id) { Version = Int(ref reader, "version"), Token = Str(ref reader, "token", nullable: true), Text = Str(ref reader, "client", nullable: true) };
                    break;
                case MessageType.Ping:
                    Expect(fields, 0, "ping []");
                    request = new Request(type, id);
                    break;
                case MessageType.SubmitGraph:
                    Expect(fields, 1, "submit_graph [graph]");
                    request = new Request(type, id) { GraphFromMap = reader.NextMessagePackType == MessagePackType.Map, GraphJson = Json(ref reader, "graph") };
                    break;
                case MessageType.SubmitTasks:
                    Expect(fields, 1, "submit_tasks [[task, …]]");
                    request = new Request(type, id) { Tasks = TaskList(ref reader) };
                    break;
                case MessageType.GetRun or MessageType.GetTask:
                    Expect(fields, 2, "get_run / get_task [id, wait_seconds]");
                    request = new Request(type, id) { Text = Str(ref reader, "id", nullable: false), Wait = Seconds(ref reader) };
                    break;
                case MessageType.CancelRun or MessageType.CancelTask or MessageType.Subscribe:
                    Expect(fields, 1, "cancel_run / cancel_task / subscribe [id]");
                    request = new Request(type, id) { Text = Str(ref reader, "id", nullable: false) };
                    break;
                case MessageType.ChangeTask:
                    Expect(fields, 3, "change_task [task_id, priority, args]");
                    request = new Request(type, id)
                    {
                        Text = Str(ref reader, "task_id", nullable: false),
                        Layer = Str(ref reader, "priority", nullable: true),
                        ArgsJson = reader.TryReadNil() ? null : Json(ref reader, "args"),
                    };
                    break;
                case MessageType.Escalate:
                    Expect(fields, 4, "escalate [run_id, task_id, layer, reason]");
                    request = new Request(type, id)
                    {
                        Text = Str(ref reader, "run_id", nullable: false),
                        Task = Str(ref reader, "task_id", nullable: false),
                        Layer = Str(ref reader, "layer", nullable: false),
                        Reason = Str(ref reader, "reason", nullable: true),
                    };
                    break;
                case MessageType.WaitTasks:
                    Expect(fields, 1, "wait_tasks [[task_id, …]]");
                    request = new Request(type, id) { Ids = StrList(ref reader) };
                    break;
                case MessageType.Worker:
                    Expect(fields, 2, "worker [[handler, …], slots]");
                    request = new Request(type, id) { Ids = StrList(ref reader), Slots = Int(ref reader, "slots") };
                    if (request.Slots is < 1 or > 65_536) throw new ProtocolException("slots must be 1–65536");
                    if (request.Ids!.Count is 0 or > 1_000) throw new ProtocolException("a worker serves 1–1000 handlers");
                    break;
                case MessageType.Get:
                    Expect(fields, 2, "get [path, query]");
                    request = new Request(type, id) { Text = Str(ref reader, "path", nullable: false), Query = QueryMap(ref reader) };
                    if (request.Text!.Length > 2048) throw new ProtocolException("a path is at most 2048 characters");
                    break;
                case MessageType.Results:
                    Expect(fields, 1, "results [[lease_id, ok, output_or_error, confidence], …]");
                    request = new Request(type, id) { Results = ResultList(ref reader) };
                    break;
                default:
                    throw new ProtocolException($"unknown message type {type}");
            }
            if (!reader.End) throw new ProtocolException("bytes after the message");
            return request;
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or InvalidOperationException or EndOfStreamException or OverflowException or ArgumentException)
        {
            throw new ProtocolException($"not a message of this protocol: {ex.Message}");
        }
    }

    private static void Expect(int count, int expected, string shape)
    {
        if (count != expected) throw new ProtocolException($"wrong number of fields: {shape}");
    }

    private static int Int(ref MessagePackReader reader, string name)
        => reader.NextMessagePackType == MessagePackType.Integer ? reader.ReadInt32() : throw new ProtocolException($"{name} is an integer");

    private static string? Str(ref MessagePackReader reader, string name, bool nullable)
    {
        if (nullable && reader.TryReadNil()) return null;
        if (reader.NextMessagePackType != MessagePackType.String) throw new ProtocolException($"{name} is a string");
        return reader.ReadString();
    }

    private static double Seconds(ref MessagePackReader reader)
    {
        if (reader.TryReadNil()) return 0;
        double s = reader.NextMessagePackType switch
        {
            MessagePackType.Integer => reader.ReadInt64(),
            MessagePackType.Float => reader.ReadDouble(),
            _ => throw new ProtocolException("wait_seconds is a number or nil"),
        };
        return s is >= 0 and <= 86_400 ? s : throw new ProtocolException("wait_seconds must be 0–86400");
    }

    /// <summary>A graph or task: JSON text (a string), or the same shape as a MessagePack map, converted to JSON.</summary>
    private static string Json(ref MessagePackReader reader, string name)
    {
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.String:
                return reader.ReadString()!;
            case MessagePackType.Map:
                var raw = reader.ReadRaw();
                return MessagePackSerializer.ConvertToJson(raw, Untrusted);
            default:
                throw new ProtocolException($"{name} is a map (or JSON text)");
        }
    }

    /// <summary>A get's query: nil, or a map of up to 16 names to strings or numbers (each at most 256 characters).</summary>
    private static Dictionary<string, string>? QueryMap(ref MessagePackReader reader)
    {
        if (reader.TryReadNil()) return null;
        if (reader.NextMessagePackType != MessagePackType.Map) throw new ProtocolException("query is a map of names to strings or numbers, or nil");
        int n = reader.ReadMapHeader();
        if (n > 16) throw new ProtocolException("a query has at most 16 parameters");
        var query = new Dictionary<string, string>(n, StringComparer.Ordinal);
        for (int i = 0; i < n; i++)
        {
            string name = Str(ref reader, "a query parameter's name", nullable: false)!;
            string value = reader.NextMessagePackType switch
            {
                MessagePackType.String => reader.ReadString()!,
                MessagePackType.Integer => reader.ReadInt64().ToString(System.Globalization.CultureInfo.InvariantCulture),
                MessagePackType.Float => reader.ReadDouble().ToString("R", System.Globalization.CultureInfo.InvariantCulture),
                _ => throw new ProtocolException($"query parameter {GraphLimits.Printable(name)} is a string or a number"),
            };
            if (name.Length > 256 || value.Length > 256) throw new ProtocolException("a query parameter's name and value are at most 256 characters each");
            query[name] = value;
        }
        return query;
    }

    // The fewest bytes a task map ({"handler": …}) and a result ([lease, ok, output, confidence]) take:
    // what a count the bytes claim is checked against before anything is sized by it.
    private const int MinTaskBytes = 10, MinResultBytes = 5;

    /// <summary>
    /// What a list of <paramref name="claimed"/> items starts at: no more than the rest of the
    /// message can hold at <paramref name="minBytes"/> each, nor than <see cref="FirstCapacity"/>
    /// (it grows as items are read) — so that bytes claiming a large count make nothing large
    /// before they are read.
    /// </summary>
    private static int Room(ref MessagePackReader reader, int claimed, int minBytes)
        => (int)Math.Min(Math.Min(claimed, FirstCapacity), (reader.Sequence.Length - reader.Consumed) / minBytes);

    private const int FirstCapacity = 1024;

    private static List<TaskItem> TaskList(ref MessagePackReader reader)
    {
        if (reader.NextMessagePackType != MessagePackType.Array) throw new ProtocolException("tasks is an array");
        int n = reader.ReadArrayHeader();
        if (n > MaxBatch) throw new ProtocolException($"{n:N0} tasks in one batch; the most is {MaxBatch:N0}");
        int room = Room(ref reader, n, MinTaskBytes);
        var list = new List<TaskItem>(room);
        string? lastHandler = null;
        var deferred = new DeferredArgs(room);
        for (int i = 0; i < n; i++)
        {
            if (reader.NextMessagePackType == MessagePackType.Map)
            {
                var raw = reader.ReadRaw();
                var plain = TryReadPlainTask(raw, ref lastHandler, deferred, i);
                list.Add(plain is not null ? new TaskItem(plain, null) : new TaskItem(null, MessagePackSerializer.ConvertToJson(raw, Untrusted)));
            }
            else list.Add(new TaskItem(null, Json(ref reader, "a task")));
        }
        deferred.Convert(list);
        return list;
    }

    /// <summary>
    /// The small arguments of a batch's plain tasks, converted together once the batch is read
    /// (<see cref="MessagePackJson.TryToElements"/>); if any is declined, each is converted alone,
    /// and a task whose arguments are declined takes the general path (which names the problem).
    /// </summary>
    private sealed class DeferredArgs(int capacity)
    {
        // Per task with small arguments: its place, its options (whose arguments are set here), and
        // the bytes of its arguments and of the task.
        private int[] _items = new int[capacity];
        private TaskSpec[] _specs = new TaskSpec[capacity];
        private ReadOnlyMemory<byte>[] _args = new ReadOnlyMemory<byte>[capacity];
        private ReadOnlyMemory<byte>[] _tasks = new ReadOnlyMemory<byte>[capacity];
        private int _count;

        public void Add(int item, TaskSpec spec, ReadOnlyMemory<byte> args, ReadOnlyMemory<byte> task)
        {
            if (_count == _items.Length)
            {
                int grown = Math.Max(16, _count * 2);
                Array.Resize(ref _items, grown);
                Array.Resize(ref _specs, grown);
                Array.Resize(ref _args, grown);
                Array.Resize(ref _tasks, grown);
            }
            (_items[_count], _specs[_count], _args[_count], _tasks[_count]) = (item, spec, args, task);
            _count++;
        }

        public void Convert(List<TaskItem> items)
        {
            if (_count == 0) return;
            var elements = new JsonElement[_count];
            if (MessagePackJson.TryToElements(_args.AsSpan(0, _count), elements))
            {
                for (int i = 0; i < _count; i++) _specs[i].Args = elements[i];
                return;
            }
            for (int i = 0; i < _count; i++)
            {
                if (MessagePackJson.TryToElement(new ReadOnlySequence<byte>(_args[i]), out var element)) _specs[i].Args = element;
                else items[_items[i]] = new TaskItem(null, MessagePackSerializer.ConvertToJson(_tasks[i], Untrusted));
            }
        }
    }

    /// <summary>
    /// A task map of the common shape read without a detour through JSON, or null for anything
    /// else (another field, a value of another type, a field twice, no handler): the JSON path then
    /// reads it and names its problems. <paramref name="lastHandler"/> is reused when the next task
    /// names the same handler (one string for a batch of one handler's tasks).
    /// </summary>
    internal static TaskRequest? TryReadPlainTask(ReadOnlySequence<byte> raw, ref string? lastHandler) => TryReadPlainTask(raw, ref lastHandler, null, 0);

    /// <inheritdoc cref="TryReadPlainTask(ReadOnlySequence{byte}, ref string?)"/>
    /// <remarks>With <paramref name="deferred"/>, small arguments are left to it (converted with the batch's others).</remarks>
    private static TaskRequest? TryReadPlainTask(ReadOnlySequence<byte> raw, ref string? lastHandler, DeferredArgs? deferred, int item)
    {
        ReadOnlySequence<byte> argsRaw = default;
        var r = new MessagePackReader(raw);
        int fields = r.ReadMapHeader();
        string? id = null, handler = null;
        var priority = TaskPriority.Normal;
        List<TaskDependency>? deps = null;
        JsonElement args = default;
        int seen = 0;
        for (int i = 0; i < fields; i++)
        {
            if (r.NextMessagePackType != MessagePackType.String || !r.TryReadStringSpan(out var key)) return null;
            int field;
            if (key.SequenceEqual("handler"u8))
            {
                field = 1;
                if (r.NextMessagePackType != MessagePackType.String || !r.TryReadStringSpan(out var name)) return null;
                if (lastHandler is null || !Utf8Equals(name, lastHandler)) lastHandler = System.Text.Encoding.UTF8.GetString(name);
                handler = lastHandler;
            }
            else if (key.SequenceEqual("id"u8))
            {
                field = 2;
                if (r.NextMessagePackType != MessagePackType.String) return null;
                id = r.ReadString();
            }
            else if (key.SequenceEqual("priority"u8))
            {
                field = 4;
                if (r.NextMessagePackType != MessagePackType.String || !GraphNames.TryParsePriority(r.ReadString(), out priority)) return null;
            }
            else if (key.SequenceEqual("dependsOn"u8))
            {
                field = 8;
                if ((deps = ReadPlainDependencies(ref r)) is null) return null;
            }
            else if (key.SequenceEqual("args"u8))
            {
                field = 16;
                if (r.NextMessagePackType != MessagePackType.Map) return null;
                argsRaw = r.ReadRaw();
                bool later = deferred is not null && argsRaw.Length <= MessagePackJson.BatchedValueBytes && argsRaw.IsSingleSegment && raw.IsSingleSegment;
                if (!later && !MessagePackJson.TryToElement(argsRaw, out args)) return null;
            }
            else return null;
            if ((seen & field) != 0) return null;
            seen |= field;
        }
        if (handler is null || !r.End) return null;
        TaskSpec? spec = null;
        if (args.ValueKind != JsonValueKind.Undefined) spec = new TaskSpec { Args = args };
        else if ((seen & 16) != 0)
            deferred!.Add(item, spec = new TaskSpec(), argsRaw.First, raw.First);
        return new TaskRequest(handler)
        {
            Id = id,
            Priority = priority,
            DependsOn = deps,
            Spec = spec,
        };
    }

    private static bool Utf8Equals(ReadOnlySpan<byte> utf8, string text)
    {
        if (utf8.Length != text.Length) return false;   // handler names are ASCII (GraphLimits); anything else takes the slow compare
        for (int i = 0; i < utf8.Length; i++)
            if (utf8[i] != text[i]) return false;
        return true;
    }

    /// <summary><c>dependsOn</c>: ids, or maps <c>{"id", "type"}</c>; null for any other shape.</summary>
    private static List<TaskDependency>? ReadPlainDependencies(ref MessagePackReader r)
    {
        if (r.NextMessagePackType != MessagePackType.Array) return null;
        int n = r.ReadArrayHeader();
        var deps = new List<TaskDependency>();   // not sized by the count the bytes claim
        for (int i = 0; i < n; i++)
        {
            switch (r.NextMessagePackType)
            {
                case MessagePackType.String:
                    deps.Add(new TaskDependency(r.ReadString()!));
                    break;
                case MessagePackType.Map:
                    int fields = r.ReadMapHeader();
                    string? id = null;
                    var kind = EdgeKind.Hard;
                    bool typed = false;
                    for (int f = 0; f < fields; f++)
                    {
                        if (r.NextMessagePackType != MessagePackType.String) return null;
                        string? key = r.ReadString();
                        if (r.NextMessagePackType != MessagePackType.String) return null;
                        string? value = r.ReadString();
                        if (key == "id" && id is null) id = value;
                        else if (key == "type" && !typed && GraphNames.TryParseEdgeKind(value!, out kind)) typed = true;
                        else return null;
                    }
                    if (id is null) return null;
                    deps.Add(new TaskDependency(id, kind));
                    break;
                default:
                    return null;
            }
        }
        return deps;
    }

    private static List<WorkerResult> ResultList(ref MessagePackReader reader)
    {
        if (reader.NextMessagePackType != MessagePackType.Array) throw new ProtocolException("results is an array");
        int n = reader.ReadArrayHeader();
        if (n > MaxBatch) throw new ProtocolException($"{n:N0} results in one message; the most is {MaxBatch:N0}");
        int room = Room(ref reader, n, MinResultBytes);
        var list = new List<WorkerResult>(room);
        List<(int Index, ReadOnlyMemory<byte> Raw)>? deferred = null;   // maps and arrays, converted together at the end
        for (int i = 0; i < n; i++)
        {
            if (reader.NextMessagePackType != MessagePackType.Array || reader.ReadArrayHeader() != 4) throw new ProtocolException("a result is [lease_id, ok, output_or_error, confidence]");
            if (reader.NextMessagePackType != MessagePackType.Integer) throw new ProtocolException("a lease id is an integer");
            long lease = reader.ReadInt64();
            if (reader.NextMessagePackType != MessagePackType.Boolean) throw new ProtocolException("ok is a boolean");
            bool ok = reader.ReadBoolean();
            object? output = null;
            string? error = null;
            if (ok && reader.NextMessagePackType is MessagePackType.Map or MessagePackType.Array)
            {
                // A map or an array: converted with the frame's others once all are read (below).
                var raw = reader.ReadRaw();
                if (raw.Length <= MessagePackJson.BatchedValueBytes && raw.IsSingleSegment) (deferred ??= new(room)).Add((list.Count, raw.First));
                else
                {
                    output = Structured(raw, out error);
                    ok = error is null;
                }
            }
            else if (ok)
            {
                // An output with no JSON form fails its attempt (the worker's connection goes on).
                output = Output(ref reader, out error);
                ok = error is null;
            }
            else error = Str(ref reader, "error", nullable: true) ?? "the worker reported a failure";
            double? confidence = reader.TryReadNil() ? null : reader.NextMessagePackType switch
            {
                MessagePackType.Float => reader.ReadDouble(),
                MessagePackType.Integer => reader.ReadInt64(),
                _ => throw new ProtocolException("confidence is a number or nil"),
            };
            if (confidence is double c && !(c >= 0 && c <= 1)) throw new ProtocolException("confidence must be 0–1");
            list.Add(new WorkerResult(lease, ok, output, error, confidence));
        }
        if (deferred is not null)
        {
            var raws = new ReadOnlyMemory<byte>[deferred.Count];
            for (int i = 0; i < raws.Length; i++) raws[i] = deferred[i].Raw;
            var elements = new JsonElement[raws.Length];
            bool together = MessagePackJson.TryToElements(raws, elements);
            for (int i = 0; i < raws.Length; i++)
            {
                int at = deferred[i].Index;
                string? error = null;
                object? output = together ? Workers.WorkResult.OutputOf(elements[i]) : Structured(new ReadOnlySequence<byte>(raws[i]), out error);
                list[at] = list[at] with { Ok = error is null, Output = output, Error = error };
            }
        }
        return list;
    }

    /// <summary>A worker's output: a scalar read as itself, a map or an array as a JSON element; null with <paramref name="problem"/> when it has no JSON form.</summary>
    private static object? Output(ref MessagePackReader reader, out string? problem)
    {
        problem = null;
        switch (reader.NextMessagePackType)
        {
            case MessagePackType.Nil:
                reader.ReadNil();
                return null;
            case MessagePackType.Boolean:
                return reader.ReadBoolean();
            case MessagePackType.String:
                return reader.ReadString();
            case MessagePackType.Integer when reader.NextCode != MessagePackCode.UInt64:
                return reader.ReadInt64();
            case MessagePackType.Float:
                double d = reader.ReadDouble();
                if (double.IsFinite(d)) return d;
                problem = "the worker's output is NaN or infinite: JSON has no such number";
                return null;
        }
        return Structured(reader.ReadRaw(), out problem);
    }

    /// <summary>A worker's output that is a map or an array (or another value the direct reads do not take): a JSON element, or null with <paramref name="problem"/>.</summary>
    private static object? Structured(ReadOnlySequence<byte> raw, out string? problem)
    {
        problem = null;
        if (MessagePackJson.TryToElement(raw, out var element)) return Workers.WorkResult.OutputOf(element);
        // What the direct path declines (binary, extensions, keys that are not strings): MessagePack's own conversion.
        try
        {
            using var doc = JsonDocument.Parse(MessagePackSerializer.ConvertToJson(raw, Untrusted), new JsonDocumentOptions { MaxDepth = GraphLimits.MaxJsonDepth });
            return Workers.WorkResult.OutputOf(doc.RootElement);
        }
        catch (JsonException ex)
        {
            problem = $"the worker's output has no JSON form: {ex.Message}";
            return null;
        }
    }

    private static List<string> StrList(ref MessagePackReader reader)
    {
        if (reader.NextMessagePackType != MessagePackType.Array) throw new ProtocolException("task_ids is an array");
        int n = reader.ReadArrayHeader();
        if (n > MaxBatch) throw new ProtocolException($"{n:N0} ids in one wait; the most is {MaxBatch:N0}");
        var list = new List<string>(Room(ref reader, n, 1));
        for (int i = 0; i < n; i++) list.Add(Str(ref reader, "a task id", nullable: false)!);
        return list;
    }

    // ---------------------------------------------------------------- writing

    /// <summary>Writes a message's body fields.</summary>
    public delegate void BodyWriter(ref MessagePackWriter w);

    /// <summary>A message: [type, request_id, body], the body an array of <paramref name="bodyFields"/> written by <paramref name="body"/>, framed.</summary>
    /// <remarks>
    /// The result is the whole frame, ready to send: the 4-byte big-endian length, then the message.
    /// It is written into a buffer the thread keeps (grown once to its largest message) and copied
    /// out once, at its size.
    /// </remarks>
    public static byte[] Write(int type, uint id, int bodyFields = 0, BodyWriter? body = null)
    {
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(4096);
        buffer.ResetWrittenCount();
        if (buffer.Capacity > MaxKeptBuffer) buffer = t_buffer = new ArrayBufferWriter<byte>(4096);   // a rare huge message is not kept
        buffer.GetSpan(4);
        buffer.Advance(4);
        var w = new MessagePackWriter(buffer);
        w.WriteArrayHeader(3);
        w.Write(type);
        w.Write(id);
        w.WriteArrayHeader(bodyFields);
        body?.Invoke(ref w);
        w.Flush();
        var frame = buffer.WrittenSpan.ToArray();
        BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)(frame.Length - 4));
        return frame;
    }

    [ThreadStatic] private static ArrayBufferWriter<byte>? t_buffer;

    /// <summary>Past this, a thread's message buffer is dropped after use rather than kept.</summary>
    private const int MaxKeptBuffer = 1 << 20;

    /// <summary>An error: [status, title, detail, errors], each error [code, message, task_id, line, column].</summary>
    public static byte[] Error(uint id, int status, string title, string detail, IReadOnlyList<GraphError>? errors = null)
        => Write(MessageType.Error, id, 4, (ref MessagePackWriter w) =>
        {
            w.Write(status);
            w.Write(title);
            w.Write(detail);
            WriteErrors(ref w, errors);
        });

    public static void WriteErrors(ref MessagePackWriter w, IReadOnlyList<GraphError>? errors)
    {
        if (errors is null)
        {
            w.WriteNil();
            return;
        }
        w.WriteArrayHeader(errors.Count);
        foreach (var e in errors)
        {
            w.WriteArrayHeader(5);
            w.Write(e.Code);
            w.Write(e.Message);
            if (e.TaskId is null) w.WriteNil(); else w.Write(e.TaskId);
            if (e.Line is int line) w.Write(line); else w.WriteNil();
            if (e.Column is int column) w.Write(column); else w.WriteNil();
        }
    }

    /// <summary>A JSON object written by <paramref name="json"/>, as the same shape in MessagePack (a map).</summary>
    public static void WriteJsonAsMap(ref MessagePackWriter w, Action<Utf8JsonWriter> json)
    {
        var buffer = new ArrayBufferWriter<byte>(512);
        using (var jw = new Utf8JsonWriter(buffer)) json(jw);
        w.WriteRaw(MessagePackSerializer.ConvertFromJson(Encoding.UTF8.GetString(buffer.WrittenSpan)));
    }
}
