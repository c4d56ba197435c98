namespace TaskMesh.Engine.Graph;

/// <summary>Every range a graph's values must fall in, stated once (the config uses the same).</summary>
public static class GraphLimits
{
    /// <summary>Most retries a task may ask for.</summary>
    public const int MaxRetries = 100;

    /// <summary>Longest per-attempt timeout: 30 days, in seconds.</summary>
    public const double MaxTimeoutSeconds = 30 * 86_400;

    /// <summary>Largest <c>estimateMs</c> a task may state: a year.</summary>
    public const double MaxEstimateMs = 365.0 * 86_400_000;

    /// <summary>Shortest per-attempt timeout, in seconds.</summary>
    public const double MinTimeoutSeconds = 0.001;

    /// <summary>Largest edge weight (a transfer cost in milliseconds): 30 days.</summary>
    public const double MaxEdgeWeightMs = 30 * 86_400_000.0;

    /// <summary>Longest task id, in characters.</summary>
    public const int MaxIdLength = 256;

    /// <summary>Distinct handler names one graph may use.</summary>
    public const int MaxHandlers = ushort.MaxValue;

    /// <summary>Deepest nesting of JSON objects and arrays in a graph file (arguments included).</summary>
    public const int MaxJsonDepth = 64;

    /// <summary>
    /// Why <paramref name="id"/> cannot be a task id, or null: ids are 1–256 characters with no
    /// control characters and no bidirectional overrides (they reach terminals and DOT files).
    /// </summary>
    public static string? IdProblem(string id)
    {
        if (id.Length == 0) return "is empty";
        if (id.Length > MaxIdLength) return $"is {id.Length} characters long; the limit is {MaxIdLength}";
        foreach (char c in id)
        {
            if (char.IsControl(c)) return $"contains the control character U+{(int)c:X4}";
            if (IsBidiControl(c)) return $"contains the bidirectional control U+{(int)c:X4}";
        }
        return null;
    }

    internal static bool IsBidiControl(char c) => c is '\u061c' or '\u200e' or '\u200f' or (>= '\u202a' and <= '\u202e') or (>= '\u2066' and <= '\u2069');

    /// <summary>A user's string as a message may quote it: control characters escaped, at most 80 characters.</summary>
    public static string Printable(string s)
    {
        bool clean = s.Length <= 80;
        foreach (char c in s) clean &= !char.IsControl(c) && !IsBidiControl(c);
        if (clean) return s;
        var sb = new System.Text.StringBuilder();
        foreach (char c in s.Length > 80 ? s[..80] : s)
        {
            if (char.IsControl(c) || IsBidiControl(c)) sb.Append($"\\u{(int)c:x4}");
            else sb.Append(c);
        }
        if (s.Length > 80) sb.Append('…');
        return sb.ToString();
    }
}

/// <summary>The stable codes of <see cref="GraphError"/>.</summary>
public static class GraphErrorCodes
{
    public const string Unreadable = "unreadable";
    public const string MalformedJson = "malformed-json";
    public const string Schema = "schema";
    public const string DuplicateKey = "duplicate-key";
    public const string Limit = "limit";
    public const string MissingId = "missing-id";
    public const string BadId = "bad-id";
    public const string DuplicateId = "duplicate-id";
    public const string MissingHandler = "missing-handler";
    public const string UnknownHandler = "unknown-handler";
    public const string UnknownDependency = "unknown-dependency";
    /// <summary>An open run no longer keeps the task depended on (it ended before the retention window).</summary>
    public const string ReleasedDependency = "released-dependency";
    public const string SelfLoop = "self-loop";
    public const string Cycle = "cycle";
    public const string UnknownResource = "unknown-resource";
    public const string BadValue = "bad-value";
    public const string BadArgs = "bad-args";
    public const string BadLayer = "bad-layer";
}
