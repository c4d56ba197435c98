using System.Buffers.Binary;
using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using MessagePack;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Bench.Dag;
using TaskMesh.Engine.Configuration;
using TaskMesh.Hosting;
using TaskMesh.Server;

namespace TaskMesh.Bench.Api;

/// <summary>One measured figure.</summary>
internal sealed record ApiRecord(string metric, double value, string unit);

/// <summary>
/// <c>bench -- api [--requests 2000] [--tasks 1000000] [--only latency,batched,worker,requests] [--seconds 3] [--warm 5] --json out.json</c>: the service
/// (<c>taskmesh serve</c>'s, in this process, no store: the service, not the disk) measured from
/// clients on loopback — submit-to-result latency of a one-task graph over the socket protocol and
/// over HTTP, tasks per second submitted in batches over one socket connection, tasks per second
/// through one external worker (written here from docs/protocol.md, not from the service's code),
/// and HTTP requests per second. Every figure is measured after at least <c>--warm</c> seconds (5) of the same work (the runtime compiles hot code fully optimised only after a while).
/// </summary>
internal static class ApiSuite
{
    // Message types (docs/protocol.md).
    private const int Error = 0, Hello = 1, SubmitGraph = 10, RunSubmitted = 11, SubmitTasks = 12, TasksSubmitted = 13, GetRun = 14, RunMessage = 15,
        Worker = 30, WorkerReady = 31, Leases = 33, Results = 34;

    private const string OneTask = """{ "name": "one", "tasks": [ { "id": "a", "handler": "noop" } ] }""";

    public static int Run(string[] args) => RunAsync(args).GetAwaiter().GetResult();

    private static async Task<int> RunAsync(string[] args)
    {
        int requests = int.Parse(DagSuite.Opt(args, "--requests") ?? "2000");
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "1000000");
        double seconds = double.Parse(DagSuite.Opt(args, "--seconds") ?? "3", System.Globalization.CultureInfo.InvariantCulture);
        string? json = DagSuite.Opt(args, "--json");
        if (DagSuite.Opt(args, "--warm") is { } warm) WarmUp = TimeSpan.FromSeconds(double.Parse(warm, System.Globalization.CultureInfo.InvariantCulture));
        // --only latency,batched,worker,requests: the groups of figures to measure (default: all).
        var only = DagSuite.Opt(args, "--only")?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        string[] groups = ["latency", "batched", "worker", "requests"];
        if (only?.FirstOrDefault(g => !groups.Contains(g)) is { } unknown)
        {
            Console.Error.WriteLine($"--only takes {string.Join(", ", groups)}; got '{unknown}'");
            return 2;
        }
        bool Measures(string group) => only is null || only.Contains(group);

        var services = new ServiceCollection();
        var config = TaskMeshConfig.Parse("[store]\nenabled = false\n[open_runs]\nmax_pending = 65536\n");
        services.AddTaskMesh(config);
        await using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        await using var server = await TaskMeshServer.StartAsync(runtime, new ServerOptions { HttpPort = 0, SocketPort = 0, RequestsPerSecond = 0 });   // no rate limit: the service's own speed
        var records = new List<ApiRecord>();
        void Add(string metric, double value, string unit)
        {
            records.Add(new ApiRecord(metric, Math.Round(value, 3), unit));
            Console.WriteLine($"{metric,-40} {value,14:N3} {unit}");
        }
        Console.WriteLine($"api bench: service in this process (no store), clients on loopback; {requests:N0} requests per latency, {tasks:N0} tasks per throughput");

        // Submit-to-result of a one-task graph: socket.
        if (Measures("latency"))
        using (var c = await Client.ConnectAsync(server.SocketEndpoint!))
        {
            async Task<double> Once(uint id)
            {
                long t0 = Stopwatch.GetTimestamp();
                await c.SendAsync(SubmitGraph, id, OneTask);
                string run = (string)(await c.ExpectAsync(RunSubmitted)).Body[0]!;
                await c.SendAsync(GetRun, id, run, 10);
                var body = (await c.ExpectAsync(RunMessage)).Body;
                if (((IDictionary<object, object>)body[0]!)["status"] as string != "succeeded") throw new InvalidOperationException("the one-task run did not succeed");
                return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            }
            await WarmAsync(async () => { for (uint i = 1; i <= 100; i++) await Once(i); });
            var ms = new List<double>(requests);
            for (uint i = 1; i <= requests; i++) ms.Add(await Once(i));
            Add("socket_submit_to_result_p50_ms", Percentile(ms, 50), "ms");
            Add("socket_submit_to_result_p99_ms", Percentile(ms, 99), "ms");
        }

