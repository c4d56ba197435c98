using System.Buffers;
using System.Buffers.Binary;

namespace TaskMesh.Server.Protocol;

/// <summary>A frame the socket protocol refuses: the connection is answered with an error and closed.</summary>
internal sealed class ProtocolException(string message) : Exception(message);

/// <summary>
/// The socket protocol's framing (docs/protocol.md): a 4-byte big-endian length N, then N bytes
/// holding one MessagePack value. N is checked against the cap before anything is allocated.
/// </summary>
internal static class Frames
{
    /// <summary>
    /// Reads one frame's payload into a buffer rented from the shared pool (return it with
    /// <see cref="ArrayPool{T}.Return"/>); null at a clean end of the stream before a frame.
    /// </summary>
    /// <exception cref="ProtocolException">A length of 0 or over <paramref name="maxBytes"/>, or the stream ended inside a frame.</exception>
    public static async Task<(byte[] Buffer, int Length)?> ReadAsync(Stream stream, int maxBytes, CancellationToken ct)
    {
        var header = new byte[4];
        int got = await ReadAtLeastAsync(stream, header, ct).ConfigureAwait(false);
        if (got == 0) return null;
        if (got < 4) throw new ProtocolException("the stream ended inside a frame's length");
        uint length = BinaryPrimitives.ReadUInt32BigEndian(header);
        if (length == 0) throw new ProtocolException("a frame of length 0");
        if (length > (uint)maxBytes) throw new ProtocolException($"a frame of {length:N0} bytes; the most this service takes is {maxBytes:N0}");
        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        try
        {
            if (await ReadAtLeastAsync(stream, buffer.AsMemory(0, (int)length), ct).ConfigureAwait(false) < length)
                throw new ProtocolException($"the stream ended inside a frame of {length:N0} bytes");
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        return (buffer, (int)length);
    }

    private static async Task<int> ReadAtLeastAsync(Stream stream, Memory<byte> into, CancellationToken ct)
    {
        int total = 0;
        while (total < into.Length)
        {
            int n = await stream.ReadAsync(into[total..], ct).ConfigureAwait(false);
            if (n == 0) break;
            total += n;
        }
        return total;
    }

    /// <summary>Writes a whole frame (its length first, as <see cref="Messages.Write"/> makes them) in one write.</summary>
    public static async Task WriteAsync(Stream stream, ReadOnlyMemory<byte> frame, CancellationToken ct)
    {
        if (frame.Length < 4 || BinaryPrimitives.ReadUInt32BigEndian(frame.Span) != (uint)(frame.Length - 4))
            throw new ArgumentException("not a whole frame: its first four bytes must be the length of the rest", nameof(frame));
        await stream.WriteAsync(frame, ct).ConfigureAwait(false);
    }
}
