using System.Data;
using System.Data.Common;
using System.Text;
using Microsoft.Data.Sqlite;
using TaskMesh.Engine.IO;

namespace TaskMesh.Engine.Store;

/// <summary>
/// The run store: one SQLite file (WAL) — or a PostgreSQL database (<c>postgresql://…</c>, see
/// <see cref="PostgresUrl"/>), with the same schema and migrations — that keeps every run, the tasks
/// worth keeping, escalations, audit records and daily layer figures. Opening checks the store
/// before writing anything to it: a file that is not SQLite, a database of another application, a
/// store written by a newer TaskMesh or a corrupt one is refused with a <see cref="StoreException"/>
/// and left as it is. A store of an older schema is migrated in one transaction.
/// <para>
/// Writes go through one writer (<see cref="StoreWriter"/>) that batches them in transactions off
/// the scheduler's threads; runs record themselves with a <see cref="RunRecorder"/>.
/// </para>
/// </summary>
public sealed partial class RunStore : IDisposable
{
    // One read connection serves every thread (a service reads while runs record, the cache is
    // read from scheduler threads): every read takes it under lock (_read), one at a time.
    private readonly DbConnection _read;

    // The file the store's folders are named after: the store file itself, or for a PostgreSQL
    // store a name under TaskMesh's home folder on this machine (see LocalNameOf).
    private readonly string _local;

    private RunStore(string path, DbConnection read, StoreWriter? writer, string local, bool postgres)
    {
        Path = path;
        _read = read;
        Writer = writer;
        _local = local;
        IsPostgres = postgres;
    }

    /// <summary>The store file, or the URL of its PostgreSQL database (without its password).</summary>
    public string Path { get; }

    /// <summary>Whether the store is a PostgreSQL database rather than an SQLite file.</summary>
    public bool IsPostgres { get; }

    /// <summary>The writer (null for a store opened read-only).</summary>
    internal StoreWriter? Writer { get; }

    /// <summary>Whether the store was opened for reading only (nothing can be recorded in it).</summary>
    public bool IsReadOnly => Writer is null;

    /// <summary>Records waiting for the writer (for the metrics).</summary>
    public int QueueDepth => Writer?.QueueDepth ?? 0;

    /// <summary>Raised (on the writer's thread) after each committed batch of writes: the transaction's duration and its number of writes.</summary>
    public event Action<TimeSpan, int>? BatchCommitted
    {
        add { if (Writer is { } w) w.Committed += value; }
        remove { if (Writer is { } w) w.Committed -= value; }
    }

    /// <summary>Raised (on the writer's thread) when the writer replaced a lost connection to a PostgreSQL store.</summary>
    internal event Action? WriterReconnected
    {
        add { if (Writer is { } w) w.Reconnected += value; }
        remove { if (Writer is { } w) w.Reconnected -= value; }
    }

