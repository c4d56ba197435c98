namespace TaskMesh.Engine.Handlers;

/// <summary>
/// Parsed arguments that name files the task reads (a circuit file, say). What they read is part
/// of what the task computes: the result cache keys a task by the files' content as well as its
/// arguments' text, and resuming a run refuses when a file changed since (the stored outputs were
/// made from the old content). A handler whose validator reads files returns parsed arguments
/// that implement this.
/// </summary>
public interface IReadsFiles
{
    /// <summary>Each file read at validation: its full path and the SHA-256 (lower-case hex) of the bytes read.</summary>
    IReadOnlyList<FileDigest> Files { get; }
}

/// <summary>A file a task reads and the SHA-256 of its content as it was read.</summary>
/// <param name="Path">The file's full path.</param>
/// <param name="Sha256">Lower-case hex SHA-256 of the bytes read.</param>
public sealed record FileDigest(string Path, string Sha256)
{
    /// <summary>The digest of <paramref name="bytes"/> read from <paramref name="path"/>.</summary>
    public static FileDigest Of(string path, ReadOnlySpan<byte> bytes) => new(path, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)));
}
