using System.Data.Common;
using Npgsql;
using TaskMesh.Engine.Store;

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
    internal static bool Names(string? membership) => PostgresUrl.Names(membership);

    /// <summary>The Npgsql connection string of a <c>postgresql://user:password@host:port/database?key=value</c> URL.</summary>
    /// <exception cref="FormatException">Not such a URL, or an unknown setting in its query.</exception>
    internal static string ConnectionString(string url) => PostgresUrl.ConnectionString(url, "cluster.membership", b =>
    {
        // Membership queries are small: a few connections suffice, and a dead database is noticed soon.
        b.Timeout = 5;
        b.MaxPoolSize = 10;
    });

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
