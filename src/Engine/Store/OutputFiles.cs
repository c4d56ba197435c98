using System.Security.Cryptography;
using System.Text;
using TaskMesh.Engine.IO;

namespace TaskMesh.Engine.Store;

/// <summary>
/// Outputs too large for a row of the store (over <see cref="InlineLimit"/> characters of JSON, up
/// to <see cref="MaxBytes"/>): each in a file in the folder beside the store
/// (<c>STORE.files/outputs/RUN/TASK.json</c> for a resumable run's data-edge outputs,
/// <c>STORE.files/cache/KEY.json</c> for the result cache), named by its row. The writer thread
/// writes the file (through a temporary file, flushed to disk, renamed into place) before the row
/// that names it, in the same batch; a file that is missing when it is read is treated as if
/// nothing had been kept (the task runs again; the cache misses).
/// </summary>
internal static class OutputFiles
{
    /// <summary>Largest output kept in its row, in characters of JSON.</summary>
    public const int InlineLimit = 1 << 20;

    /// <summary>Largest output kept at all, in bytes of JSON; a larger one is not kept.</summary>
    public const int MaxBytes = 256 << 20;

    /// <summary>The folder of large outputs beside the store at <paramref name="storePath"/>.</summary>
    public static string FolderOf(string storePath) => storePath + ".files";

    /// <summary>The file (relative to the folder) of a run's task output.</summary>
    public static string OutputName(string runId, int task) => $"outputs/{Safe(runId)}/{task}.json";

    /// <summary>The file (relative to the folder) of a cache entry.</summary>
    public static string CacheName(string key) => $"cache/{Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(key)))}.json";

    /// <summary>The cache entries' folder (cleared with the cache).</summary>
    public static string CacheFolder(string folder) => Path.Combine(folder, "cache");

    // Run ids are the engine's hex ids; anything else is hashed rather than trusted as a path part.
    private static string Safe(string part)
        => part.Length is > 0 and <= 64 && part.All(char.IsAsciiLetterOrDigit) ? part : Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(part)));

    /// <summary>Writes <paramref name="json"/> as <paramref name="name"/> in <paramref name="folder"/>, on disk before this returns.</summary>
    /// <exception cref="IOException">It cannot be written (full disk, permissions, a folder in the way).</exception>
    public static void Write(string folder, string name, string json)
        => SafeFile.WriteAtomic(Path.Combine(folder, name), s =>
        {
            var bytes = Encoding.UTF8.GetBytes(json);
            s.Write(bytes);
            ((FileStream)s).Flush(flushToDisk: true);
        });

    /// <summary>The JSON kept as <paramref name="name"/>, or null when the file is gone or unreadable.</summary>
    public static string? Read(string folder, string name)
    {
        try
        {
            return Encoding.UTF8.GetString(SafeFile.ReadInput(Path.Combine(folder, name), MaxBytes, "stored output"));
        }
        catch (IOException)
        {
            return null;
        }
    }
}
