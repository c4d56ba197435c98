using System.Data.Common;
using System.Globalization;
using Npgsql;

namespace TaskMesh.Engine.Store;

// The run store in PostgreSQL: the same tables, statements and migrations as the SQLite file
// (StoreSchema.ForPostgres gives the column types PostgreSQL names differently), for a coordinator
// that must survive the loss of its machine and for stores that several machines share. Opening
// checks the database before writing to it: one that holds tables of another application under
// TaskMesh's names, or a store written by a newer TaskMesh, is refused and left as it is.
public sealed partial class RunStore
{
    /// <summary>Whether <paramref name="location"/> names a PostgreSQL database (<c>postgresql://…</c> or <c>postgres://…</c>) rather than a file.</summary>
    public static bool IsDatabaseUrl(string? location) => PostgresUrl.Names(location);

    /// <summary>The advisory lock that makes one process at a time create or migrate a store in a database.</summary>
    private const long MigrationLock = StoreSchema.ApplicationId;

    private static RunStore OpenPostgres(string url, bool readOnly, TimeSpan lockTimeout)
    {
        string shown = PostgresUrl.Redact(url);
        string writeConnection, readConnection;
        try
        {
            // A statement waits at most lockTimeout for another session's lock (lock_timeout), then
            // fails; the command itself may take that long plus a margin.
            long lockMs = (long)Math.Min(int.MaxValue, lockTimeout.TotalMilliseconds);
            int commandSeconds = (int)Math.Min(int.MaxValue / 2, Math.Ceiling(lockTimeout.TotalSeconds) + 60);
            writeConnection = PostgresUrl.ConnectionString(url, "the store URL", b =>
            {
                b.Timeout = 15;
                b.CommandTimeout = commandSeconds;
                b.ApplicationName = "taskmesh";
                b.Options = FormattableString.Invariant($"-c lock_timeout={lockMs}");
                // The writer sends the same few statements for every row: prepared once on the
                // server (after a few uses) instead of parsed and planned every time.
                b.MaxAutoPrepare = 64;
            });
            // The reader cannot write by accident: its transactions are read-only.
            readConnection = PostgresUrl.ConnectionString(url, "the store URL", b =>
            {
                b.Timeout = 15;
                b.CommandTimeout = commandSeconds;
                b.ApplicationName = "taskmesh";
                b.Options = FormattableString.Invariant($"-c lock_timeout={lockMs} -c default_transaction_read_only=on");
                // An idle reader's session is checked every two seconds: one the server dropped (a
                // restart) is noticed then, and the next read opens a new one instead of failing on it.
                b.KeepAlive = 2;
            });
        }
        catch (FormatException ex)
        {
            throw new StoreException(ex.Message);
        }

        var describe = (DbException ex) => DescribePostgres(shown, ex);
        NpgsqlConnection? read = null;
        StoreWriter? writer = null;
        try
        {
            if (!readOnly)
            {
                var write = new NpgsqlConnection(writeConnection);
                try
                {
                    write.Open();
                    MigratePostgres(write, shown);
                }
                catch
                {
                    write.Dispose();
                    throw;
                }
                writer = new StoreWriter(write, shown, filesFolder: null, describe, reconnect: () =>
                {
                    // A session lost (a server restart, a dropped connection): a new one, the schema already there.
                    var again = new NpgsqlConnection(writeConnection);
                    try
                    {
                        again.Open();
                        return again;
                    }
                    catch
                    {
                        again.Dispose();
                        throw;
                    }
                });
            }
            read = new NpgsqlConnection(readConnection);
            read.Open();
            if (readOnly) InspectPostgres(read, shown);
            return new RunStore(shown, read, writer, LocalNameOf(readConnection), postgres: true);
        }
        catch (Exception ex) when (ex is DbException or TimeoutException or InvalidOperationException)
        {
            read?.Dispose();
            writer?.Dispose();
            throw new StoreException(ex is DbException d ? describe(d) : $"store '{shown}': {ex.Message}", ex);
        }
        catch
        {
            read?.Dispose();
            writer?.Dispose();
            throw;
        }
    }

    // The store's version, or null when the database holds no TaskMesh store; refuses a database
    // whose tables under TaskMesh's names belong to another application, and a newer store.
    private static long? VersionOf(DbConnection c, string shown, DbTransaction? tx)
    {
        if (Scalar(c, "SELECT (to_regclass('taskmesh_store') IS NOT NULL)::int", tx) == 0)
        {
            using var cmd = c.CreateCommand();
            cmd.Transaction = tx;
            cmd.CommandText = "SELECT string_agg(name, ', ' ORDER BY name) FROM unnest(@names::text[]) AS name WHERE to_regclass(name) IS NOT NULL";
            cmd.Parameters.AddWithValue("@names", StoreSchema.Tables);
            if (cmd.ExecuteScalar() is string taken)
                throw new StoreException($"database '{shown}' holds tables of another application under the run store's names ({taken}); give TaskMesh a database (or a schema, ?search_path=NAME) of its own; it was left as it is");
            return null;
        }
        using (var cmd = c.CreateCommand())
        {
            cmd.Transaction = tx;
            cmd.CommandText = "SELECT application_id, version FROM taskmesh_store";
            using var r = cmd.ExecuteReader();
            if (!r.Read() || r.GetInt64(0) != StoreSchema.ApplicationId)
                throw new StoreException($"database '{shown}' has a taskmesh_store table that is not a TaskMesh store's; it was left as it is");
            long version = r.GetInt64(1);
            if (version > StoreSchema.CurrentVersion)
                throw new StoreException($"'{shown}' was written by a newer TaskMesh (schema version {version}; this build reads up to {StoreSchema.CurrentVersion}); it was left as it is");
            return version;
        }
    }

