using System.Buffers;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Http;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Server;

/// <summary>
/// A run's events as Server-Sent Events (<c>GET /api/runs/{id}/events</c>): an event per task
/// event (<c>released</c>, <c>routed</c>, <c>started</c>, <c>succeeded</c>, <c>failed</c>,
/// <c>timed_out</c>, <c>retried</c>, <c>skipped</c>, <c>cancelled</c>, <c>escalated</c>) with a
/// JSON body, a comment every 15 s while nothing happens, and at the end <c>run_ended</c> with the
/// run as <c>GET /api/runs/{id}</c> shows it — or <c>overflow</c> when the reader fell
/// <see cref="EventHub.SubscriberCapacity"/> events behind and was cut off (it may reconnect and
/// read the run's state).
/// </summary>
internal static class ServerSentEvents
{
    private static readonly TimeSpan Heartbeat = TimeSpan.FromSeconds(15);

    public static async Task StreamAsync(HttpContext http, TaskMeshService service, string runId)
    {
        var hub = service.EventsOf(runId);   // 404 (ApiException) before anything is written when there is no such run
        var ct = http.RequestAborted;
        http.Response.StatusCode = StatusCodes.Status200OK;
        http.Response.ContentType = "text/event-stream";
        http.Response.Headers.CacheControl = "no-cache";
        http.Response.Headers["X-Accel-Buffering"] = "no";
        var body = http.Response.Body;
        if (hub is null)
        {
            await WriteEndAsync(body, service, runId, ct);
            return;
        }
        var subscription = hub.Subscribe();
        try
        {
            await body.WriteAsync(": subscribed\n\n"u8.ToArray(), ct);
            await body.FlushAsync(ct);
            var reader = subscription.Reader;
            long sequence = 0;
            var buffer = new ArrayBufferWriter<byte>(4096);
            while (!ct.IsCancellationRequested)
            {
                var more = reader.WaitToReadAsync(ct).AsTask();
                if (await Task.WhenAny(more, Task.Delay(Heartbeat, ct)) != more)
                {
                    await body.WriteAsync(": keep-alive\n\n"u8.ToArray(), ct);
                    await body.FlushAsync(ct);
                    continue;
                }
                if (!await more) break;
                buffer.Clear();
                while (buffer.WrittenCount < 64 * 1024 && reader.TryRead(out var e)) Write(buffer, e, ++sequence);
                await body.WriteAsync(buffer.WrittenMemory, ct);
                await body.FlushAsync(ct);
            }
            if (ct.IsCancellationRequested) return;
            if (subscription.Overflowed)
            {
                await body.WriteAsync(Encoding.UTF8.GetBytes(
                    $"event: overflow\ndata: {{\"detail\":\"this reader fell {EventHub.SubscriberCapacity} events behind and was cut off; read the run's state from /api/runs/{runId} and subscribe again\"}}\n\n"), ct);
                await body.FlushAsync(ct);
                return;
            }
            if (runId != service.Standing.RunId) await WriteEndAsync(body, service, runId, ct);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            // The client went away.
        }
        finally
        {
            hub.Unsubscribe(subscription);
        }
    }

    private static async Task WriteEndAsync(Stream body, TaskMeshService service, string runId, CancellationToken ct)
    {
        // The run's events end as it ends; its record follows within moments.
        var run = await service.WaitForRunAsync(runId, TimeSpan.FromSeconds(5), ct);
        var buffer = new ArrayBufferWriter<byte>(1024);
        buffer.Write("event: run_ended\ndata: "u8);
        using (var w = new Utf8JsonWriter(buffer)) run.Write(w);
        buffer.Write("\n\n"u8);
        await body.WriteAsync(buffer.WrittenMemory, ct);
        await body.FlushAsync(ct);
    }

    private static void Write(ArrayBufferWriter<byte> buffer, in RunEvent e, long sequence)
    {
        string kind = KindName(e.Kind);
        buffer.Write(Encoding.UTF8.GetBytes($"event: {kind}\nid: {sequence}\ndata: "));
        using (var w = new Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteString("kind", kind);
            w.WriteString("task", e.TaskId);
            w.WriteNumber("index", e.Task);
            if (e.Layer is not null) w.WriteString("layer", e.Layer);
            if (e.Attempt > 0) w.WriteNumber("attempt", e.Attempt);
            if (e.Message is not null) w.WriteString("message", e.Message);
            w.WriteString("at", e.Timestamp);
            w.WriteEndObject();
        }
        buffer.Write("\n\n"u8);
    }

    /// <summary>The event's name on the stream (JSON text is escaped, so no event body holds a blank line).</summary>
    public static string KindName(RunEventKind kind) => kind switch
    {
        RunEventKind.TimedOut => "timed_out",
        _ => kind.ToString().ToLowerInvariant(),
    };
}