        // The same over HTTP.
        using (var http = new HttpClient { BaseAddress = server.HttpAddress })
        {
            if (Measures("latency"))
            {
                async Task<double> Once()
                {
                    long t0 = Stopwatch.GetTimestamp();
                    using var posted = await http.PostAsync("api/runs", new StringContent(OneTask, Encoding.UTF8, "application/json"));
                    using var doc = JsonDocument.Parse(await posted.Content.ReadAsStringAsync());
                    string run = doc.RootElement.GetProperty("run_id").GetString()!;
                    using var got = JsonDocument.Parse(await http.GetStringAsync($"api/runs/{run}?wait=10"));
                    if (got.RootElement.GetProperty("status").GetString() != "succeeded") throw new InvalidOperationException("the one-task run did not succeed");
                    return Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
                }
                await WarmAsync(async () => { for (int i = 0; i < 100; i++) await Once(); });
                var ms = new List<double>(requests);
                for (int i = 0; i < requests; i++) ms.Add(await Once());
                Add("http_submit_to_result_p50_ms", Percentile(ms, 50), "ms");
                Add("http_submit_to_result_p99_ms", Percentile(ms, 99), "ms");
            }

            if (Measures("batched"))
            {
                // Tasks submitted to the standing run over one connection, in batches of 1,000, eight batches in flight.
                await WarmAsync(() => SubmitBatchesAsync(server, http, Math.Max(1, tasks / 5), """{"handler":"noop"}"""));
                var (n, elapsed) = await SubmitBatchesAsync(server, http, tasks, """{"handler":"noop"}""");
                Add("tasks_per_s_socket_batched", n / elapsed.TotalSeconds, "tasks/s");
            }

            // Through one external worker written from docs/protocol.md: it answers each lease with its arguments.
            if (Measures("worker"))
            using (var worker = await Client.ConnectAsync(server.SocketEndpoint!))
            {
                await worker.SendAsync(Worker, 1, new object[] { "bench.echo" }, 1024);
                await worker.ExpectAsync(WorkerReady);
                using var stop = new CancellationTokenSource();
                var serving = ServeAsync(worker, stop.Token);
                await WarmAsync(() => SubmitBatchesAsync(server, http, Math.Max(1, tasks / 20), """{"handler":"bench.echo","args":{"n":1}}"""));
                long allocated = GC.GetTotalAllocatedBytes(precise: true);
                var (m, took) = await SubmitBatchesAsync(server, http, tasks / 4, """{"handler":"bench.echo","args":{"n":1}}""");
                Add("tasks_per_s_external_worker", m / took.TotalSeconds, "tasks/s");
                // The process's allocations while it ran, per task: the service's, the submitting client's and the worker's together.
                Add("bytes_allocated_per_task_external_worker", (GC.GetTotalAllocatedBytes(precise: true) - allocated) / (double)m, "B");
                stop.Cancel();
                worker.Dispose();
                try { await serving; } catch (Exception) { }
            }

            // GET /api/runs/{id}, four clients at once.
            if (Measures("requests"))
            {
                string runId;
                using (var posted = await http.PostAsync("api/runs", new StringContent(OneTask, Encoding.UTF8, "application/json")))
                using (var doc = JsonDocument.Parse(await posted.Content.ReadAsStringAsync()))
                    runId = doc.RootElement.GetProperty("run_id").GetString()!;
                await http.GetStringAsync($"api/runs/{runId}?wait=10");
                async Task<long> Hammer(TimeSpan duration)
                {
                    long count = 0;
                    var until = Stopwatch.GetTimestamp() + (long)(duration.TotalSeconds * Stopwatch.Frequency);
                    await Task.WhenAll(Enumerable.Range(0, 4).Select(async _ =>
                    {
                        using var h = new HttpClient { BaseAddress = server.HttpAddress };
                        while (Stopwatch.GetTimestamp() < until)
                        {
                            using var r = await h.GetAsync($"api/runs/{runId}");
                            r.EnsureSuccessStatusCode();
                            Interlocked.Increment(ref count);
                        }
                    }));
                    return count;
                }
                await Hammer(WarmUp);   // warm
                long done = await Hammer(TimeSpan.FromSeconds(seconds));
                Add("http_requests_per_s", done / seconds, "requests/s");
            }
        }