    private static void InspectPostgres(DbConnection c, string shown)
    {
        if (VersionOf(c, shown, null) is not long version)
            throw new StoreException($"there is no store in '{shown}' (nothing has been run with it yet)");
        if (version < StoreSchema.CurrentVersion)
            throw new StoreException($"store '{shown}' is of schema version {version}; open it once for writing (any taskmesh run) to migrate it to {StoreSchema.CurrentVersion}");
    }

    // Creates or migrates the store in one transaction, one process at a time (an advisory lock).
    private static void MigratePostgres(DbConnection c, string shown)
    {
        using var tx = c.BeginTransaction();
        Execute(c, FormattableString.Invariant($"SELECT pg_advisory_xact_lock({MigrationLock})"), tx);
        long? found = VersionOf(c, shown, tx);
        if (found is null)
            Execute(c, FormattableString.Invariant($"CREATE TABLE taskmesh_store (application_id BIGINT NOT NULL, version BIGINT NOT NULL); INSERT INTO taskmesh_store VALUES ({StoreSchema.ApplicationId}, 0)"), tx);
        long version = found ?? 0;
        for (long v = version; v < StoreSchema.CurrentVersion; v++)
            Execute(c, StoreSchema.ForPostgres(StoreSchema.Migrations[v]), tx);
        if (version < StoreSchema.CurrentVersion)
        {
            MoveIdentitiesPastTheirRows(c, tx);
            Execute(c, FormattableString.Invariant($"UPDATE taskmesh_store SET version = {StoreSchema.CurrentVersion}"), tx);
        }
        tx.Commit();
    }

    // A migration that rebuilds a table copies its rows with their ids (SQLite numbers the next row
    // past the largest id; a PostgreSQL identity counts on from where its sequence stood): each
    // identity column of the store's tables is moved past the ids its table holds.
    private static void MoveIdentitiesPastTheirRows(DbConnection c, DbTransaction tx)
    {
        var identities = new List<(string Table, string Column)>();
        using (var cmd = c.CreateCommand())
        {
            cmd.Transaction = tx;
            cmd.CommandText = "SELECT table_name, column_name FROM information_schema.columns WHERE is_identity = 'YES' AND table_schema = current_schema() AND table_name = ANY(@tables)";
            cmd.Parameters.AddWithValue("@tables", StoreSchema.Tables);
            using var r = cmd.ExecuteReader();
            while (r.Read()) identities.Add((r.GetString(0), r.GetString(1)));
        }
        // (names from the catalogue, of the store's own tables: no user text in the SQL)
        foreach (var (table, column) in identities)
            Execute(c, $"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), coalesce(max({column}), 0) + 1, false) FROM {table}", tx);
    }

    private static string DescribePostgres(string shown, DbException ex) => ex switch
    {
        PostgresException { SqlState: PostgresErrorCodes.LockNotAvailable } => $"store '{shown}' stayed locked by another session longer than the lock timeout ([store] lock_timeout_seconds): {ex.Message}",
        PostgresException { SqlState: PostgresErrorCodes.DiskFull or PostgresErrorCodes.OutOfMemory or PostgresErrorCodes.InsufficientResources } => $"the database server of store '{shown}' is out of room: {ex.Message}",
        PostgresException { SqlState: PostgresErrorCodes.ReadOnlySqlTransaction } => $"store '{shown}' is read-only: {ex.Message}",
        PostgresException { SqlState: PostgresErrorCodes.InvalidPassword or PostgresErrorCodes.InvalidAuthorizationSpecification } => $"PostgreSQL refused the credentials of store '{shown}': {ex.Message}",
        PostgresException { SqlState: PostgresErrorCodes.InvalidCatalogName } => $"the database of store '{shown}' does not exist (create it first: createdb NAME): {ex.Message}",
        PostgresException { SqlState: PostgresErrorCodes.InsufficientPrivilege } => $"store '{shown}' may not be written by its user: {ex.Message}",
        PostgresException => $"store '{shown}': {ex.Message}",
        NpgsqlException => $"cannot reach the PostgreSQL server of store '{shown}': {ex.Message}",
        _ => $"store '{shown}': {ex.Message}",
    };

    /// <summary>
    /// Where on this machine a PostgreSQL store keeps what is not in the database (its model
    /// versions' files): <c>$TASKMESH_HOME/postgresql/HOST_PORT_DATABASE</c> (else under
    /// <c>~/.taskmesh</c>). The rows the models train on stay in the database, so another machine
    /// that takes over the store trains its own.
    /// </summary>
    internal static string LocalNameOf(string connectionString)
    {
        var b = new NpgsqlConnectionStringBuilder(connectionString);
        var home = System.IO.Path.GetDirectoryName(DefaultPath())!;
        string name = string.Concat($"{b.Host}_{b.Port.ToString(CultureInfo.InvariantCulture)}_{b.Database}_{b.SearchPath}"
            .Select(ch => char.IsAsciiLetterOrDigit(ch) || ch is '.' or '-' or '_' ? ch : '_')).TrimEnd('_');
        return System.IO.Path.Combine(home, "postgresql", name);
    }
}
