using System.Security.Claims;
using System.Security.Cryptography;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace TaskMesh.Server;

/// <summary>The roles a token carries, each allowed what the one before it is, and more.</summary>
public static class Roles
{
    /// <summary>Reads: runs, tasks, layers, status, metrics, events.</summary>
    public const string Viewer = "viewer";

    /// <summary>Also submits graphs and tasks, cancels, escalates, serves as a worker.</summary>
    public const string Operator = "operator";

    /// <summary>Also changes rules and layers, and trains.</summary>
    public const string Admin = "admin";

    /// <summary>Every role, least first.</summary>
    public static readonly IReadOnlyList<string> All = [Viewer, Operator, Admin];

    /// <summary>True when <paramref name="held"/> allows what <paramref name="needed"/> allows.</summary>
    public static bool Allows(string? held, string needed)
    {
        int h = IndexOf(held), n = IndexOf(needed);
        return h >= 0 && n >= 0 && h >= n;
    }

    private static int IndexOf(string? role) => role switch { Viewer => 0, Operator => 1, Admin => 2, _ => -1 };
}

/// <summary>
/// Bearer tokens of <c>taskmesh serve</c>: JSON Web Tokens signed with HMAC-SHA256 by a key kept
/// in a file (32 random bytes or more), with the issuer and audience <c>taskmesh</c>, a subject
/// (who: it goes into the audit trail), a <c>role</c> claim and an expiry. The HTTP API and the
/// socket handshake validate them the same way (<see cref="Validate"/>).
/// </summary>
public static class Tokens
{
    /// <summary>The issuer and the audience of every token.</summary>
    public const string Issuer = "taskmesh";

    /// <summary>The claim that holds the role.</summary>
    public const string RoleClaim = "role";

    /// <summary>The least key length, in bytes (HMAC-SHA256's block of security).</summary>
    public const int MinKeyBytes = 32;

    /// <summary>How far the clocks of the token's maker and the service may disagree.</summary>
    public static readonly TimeSpan ClockSkew = TimeSpan.FromSeconds(30);

    /// <summary>Writes a new random key to <paramref name="path"/> (readable by its owner only); refuses to overwrite one.</summary>
    /// <exception cref="IOException">The file exists or cannot be written.</exception>
    public static void CreateKeyFile(string path)
    {
        var key = RandomNumberGenerator.GetBytes(MinKeyBytes * 2);
        var options = new FileStreamOptions { Mode = FileMode.CreateNew, Access = FileAccess.Write };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;
        using var file = new FileStream(path, options);
        using var writer = new StreamWriter(file);
        writer.WriteLine(Convert.ToBase64String(key));
    }

    /// <summary>The key in <paramref name="path"/>: base64 text of at least <see cref="MinKeyBytes"/> bytes.</summary>
    /// <exception cref="InvalidDataException">The file is not such a key (the message says why).</exception>
    /// <exception cref="IOException">It cannot be read.</exception>
    public static byte[] LoadKey(string path)
    {
        var info = new FileInfo(path);
        if (!info.Exists) throw new FileNotFoundException($"no key file '{path}' (make one with: taskmesh token key --key-file {path})", path);
        if (info.Length > 4096) throw new InvalidDataException($"key file '{path}' is {info.Length:N0} bytes: not a key (base64 text of {MinKeyBytes}+ random bytes)");
        string text = File.ReadAllText(path).Trim();
        byte[] key;
        try { key = Convert.FromBase64String(text); }
        catch (FormatException) { throw new InvalidDataException($"key file '{path}' is not base64 text (make one with: taskmesh token key --key-file FILE)"); }
        if (key.Length < MinKeyBytes) throw new InvalidDataException($"key file '{path}' holds {key.Length} bytes; a key needs at least {MinKeyBytes}");
        return key;
    }

    /// <summary>A token for <paramref name="subject"/> with <paramref name="role"/>, valid for <paramref name="lifetime"/>.</summary>
    public static string Create(byte[] key, string role, string subject, TimeSpan lifetime, TimeProvider? clock = null)
    {
        ArgumentNullException.ThrowIfNull(key);
        if (!Roles.All.Contains(role)) throw new ArgumentException($"role must be one of {string.Join(", ", Roles.All)}, got '{role}'", nameof(role));
        if (lifetime <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(lifetime), "a token's lifetime must be positive");
        var now = (clock ?? TimeProvider.System).GetUtcNow().UtcDateTime;
        var descriptor = new SecurityTokenDescriptor
        {
            Issuer = Issuer,
            Audience = Issuer,
            Subject = new ClaimsIdentity([new Claim(JwtRegisteredClaimNames.Sub, subject), new Claim(RoleClaim, role)]),
            IssuedAt = now,
            NotBefore = now,
            Expires = now + lifetime,
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(key), SecurityAlgorithms.HmacSha256),
        };
        return new JsonWebTokenHandler().CreateToken(descriptor);
    }

    /// <summary>What a token is checked against: the key, HS256 only, issuer, audience, lifetime.</summary>
    public static TokenValidationParameters ValidationParameters(byte[] key) => new()
    {
        IssuerSigningKey = new SymmetricSecurityKey(key),
        ValidAlgorithms = [SecurityAlgorithms.HmacSha256],
        ValidIssuer = Issuer,
        ValidAudience = Issuer,
        RequireExpirationTime = true,
        RequireSignedTokens = true,
        ClockSkew = ClockSkew,
        NameClaimType = JwtRegisteredClaimNames.Sub,
        RoleClaimType = RoleClaim,
    };

    /// <summary>When a token expires, or null when it cannot be read (a token is validated before this is asked).</summary>
    internal static DateTimeOffset? ExpiryOf(string token)
    {
        try
        {
            var jwt = new JsonWebToken(token);
            return jwt.ValidTo == DateTime.MinValue ? null : new DateTimeOffset(DateTime.SpecifyKind(jwt.ValidTo, DateTimeKind.Utc));
        }
        catch (ArgumentException)
        {
            return null;
        }
    }

    /// <summary>The subject and role of a valid token, or why it is not valid.</summary>
    public static async Task<(string? Subject, string? Role, string? Problem)> Validate(byte[] key, string token)
    {
        var result = await new JsonWebTokenHandler().ValidateTokenAsync(token, ValidationParameters(key)).ConfigureAwait(false);
        if (!result.IsValid) return (null, null, result.Exception is SecurityTokenExpiredException ? "the token has expired" : "the token is not valid");
        string? role = result.ClaimsIdentity.FindFirst(RoleClaim)?.Value;
        if (!Roles.All.Contains(role)) return (null, null, "the token carries no known role");
        return (result.ClaimsIdentity.FindFirst(JwtRegisteredClaimNames.Sub)?.Value ?? "", role, null);
    }
}