    /// <summary>
    /// The default store: <c>$TASKMESH_HOME/taskmesh.db</c> when <c>TASKMESH_HOME</c> is set, else
    /// <c>~/.taskmesh/taskmesh.db</c>.
    /// </summary>
    public static string DefaultPath()
    {
        var home = Environment.GetEnvironmentVariable("TASKMESH_HOME");
        if (string.IsNullOrEmpty(home))
            home = System.IO.Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".taskmesh");
        return System.IO.Path.Combine(home, "taskmesh.db");
    }

    /// <summary>Opens (creating and migrating when needed) the store at <paramref name="path"/>.</summary>
    /// <param name="path">The store file, or a <c>postgresql://user:password@host:port/database</c> URL.</param>
    /// <param name="readOnly">Open for reading only: a missing store is an error, nothing is migrated or written.</param>
    /// <exception cref="StoreException">The file is not a usable TaskMesh store; it was not changed.</exception>
    public static RunStore Open(string path, bool readOnly = false) => Open(path, readOnly, DefaultLockTimeout, maxPages: null);

    /// <summary>Opens the store, waiting at most <paramref name="lockTimeout"/> whenever another process holds its lock.</summary>
    /// <param name="path">The store file.</param>
    /// <param name="readOnly">Open for reading only.</param>
    /// <param name="lockTimeout">How long a read or a batch of writes waits (retrying with back-off) while another process holds the store's lock, before the store fails (<c>[store] lock_timeout_seconds</c>).</param>
    /// <exception cref="StoreException">The file is not a usable TaskMesh store; it was not changed.</exception>
    public static RunStore Open(string path, bool readOnly, TimeSpan lockTimeout) => Open(path, readOnly, lockTimeout, maxPages: null);

    /// <summary>How long the store waits for another process's lock by default: five minutes (a backup or a long report holding it for a while does not fail a run).</summary>
    public static readonly TimeSpan DefaultLockTimeout = TimeSpan.FromMinutes(5);

    internal static RunStore Open(string path, bool readOnly, long? maxPages) => Open(path, readOnly, DefaultLockTimeout, maxPages);

    /// <param name="path">The store file.</param>
    /// <param name="readOnly">Open for reading only.</param>
    /// <param name="lockTimeout">See <see cref="Open(string, bool, TimeSpan)"/>.</param>
    /// <param name="maxPages">A cap on the file's pages for the writer (tests: a full disk, without filling one).</param>
    internal static RunStore Open(string path, bool readOnly, TimeSpan lockTimeout, long? maxPages)
    {
        if (string.IsNullOrEmpty(path)) throw new StoreException("the store path is empty: give --store FILE or [store] path a file name");
        ArgumentOutOfRangeException.ThrowIfLessThan(lockTimeout, TimeSpan.Zero);
        if (PostgresUrl.Names(path)) return OpenPostgres(path, readOnly, lockTimeout);
        var full = System.IO.Path.GetFullPath(path);
        var kind = SafeFile.KindOf(full);
        if (kind == FileKind.Directory) throw new StoreException($"store '{path}' is a directory, not a file");
        if (kind == FileKind.Special) throw new StoreException($"store '{path}' is not a regular file");
        if (kind == FileKind.Missing && SafeFile.DanglingLinkTarget(full) is { } target)
            throw new StoreException($"store '{path}' is a symbolic link to '{target}', which does not exist");
        if (kind == FileKind.Missing)
        {
            if (readOnly) throw new StoreException($"there is no store at '{path}' (nothing has been run with it yet)");
            var dir = System.IO.Path.GetDirectoryName(full)!;
            try { Directory.CreateDirectory(dir); }
            catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
            {
                throw new StoreException($"cannot create the store's folder '{dir}': {ex.Message}");
            }
        }
        else
        {
            Inspect(full, path);
            // SQLite falls back to reading a file it may not write (a read-only file, folder or
            // mount) and fails only at the first write, mid-run: refuse such a store now.
            if (!readOnly && WhyNotWritable(full) is { Length: > 0 } why) throw new StoreException($"store '{path}' cannot be written{why}");
        }

        SqliteConnection? read = null;
        StoreWriter? writer = null;
        try
        {
            if (!readOnly)
            {
                var write = Connect(full, SqliteOpenMode.ReadWriteCreate, lockTimeout);
                Migrate(write, path);
                if (maxPages is long pages) Execute(write, $"PRAGMA max_page_count = {pages};");
                writer = new StoreWriter(write, path, OutputFiles.FolderOf(path), ex => Describe(path, (SqliteException)ex));
            }
            read = Connect(full, SqliteOpenMode.ReadOnly, lockTimeout);
            return new RunStore(path, read, writer, System.IO.Path.GetFullPath(path), postgres: false);
        }
        catch (SqliteException ex)
        {
            read?.Dispose();
            writer?.Dispose();
            throw new StoreException(Describe(path, ex), ex);
        }
    }

    private static SqliteConnection Connect(string full, SqliteOpenMode mode, TimeSpan? lockTimeout = null, bool immutable = false)
    {
        var wait = lockTimeout ?? DefaultLockTimeout;
        var c = new SqliteConnection(new SqliteConnectionStringBuilder
        {
            // An immutable store is read as a plain file: no WAL index, no locks (see below).
            DataSource = immutable ? "file:" + Uri.EscapeDataString(full).Replace("%2F", "/") + "?immutable=1" : full,
            Mode = mode,
            Pooling = false,
            // While another process holds the lock, a statement waits in SQLite's busy handler
            // (busy_timeout, below) and Microsoft.Data.Sqlite retries it until this many seconds
            // have passed: together, a bounded wait with back-off, then SQLITE_BUSY.
            // (0 would mean no bound at all: a wait is at least a second.)
            DefaultTimeout = Math.Max(1, (int)Math.Min(int.MaxValue / 1000, Math.Ceiling(wait.TotalSeconds))),
        }.ToString());
        try
        {
            c.Open();
            // SQLite opens lazily: a first read finds out whether the store can be read this way.
            if (mode == SqliteOpenMode.ReadOnly) Scalar(c, "SELECT count(*) FROM sqlite_schema;");
        }
        catch (SqliteException ex) when (ex.SqliteErrorCode == 14 && mode == SqliteOpenMode.ReadOnly && !immutable
            && !File.Exists(full + "-shm") && !(File.Exists(full + "-wal") && new FileInfo(full + "-wal").Length > 0))
        {
            // Reading a WAL store needs its index file beside it, which SQLite cannot create in a
            // read-only folder. With no index and no WAL content left (the last writer closed
            // cleanly), the file alone is the whole store: read it as immutable.
            c.Dispose();
            return Connect(full, mode, lockTimeout, immutable: true);
        }
        Execute(c, FormattableString.Invariant($"PRAGMA busy_timeout = {(long)Math.Min(int.MaxValue, wait.TotalMilliseconds)};"));
        if (mode != SqliteOpenMode.ReadOnly)
        {
            // WAL: readers never block the writer. NORMAL: a committed batch is in the WAL file before
            // the commit returns, so it survives the process being killed (SIGKILL included); only a
            // power cut or kernel crash may lose the batches since the last checkpoint of the WAL —
            // never the file's consistency.
            Execute(c, "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;");
        }
        return c;
    }

    /// <summary>Whether <paramref name="path"/> is an existing TaskMesh store (an SQLite file marked with TaskMesh's application id); read without locking or changing it.</summary>
    public static bool IsStoreFile(string path)
    {
        try
        {
            if (SafeFile.KindOf(System.IO.Path.GetFullPath(path)) != FileKind.Regular) return false;
            using var f = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
            Span<byte> header = stackalloc byte[72];
            if (f.ReadAtLeast(header, header.Length, throwOnEndOfStream: false) < header.Length) return false;
            return header[..16].SequenceEqual("SQLite format 3\0"u8)
                && System.Buffers.Binary.BinaryPrimitives.ReadInt32BigEndian(header[68..]) == StoreSchema.ApplicationId;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentException or NotSupportedException)
        {
            return false;
        }
    }

    /// <summary>Reads what an existing file is, without writing to it; refuses anything but a TaskMesh store this build can use.</summary>
    private static void Inspect(string full, string path)
    {
        long length = new FileInfo(full).Length;
        if (length == 0) return;   // an empty file becomes a new store
        var header = new byte[16];
        using (var f = new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.ReadWrite))
        {
            if (f.Read(header, 0, header.Length) < header.Length || !header.AsSpan().SequenceEqual("SQLite format 3\0"u8))
                throw new StoreException($"'{path}' is not a TaskMesh store (not an SQLite database); it was left as it is");
        }
        try
        {
            using var c = Connect(full, SqliteOpenMode.ReadOnly);
            long appId = Scalar(c, "PRAGMA application_id;");
            long version = Scalar(c, "PRAGMA user_version;");
            long tables = Scalar(c, "SELECT count(*) FROM sqlite_schema;");
            if (appId != StoreSchema.ApplicationId && !(appId == 0 && version == 0 && tables == 0))
                throw new StoreException($"'{path}' is an SQLite database of another application (application_id 0x{appId:X8}), not a TaskMesh store; it was left as it is");
            if (version > StoreSchema.CurrentVersion)
                throw new StoreException($"'{path}' was written by a newer TaskMesh (schema version {version}; this build reads up to {StoreSchema.CurrentVersion}); it was left as it is");
            var check = Convert.ToString(new SqliteCommand("PRAGMA quick_check;", c).ExecuteScalar());
            if (check != "ok")
                throw new StoreException($"store '{path}' is corrupt ({check}); it was left as it is");
        }
        catch (SqliteException ex)
        {
            throw new StoreException(Describe(path, ex) + "; it was left as it is", ex);
        }
    }

    private static void Migrate(SqliteConnection c, string path)
    {
        using var tx = c.BeginTransaction(deferred: false);
        long version = Scalar(c, "PRAGMA user_version;", tx);
        if (version > StoreSchema.CurrentVersion)
            throw new StoreException($"'{path}' was written by a newer TaskMesh (schema version {version}; this build reads up to {StoreSchema.CurrentVersion})");
        for (long v = version; v < StoreSchema.CurrentVersion; v++)
            Execute(c, StoreSchema.Migrations[v], tx);
        if (version < StoreSchema.CurrentVersion)
        {
            Execute(c, $"PRAGMA application_id = {StoreSchema.ApplicationId};", tx);
            Execute(c, $"PRAGMA user_version = {StoreSchema.CurrentVersion};", tx);
        }
        tx.Commit();
    }

    internal static string Describe(string path, SqliteException ex) => ex.SqliteErrorCode switch
    {
        5 or 6 => $"store '{path}' stayed locked by another process longer than the lock timeout ([store] lock_timeout_seconds): {ex.Message}",   // SQLITE_BUSY, SQLITE_LOCKED
        8 => $"store '{path}' is read-only: {ex.Message}",                            // SQLITE_READONLY
        11 or 26 => $"store '{path}' is corrupt or not a database: {ex.Message}",    // SQLITE_CORRUPT, SQLITE_NOTADB
        13 => $"the disk holding store '{path}' is full: {ex.Message}",              // SQLITE_FULL
        14 => $"store '{path}' cannot be opened{WhyNotWritable(path)}: {ex.Message}",   // SQLITE_CANTOPEN
        _ => $"store '{path}': {ex.Message}",
    };

    // Why the store file or its folder (where SQLite keeps the WAL and its index) cannot be
    // written, or "" when both can; tried by opening the file for writing and creating (and at
    // once deleting) a file beside it — nothing of the store changes.
    private static string WhyNotWritable(string path)
    {
        try
        {
            if (!File.Exists(path)) return "";
            using (new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.ReadWrite)) { }
            var probe = System.IO.Path.Combine(System.IO.Path.GetDirectoryName(System.IO.Path.GetFullPath(path))!, $".taskmesh-probe-{Environment.ProcessId}-{Guid.NewGuid():N}");
            using (new FileStream(probe, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1, FileOptions.DeleteOnClose)) { }
            return "";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return $" (the file or its folder is read-only: {e.Message})";
        }
    }

    internal static void Execute(DbConnection c, string sql, DbTransaction? tx = null) => StoreSql.Execute(c, sql, tx);

    internal static long Scalar(DbConnection c, string sql, DbTransaction? tx = null) => StoreSql.Scalar(c, sql, tx);

    // The read connection, opened again when it broke (a PostgreSQL server restarted, a network
    // blip): the next read works once the database is back. Called under lock (_read).
    private DbConnection Reader()
    {
        if (_read.State is not ConnectionState.Open)
        {
            try { _read.Close(); } catch (DbException) { /* it is being replaced */ }
            try { _read.Open(); }
            catch (DbException ex) { throw new StoreException($"store '{Path}' cannot be read: {ex.Message}", ex); }
        }
        return _read;
    }

    /// <summary>
    /// Runs a read on the read connection, one at a time (under lock (_read)). On PostgreSQL a read
    /// that failed because its session was lost — the server restarted, the connection was cut —
    /// runs once more on a new session: reads change nothing, so running one again is safe, and a
    /// caller (an API request, a dashboard page) does not see the loss. Without this the read in
    /// the first two seconds after a loss failed (the reader's keepalive had not noticed it yet).
    /// A server still down fails the second try with the reason.
    /// </summary>
    private T Read<T>(Func<T> read)
    {
        lock (_read)
        {
            try
            {
                return read();
            }
            catch (DbException) when (IsPostgres && _read.State is not ConnectionState.Open)
            {
                Interlocked.Increment(ref _readerReconnects);
                return read();   // Reader() opens a new session first
            }
        }
    }

    private long _readerReconnects;

    /// <summary>Reads that ran again on a new session after theirs was lost (tests look).</summary>
    internal long ReaderReconnects => Interlocked.Read(ref _readerReconnects);

    /// <summary>Waits until every record queued so far is committed.</summary>
    /// <exception cref="StoreException">The writer failed (the message says why).</exception>
    public Task FlushAsync(CancellationToken ct = default) => Writer?.FlushAsync(ct) ?? Task.CompletedTask;

    /// <summary>The newest runs first.</summary>
    /// <param name="limit">Most runs to list.</param>
    /// <param name="status">Only runs with this status (<c>succeeded</c>, <c>failed</c>, <c>cancelled</c>, <c>running</c>, <c>open</c> (an open run still taking tasks), <c>interrupted</c>), or null.</param>
    /// <remarks>A run whose row still says <c>running</c> but whose owner is gone (<see cref="RunOwner"/>) is listed as <c>interrupted</c>.</remarks>
    public IReadOnlyList<StoredRun> ListRuns(int limit = 20, string? status = null) => ListRuns(limit, status, 0);

    /// <summary>The newest runs first, past the first <paramref name="offset"/> (a page of a longer list).</summary>
    /// <param name="limit">Most runs to list.</param>
    /// <param name="status">Only runs with this status (as <see cref="ListRuns(int, string?)"/>), or null.</param>
    /// <param name="offset">Runs to pass over first.</param>
    public IReadOnlyList<StoredRun> ListRuns(int limit, string? status, int offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        // "running" and "interrupted" rows are told apart by their owner, so both are read for either.
        bool byOwner = status is "running" or "interrupted" or "open";
        var list = ReadRuns("(CAST(@status AS TEXT) IS NULL OR r.status = @status OR (@byOwner AND r.status IN ('running', 'interrupted')))", cmd =>
        {
            cmd.Parameters.AddWithValue("@status", (object?)status ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@byOwner", byOwner);
        }, byOwner ? int.MaxValue : (int)Math.Min(int.MaxValue, (long)limit + offset));
        return (byOwner ? list.Where(r => r.Status == status) : list).Skip(offset).Take(limit).ToList();
    }

    /// <summary>Why the store's writer stopped (a disk full, a file made read-only, …), or null while it writes.</summary>
    public string? WriteFault => Writer?.Fault?.Message;

    /// <summary>One stored run (see <see cref="ListRuns(int, string?)"/> for its status).</summary>
    /// <exception cref="StoreException">The store holds no such run.</exception>
    public StoredRun GetRun(string runId)
        => ReadRuns("r.run_id = @run", cmd => cmd.Parameters.AddWithValue("@run", runId), 1) is [var run] ? run
            : throw new StoreException($"store '{Path}' holds no run '{Graph.GraphLimits.Printable(runId)}'");

    /// <summary>
    /// The process that owns <paramref name="runId"/> while it is still going, or null when the run
    /// ended or its owner is gone: a run that a live process owns must not be resumed or escalated by
    /// another. Also a live run that resumes it (two processes resuming one run would run its tasks twice).
    /// </summary>
    public (RunOwner Owner, string RunId)? LiveOwnerOf(string runId)
    {
        var run = GetRun(runId);
        if (run.Status is "running" or "open" && run.Owner is { } owner) return (owner, run.RunId);
        foreach (var resumer in ReadRuns("r.resumed_from = @run AND r.status = 'running'", cmd => cmd.Parameters.AddWithValue("@run", runId), int.MaxValue))
            if (resumer.Status == "running" && resumer.Owner is { } o) return (o, resumer.RunId);
        return null;
    }

    private List<StoredRun> ReadRuns(string where, Action<DbCommand> parameters, int limit)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = $"""
                SELECT r.run_id, r.graph_name, r.status, r.started_at, r.finished_at, r.total, r.succeeded, r.failed, r.timed_out,
                       r.skipped, r.cancelled, r.restored, r.cached, r.escalations, r.cost, r.wall_ms, r.critical_path_ms, r.graph_path, r.graph_hash, r.ready_order,
                       r.owner_host, r.owner_pid, r.owner_started, c.updated_at, r.inputs, r.kind
                FROM runs r LEFT JOIN run_checkpoints c ON c.run_id = r.run_id WHERE {where}
                ORDER BY r.started_at DESC, r.rowid DESC LIMIT @limit
                """;
            parameters(cmd);
            cmd.Parameters.AddWithValue("@limit", limit);
            var list = new List<StoredRun>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var inv = System.Globalization.CultureInfo.InvariantCulture;
                var startedAt = DateTimeOffset.Parse(r.GetString(3), inv);
                RunOwner? owner = r.IsDBNull(20) ? null : new RunOwner(r.GetString(20), r.GetInt32(21), r.IsDBNull(22) ? null : r.GetString(22));
                string stored = r.GetString(2);
                string status = stored;
                if (stored == "running")
                {
                    // Alive: the owner runs (this host), or its checkpoint is fresh (another host).
                    var heartbeat = r.IsDBNull(23) ? startedAt : DateTimeOffset.Parse(r.GetString(23), inv);
                    bool alive = owner?.IsAlive() ?? DateTimeOffset.UtcNow - heartbeat < RunOwner.StaleAfter;
                    if (!alive) status = "interrupted";
                    else if (!r.IsDBNull(25) && r.GetString(25) == OpenRunKind) status = "open";
                }
                list.Add(new StoredRun(r.GetString(0), r.GetString(1), status, startedAt,
                    r.IsDBNull(4) ? null : DateTimeOffset.Parse(r.GetString(4), inv),
                    new StoredTaskCounts(r.GetInt32(5), r.GetInt32(6), r.GetInt32(7), r.GetInt32(8), r.GetInt32(9), r.GetInt32(10), r.GetInt32(11), r.GetInt32(12)),
                    r.GetInt32(13), r.GetDouble(14), r.IsDBNull(15) ? null : r.GetDouble(15), r.IsDBNull(16) ? null : r.GetDouble(16),
                    r.IsDBNull(17) ? null : r.GetString(17), r.IsDBNull(18) ? null : r.GetString(18))
                {
                    ReadyOrder = r.IsDBNull(19) ? null : r.GetString(19),
                    Owner = owner,
                    Inputs = r.IsDBNull(24) ? null : r.GetString(24),
                });
            }
            return list;
        });
    }

    /// <summary>The task rows the store kept for a run, by task index (see <see cref="RunRecorder"/> for which are kept).</summary>
    public IReadOnlyList<StoredTask> TasksOf(string runId) => ReadTasks("run_id = @run", runId, null, int.MaxValue);

    /// <summary>
    /// One page of the task rows the store kept for a run, by task index: those of
    /// <paramref name="status"/> (every status when null) from the <paramref name="offset"/>th on, at
    /// most <paramref name="limit"/>, and how many match in all. The database counts and skips:
    /// a page of a run of millions of rows reads the page, not the run.
    /// </summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="limit"/> below 0 or <paramref name="offset"/> negative.</exception>
    public (int Total, IReadOnlyList<StoredTask> Tasks) TaskPage(string runId, string? status, int limit, int offset)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        ArgumentOutOfRangeException.ThrowIfNegative(offset);
        string where = status is null ? "run_id = @run" : "run_id = @run AND status = @status";
        return Read(() =>
        {
            int total;
            using (var count = Reader().CreateCommand())
            {
                count.CommandText = $"SELECT count(*) FROM task_executions WHERE {where}";
                count.Parameters.AddWithValue("@run", runId);
                if (status is not null) count.Parameters.AddWithValue("@status", status);
                total = Convert.ToInt32(count.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
            }
            return (total, total <= offset || limit == 0 ? [] : ReadTasks(where, runId, null, limit, offset, status));
        });
    }

    /// <summary>The kept row of task <paramref name="taskId"/> of a run (the first, by task index), or null when the store kept none.</summary>
    public StoredTask? TaskOf(string runId, string taskId) => ReadTasks("run_id = @run AND task_id = @task", runId, taskId, 1) is [var t] ? t : null;

    /// <summary>The <paramref name="limit"/> longest of the task rows the store kept for a run (with a duration), longest first; the database sorts.</summary>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="limit"/> below 0.</exception>
    public IReadOnlyList<StoredTask> SlowestTasks(string runId, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        return ReadTasks("run_id = @run AND duration_ms IS NOT NULL", runId, null, limit, orderBy: "duration_ms DESC, task_index");
    }

    private List<StoredTask> ReadTasks(string where, string runId, string? taskId, int limit, int offset = 0, string? status = null, string orderBy = "task_index")
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = $"""
                SELECT task_index, task_id, handler, initial_layer, final_layer, status, attempts, confidence, escalations,
                       started_ms, duration_ms, error, output_summary, skipped_because, kept_because, cost, complexity
                FROM task_executions WHERE {where} ORDER BY {orderBy} LIMIT @limit OFFSET @offset
                """;
            cmd.Parameters.AddWithValue("@run", runId);
            if (taskId is not null) cmd.Parameters.AddWithValue("@task", taskId);
            if (status is not null) cmd.Parameters.AddWithValue("@status", status);
            cmd.Parameters.AddWithValue("@limit", limit);
            cmd.Parameters.AddWithValue("@offset", offset);
            var list = new List<StoredTask>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                list.Add(new StoredTask(r.GetInt32(0), r.GetString(1), r.GetString(2), r.IsDBNull(3) ? null : r.GetString(3),
                    r.IsDBNull(4) ? null : r.GetString(4), r.GetString(5), r.GetInt32(6), r.IsDBNull(7) ? null : r.GetDouble(7), r.GetInt32(8),
                    r.IsDBNull(9) ? null : r.GetDouble(9), r.IsDBNull(10) ? null : r.GetDouble(10), r.IsDBNull(11) ? null : r.GetString(11),
                    r.IsDBNull(12) ? null : r.GetString(12), r.IsDBNull(13) ? null : r.GetString(13), r.GetString(14), r.IsDBNull(15) ? null : r.GetDouble(15),
                    r.IsDBNull(16) ? null : r.GetDouble(16)));
            }
            return list;
        });
    }

    /// <summary>How many tasks of a run the store knows completed successfully (from its completion checkpoint).</summary>
    public int CompletedCount(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT completed FROM run_checkpoints WHERE run_id = @run";
            cmd.Parameters.AddWithValue("@run", runId);
            return cmd.ExecuteScalar() is { } n and not DBNull ? Convert.ToInt32(n, System.Globalization.CultureInfo.InvariantCulture) : 0;
        });
    }

    /// <summary>The escalations of a run, in order.</summary>
    /// <remarks><c>RuleId</c>: the stored escalation rule that moved the task (see <see cref="RulesWithIds"/>), null for a manual or a handler's own escalation.</remarks>
    public IReadOnlyList<(string TaskId, string From, string To, string Trigger, string Reason, double? PreviousConfidence, string? PreviousOutputSummary, int? RuleId)> EscalationsOf(string runId)
        => EscalationHistoryOf(runId).Select(e => (e.TaskId, e.From, e.To, e.Trigger, e.Reason, e.PreviousConfidence, e.PreviousOutputSummary, e.RuleId)).ToList();

    /// <summary>The escalations of a run, in order, each with the text of the rule that fired (kept with it: rules change, history does not).</summary>
    public IReadOnlyList<StoredEscalation> EscalationHistoryOf(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT task_id, from_layer, to_layer, trigger, reason, previous_confidence, previous_output_summary, rule_id, rule FROM escalation_history WHERE run_id = @run ORDER BY id";
            cmd.Parameters.AddWithValue("@run", runId);
            var list = new List<StoredEscalation>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
                list.Add(new StoredEscalation(r.GetString(0), r.GetString(1), r.GetString(2), r.GetString(3), r.GetString(4), r.IsDBNull(5) ? null : r.GetDouble(5),
                    r.IsDBNull(6) ? null : r.GetString(6), r.IsDBNull(7) ? null : r.GetInt32(7), r.IsDBNull(8) ? null : r.GetString(8)));
            return list;
        });
    }

    /// <summary>
    /// The run a user means: an exact id, a unique prefix of one, or <c>last</c> (the newest run).
    /// </summary>
    /// <exception cref="StoreException">No run, or several, match.</exception>
    public string ResolveRunId(string run)
    {
        return Read(() =>
        {
            if (string.IsNullOrWhiteSpace(run)) throw new StoreException("the run is empty: give a run id, a unique prefix of one, or 'last' (see taskmesh runs)");
            using var cmd = Reader().CreateCommand();
            if (run == "last")
            {
                cmd.CommandText = "SELECT run_id FROM runs ORDER BY started_at DESC, rowid DESC LIMIT 1";
                return cmd.ExecuteScalar() as string ?? throw new StoreException($"store '{Path}' holds no runs");
            }
            cmd.CommandText = "SELECT run_id FROM runs WHERE run_id = @run OR substr(run_id, 1, length(@run)) = @run LIMIT 3";
            cmd.Parameters.AddWithValue("@run", run);
            var ids = new List<string>();
            using (var r = cmd.ExecuteReader()) while (r.Read()) ids.Add(r.GetString(0));
            if (ids.Contains(run)) return run;
            return ids.Count switch
            {
                0 => throw new StoreException($"store '{Path}' holds no run '{Graph.GraphLimits.Printable(run)}' (see taskmesh runs)"),
                1 => ids[0],
                _ => throw new StoreException($"'{Graph.GraphLimits.Printable(run)}' matches several runs ({string.Join(", ", ids)}, ...); give more of the id"),
            };
        });
    }

    /// <summary>
    /// What a run (and the runs it resumed) finished, as tasks a new run of the same graph can take
    /// as done: every task the completion checkpoint has — except a task whose output feeds a data
    /// edge and was not stored (too large), which runs again.
    /// </summary>
    /// <exception cref="StoreException">The run has another task count than <paramref name="graph"/>.</exception>
    public Scheduling.RestoredTasks LoadRestored(string runId, Graph.TaskGraph graph)
    {
        return Read(() =>
        {
            ArgumentNullException.ThrowIfNull(graph);
            var restored = new Scheduling.RestoredTasks(graph.Count);
            using var total = Reader().CreateCommand();
            total.CommandText = "SELECT total FROM runs WHERE run_id = @run";
            total.Parameters.AddWithValue("@run", runId);
            if (total.ExecuteScalar() is not long count) throw new StoreException($"store '{Path}' holds no run '{runId}'");
            if (count != graph.Count)
                throw new StoreException($"run {runId} had {count} tasks; this graph has {graph.Count}: it is not the graph that run ran");
            byte[] bits;
            using (var cmd = Reader().CreateCommand())
            {
                cmd.CommandText = "SELECT bitmap FROM run_checkpoints WHERE run_id = @run";
                cmd.Parameters.AddWithValue("@run", runId);
                bits = cmd.ExecuteScalar() as byte[] ?? [];
            }
            // Outputs: this run's, else those of the runs it resumed (restored tasks store none anew).
            var outputs = new Dictionary<int, string>();
            for (string? run = runId; run is not null;)
            {
                using var cmd = Reader().CreateCommand();
                cmd.CommandText = "SELECT task_index, json, file FROM task_outputs WHERE run_id = @run";
                cmd.Parameters.AddWithValue("@run", run);
                using (var r = cmd.ExecuteReader())
                    while (r.Read())
                    {
                        // A large output's file is read when a task needs it (below), not for every row.
                        if (!outputs.ContainsKey(r.GetInt32(0)))
                            outputs[r.GetInt32(0)] = r.IsDBNull(2) ? r.GetString(1) : FileMarker + r.GetString(2);
                    }
                using var from = Reader().CreateCommand();
                from.CommandText = "SELECT resumed_from FROM runs WHERE run_id = @run";
                from.Parameters.AddWithValue("@run", run);
                run = from.ExecuteScalar() as string;
                if (run == runId) break;
            }
            for (int i = 0; i < graph.Count && i / 8 < bits.Length; i++)
            {
                if ((bits[i >> 3] & (1 << (i & 7))) == 0) continue;
                if ((graph.FlagsOf(i) & Graph.NodeFlags.HasDataSuccessor) == 0) restored.Add(i);
                else if (outputs.TryGetValue(i, out var kept) && Resolve(kept) is string json)
                    restored.Add(i, StoredOutput.Restore(json));
                // (a completed task whose output was not kept, or whose file is gone, runs again)
            }
            return restored;

            string? Resolve(string kept) => kept.StartsWith(FileMarker, StringComparison.Ordinal) ? OutputFiles.Read(FilesFolder, kept[FileMarker.Length..]) : kept;
        });
    }

    /// <summary>The <c>runs.kind</c> of an open run (one that takes tasks while it goes).</summary>
    internal const string OpenRunKind = "open";

    /// <summary>
    /// What an open run recorded of the task it ran under <paramref name="taskId"/> most lately:
    /// its status, spec hash and (when it succeeded and its output was kept) its output; null when
    /// it recorded none.
    /// </summary>
    internal (string Status, string? SpecHash, bool HasOutput, object? Output)? OpenTaskOf(string runId, string taskId)
    {
        return Read<(string Status, string? SpecHash, bool HasOutput, object? Output)?>(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = """
                SELECT t.status, t.spec_hash, o.json, o.file FROM task_executions t
                LEFT JOIN task_outputs o ON o.run_id = t.run_id AND o.task_index = t.task_index
                WHERE t.run_id = @run AND t.task_id = @task ORDER BY t.task_index DESC LIMIT 1
                """;
            cmd.Parameters.AddWithValue("@run", runId);
            cmd.Parameters.AddWithValue("@task", taskId);
            using var r = cmd.ExecuteReader();
            if (!r.Read()) return null;
            string? json = r.IsDBNull(3) ? r.IsDBNull(2) ? null : r.GetString(2) : OutputFiles.Read(FilesFolder, r.GetString(3));
            return (r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1), json is not null, json is null ? null : StoredOutput.Restore(json));
        });
    }

    /// <summary>The next task index of an open run resumed from <paramref name="runId"/> (past every row it kept).</summary>
    internal int NextOpenTaskIndex(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT coalesce(max(task_index) + 1, 0) FROM task_executions WHERE run_id = @run";
            cmd.Parameters.AddWithValue("@run", runId);
            return Convert.ToInt32(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        });
    }

    /// <summary>Whether <paramref name="runId"/> is an open run.</summary>
    internal bool IsOpenRun(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT kind FROM runs WHERE run_id = @run";
            cmd.Parameters.AddWithValue("@run", runId);
            return cmd.ExecuteScalar() as string == OpenRunKind;
        });
    }

    // Marks an output held in a file, in LoadRestored's map (no JSON text starts with a NUL).
    private const string FileMarker = "\0file:";

    /// <summary>The folder beside the store for outputs too large for a row; empty for a PostgreSQL store, which keeps every output in its row.</summary>
    public string FilesFolder => IsPostgres ? "" : OutputFiles.FolderOf(Path);

    /// <summary>
    /// Each task's status in a run, by task index, as far as the store knows it: from the task's
    /// row when it kept one, else <c>succeeded</c> when its completion was checkpointed; null otherwise.
    /// </summary>
    public string?[] StatusesOf(string runId, int taskCount)
    {
        return Read(() =>
        {
            var status = new string?[taskCount];
            using (var cmd = Reader().CreateCommand())
            {
                cmd.CommandText = "SELECT bitmap FROM run_checkpoints WHERE run_id = @run";
                cmd.Parameters.AddWithValue("@run", runId);
                if (cmd.ExecuteScalar() is byte[] bits)
                    for (int i = 0; i < taskCount && (i >> 3) < bits.Length; i++)
                        if ((bits[i >> 3] & (1 << (i & 7))) != 0) status[i] = "succeeded";
            }
            foreach (var t in TasksOf(runId))
                if (t.Index < taskCount) status[t.Index] = t.Status;
            return status;
        });
    }

    /// <summary>The graph file and hash a run recorded, for resuming it.</summary>
    public (string? Path, string? Hash) GraphOf(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT graph_path, graph_hash FROM runs WHERE run_id = @run";
            cmd.Parameters.AddWithValue("@run", runId);
            using var r = cmd.ExecuteReader();
            if (!r.Read()) throw new StoreException($"store '{Path}' holds no run '{runId}'");
            return (r.IsDBNull(0) ? null : r.GetString(0), r.IsDBNull(1) ? null : r.GetString(1));
        });
    }

    /// <summary>A run's audit trail in the order it was written, optionally of one task and one category.</summary>
    public IReadOnlyList<AuditRecord> AuditOf(string runId, string? taskId = null, string? category = null) => AuditOf(runId, taskId, category, int.MaxValue);

    /// <summary>The first <paramref name="limit"/> rows of a run's audit trail in the order they were written, optionally of one task and one category.</summary>
    public IReadOnlyList<AuditRecord> AuditOf(string runId, string? taskId, string? category, int limit)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = """
                SELECT category, at, run_id, task_id, detail FROM audit_log
                WHERE run_id = @run AND (CAST(@task AS TEXT) IS NULL OR task_id = @task) AND (CAST(@category AS TEXT) IS NULL OR category = @category)
                ORDER BY id LIMIT @limit
                """;
            cmd.Parameters.AddWithValue("@limit", limit);
            cmd.Parameters.AddWithValue("@run", runId);
            cmd.Parameters.AddWithValue("@task", (object?)taskId ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@category", (object?)category ?? DBNull.Value);
            return ReadAudit(cmd);
        });
    }

    /// <summary>The audit rows <paramref name="cmd"/> selects (category, at, run_id, task_id, detail); a row of no run has an empty run id.</summary>
    private static List<AuditRecord> ReadAudit(DbCommand cmd)
    {
        var list = new List<AuditRecord>();
        using var r = cmd.ExecuteReader();
        while (r.Read())
            list.Add(new AuditRecord(r.GetString(0), DateTimeOffset.Parse(r.GetString(1), System.Globalization.CultureInfo.InvariantCulture),
                r.IsDBNull(2) ? "" : r.GetString(2), r.IsDBNull(3) ? null : r.GetString(3), r.GetString(4)));
        return list;
    }

    /// <summary>
    /// Adds a row to the audit trail: of run <paramref name="runId"/> (and task <paramref name="taskId"/>),
    /// or, with no run, of the service. <paramref name="detailJson"/> is a JSON object.
    /// </summary>
    public void RecordAudit(string? runId, string? taskId, string category, string detailJson)
    {
        ArgumentNullException.ThrowIfNull(category);
        ArgumentNullException.ThrowIfNull(detailJson);
        if (Array.IndexOf(AuditCategory.All, category) < 0) throw new ArgumentException($"unknown audit category '{category}'", nameof(category));
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        writer.Enqueue(new RunRecorder.AuditRow(runId, taskId, category,
            DateTimeOffset.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture), detailJson));
    }

    /// <summary>The newest <paramref name="limit"/> rows of the audit trail that belong to no run (actions on the service), newest first; their <see cref="AuditRecord.RunId"/> is empty.</summary>
    public IReadOnlyList<AuditRecord> ServiceAudit(int limit = 100)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT category, at, run_id, task_id, detail FROM audit_log WHERE run_id IS NULL ORDER BY id DESC LIMIT @limit";
            cmd.Parameters.AddWithValue("@limit", limit);
            return ReadAudit(cmd);
        });
    }

    /// <summary>Records the layers an engine has (name, kind, status, capacity, capabilities, price) in the <c>layers</c> table.</summary>
    public void RecordLayers(IEnumerable<Layers.ExecutionLayer> layers)
    {
        ArgumentNullException.ThrowIfNull(layers);
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        foreach (var l in layers)
            writer.Enqueue(new LayerRow(l.Name, l.Kind, l.Status.ToString().ToLowerInvariant(), l.Rank,
                l.Capacity, CapabilitiesJson(l), l.PricePerSecond,
                DateTimeOffset.UtcNow.ToString("O", System.Globalization.CultureInfo.InvariantCulture)));
    }

    /// <summary>
    /// Every kept task row that has a feature vector, oldest run first: what the learned models
    /// train on (handler, first and last layer, status, duration, escalations, features).
    /// </summary>
    public IReadOnlyList<TrainingRow> TrainingRows(int limit = 1_000_000)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = """
                SELECT t.handler, t.initial_layer, t.final_layer, t.status, t.duration_ms, t.escalations, t.features, t.confidence,
                    t.last_attempt_ms, t.first_attempt_ms, t.arg_features
                FROM task_executions t JOIN runs r ON r.run_id = t.run_id
                WHERE t.features IS NOT NULL AND t.final_layer IS NOT NULL
                ORDER BY r.started_at, t.task_index LIMIT @limit
                """;
            cmd.Parameters.AddWithValue("@limit", limit);
            var list = new List<TrainingRow>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
            {
                var features = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, float>((byte[])r.GetValue(6)).ToArray();
                list.Add(new TrainingRow(r.GetString(0), r.IsDBNull(1) ? r.GetString(2) : r.GetString(1), r.GetString(2), r.GetString(3),
                    r.IsDBNull(4) ? null : r.GetDouble(4), r.GetInt32(5), features, r.IsDBNull(7) ? null : r.GetDouble(7))
                {
                    LastAttemptMs = r.IsDBNull(8) ? null : r.GetDouble(8),
                    FirstAttemptMs = r.IsDBNull(9) ? null : r.GetDouble(9),
                    ArgumentFeatures = r.IsDBNull(10) ? null : r.GetString(10),
                });
            }
            return list;
        });
    }

    /// <summary>
    /// Publishes a trained model version: allocates the next version number and moves
    /// <paramref name="stagedFolder"/> (written by the trainer beside the store, see
    /// <see cref="ModelStagingFolder"/>) to <c>STORE.models/vN</c> in one transaction of the store,
    /// so that processes training at once each get a version of their own and a version's row never
    /// names a half-written folder. <paramref name="beforePublish"/> is called with the staged
    /// folder and the version just before the move (to name the version in its files).
    /// </summary>
    /// <returns>The version published.</returns>
    /// <exception cref="StoreException">The store or the model folder cannot be written.</exception>
    public async Task<int> PublishModelAsync(string stagedFolder, DateTimeOffset trainedAt, int rows, string metricsJson, Action<string, int>? beforePublish = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(stagedFolder);
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        var write = new ModelPublish(ModelsFolder, StoreFolder, stagedFolder, trainedAt.ToString("O", System.Globalization.CultureInfo.InvariantCulture), rows, metricsJson, beforePublish);
        writer.Enqueue(write);
        await FlushAsync();
        return write.Version;
    }

    /// <summary>A fresh folder beside the store for a model version being written (published by <see cref="PublishModelAsync"/>).</summary>
    /// <remarks>Staging folders that a process killed while it trained left behind (their pid runs no more) are removed first.</remarks>
    public string ModelStagingFolder()
    {
        if (Directory.Exists(ModelsFolder))
            foreach (var dir in Directory.EnumerateDirectories(ModelsFolder, ".staging-*"))
            {
                var parts = System.IO.Path.GetFileName(dir).Split('-');
                if (parts.Length < 3 || !int.TryParse(parts[1], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out int pid)) continue;
                if (new RunOwner(Environment.MachineName, pid, null).IsAlive() == true) continue;
                try { Directory.Delete(dir, recursive: true); }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { /* another process's clean-up won */ }
            }
        return System.IO.Path.Combine(ModelsFolder, $".staging-{Environment.ProcessId}-{Guid.NewGuid():N}");
    }

    /// <summary>The folder of the store's model versions: <c>STORE.models</c> beside the store (for a PostgreSQL store, under TaskMesh's home folder of this machine: see <see cref="LocalNameOf"/>).</summary>
    public string ModelsFolder => _local + ".models";

    /// <summary>The model versions trained from this store, newest first (<c>Folder</c>: the full path of the version's files).</summary>
    public IReadOnlyList<(int Version, DateTimeOffset TrainedAt, int Rows, string Folder, string Metrics)> Models()
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT version, trained_at, rows, folder, metrics FROM models ORDER BY version DESC";
            var list = new List<(int, DateTimeOffset, int, string, string)>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
                list.Add((r.GetInt32(0), DateTimeOffset.Parse(r.GetString(1), System.Globalization.CultureInfo.InvariantCulture), r.GetInt32(2), ModelFolderOf(r.GetString(3)), r.GetString(4)));
            return list;
        });
    }

    // A version's folder is kept relative to the store's folder (the store and its models move
    // together, and a store opened from another working directory finds them); rows written
    // before that kept a full path, or one relative to wherever train ran, read as they are.
    private string ModelFolderOf(string recorded)
        => System.IO.Path.IsPathRooted(recorded) ? recorded : System.IO.Path.GetFullPath(System.IO.Path.Combine(StoreFolder, recorded));

    // The folder the store file is in.
    private string StoreFolder => System.IO.Path.GetDirectoryName(_local)!;

    private sealed class ModelPublish(string models, string storeFolder, string staged, string at, int rows, string metrics, Action<string, int>? beforePublish) : StoreWrite
    {
        public int Version { get; private set; }

        /// <summary>It moves the staged folder: not applied again after a lost connection.</summary>
        public override bool Repeatable => false;

        public override void Apply(StoreBatch b)
        {
            // Inside the batch's write transaction: no other process allocates a version meanwhile.
            int version = Convert.ToInt32(b.Command("SELECT coalesce(max(version), 0) + 1 FROM models").ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
            string target = System.IO.Path.Combine(models, "v" + version.ToString(System.Globalization.CultureInfo.InvariantCulture));
            // A folder with no row is what a process killed between its move and its commit left: not a version.
            if (Directory.Exists(target)) Directory.Delete(target, recursive: true);
            beforePublish?.Invoke(staged, version);
            Directory.Move(staged, target);
            var cmd = b.Command("INSERT INTO models (version, trained_at, rows, folder, metrics) VALUES (@v, @at, @rows, @folder, @metrics)");
            cmd.Parameters.AddWithValue("@v", version);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.Parameters.AddWithValue("@rows", rows);
            cmd.Parameters.AddWithValue("@folder", System.IO.Path.GetRelativePath(storeFolder, target));
            cmd.Parameters.AddWithValue("@metrics", metrics);
            cmd.ExecuteNonQuery();
            Version = version;
        }
    }

    /// <summary>
    /// Mirrors the escalation rules in force into the <c>escalation_rules</c> table (replacing what
    /// was there), so reports and the dashboard show the rules runs were made under.
    /// </summary>
    public void RecordRules(IEnumerable<Escalation.EscalationRule> rules)
    {
        ArgumentNullException.ThrowIfNull(rules);
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        writer.Enqueue(new RulesRows(rules.ToArray()));
    }

    /// <summary>The store's rules with their ids, in order (those <c>taskmesh rules add</c> made, or the config's last mirror).</summary>
    public IReadOnlyList<(int Id, Escalation.EscalationRule Rule)> RulesWithIds()
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = RulesQuery;
            using var r = cmd.ExecuteReader();
            return ReadRules(r);
        });
    }

    // The stored rules in their order, as the readers and the config mirror read them.
    private const string RulesQuery = "SELECT id, from_layer, to_layer, trigger, threshold, priority, active FROM escalation_rules ORDER BY id";

    private static List<(int Id, Escalation.EscalationRule Rule)> ReadRules(DbDataReader r)
    {
        var list = new List<(int, Escalation.EscalationRule)>();
        while (r.Read())
            list.Add((r.GetInt32(0), new Escalation.EscalationRule(r.GetString(1), r.GetString(2), r.GetString(3), r.IsDBNull(4) ? null : r.GetDouble(4), r.GetInt32(5), r.GetInt32(6) != 0)));
        return list;
    }

    /// <summary>Adds a rule to the store's rules; returns its id once it is committed.</summary>
    /// <exception cref="StoreException">The rule is malformed, or the store cannot be written.</exception>
    public async Task<int> AddRuleAsync(Escalation.EscalationRule rule)
    {
        if (rule.Problem() is { } p) throw new StoreException($"rule refused: {p}");
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        var write = new RuleUpsert(null, rule);
        writer.Enqueue(write);
        await FlushAsync();
        return write.Id;
    }

    /// <summary>Replaces rule <paramref name="id"/>.</summary>
    /// <exception cref="StoreException">No such rule, a malformed rule, or the store cannot be written.</exception>
    public async Task SetRuleAsync(int id, Escalation.EscalationRule rule)
    {
        if (rule.Problem() is { } p) throw new StoreException($"rule refused: {p}");
        if (RulesWithIds().All(r => r.Id != id)) throw new StoreException($"store '{Path}' has no escalation rule {id} (see taskmesh rules list)");
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        writer.Enqueue(new RuleUpsert(id, rule));
        await FlushAsync();
    }

    private sealed class RuleUpsert(int? id, Escalation.EscalationRule rule) : StoreWrite
    {
        public int Id { get; private set; }

        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command(id is null
                ? "INSERT INTO escalation_rules (from_layer, to_layer, trigger, threshold, priority, active) VALUES (@from, @to, @trigger, @threshold, @priority, @active) RETURNING id"
                : "UPDATE escalation_rules SET from_layer = @from, to_layer = @to, trigger = @trigger, threshold = @threshold, priority = @priority, active = @active WHERE id = @id RETURNING id");
            if (id is int i) cmd.Parameters.AddWithValue("@id", i);
            cmd.Parameters.AddWithValue("@from", rule.From);
            cmd.Parameters.AddWithValue("@to", rule.To);
            cmd.Parameters.AddWithValue("@trigger", rule.Trigger);
            cmd.Parameters.AddWithValue("@threshold", (object?)rule.Threshold ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@priority", rule.Priority);
            cmd.Parameters.AddWithValue("@active", rule.Active ? 1 : 0);
            Id = Convert.ToInt32(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
        }
    }

    /// <summary>The rules last mirrored (<see cref="RecordRules"/>), in their order.</summary>
    public IReadOnlyList<Escalation.EscalationRule> RulesOf() => RulesWithIds().Select(r => r.Rule).ToList();

    private sealed class RulesRows(Escalation.EscalationRule[] rules) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            // The same rules as last time keep their ids (and the rows past escalations name);
            // changed rules replace them under new ids, never reused: the history keeps each
            // escalation's rule as text, so it outlives any change of the rules.
            List<(int Id, Escalation.EscalationRule Rule)> current;
            using (var r = b.Command(RulesQuery).ExecuteReader()) current = ReadRules(r);
            if (current.Select(c => c.Rule).SequenceEqual(rules)) return;
            b.Command("DELETE FROM escalation_rules").ExecuteNonQuery();
            foreach (var rule in rules)
            {
                var cmd = b.Command("INSERT INTO escalation_rules (from_layer, to_layer, trigger, threshold, priority, active) VALUES (@from, @to, @trigger, @threshold, @priority, @active)");
                cmd.Parameters.AddWithValue("@from", rule.From);
                cmd.Parameters.AddWithValue("@to", rule.To);
                cmd.Parameters.AddWithValue("@trigger", rule.Trigger);
                cmd.Parameters.AddWithValue("@threshold", (object?)rule.Threshold ?? DBNull.Value);
                cmd.Parameters.AddWithValue("@priority", rule.Priority);
                cmd.Parameters.AddWithValue("@active", rule.Active ? 1 : 0);
                cmd.ExecuteNonQuery();
            }
        }
    }

    /// <summary>A layer's capabilities as the <c>layers</c> table keeps them: <c>{"tags": [...], "handlers": [...] or null, "precision": ...}</c>.</summary>
    private static string CapabilitiesJson(Layers.ExecutionLayer l)
    {
        var buffer = new System.Buffers.ArrayBufferWriter<byte>();
        using (var w = new System.Text.Json.Utf8JsonWriter(buffer))
        {
            w.WriteStartObject();
            w.WriteStartArray("tags");
            foreach (var t in l.Tags) w.WriteStringValue(t);
            w.WriteEndArray();
            if (l.RunsHandlers is { } handlers)
            {
                w.WriteStartArray("handlers");
                foreach (var h in handlers) w.WriteStringValue(h);
                w.WriteEndArray();
            }
            else w.WriteNull("handlers");
            if (l is Layers.Quantum.QuantumLayer { Precision: { } p }) w.WriteString("precision", p == QuantumSim.Precision.Double ? "double" : "single");
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private sealed class LayerRow(string name, string kind, string status, int rank, int capacity, string? handlers, double price, string at) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var cmd = b.Command("""
                INSERT INTO layers (name, kind, status, priority, capacity, capabilities, price_per_second, updated_at)
                VALUES (@name, @kind, @status, @rank, @capacity, @caps, @price, @at)
                ON CONFLICT (name) DO UPDATE SET kind = excluded.kind, status = excluded.status, priority = excluded.priority, capacity = excluded.capacity,
                    capabilities = excluded.capabilities, price_per_second = excluded.price_per_second, updated_at = excluded.updated_at
                """);
            cmd.Parameters.AddWithValue("@name", name);
            cmd.Parameters.AddWithValue("@kind", kind);
            cmd.Parameters.AddWithValue("@status", status);
            cmd.Parameters.AddWithValue("@rank", rank);
            cmd.Parameters.AddWithValue("@capacity", capacity);
            cmd.Parameters.AddWithValue("@caps", (object?)handlers ?? DBNull.Value);
            cmd.Parameters.AddWithValue("@price", price);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.ExecuteNonQuery();
        }
    }

    /// <summary>The cached output JSON kept under <paramref name="key"/>, or null.</summary>
    internal string? CachedJson(string key)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT json, file FROM task_cache WHERE key = @key";
            cmd.Parameters.AddWithValue("@key", key);
            using var r = cmd.ExecuteReader();
            if (!r.Read()) return null;
            return r.IsDBNull(1) ? r.GetString(0) : OutputFiles.Read(FilesFolder, r.GetString(1));
        });
    }

    /// <summary>The result cache's entries, newest first.</summary>
    public IReadOnlyList<(string Key, string Handler, string TaskId, string? RunId, DateTimeOffset CreatedAt, int Bytes)> CacheEntries(int limit = 100)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT key, handler, task_id, run_id, created_at, coalesce(bytes, length(json)) FROM task_cache ORDER BY created_at DESC LIMIT @limit";
            cmd.Parameters.AddWithValue("@limit", limit);
            var list = new List<(string, string, string, string?, DateTimeOffset, int)>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
                list.Add((r.GetString(0), r.GetString(1), r.GetString(2), r.IsDBNull(3) ? null : r.GetString(3),
                    DateTimeOffset.Parse(r.GetString(4), System.Globalization.CultureInfo.InvariantCulture), r.GetInt32(5)));
            return list;
        });
    }

    /// <summary>Empties the result cache; returns how many entries it held.</summary>
    public async Task<int> ClearCacheAsync()
    {
        int count = Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT count(*) FROM task_cache";
            return Convert.ToInt32(cmd.ExecuteScalar());
        });
        var writer = Writer ?? throw new StoreException($"store '{Path}' is open read-only");
        writer.Enqueue(new ClearCache());
        await FlushAsync();
        return count;
    }

    private sealed class ClearCache : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            b.Command("DELETE FROM task_cache").ExecuteNonQuery();
            if (b.FilesFolder is null) return;
            var folder = OutputFiles.CacheFolder(b.FilesFolder);
            if (Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }

    /// <summary>A run's figures per layer (tasks, succeeded, failed, summed durations, cost), by layer name.</summary>
    public IReadOnlyList<(string Layer, int Tasks, int Succeeded, int Failed, double DurationMs, double Cost)> LayersOf(string runId)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = "SELECT layer, tasks, succeeded, failed, duration_ms, cost FROM run_layers WHERE run_id = @run ORDER BY layer";
            cmd.Parameters.AddWithValue("@run", runId);
            var list = new List<(string, int, int, int, double, double)>();
            using var r = cmd.ExecuteReader();
            while (r.Read()) list.Add((r.GetString(0), r.GetInt32(1), r.GetInt32(2), r.GetInt32(3), r.GetDouble(4), r.GetDouble(5)));
            return list;
        });
    }

    /// <summary>The daily per-layer figures of the last <paramref name="days"/> days (UTC), oldest first.</summary>
    public IReadOnlyList<DailyLayerFigures> DailyMetrics(int days)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = """
                SELECT day, layer, requests, successes, failures, total_duration_ms, timed, confidence_sum, confidence_count, cost
                FROM layer_metrics_daily WHERE day >= @since ORDER BY day, layer
                """;
            cmd.Parameters.AddWithValue("@since", DateTime.UtcNow.Date.AddDays(1 - days).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));
            var list = new List<DailyLayerFigures>();
            using var r = cmd.ExecuteReader();
            while (r.Read())
                list.Add(new DailyLayerFigures(r.GetString(0), r.GetString(1), r.GetInt64(2), r.GetInt64(3), r.GetInt64(4), r.GetDouble(5), r.GetInt64(6), r.GetDouble(7), r.GetInt64(8), r.GetDouble(9)));
            return list;
        });
    }

    /// <summary>Escalations of the last <paramref name="days"/> days (UTC) by day and route (from → to), oldest first.</summary>
    public IReadOnlyList<(string Day, string From, string To, int Count)> EscalationsByDay(int days)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            cmd.CommandText = """
                SELECT substr(at, 1, 10) AS day, from_layer, to_layer, count(*) FROM escalation_history
                WHERE at >= @since GROUP BY substr(at, 1, 10), from_layer, to_layer ORDER BY day, from_layer, to_layer
                """;
            cmd.Parameters.AddWithValue("@since", DateTime.UtcNow.Date.AddDays(1 - days).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));
            var list = new List<(string, string, string, int)>();
            using var r = cmd.ExecuteReader();
            while (r.Read()) list.Add((r.GetString(0), r.GetString(1), r.GetString(2), Convert.ToInt32(r.GetValue(3), System.Globalization.CultureInfo.InvariantCulture)));
            return list;
        });
    }

    /// <summary>
    /// The kept task rows of the last <paramref name="days"/> days that have a complexity score, by
    /// tenth of the 0–100 scale (bucket 0: below 10, …, bucket 9: 90 and up): how many, and their cost.
    /// </summary>
    public IReadOnlyList<(int Bucket, long Tasks, double Cost)> ComplexityBuckets(int days)
    {
        return Read(() =>
        {
            using var cmd = Reader().CreateCommand();
            // The bucket spelled out (no floor(): not every SQLite build has it, and CAST rounds in PostgreSQL).
            var bucket = "CASE " + string.Concat(Enumerable.Range(1, 9).Select(b => $"WHEN complexity < {b * 10} THEN {b - 1} ")) + "ELSE 9 END";
            cmd.CommandText = $"""
                SELECT {bucket} AS bucket, count(*), coalesce(sum(cost), 0) FROM task_executions
                WHERE complexity IS NOT NULL AND ended_at >= @since GROUP BY {bucket} ORDER BY bucket
                """;
            cmd.Parameters.AddWithValue("@since", DateTime.UtcNow.Date.AddDays(1 - days).ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture));
            var list = new List<(int, long, double)>();
            using var r = cmd.ExecuteReader();
            while (r.Read()) list.Add((Convert.ToInt32(r.GetValue(0), System.Globalization.CultureInfo.InvariantCulture), Convert.ToInt64(r.GetValue(1), System.Globalization.CultureInfo.InvariantCulture), Convert.ToDouble(r.GetValue(2), System.Globalization.CultureInfo.InvariantCulture)));
            return list;
        });
    }

    /// <summary>Flushes and closes the store.</summary>
    public void Dispose()
    {
        // The reader first: the last connection to close folds the WAL back into the store file and
        // removes it, which a read-only connection cannot do.
        _read.Dispose();
        Writer?.Dispose();
    }

    /// <summary>The SHA-256 of a file's bytes, as hex (the graph hash kept with a run).</summary>
    public static string HashOf(ReadOnlySpan<byte> bytes) => Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes));
}

