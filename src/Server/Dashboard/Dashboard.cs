using System.Collections.Frozen;
using System.Security.Cryptography;
using System.Text.Json;
using Microsoft.AspNetCore.Antiforgery;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.DataProtection;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;
using Microsoft.Extensions.DependencyInjection;

namespace TaskMesh.Server.Dashboard;

/// <summary>
/// The web dashboard of <c>taskmesh serve</c> (docs/dashboard.md): static pages and modules
/// embedded in this assembly (no CDN, nothing fetched from elsewhere), built on the HTTP API and
/// its event stream alone. Signing in keeps the caller's token in a cookie (HttpOnly,
/// SameSite=Strict; Secure over TLS) that the API accepts as it accepts the Authorization header;
/// a change made with that cookie must carry the anti-forgery token <c>GET /api/session</c> gives
/// (header <see cref="AntiforgeryHeader"/>). Every page is sent with a Content-Security-Policy
/// that allows this origin's scripts only: the pages put what a graph or task contains into the
/// document as text, never as HTML, and no inline script could run if one did.
/// </summary>
internal static class Dashboard
{
    /// <summary>The cookie that holds a signed-in browser's token.</summary>
    public const string SessionCookie = "taskmesh_session";

    /// <summary>The header that carries the anti-forgery token on a change made with the session cookie.</summary>
    public const string AntiforgeryHeader = "X-TaskMesh-CSRF";

    /// <summary>The item a request authenticated by the session cookie (not by a header) carries.</summary>
    public const string ByCookie = "taskmesh.by_cookie";

    private const string Prefix = "TaskMesh.Server.Dashboard.wwwroot.";

    // The pages: one document; its module reads the path and draws the page.
    private static readonly string[] Pages = ["/", "/runs/{id}", "/submit"];

    private const string Policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        + "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

    private static readonly FrozenDictionary<string, string> Types = new Dictionary<string, string>
    {
        [".html"] = "text/html; charset=utf-8",
        [".js"] = "text/javascript; charset=utf-8",
        [".css"] = "text/css; charset=utf-8",
        [".svg"] = "image/svg+xml",
        [".png"] = "image/png",
        [".txt"] = "text/plain; charset=utf-8",
    }.ToFrozenDictionary(StringComparer.Ordinal);

    // Every embedded file by its path under wwwroot ("app.js", "vendor/LICENSE.txt"), with its ETag.
    private static readonly Lazy<FrozenDictionary<string, (byte[] Bytes, string ETag)>> Files = new(() =>
    {
        var assembly = typeof(Dashboard).Assembly;
        var files = new Dictionary<string, (byte[], string)>(StringComparer.Ordinal);
        foreach (var name in assembly.GetManifestResourceNames())
        {
            if (!name.StartsWith(Prefix, StringComparison.Ordinal)) continue;
            using var s = assembly.GetManifestResourceStream(name)!;
            using var m = new MemoryStream();
            s.CopyTo(m);
            var bytes = m.ToArray();
            files[name[Prefix.Length..]] = (bytes, "\"" + Convert.ToHexStringLower(SHA256.HashData(bytes).AsSpan(0, 12)) + "\"");
        }
        return files.ToFrozenDictionary(StringComparer.Ordinal);
    });

    /// <summary>Anti-forgery (its keys live in memory: a restart signs browsers' pages anew, not their sessions).</summary>
    public static void AddServices(IServiceCollection services)
    {
        services.AddDataProtection().UseEphemeralDataProtectionProvider();
        services.AddAntiforgery(o =>
        {
            o.HeaderName = AntiforgeryHeader;
            o.Cookie.Name = "taskmesh_af";
            o.Cookie.HttpOnly = true;
            o.Cookie.SameSite = SameSiteMode.Strict;
            o.Cookie.SecurePolicy = Microsoft.AspNetCore.Http.CookieSecurePolicy.SameAsRequest;
            o.SuppressXFrameOptionsHeader = true;   // the pages send frame-ancestors 'none'
        });
    }

