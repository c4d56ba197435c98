using System.Data.Common;
using Microsoft.Data.Sqlite;
using Npgsql;

namespace TaskMesh.Engine.Store;

/// <summary>
/// What the store's SQL needs from both of its databases. Its statements are written once, in the
/// SQL SQLite and PostgreSQL share: <c>@name</c> parameters, <c>INSERT … ON CONFLICT … DO UPDATE</c>
/// for upserts (with the target's columns named by table), <c>IS NOT DISTINCT FROM</c> for a
/// comparison that matches nulls. Only the schema's column types and the store's own bookkeeping
/// (its version, the checks made on opening) differ: see <see cref="StoreSchema.ForPostgres"/>.
/// </summary>
internal static class StoreSql
{
    /// <summary>
    /// Adds a parameter to a command of either database (ADO.NET's base collection has no
    /// <c>AddWithValue</c>; each provider's own does).
    /// </summary>
    public static void AddWithValue(this DbParameterCollection parameters, string name, object? value)
    {
        switch (parameters)
        {
            case SqliteParameterCollection sqlite: sqlite.AddWithValue(name, value ?? DBNull.Value); break;
            case NpgsqlParameterCollection postgres: postgres.AddWithValue(name, value is string text ? ForPostgres(text) : value ?? DBNull.Value); break;
            default: throw new NotSupportedException($"the run store does not use {parameters.GetType().Name}");
        }
    }

    /// <summary>
    /// Text PostgreSQL can hold: it refuses NUL characters and text that is not valid UTF-16 (a lone
    /// surrogate), which a task's id, arguments, error or output may carry and SQLite keeps. Each
    /// becomes U+FFFD, as .NET's own UTF-8 encoder replaces a lone surrogate, rather than fail the
    /// store's writer over a character.
    /// </summary>
    internal static string ForPostgres(string text)
    {
        int bad = FirstUnstorable(text);
        if (bad < 0) return text;
        var chars = text.ToCharArray();
        for (int i = bad; i < chars.Length; i++)
        {
            char c = chars[i];
            if (c == '\0') chars[i] = '\uFFFD';
            else if (char.IsHighSurrogate(c) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1])) i++;
            else if (char.IsSurrogate(c)) chars[i] = '\uFFFD';
        }
        return new string(chars);
    }

    private static int FirstUnstorable(string text)
    {
        for (int i = 0; i < text.Length; i++)
        {
            char c = text[i];
            if (c == '\0') return i;
            if (!char.IsSurrogate(c)) continue;
            if (char.IsHighSurrogate(c) && i + 1 < text.Length && char.IsLowSurrogate(text[i + 1])) { i++; continue; }
            return i;
        }
        return -1;
    }

    internal static void Execute(DbConnection c, string sql, DbTransaction? tx = null)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = tx;
        cmd.ExecuteNonQuery();
    }

    internal static long Scalar(DbConnection c, string sql, DbTransaction? tx = null)
    {
        using var cmd = c.CreateCommand();
        cmd.CommandText = sql;
        cmd.Transaction = tx;
        return Convert.ToInt64(cmd.ExecuteScalar(), System.Globalization.CultureInfo.InvariantCulture);
    }
}