/// <summary>One day's figures of one layer (sums: averages are the sums over the counts).</summary>
/// <param name="Timed">Of <paramref name="Requests"/>, those whose duration was measured (runs with task details).</param>
public sealed record DailyLayerFigures(string Day, string Layer, long Requests, long Successes, long Failures, double TotalDurationMs, long Timed,
    double ConfidenceSum, long ConfidenceCount, double Cost);

/// <summary>One escalation as the store keeps it; <paramref name="Rule"/> is the text of the declared rule that fired (null for a manual or a handler's own escalation), <paramref name="RuleId"/> its id when it was stored.</summary>
public sealed record StoredEscalation(string TaskId, string From, string To, string Trigger, string Reason, double? PreviousConfidence, string? PreviousOutputSummary,
    int? RuleId, string? Rule);

/// <summary>One record of the audit trail; <paramref name="Detail"/> is a JSON object.</summary>
public sealed record AuditRecord(string Category, DateTimeOffset Timestamp, string RunId, string? TaskId, string Detail);

/// <summary>A kept task row as the learned models train on it.</summary>
/// <param name="Handler">The task's handler.</param>
/// <param name="InitialLayer">The layer of its first attempt.</param>
/// <param name="FinalLayer">The layer of its last attempt.</param>
/// <param name="Status">Its outcome (<c>succeeded</c>, <c>failed</c>, <c>timed_out</c>, …).</param>
/// <param name="DurationMs">Its attempts' durations, summed (no one layer's duration when it moved).</param>
/// <param name="Escalations">How often it moved.</param>
/// <param name="Features">Its feature vector.</param>
/// <param name="Confidence">The confidence its last attempt reported.</param>
public sealed record TrainingRow(string Handler, string InitialLayer, string FinalLayer, string Status, double? DurationMs, int Escalations, float[] Features, double? Confidence)
{
    /// <summary>The last attempt's duration, on <see cref="FinalLayer"/> (null in rows stored before it was kept).</summary>
    public double? LastAttemptMs { get; init; }

