using System.Net;
using Microsoft.AspNetCore.Http;

namespace TaskMesh.Server;

/// <summary>
/// Refuses what a web page on another site can make a browser send. Two checks, before
/// authentication:
/// <list type="bullet">
/// <item>A change (POST, PUT, PATCH, DELETE) a browser marks as coming from another origin
/// (<c>Sec-Fetch-Site: cross-site</c> or <c>same-site</c>, or an <c>Origin</c> that is not this
/// host) is refused with 403. Without tokens a plain form post from any page the user opens
/// would otherwise submit or cancel work; with tokens the session cookie is SameSite=Strict and
/// the anti-forgery token guards it too. Programs (curl, the clients, workers) send neither
/// header and are not affected.</item>
/// <item>A service without tokens on a loopback address answers only requests addressed to a
/// loopback name (<c>localhost</c>, 127.0.0.0/8, <c>::1</c>): a site whose name is made to
/// resolve to 127.0.0.1 (DNS rebinding) reads nothing and changes nothing (421).</item>
/// </list>
/// </summary>
internal static class CrossOrigin
{
    public static Func<HttpContext, RequestDelegate, Task> Guard(bool tokensRequired, bool loopback)
    {
        bool checkHost = !tokensRequired && loopback;
        return (http, next) =>
        {
            if (checkHost && !IsLoopbackName(http.Request.Host.Host))
                return HttpApi.Problem(StatusCodes.Status421MisdirectedRequest, "misdirected",
                    "this service has no tokens and answers only requests addressed to localhost or a loopback address").ExecuteAsync(http);
            var method = http.Request.Method;
            bool change = !(HttpMethods.IsGet(method) || HttpMethods.IsHead(method) || HttpMethods.IsOptions(method));
            if (change && FromAnotherOrigin(http.Request))
                return HttpApi.Problem(StatusCodes.Status403Forbidden, "cross-origin",
                    "a change sent by a page of another site is refused").ExecuteAsync(http);
            return next(http);
        };
    }

    /// <summary>True when a browser says the request comes from a page of another origin.</summary>
    internal static bool FromAnotherOrigin(HttpRequest request)
    {
        var site = request.Headers["Sec-Fetch-Site"].ToString();
        if (site.Length > 0)
            return !(site.Equals("same-origin", StringComparison.OrdinalIgnoreCase) || site.Equals("none", StringComparison.OrdinalIgnoreCase));
        var origin = request.Headers.Origin.ToString();
        if (origin.Length == 0) return false;   // not a browser, or one too old to say: nothing to judge by
        if (!Uri.TryCreate(origin, UriKind.Absolute, out var uri)) return true;   // "null" (a sandboxed or file page) or garbage
        return !string.Equals(uri.Authority, request.Host.Value, StringComparison.OrdinalIgnoreCase)
            || !string.Equals(uri.Scheme, request.Scheme, StringComparison.OrdinalIgnoreCase);
    }

    private static bool IsLoopbackName(string host)
    {
        if (host.Equals("localhost", StringComparison.OrdinalIgnoreCase) || host.EndsWith(".localhost", StringComparison.OrdinalIgnoreCase)) return true;
        var literal = host.StartsWith('[') && host.EndsWith(']') ? host[1..^1] : host;
        return IPAddress.TryParse(literal, out var ip) && IPAddress.IsLoopback(ip);
    }
}