    /// <summary>
    /// Refuses a change (POST, PUT, PATCH, DELETE) to the API that was authenticated by the session
    /// cookie and lacks a valid anti-forgery token: 403, nothing done. Signing in is not a change
    /// made with the cookie.
    /// </summary>
    public static async Task CheckForgeryAsync(HttpContext http, RequestDelegate next)
    {
        var method = http.Request.Method;
        bool change = !(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method));
        if (change && http.Items.ContainsKey(ByCookie) && !(HttpMethods.IsPost(method) && http.Request.Path.Equals("/api/session", StringComparison.Ordinal)))
        {
            var antiforgery = http.RequestServices.GetRequiredService<IAntiforgery>();
            if (!await antiforgery.IsRequestValidAsync(http).ConfigureAwait(false))
            {
                await HttpApi.Problem(StatusCodes.Status403Forbidden, "forgery", $"a change made with the dashboard's session needs its anti-forgery token ({AntiforgeryHeader}; GET /api/session gives it)").ExecuteAsync(http);
                return;
            }
        }
        await next(http).ConfigureAwait(false);
    }

    /// <summary>Maps the pages, their files and the session endpoints.</summary>
    /// <param name="key">The token key, or null when the service requires no tokens (then there is no signing in).</param>
    public static void Map(IEndpointRouteBuilder app, byte[]? key, Access access, bool readOnly)
    {
        foreach (var page in Pages)
            app.MapGet(page, (HttpContext http) =>
            {
                if (key is not null && http.User.Identity?.IsAuthenticated != true)
                    return Results.Redirect("/signin?next=" + Uri.EscapeDataString(http.Request.Path + http.Request.QueryString));
                return File(http, "index.html");
            }).ExcludeFromDescription();
        app.MapGet("/signin", (HttpContext http) => File(http, "index.html")).ExcludeFromDescription();
        app.MapGet("/assets/{*path}", (string path, HttpContext http) => File(http, path)).ExcludeFromDescription();

        var api = app.MapGroup("/api/session");
        // Signing in: the token checked as the API checks it, then kept in the session cookie.
        api.MapPost("", async (HttpContext http) =>
        {
            if (key is null) throw new ApiException(404, "no sign-in", "this service requires no tokens: there is nothing to sign in to");
            var body = await HttpApi.ReadBodyAsync(http, 16 * 1024);
            string? token;
            try
            {
                using var doc = JsonDocument.Parse(body);
                token = doc.RootElement.GetProperty("token").GetString();
            }
            catch (Exception ex) when (ex is JsonException or KeyNotFoundException or InvalidOperationException)
            {
                throw new ApiException(400, "invalid request", "the body is {\"token\": TOKEN}");
            }
            var (subject, role, problem) = await Tokens.Validate(key, token ?? "");
            if (problem is not null || role is null)
                return HttpApi.Problem(StatusCodes.Status401Unauthorized, "unauthenticated", $"the token was refused: {problem ?? "it names no role"}");
            var expires = Tokens.ExpiryOf(token!);
            http.Response.Cookies.Append(SessionCookie, token!, new CookieOptions
            {
                HttpOnly = true,
                SameSite = SameSiteMode.Strict,
                Secure = http.Request.IsHttps,
                Path = "/",
                Expires = expires,
                IsEssential = true,
            });
            return HttpApi.Json(w =>
            {
                w.WriteStartObject();
                w.WriteString("subject", subject);
                w.WriteString("role", role);
                if (expires is { } e) w.WriteString("expires", e);
                w.WriteEndObject();
            });
        }).ExcludeFromDescription();
        // Who is signed in, and the anti-forgery token for the changes the pages make.
        access.Require(api.MapGet("", (HttpContext http, IAntiforgery antiforgery) =>
        {
            var tokens = antiforgery.GetAndStoreTokens(http);
            return HttpApi.Json(w =>
            {
                w.WriteStartObject();
                w.WriteBoolean("tokens_required", key is not null);
                w.WriteString("subject", key is null ? "anyone" : http.User.FindFirst("sub")?.Value);
                w.WriteString("role", key is null ? Roles.Admin : http.User.FindFirst(Tokens.RoleClaim)?.Value);
                w.WriteString("csrf", tokens.RequestToken);
                w.WriteBoolean("read_only", readOnly);
                w.WriteEndObject();
            });
        }), Roles.Viewer).ExcludeFromDescription();
        // Signing out.
        app.MapDelete("/api/session", (HttpContext http) =>
        {
            http.Response.Cookies.Delete(SessionCookie, new CookieOptions { Path = "/", SameSite = SameSiteMode.Strict, Secure = http.Request.IsHttps, HttpOnly = true });
            return Results.NoContent();
        }).ExcludeFromDescription();
    }

    private static IResult File(HttpContext http, string path)
    {
        if (!Files.Value.TryGetValue(path, out var file) || !Types.TryGetValue(Path.GetExtension(path), out var type))
            return HttpApi.Problem(StatusCodes.Status404NotFound, "not found", "no such file of the dashboard");
        var headers = http.Response.Headers;
        headers.ContentSecurityPolicy = Policy;
        headers.XContentTypeOptions = "nosniff";
        headers["Referrer-Policy"] = "no-referrer";
        headers.CacheControl = "no-cache";
        headers.ETag = file.ETag;
        if (http.Request.Headers.IfNoneMatch == file.ETag) return Results.StatusCode(StatusCodes.Status304NotModified);
        return Results.Bytes(file.Bytes, type);
    }
}
