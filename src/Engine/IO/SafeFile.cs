using System.Runtime.InteropServices;

namespace TaskMesh.Engine.IO;

/// <summary>What a path names.</summary>
public enum FileKind
{
    Missing,
    Regular,
    Directory,
    /// <summary>A device, FIFO, socket or anything else that is neither a regular file nor a directory.</summary>
    Special,
}

/// <summary>A file TaskMesh refused to read or write; the message names the file and the reason.</summary>
public sealed class UnsafeFileException(string message) : IOException(message);

/// <summary>
/// Reading inputs and writing outputs without surprises: inputs must be regular files under a
/// size cap (never a device, a FIFO that blocks or a file that grows forever), read in bounded
/// chunks that observe cancellation; outputs are written beside their target and renamed over
/// it, and are refused when the target is a directory, a device or any other special file, or one
/// of the command's inputs.
/// </summary>
public static class SafeFile
{
    /// <summary>Largest graph file read: 1 GiB (a million-task graph is about 63 MB).</summary>
    public const long MaxGraphBytes = 1L << 30;

    /// <summary>Largest configuration file read: 1 MiB.</summary>
    public const long MaxConfigBytes = 1L << 20;

    /// <summary>Largest OpenQASM file read: 16 MiB.</summary>
    public const long MaxQasmBytes = 16L << 20;

    /// <summary>What <paramref name="path"/> names, following symbolic links.</summary>
    public static FileKind KindOf(string path)
    {
        if (OperatingSystem.IsWindows())
        {
            if (Directory.Exists(path)) return FileKind.Directory;
            return File.Exists(path) ? FileKind.Regular : FileKind.Missing;
        }
        return UnixKindOf(path);
    }

    private static unsafe FileKind UnixKindOf(string path)
    {
        // The runtime's own stat shim (the one FileStatus uses): its struct layout is the runtime's,
        // the same on every architecture. Mode sits after a 32-bit flags field.
        byte* status = stackalloc byte[256];
        if (SystemNativeStat(path, status) != 0)
        {
            // A link to nothing (File.Exists says yes: the link exists) is missing: nothing to read there.
            if (DanglingLinkTarget(path) is not null) return FileKind.Missing;
            return Directory.Exists(path) ? FileKind.Directory : File.Exists(path) ? FileKind.Regular : FileKind.Missing;
        }
        int type = *(int*)(status + 4) & 0xF000;
        return type switch
        {
            0x8000 => FileKind.Regular,
            0x4000 => FileKind.Directory,
            _ => FileKind.Special,
        };
    }

    /// <summary>Where <paramref name="path"/> points when it is a symbolic link to nothing (a missing file or folder), else null.</summary>
    public static string? DanglingLinkTarget(string path)
    {
        try
        {
            var info = new FileInfo(path);
            if (info.LinkTarget is not { } target) return null;
            var resolved = Path.IsPathRooted(target) ? target : Path.Combine(Path.GetDirectoryName(Path.GetFullPath(path))!, target);
            return File.Exists(resolved) || Directory.Exists(resolved) ? null : target;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return null;
        }
    }

    [DllImport("libSystem.Native", EntryPoint = "SystemNative_Stat")]
    private static extern unsafe int SystemNativeStat([MarshalAs(UnmanagedType.LPUTF8Str)] string path, byte* output);