    /// <summary>The first attempt's duration, on <see cref="InitialLayer"/>, when it ran to its end (null when it failed, timed out or was cancelled, and in rows stored before it was kept).</summary>
    public double? FirstAttemptMs { get; init; }

    /// <summary>The numbers the task's own arguments stated, by name (<see cref="Handlers.ArgumentFeatures.ToJson"/>; null in rows stored before they were kept).</summary>
    public string? ArgumentFeatures { get; init; }
}

/// <summary>Tasks of a stored run by outcome.</summary>
public sealed record StoredTaskCounts(int Total, int Succeeded, int Failed, int TimedOut, int Skipped, int Cancelled, int Restored, int Cached);

/// <summary>A run as the store keeps it.</summary>
public sealed record StoredRun(string RunId, string Graph, string Status, DateTimeOffset StartedAt, DateTimeOffset? FinishedAt,
    StoredTaskCounts Tasks, int Escalations, double Cost, double? WallMs, double? CriticalPathMs, string? GraphPath, string? GraphHash)
{
    /// <summary>The order ready tasks took free slots in (<c>fifo</c>, <c>critical_path</c>); null for runs stored before it was kept.</summary>
    public string? ReadyOrder { get; init; }

    /// <summary>The process that ran it (null for runs stored before it was kept).</summary>
    public RunOwner? Owner { get; init; }

    /// <summary>The files its tasks read, as JSON (<see cref="RunInputs"/>); null when they read none or for runs stored before it was kept.</summary>
    public string? Inputs { get; init; }

    /// <summary>The run as <c>taskmesh runs --json</c> and the service's API show a stored run (snake_case names).</summary>
    public void WriteJson(System.Text.Json.Utf8JsonWriter w)
    {
        ArgumentNullException.ThrowIfNull(w);
        w.WriteStartObject();
        w.WriteString("run_id", RunId);
        w.WriteString("graph", Graph);
        w.WriteString("status", Status);
        w.WriteString("started_at", StartedAt);
        if (FinishedAt is { } f) w.WriteString("finished_at", f); else w.WriteNull("finished_at");
        w.WriteStartObject("tasks");
        w.WriteNumber("total", Tasks.Total);
        w.WriteNumber("succeeded", Tasks.Succeeded);
        w.WriteNumber("failed", Tasks.Failed);
        w.WriteNumber("timed_out", Tasks.TimedOut);
        w.WriteNumber("skipped", Tasks.Skipped);
        w.WriteNumber("cancelled", Tasks.Cancelled);
        w.WriteNumber("restored", Tasks.Restored);
        w.WriteNumber("cached", Tasks.Cached);
        w.WriteEndObject();
        w.WriteNumber("escalations", Escalations);
        w.WriteNumber("cost", Math.Round(Cost, 6));
        if (WallMs is double wall) w.WriteNumber("wall_ms", Math.Round(wall, 3));
        if (CriticalPathMs is double critical) w.WriteNumber("critical_path_ms", Math.Round(critical, 3));
        if (ReadyOrder is not null) w.WriteString("ready_order", ReadyOrder);
        if (GraphPath is not null) w.WriteString("graph_path", GraphPath);
        w.WriteEndObject();
    }
}

/// <summary>A task row of a stored run, and why it was kept.</summary>
public sealed record StoredTask(int Index, string Id, string Handler, string? InitialLayer, string? Layer, string Status, int Attempts,
    double? Confidence, int Escalations, double? StartedAtMs, double? DurationMs, string? Error, string? OutputSummary, string? SkippedBecause, string KeptBecause,
    double? Cost = null, double? Complexity = null);
