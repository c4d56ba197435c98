using System.Net;
using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using Xunit;

namespace TaskMesh.Tests.Dashboard;

/// <summary>The dashboard's side of the API over real HTTP: sign-in, the session cookie, anti-forgery, the pages' headers, the overview's figures.</summary>
public sealed class DashboardApiTests(DashboardFixture site) : IClassFixture<DashboardFixture>
{
    private HttpClient Client() => new(new HttpClientHandler { UseCookies = false, AllowAutoRedirect = false }) { BaseAddress = site.Address, Timeout = TimeSpan.FromSeconds(30) };

    private static StringContent Json(string json) => new(json, Encoding.UTF8, "application/json");

    /// <summary>Signs in with <paramref name="role"/>'s token; the session cookie as a Cookie header value.</summary>
    private async Task<string> SignInAsync(HttpClient http, string role)
    {
        using var response = await http.PostAsync("api/session", Json(JsonSerializer.Serialize(new { token = site.Token(role) })));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var cookie = Assert.Single(response.Headers.GetValues("Set-Cookie"), c => c.StartsWith("taskmesh_session=", StringComparison.Ordinal));
        Assert.Contains("httponly", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("samesite=strict", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("path=/", cookie, StringComparison.OrdinalIgnoreCase);
        Assert.Contains("expires=", cookie, StringComparison.OrdinalIgnoreCase);
        return cookie.Split(';')[0];
    }

    /// <summary>The anti-forgery token of a session, and the cookie that goes with it.</summary>
    private static async Task<(string Token, string Cookie)> CsrfAsync(HttpClient http, string session)
    {
        using var request = new HttpRequestMessage(HttpMethod.Get, "api/session");
        request.Headers.Add("Cookie", session);
        using var response = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync());
        var af = response.Headers.GetValues("Set-Cookie").Single(c => c.StartsWith("taskmesh_af=", StringComparison.Ordinal)).Split(';')[0];
        return (doc.RootElement.GetProperty("csrf").GetString()!, af);
    }

    [Fact]
    public async Task SignIn_RefusesABadToken_AndKeepsAGoodOneInAnHttpOnlyStrictCookie()
    {
        using var http = Client();
        using (var bad = await http.PostAsync("api/session", Json("""{"token": "nonsense"}""")))
        {
            Assert.Equal(HttpStatusCode.Unauthorized, bad.StatusCode);
            Assert.False(bad.Headers.Contains("Set-Cookie"));
        }
        using (var malformed = await http.PostAsync("api/session", Json("[1, 2]")))
            Assert.Equal(HttpStatusCode.BadRequest, malformed.StatusCode);
        string session = await SignInAsync(http, "viewer");
        using var request = new HttpRequestMessage(HttpMethod.Get, "api/runs");
        request.Headers.Add("Cookie", session);
        using var runs = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, runs.StatusCode);
    }