    /// <summary>Reads a regular file of at most <paramref name="maxBytes"/>, in chunks that observe <paramref name="ct"/>.</summary>
    /// <param name="path">The file.</param>
    /// <param name="maxBytes">The size cap.</param>
    /// <param name="what">What the file is, for messages (e.g. <c>graph file</c>).</param>
    /// <param name="ct">Cancels the read between chunks.</param>
    /// <exception cref="UnsafeFileException">Missing, not a regular file, over the cap, or unreadable.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired.</exception>
    public static byte[] ReadInput(string path, long maxBytes, string what, CancellationToken ct = default)
    {
        switch (KindOf(path))
        {
            case FileKind.Missing: throw new UnsafeFileException($"{what} '{path}' does not exist");
            case FileKind.Directory: throw new UnsafeFileException($"{what} '{path}' is a directory, not a file");
            case FileKind.Special: throw new UnsafeFileException($"{what} '{path}' is not a regular file (a device, FIFO or socket is never read)");
        }
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan);
            long length = stream.Length;
            if (length > maxBytes) throw TooLarge(path, what, maxBytes);
            // The file may grow while it is read: read at most one byte past the cap.
            var buffer = new byte[(int)Math.Min(length + 1, maxBytes + 1)];
            int total = 0;
            while (true)
            {
                ct.ThrowIfCancellationRequested();
                if (total == buffer.Length)
                {
                    if (buffer.Length > maxBytes) throw TooLarge(path, what, maxBytes);
                    Array.Resize(ref buffer, (int)Math.Min((long)buffer.Length * 2, maxBytes + 1));
                }
                int n = stream.Read(buffer, total, Math.Min(buffer.Length - total, 1 << 20));
                if (n == 0) break;
                total += n;
            }
            if (total > maxBytes) throw TooLarge(path, what, maxBytes);
            return total == buffer.Length ? buffer : buffer[..total];
        }
        catch (Exception ex) when (ex is IOException and not UnsafeFileException or UnauthorizedAccessException)
        {
            throw new UnsafeFileException($"{what} '{path}' cannot be read: {ex.Message}");
        }
    }

    private static UnsafeFileException TooLarge(string path, string what, long maxBytes)
        => new($"{what} '{path}' is larger than the limit of {FormatBytes(maxBytes)}");

    internal static string FormatBytes(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.#} GiB" : bytes >= 1L << 20 ? $"{bytes / (double)(1L << 20):0.#} MiB" : $"{bytes / 1024.0:0.#} KiB";

    /// <summary>
    /// Why <paramref name="path"/> cannot receive an output, or null when it can: it must not be a
    /// directory, a special file or one of <paramref name="inputs"/> (compared after resolving
    /// links), and its folder must exist or be creatable (the nearest existing ancestor is a folder).
    /// </summary>
    public static string? CheckOutput(string path, IEnumerable<string?> inputs)
    {
        if (string.IsNullOrWhiteSpace(path)) return "the output path is empty";
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception ex) when (ex is ArgumentException or NotSupportedException or PathTooLongException) { return $"'{path}' is not a valid path: {ex.Message}"; }
        if (full.EndsWith(Path.DirectorySeparatorChar) || full.EndsWith(Path.AltDirectorySeparatorChar) || Path.GetFileName(full).Length == 0)
            return $"'{path}' names a directory, not a file";
        switch (KindOf(full))
        {
            case FileKind.Directory: return $"'{path}' is a directory, not a file";
            case FileKind.Special: return $"'{path}' is not a regular file; outputs never replace a device, FIFO or socket";
        }
        var real = RealPath(full);
        foreach (var input in inputs)
        {
            if (string.IsNullOrWhiteSpace(input)) continue;   // (an empty input path is its own command's error)
            string inputFull;
            try { inputFull = Path.GetFullPath(input); }
            catch (Exception ex) when (ex is ArgumentException or NotSupportedException or PathTooLongException) { continue; }
            if (string.Equals(RealPath(inputFull), real, StringComparison.Ordinal))
                return $"'{path}' is an input of this command; it would be overwritten";
        }
        var ancestor = Path.GetDirectoryName(full);
        while (ancestor is not null && KindOf(ancestor) == FileKind.Missing) ancestor = Path.GetDirectoryName(ancestor);
        if (ancestor is null || KindOf(ancestor) != FileKind.Directory)
            return $"the folder of '{path}' cannot be created: '{ancestor ?? "/"}' is not a directory";
        return null;
    }

    /// <summary>
    /// Writes <paramref name="path"/> through a temporary sibling and a rename, so readers never see
    /// half of it; the folder is created if needed.
    /// </summary>
    /// <exception cref="UnsafeFileException">The target is a directory or a special file (checked again just before the rename), or it cannot be written.</exception>
    public static void WriteAtomic(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        try
        {
            Directory.CreateDirectory(dir);
            using (var s = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write)) write(s);
            var kind = KindOf(full);
            if (kind is FileKind.Directory or FileKind.Special)
                throw new UnsafeFileException($"'{path}' is not a regular file; it was not replaced");
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception ex) when (ex is IOException and not UnsafeFileException or UnauthorizedAccessException)
        {
            throw new UnsafeFileException($"cannot write '{path}': {ex.Message}");
        }
        finally
        {
            if (File.Exists(tmp)) File.Delete(tmp);
        }
    }

    /// <summary>
    /// <paramref name="fullPath"/> with every symbolic link in its existing part resolved (the part
    /// that does not exist yet is appended as written).
    /// </summary>
    public static string RealPath(string fullPath)
    {
        var path = Path.GetFullPath(fullPath);
        for (int hops = 0; hops < 64; hops++)
        {
            var root = Path.GetPathRoot(path) ?? "/";
            var parts = path[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries);
            string current = root;
            bool resolved = false;
            for (int i = 0; i < parts.Length; i++)
            {
                var next = Path.Combine(current, parts[i]);
                FileSystemInfo info = new FileInfo(next);
                if (!info.Exists && !Directory.Exists(next))
                {
                    // Nothing below exists: append the rest as written.
                    return Path.Combine([current, .. parts[i..]]);
                }
                if (info.LinkTarget is not null)
                {
                    var target = info.ResolveLinkTarget(returnFinalTarget: true);
                    var targetPath = target?.FullName ?? Path.GetFullPath(info.LinkTarget, current);
                    // Resolve again from the start: the target's own folders may be links.
                    path = Path.Combine([targetPath, .. parts[(i + 1)..]]);
                    resolved = true;
                    break;
                }
                current = next;
            }
            if (!resolved) return current;
        }
        return path;
    }

    /// <summary>
    /// Resolves <paramref name="relative"/> against <paramref name="folder"/> and checks, links
    /// resolved, that it stays inside the folder. Returns the full path, or null with a reason.
    /// </summary>
    public static string? ResolveInside(string folder, string relative, out string? problem)
    {
        problem = null;
        if (Path.IsPathRooted(relative) || relative.Split('/', '\\').Contains(".."))
        {
            problem = $"must stay inside the graph's folder (relative, no '..'), got \"{relative}\"";
            return null;
        }
        var full = Path.GetFullPath(Path.Combine(folder, relative));
        var realFolder = RealPath(Path.GetFullPath(folder)).TrimEnd(Path.DirectorySeparatorChar) + Path.DirectorySeparatorChar;
        var real = RealPath(full);
        if (!real.StartsWith(realFolder, StringComparison.Ordinal))
        {
            problem = $"must stay inside the graph's folder, but \"{relative}\" leads to '{real}' through a symbolic link";
            return null;
        }
        return full;
    }
}
