using System.Data.Common;
using Npgsql;

namespace TaskMesh.Cluster;

/// <summary>
/// Cluster membership in PostgreSQL (Orleans' ADO.NET clustering): the member list lives in a
/// database every silo reaches, not in the coordinator, so workers on many machines find each other
/// and the coordinator through it. <c>cluster.membership = "postgresql://user:password@host:port/database"</c>.
/// </summary>
internal static class PostgresMembership
{
    /// <summary>The invariant name Orleans looks the provider up by.</summary>
    internal const string Invariant = "Npgsql";

    /// <summary>True when <paramref name="membership"/> names PostgreSQL (<c>postgresql://</c> or <c>postgres://</c>).</summary>
    internal static bool Names(string? membership)
        => membership is not null && (membership.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || membership.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase));

    /// <summary>The Npgsql connection string of a <c>postgresql://user:password@host:port/database?key=value</c> URL.</summary>
    /// <exception cref="FormatException">Not such a URL, or an unknown setting in its query.</exception>
    internal static string ConnectionString(string url)
    {
        if (!Names(url) || !Uri.TryCreate(url, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
            throw new FormatException("cluster.membership must be postgresql://user:password@host:port/database");
        var b = new NpgsqlConnectionStringBuilder
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port <= 0 ? 5432 : uri.Port,
            Database = Uri.UnescapeDataString(uri.AbsolutePath.Trim('/')) is { Length: > 0 } db ? db : "postgres",
            // Membership queries are small: a few connections suffice, and a dead database is noticed soon.
            Timeout = 5,
            MaxPoolSize = 10,
        };
        if (uri.UserInfo.Length > 0)
        {
            var parts = uri.UserInfo.Split(':', 2);
            b.Username = Uri.UnescapeDataString(parts[0]);
            if (parts.Length == 2) b.Password = Uri.UnescapeDataString(parts[1]);
        }
        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            try
            {
                b[Uri.UnescapeDataString(kv[0])] = kv.Length == 2 ? Uri.UnescapeDataString(kv[1]) : "true";
            }
            catch (ArgumentException ex)
            {
                throw new FormatException($"cluster.membership: '{kv[0]}' is not a PostgreSQL connection setting ({ex.Message})");
            }
        }
        return b.ConnectionString;
    }

    /// <summary>Makes Npgsql known to Orleans' ADO.NET provider lookup (once per process).</summary>
    internal static void Register()
    {
        if (!DbProviderFactories.TryGetFactory(Invariant, out _)) DbProviderFactories.RegisterFactory(Invariant, NpgsqlFactory.Instance);
    }

    /// <summary>
    /// Creates Orleans' membership tables and queries in the database when they are not there (one
    /// silo at a time: under an advisory lock, in one transaction).
    /// </summary>
    internal static async Task EnsureSchemaAsync(string connectionString, CancellationToken ct)
    {
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync(ct).ConfigureAwait(false);
        await using var tx = await connection.BeginTransactionAsync(ct).ConfigureAwait(false);
        await using (var lockCmd = new NpgsqlCommand("SELECT pg_advisory_xact_lock(7400400)", connection, tx))
            await lockCmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        await using (var probe = new NpgsqlCommand("SELECT to_regclass('orleansmembershiptable') IS NOT NULL AND to_regclass('orleansquery') IS NOT NULL", connection, tx))
            if (await probe.ExecuteScalarAsync(ct).ConfigureAwait(false) is true)
            {
                await tx.CommitAsync(ct).ConfigureAwait(false);
                return;
            }
        foreach (var script in new[] { "PostgreSQL-Main.sql", "PostgreSQL-Clustering.sql" })
        {
            await using var stream = typeof(PostgresMembership).Assembly.GetManifestResourceStream("TaskMesh.Cluster.Sql." + script)
                ?? throw new InvalidOperationException($"the {script} resource is missing from this build");
            using var reader = new StreamReader(stream);
            await using var cmd = new NpgsqlCommand(await reader.ReadToEndAsync(ct).ConfigureAwait(false), connection, tx);
            await cmd.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
        }
        await tx.CommitAsync(ct).ConfigureAwait(false);
    }
}
