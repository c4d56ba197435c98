using Npgsql;

namespace TaskMesh.Engine.Store;

/// <summary>
/// <c>postgresql://user:password@host:port/database?key=value</c> (or <c>postgres://</c>): how the
/// config names a PostgreSQL database — the run store's (<c>[store] url</c>, <c>--store</c>) and the
/// cluster's membership (<c>[cluster] membership</c>).
/// </summary>
internal static class PostgresUrl
{
    /// <summary>True when <paramref name="text"/> names PostgreSQL (<c>postgresql://</c> or <c>postgres://</c>).</summary>
    public static bool Names(string? text)
        => text is not null && (text.StartsWith("postgresql://", StringComparison.OrdinalIgnoreCase) || text.StartsWith("postgres://", StringComparison.OrdinalIgnoreCase));

    /// <summary>The Npgsql connection string of a URL.</summary>
    /// <param name="url">The URL.</param>
    /// <param name="what">What the URL is, for messages (<c>cluster.membership</c>, <c>the store URL</c>).</param>
    /// <param name="configure">Settings of the caller's use (timeouts, pool size), applied before the URL's own query settings.</param>
    /// <exception cref="FormatException">Not such a URL, or an unknown setting in its query.</exception>
    public static string ConnectionString(string url, string what, Action<NpgsqlConnectionStringBuilder>? configure = null)
    {
        if (!Names(url) || !Uri.TryCreate(url, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
            throw new FormatException($"{what} must be postgresql://user:password@host:port/database");
        var b = new NpgsqlConnectionStringBuilder
        {
            Host = uri.Host,
            Port = uri.IsDefaultPort || uri.Port <= 0 ? 5432 : uri.Port,
            Database = Uri.UnescapeDataString(uri.AbsolutePath.Trim('/')) is { Length: > 0 } db ? db : "postgres",
        };
        if (uri.UserInfo.Length > 0)
        {
            var parts = uri.UserInfo.Split(':', 2);
            b.Username = Uri.UnescapeDataString(parts[0]);
            if (parts.Length == 2) b.Password = Uri.UnescapeDataString(parts[1]);
        }
        configure?.Invoke(b);
        foreach (var pair in uri.Query.TrimStart('?').Split('&', StringSplitOptions.RemoveEmptyEntries))
        {
            var kv = pair.Split('=', 2);
            try
            {
                b[Uri.UnescapeDataString(kv[0])] = kv.Length == 2 ? Uri.UnescapeDataString(kv[1]) : "true";
            }
            catch (ArgumentException ex)
            {
                throw new FormatException($"{what}: '{Graph.GraphLimits.Printable(kv[0])}' is not a PostgreSQL connection setting ({ex.Message})");
            }
        }
        return b.ConnectionString;
    }

    /// <summary>The URL without its password (what messages, logs and the API show).</summary>
    public static string Redact(string url)
    {
        if (!Uri.TryCreate(url, UriKind.Absolute, out var uri) || !uri.UserInfo.Contains(':')) return url;
        int at = url.IndexOf('@', StringComparison.Ordinal);
        int colon = url.IndexOf(':', url.IndexOf("//", StringComparison.Ordinal) + 2);
        return colon > 0 && colon < at ? url[..colon] + ":***" + url[at..] : url;
    }
}
