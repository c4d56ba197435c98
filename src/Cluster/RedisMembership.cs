using StackExchange.Redis;

namespace TaskMesh.Cluster;

/// <summary>
/// Cluster membership in Redis (Orleans' Redis clustering): the member list lives in a Redis server
/// every silo reaches. <c>cluster.membership = "redis://[:password@]host:port[/database]"</c>
/// (<c>rediss://</c> for TLS).
/// </summary>
internal static class RedisMembership
{
    /// <summary>True when <paramref name="membership"/> names Redis (<c>redis://</c> or <c>rediss://</c>).</summary>
    internal static bool Names(string? membership)
        => membership is not null && (membership.StartsWith("redis://", StringComparison.OrdinalIgnoreCase) || membership.StartsWith("rediss://", StringComparison.OrdinalIgnoreCase));

    /// <summary>The client options of a <c>redis://[:password@]host:port[/database]</c> URL.</summary>
    /// <exception cref="FormatException">Not such a URL.</exception>
    internal static ConfigurationOptions Options(string url)
    {
        if (!Names(url) || !Uri.TryCreate(url, UriKind.Absolute, out var uri) || string.IsNullOrEmpty(uri.Host))
            throw new FormatException("cluster.membership must be redis://[:password@]host:port[/database]");
        var o = new ConfigurationOptions
        {
            Ssl = uri.Scheme.Equals("rediss", StringComparison.OrdinalIgnoreCase),
            AbortOnConnectFail = false,
            ConnectTimeout = 5000,
            SyncTimeout = 5000,
        };
        o.EndPoints.Add(uri.Host, uri.IsDefaultPort || uri.Port <= 0 ? 6379 : uri.Port);
        if (uri.UserInfo.Length > 0)
        {
            var parts = uri.UserInfo.Split(':', 2);
            if (parts.Length == 2)
            {
                if (parts[0].Length > 0) o.User = Uri.UnescapeDataString(parts[0]);
                o.Password = Uri.UnescapeDataString(parts[1]);
            }
            else o.Password = Uri.UnescapeDataString(parts[0]);
        }
        var path = uri.AbsolutePath.Trim('/');
        if (path.Length > 0)
        {
            if (!int.TryParse(path, out int db) || db < 0) throw new FormatException($"cluster.membership: '{path}' is not a Redis database number");
            o.DefaultDatabase = db;
        }
        return o;
    }
}