    [Fact]
    public async Task AChangeMadeWithTheCookie_NeedsTheAntiForgeryToken_AndTheRolesStillApply()
    {
        using var http = Client();
        string session = await SignInAsync(http, "operator");
        const string graph = """{"name": "forged", "tasks": [{"id": "a", "handler": "noop"}]}""";
        int before = await CountRunsAsync(http, "forged");

        using (var forged = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            forged.Headers.Add("Cookie", session);
            using var response = await http.SendAsync(forged);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Contains("anti-forgery", await response.Content.ReadAsStringAsync());
        }
        var (token, af) = await CsrfAsync(http, session);
        using (var wrong = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            wrong.Headers.Add("Cookie", $"{session}; {af}");
            wrong.Headers.Add("X-TaskMesh-CSRF", token[..^4] + "AAAA");
            using var response = await http.SendAsync(wrong);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        Assert.Equal(before, await CountRunsAsync(http, "forged"));   // nothing ran
        using (var good = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            good.Headers.Add("Cookie", $"{session}; {af}");
            good.Headers.Add("X-TaskMesh-CSRF", token);
            using var response = await http.SendAsync(good);
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }
        // A bearer header carries no ambient credential: no anti-forgery token asked.
        using (var api = site.Api("operator"))
        using (var response = await api.PostAsync("api/runs", Json(graph)))
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        // A viewer's session may read, not submit, anti-forgery token or not.
        string viewer = await SignInAsync(http, "viewer");
        var (vt, vaf) = await CsrfAsync(http, viewer);
        using (var denied = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            denied.Headers.Add("Cookie", $"{viewer}; {vaf}");
            denied.Headers.Add("X-TaskMesh-CSRF", vt);
            using var response = await http.SendAsync(denied);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Contains("viewer", await response.Content.ReadAsStringAsync());
        }
    }

    [Fact]
    public async Task WithoutTokens_APageOfAnotherSiteCannotChangeAnything_NorReadThroughARebindingName()
    {
        await using var open = await TaskMesh.Tests.Server.TestService.StartAsync(new TaskMesh.Server.ServerOptions { HttpPort = 0, SocketPort = null });
        using var http = new HttpClient { BaseAddress = open.Server.HttpAddress, Timeout = TimeSpan.FromSeconds(30) };
        const string graph = """{"name": "from-elsewhere", "tasks": [{"id": "a", "handler": "noop"}]}""";
        // What a form on another site can make a browser send: text/plain, no preflight.
        using (var form = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = new StringContent(graph, Encoding.UTF8, "text/plain") })
        {
            form.Headers.Add("Origin", "http://attacker.example");
            using var response = await http.SendAsync(form);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
            Assert.Contains("another site", await response.Content.ReadAsStringAsync());
        }
        using (var fetch = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            fetch.Headers.Add("Sec-Fetch-Site", "cross-site");
            using var response = await http.SendAsync(fetch);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        using (var sandboxed = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            sandboxed.Headers.Add("Origin", "null");
            using var response = await http.SendAsync(sandboxed);
            Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        }
        // A name of the attacker's resolving to 127.0.0.1: not answered, not even reads.
        using (var rebound = new HttpRequestMessage(HttpMethod.Get, "api/runs"))
        {
            rebound.Headers.Host = "attacker.example:" + open.Server.HttpAddress.Port;
            using var response = await http.SendAsync(rebound);
            Assert.Equal(HttpStatusCode.MisdirectedRequest, response.StatusCode);
        }
        using (var runs = JsonDocument.Parse(await http.GetStringAsync("api/runs?limit=100")))
            Assert.DoesNotContain(runs.RootElement.GetProperty("runs").EnumerateArray(), r => r.GetProperty("graph").GetString() == "from-elsewhere");
        // The page's own requests (same origin) and programs (no Origin) are served; so is localhost.
        using (var own = new HttpRequestMessage(HttpMethod.Post, "api/runs") { Content = Json(graph) })
        {
            own.Headers.Add("Origin", open.Server.HttpAddress.GetLeftPart(UriPartial.Authority));
            own.Headers.Add("Sec-Fetch-Site", "same-origin");
            using var response = await http.SendAsync(own);
            Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        }
        using (var program = await http.PostAsync("api/runs", Json(graph)))
            Assert.Equal(HttpStatusCode.Created, program.StatusCode);
        using (var local = new HttpRequestMessage(HttpMethod.Get, "health"))
        {
            local.Headers.Host = "localhost:" + open.Server.HttpAddress.Port;
            using var response = await http.SendAsync(local);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        }
    }

    private async Task<int> CountRunsAsync(HttpClient http, string graph)
    {
        using var api = site.Api("viewer");
        using var doc = JsonDocument.Parse(await api.GetStringAsync("api/runs?limit=1000"));
        return doc.RootElement.GetProperty("runs").EnumerateArray().Count(r => r.GetProperty("graph").GetString() == graph);
    }

    [Fact]
    public async Task Pages_NeedASession_AndAreSentUnderAPolicyOfThisOriginsScriptsOnly()
    {
        using var http = Client();
        using (var anonymous = await http.GetAsync("runs/abc?x=1"))
        {
            Assert.Equal(HttpStatusCode.Redirect, anonymous.StatusCode);
            Assert.Equal("/signin?next=%2Fruns%2Fabc%3Fx%3D1", anonymous.Headers.Location!.OriginalString);
        }
        string session = await SignInAsync(http, "viewer");
        using var request = new HttpRequestMessage(HttpMethod.Get, "/");
        request.Headers.Add("Cookie", session);
        using var page = await http.SendAsync(request);
        Assert.Equal(HttpStatusCode.OK, page.StatusCode);
        Assert.Equal("text/html", page.Content.Headers.ContentType!.MediaType);
        var policy = string.Join(";", page.Headers.GetValues("Content-Security-Policy"));
        Assert.Contains("script-src 'self'", policy);
        Assert.Contains("default-src 'none'", policy);
        Assert.DoesNotContain("unsafe-inline", policy);
        Assert.Equal("nosniff", page.Headers.GetValues("X-Content-Type-Options").Single());
        var html = await page.Content.ReadAsStringAsync();
        Assert.DoesNotContain("<script>", html);   // no inline script: only the module file
        using (var module = await http.GetAsync("assets/app.js"))
        {
            Assert.Equal(HttpStatusCode.OK, module.StatusCode);
            Assert.Equal("text/javascript", module.Content.Headers.ContentType!.MediaType);
            Assert.DoesNotContain("innerHTML", await module.Content.ReadAsStringAsync());
            var etag = module.Headers.ETag!;
            using var again = new HttpRequestMessage(HttpMethod.Get, "assets/app.js");
            again.Headers.IfNoneMatch.Add(etag);
            using var notModified = await http.SendAsync(again);
            Assert.Equal(HttpStatusCode.NotModified, notModified.StatusCode);
        }
        using (var missing = await http.GetAsync("assets/../../etc/passwd"))
            Assert.NotEqual(HttpStatusCode.OK, missing.StatusCode);
        using (var unknown = await http.GetAsync("assets/nothing.js"))
            Assert.Equal(HttpStatusCode.NotFound, unknown.StatusCode);
    }

    [Fact]
    public async Task TheOverviewsFigures_AreTheStoresEscalationsAndComplexity()
    {
        using var api = site.Api("viewer");
        using var escalations = JsonDocument.Parse(await api.GetStringAsync("api/metrics/escalations?days=7"));
        var row = Assert.Single(escalations.RootElement.GetProperty("escalations").EnumerateArray());
        Assert.Equal(("local", "big", 1), (row.GetProperty("from").GetString(), row.GetProperty("to").GetString(), row.GetProperty("count").GetInt32()));
        Assert.Equal(DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture), row.GetProperty("day").GetString());
        using var complexity = JsonDocument.Parse(await api.GetStringAsync("api/metrics/complexity?days=7"));
        var buckets = complexity.RootElement.GetProperty("buckets").EnumerateArray().ToList();
        Assert.True(buckets.Sum(b => b.GetProperty("tasks").GetInt32()) >= site.SeededTasks, complexity.RootElement.ToString());
        Assert.All(buckets, b => Assert.InRange(b.GetProperty("from").GetInt32(), 0, 90));
        using var bad = await api.GetAsync("api/metrics/escalations?days=0");
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
    }
}