        if (json is not null)
        {
            File.WriteAllText(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    /// <summary>
    /// Runs <paramref name="pass"/> for at least <see cref="WarmUp"/> (once at least): the runtime
    /// compiles a method fully optimised only after it has run a while at a lower tier, later on a
    /// busy 2-core machine, so a throughput measured sooner is the compiler's, not the service's.
    /// </summary>
    private static async Task WarmAsync(Func<Task> pass)
    {
        long until = Stopwatch.GetTimestamp() + (long)(WarmUp.TotalSeconds * Stopwatch.Frequency);
        do await pass();
        while (Stopwatch.GetTimestamp() < until);
    }

    private static TimeSpan WarmUp = TimeSpan.FromSeconds(5);

    /// <summary>Submits <paramref name="n"/> copies of <paramref name="task"/> in batches of 1,000 (eight in flight) over one connection; returns when the standing run has none pending.</summary>
    private static async Task<(int, TimeSpan)> SubmitBatchesAsync(TaskMeshServer server, HttpClient http, int n, string task)
    {
        using var c = await Client.ConnectAsync(server.SocketEndpoint!);
        const int Batch = 1000, InFlight = 8;
        var one = MessagePackSerializer.ConvertFromJson(task);
        long t0 = Stopwatch.GetTimestamp();
        int sent = 0, answered = 0;
        uint id = 0;
        while (answered < n)
        {
            while (sent < n && (sent - answered) / Batch < InFlight)
            {
                int k = Math.Min(Batch, n - sent);
                await c.SendRawTasksAsync(++id, one, k);
                sent += k;
            }
            answered += await c.ExpectTasksSubmittedAsync();
        }
        // Every task submitted has ended once the standing run has none pending.
        while (true)
        {
            using var doc = JsonDocument.Parse(await http.GetStringAsync("status"));
            if (doc.RootElement.GetProperty("standing_run").GetProperty("pending").GetInt32() == 0) break;
            await Task.Delay(1);
        }
        return (n, Stopwatch.GetElapsedTime(t0));
    }

    /// <summary>
    /// A worker: every lease answered at once with its arguments as the output. It walks each
    /// leases frame with a MessagePack reader and writes the results frame with a writer (the
    /// arguments copied as they came), making no objects per lease — as a worker written for speed
    /// in any language would — so that what the figure measures is the service.
    /// </summary>
    private static async Task ServeAsync(Client worker, CancellationToken ct)
    {
        var results = new System.Buffers.ArrayBufferWriter<byte>(1 << 16);
        while (!ct.IsCancellationRequested)
        {
            var payload = await worker.ReadPayloadAsync();
            if (payload is null) return;
            results.ResetWrittenCount();
            results.Advance(4);                   // the frame's length, written once the message is
            if (!AnswerLeases(payload, results)) continue;
            var frame = System.Runtime.InteropServices.MemoryMarshal.AsMemory(results.WrittenMemory);
            BinaryPrimitives.WriteUInt32BigEndian(frame.Span, (uint)(frame.Length - 4));
            await worker.WriteFrameAsync(frame);
        }
    }

    /// <summary>A results message answering every lease of a leases message (false: it is another message).</summary>
    private static bool AnswerLeases(byte[] payload, System.Buffers.ArrayBufferWriter<byte> into)
    {
        var r = new MessagePackReader(payload);
        r.ReadArrayHeader();
        if (r.ReadInt32() != Leases) return false;
        r.ReadUInt32();
        r.ReadArrayHeader();                  // body: [leases]
        int n = r.ReadArrayHeader();
        var w = new MessagePackWriter(into);
        w.WriteArrayHeader(3);
        w.Write(Results);
        w.Write(0u);
        w.WriteArrayHeader(1);
        w.WriteArrayHeader(n);
        for (int i = 0; i < n; i++)
        {
            r.ReadArrayHeader();              // [lease_id, task_id, handler, args, attempt]
            long lease = r.ReadInt64();
            r.Skip();
            r.Skip();
            var args = r.ReadRaw();
            r.Skip();
            w.WriteArrayHeader(4);
            w.Write(lease);
            w.Write(true);
            w.WriteRaw(args);
            w.WriteNil();
        }
        w.Flush();
        return true;
    }

    private static double Percentile(List<double> xs, double p)
    {
        var s = xs.Order().ToList();
        return s[Math.Min(s.Count - 1, (int)Math.Ceiling(p / 100 * s.Count) - 1)];
    }

    /// <summary>A client of the socket protocol: frames of a 4-byte big-endian length and a MessagePack [type, request_id, body].</summary>
    private sealed class Client : IDisposable
    {
        private readonly TcpClient _tcp = new() { NoDelay = true };
        private NetworkStream _stream = null!;
        private readonly SemaphoreSlim _writing = new(1, 1);

        public static async Task<Client> ConnectAsync(IPEndPoint at)
        {
            var c = new Client();
            await c._tcp.ConnectAsync(at);
            c._stream = c._tcp.GetStream();
            await c.SendAsync(Hello, 0, 1, null, "bench");
            var welcome = await c.ReadAsync();
            if (welcome?.Type != 2) throw new InvalidOperationException("no welcome");
            return c;
        }

        public Task SendAsync(int type, uint id, params object?[] body) => WriteAsync(MessagePackSerializer.Serialize(new object[] { type, id, body }));

        /// <summary>submit_tasks with <paramref name="count"/> copies of one task map (written once, as raw MessagePack).</summary>
        public Task SendRawTasksAsync(uint id, byte[] task, int count)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(16 + task.Length * count);
            var w = new MessagePackWriter(buffer);
            w.WriteArrayHeader(3);
            w.Write(SubmitTasks);
            w.Write(id);
            w.WriteArrayHeader(1);
            w.WriteArrayHeader(count);
            for (int i = 0; i < count; i++) w.WriteRaw(task);
            w.Flush();
            return WriteAsync(buffer.WrittenSpan.ToArray());
        }

        /// <summary>Writes a whole frame (its length included).</summary>
        public async Task WriteFrameAsync(ReadOnlyMemory<byte> frame)
        {
            await _writing.WaitAsync();
            try { await _stream.WriteAsync(frame); }
            finally { _writing.Release(); }
        }

        /// <summary>The next frame's payload, or null once the connection ended.</summary>
        public async Task<byte[]?> ReadPayloadAsync()
        {
            var header = new byte[4];
            try
            {
                await _stream.ReadExactlyAsync(header);
                var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
                await _stream.ReadExactlyAsync(payload);
                return payload;
            }
            catch (Exception ex) when (ex is EndOfStreamException or IOException or ObjectDisposedException) { return null; }
        }

        private async Task WriteAsync(byte[] payload)
        {
            var frame = new byte[4 + payload.Length];
            BinaryPrimitives.WriteUInt32BigEndian(frame, (uint)payload.Length);
            payload.CopyTo(frame, 4);
            await _writing.WaitAsync();
            try { await _stream.WriteAsync(frame); }
            finally { _writing.Release(); }
        }

        public async Task<(int Type, uint Id, object?[] Body)?> ReadAsync()
        {
            var header = new byte[4];
            try { await _stream.ReadExactlyAsync(header); }
            catch (Exception ex) when (ex is EndOfStreamException or IOException or ObjectDisposedException) { return null; }
            var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
            await _stream.ReadExactlyAsync(payload);
            var m = MessagePackSerializer.Deserialize<object?[]>(payload);
            return (Convert.ToInt32(m[0]), Convert.ToUInt32(m[1]), (object?[])m[2]!);
        }

        /// <summary>A tasks_submitted answer, walked without making objects: the number of tasks taken (a refused one is an error).</summary>
        public async Task<int> ExpectTasksSubmittedAsync()
        {
            var header = new byte[4];
            await _stream.ReadExactlyAsync(header);
            var payload = new byte[BinaryPrimitives.ReadUInt32BigEndian(header)];
            await _stream.ReadExactlyAsync(payload);
            return CountTaken(payload);
        }

        private static int CountTaken(byte[] payload)
        {
            var r = new MessagePackReader(payload);
            r.ReadArrayHeader();
            int type = r.ReadInt32();
            r.ReadUInt32();
            if (type != TasksSubmitted)
                throw new InvalidOperationException($"expected tasks_submitted, got message {type}: {MessagePackSerializer.ConvertToJson(payload)}");
            r.ReadArrayHeader();
            int n = r.ReadArrayHeader();
            for (int i = 0; i < n; i++)
            {
                if (r.ReadArrayHeader() != 2) throw new InvalidOperationException($"a task was refused: {MessagePackSerializer.ConvertToJson(payload)}");
                r.Skip();
                r.Skip();
            }
            return n;
        }

        public async Task<(int Type, uint Id, object?[] Body)> ExpectAsync(int type)
        {
            var m = await ReadAsync() ?? throw new InvalidOperationException("the service closed the connection");
            if (m.Type == Error) throw new InvalidOperationException($"service error: {string.Join(", ", m.Body)}");
            if (m.Type != type) throw new InvalidOperationException($"expected message {type}, got {m.Type}");
            return m;
        }

        public void Dispose() => _tcp.Dispose();
    }
}
