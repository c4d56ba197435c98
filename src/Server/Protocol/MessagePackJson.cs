using System.Buffers;
using System.Text.Json;
using MessagePack;
using TaskMesh.Engine.Graph;

namespace TaskMesh.Server.Protocol;

/// <summary>
/// MessagePack values as the engine's JSON values and back, without a detour through JSON text:
/// a task's arguments as they arrive (a map) become a <see cref="JsonElement"/>, and go out to a
/// worker as a map again. What JSON has no plain form for (extension types, keys that are not
/// strings, NaN, nesting past <see cref="GraphLimits.MaxJsonDepth"/>) is declined, and the caller
/// takes the general path (MessagePack's own conversion), which names the problem.
/// </summary>
internal static class MessagePackJson
{
    [ThreadStatic] private static ArrayBufferWriter<byte>? t_buffer;
    [ThreadStatic] private static Utf8JsonWriter? t_writer;

    /// <summary>The value in <paramref name="raw"/> (one MessagePack value) as a standalone element; false when it is declined.</summary>
    public static bool TryToElement(ReadOnlySequence<byte> raw, out JsonElement element)
    {
        var (buffer, w) = Writer();
        var r = new MessagePackReader(raw);
        try
        {
            if (!TryWrite(ref r, w, 0) || !r.End)
            {
                element = default;
                return false;
            }
            w.Flush();
        }
        catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or ArgumentException or InvalidOperationException)
        {
            // Malformed MessagePack: the general path says what is wrong.
            element = default;
            return false;
        }
        var json = new Utf8JsonReader(buffer.WrittenSpan, new JsonReaderOptions { MaxDepth = GraphLimits.MaxJsonDepth + 1 });
        element = JsonElement.ParseValue(ref json);
        return true;
    }

    /// <summary>This thread's JSON buffer, emptied, and its writer reset onto it (a buffer grown past <see cref="MaxKeptBuffer"/> by a rare large value is replaced).</summary>
    private static (ArrayBufferWriter<byte> Buffer, Utf8JsonWriter Writer) Writer()
    {
        var buffer = t_buffer ??= new ArrayBufferWriter<byte>(256);
        buffer.ResetWrittenCount();
        if (buffer.Capacity > MaxKeptBuffer) t_buffer = buffer = new ArrayBufferWriter<byte>(256);
        var w = t_writer ??= new Utf8JsonWriter(buffer);
        w.Reset(buffer);
        return (buffer, w);
    }

    /// <summary>Past this, a thread's JSON buffer is dropped rather than kept for its next conversion.</summary>
    private const int MaxKeptBuffer = 1 << 20;

    /// <summary>Values up to this size (their MessagePack bytes) are converted together by <see cref="TryToElements"/>.</summary>
    public const int BatchedValueBytes = 1024;

    /// <summary>A document of <see cref="TryToElements"/> is closed once its JSON reaches this size, and the next begins.</summary>
    public const int DocumentBytes = 16 * 1024;

    /// <summary>
    /// Many values (each one MessagePack value of at most <see cref="BatchedValueBytes"/>) as
    /// elements of shared documents: one document, one copy of the bytes and one index for up to
    /// <see cref="DocumentBytes"/> of a frame's arguments or outputs, instead of one of each per value.
    /// A document lives while any of its elements is held: the size bound keeps what one held task
    /// pins to a few kilobytes more than its own value. False when any value is declined (the caller
    /// converts them one by one, and names the problem).
    /// </summary>
    public static bool TryToElements(ReadOnlySpan<ReadOnlyMemory<byte>> raws, Span<JsonElement> elements)
    {
        var (buffer, w) = Writer();
        int first = 0;
        while (first < raws.Length)
        {
            buffer.ResetWrittenCount();
            w.Reset(buffer);
            int next = first;
            try
            {
                w.WriteStartArray();
                while (next < raws.Length && (next == first || w.BytesPending + w.BytesCommitted < DocumentBytes))
                {
                    var r = new MessagePackReader(raws[next++]);
                    if (!TryWrite(ref r, w, 0) || !r.End) return false;
                }
                w.WriteEndArray();
                w.Flush();
            }
            catch (Exception ex) when (ex is MessagePackSerializationException or EndOfStreamException or ArgumentException or InvalidOperationException)
            {
                return false;
            }
            var json = new Utf8JsonReader(buffer.WrittenSpan, new JsonReaderOptions { MaxDepth = GraphLimits.MaxJsonDepth + 2 });
            var array = JsonElement.ParseValue(ref json);
            int i = first;
            foreach (var e in array.EnumerateArray()) elements[i++] = e;
            if (i != next) return false;
            first = next;
        }
        return true;
    }

    private static bool TryWrite(ref MessagePackReader r, Utf8JsonWriter w, int depth)
    {
        switch (r.NextMessagePackType)
        {
            case MessagePackType.Nil:
                r.ReadNil();
                w.WriteNullValue();
                return true;
            case MessagePackType.Boolean:
                w.WriteBooleanValue(r.ReadBoolean());
                return true;
            case MessagePackType.Integer:
                if (r.NextCode == MessagePackCode.UInt64) w.WriteNumberValue(r.ReadUInt64());
                else w.WriteNumberValue(r.ReadInt64());
                return true;
            case MessagePackType.Float:
                double d = r.ReadDouble();
                if (!double.IsFinite(d)) return false;
                w.WriteNumberValue(d);
                return true;
            case MessagePackType.String:
                if (!r.TryReadStringSpan(out var text)) w.WriteStringValue(r.ReadString());
                else w.WriteStringValue(text);
                return true;
            case MessagePackType.Array:
                if (depth >= GraphLimits.MaxJsonDepth) return false;
                int items = r.ReadArrayHeader();
                w.WriteStartArray();
                for (int i = 0; i < items; i++)
                    if (!TryWrite(ref r, w, depth + 1)) return false;
                w.WriteEndArray();
                return true;
            case MessagePackType.Map:
                if (depth >= GraphLimits.MaxJsonDepth) return false;
                int fields = r.ReadMapHeader();
                w.WriteStartObject();
                for (int i = 0; i < fields; i++)
                {
                    if (r.NextMessagePackType != MessagePackType.String) return false;
                    if (r.TryReadStringSpan(out var key)) w.WritePropertyName(key);
                    else w.WritePropertyName(r.ReadString()!);
                    if (!TryWrite(ref r, w, depth + 1)) return false;
                }
                w.WriteEndObject();
                return true;
            default:
                return false;   // binary, extensions: the general path
        }
    }

    /// <summary>Writes a JSON value as the MessagePack value of the same shape (objects as maps, integers as integers).</summary>
    public static void Write(ref MessagePackWriter w, JsonElement e)
    {
        switch (e.ValueKind)
        {
            case JsonValueKind.Object:
                int count = 0;
                foreach (var _ in e.EnumerateObject()) count++;
                w.WriteMapHeader(count);
                foreach (var p in e.EnumerateObject())
                {
                    w.Write(p.Name);
                    Write(ref w, p.Value);
                }
                break;
            case JsonValueKind.Array:
                w.WriteArrayHeader(e.GetArrayLength());
                foreach (var item in e.EnumerateArray()) Write(ref w, item);
                break;
            case JsonValueKind.String:
                w.Write(e.GetString());
                break;
            case JsonValueKind.Number:
                if (e.TryGetInt64(out long l)) w.Write(l);
                else if (e.TryGetUInt64(out ulong u)) w.Write(u);
                else w.Write(e.GetDouble());
                break;
            case JsonValueKind.True:
                w.Write(true);
                break;
            case JsonValueKind.False:
                w.Write(false);
                break;
            default:
                w.WriteNil();
                break;
        }
    }
}
