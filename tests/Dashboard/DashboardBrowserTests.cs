using System.Net.Http.Headers;
using System.Text;
using System.Text.Json;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Support.UI;
using TaskMesh.Server;
using TaskMesh.Tests.Server;
using Xunit;

namespace TaskMesh.Tests.Dashboard;

/// <summary>
/// A service with tokens, its store seeded by runs submitted through its API, and Debian's
/// Chromium (headless, driven by ChromeDriver) on its dashboard — as an operator would use it.
/// Every page the tests visit is saved as a screenshot in <c>dashboard-screenshots</c> beside the tests.
/// </summary>
public sealed class DashboardFixture : IAsyncLifetime
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-dashboard-").FullName;
    private TestService? _service;
    private byte[] _key = [];

    public Uri Address => _service!.Server.HttpAddress;

    public string Token(string role) => Tokens.Create(_key, role, $"{role}-user", TimeSpan.FromHours(1));

    /// <summary>The seeded runs: a plain one, one whose task escalated (local → big), one with a failure.</summary>
    public string Plain { get; private set; } = "";
    public string Escalated { get; private set; } = "";

    /// <summary>Tasks the seeded runs recorded today (the overview's 7-day total).</summary>
    public int SeededTasks { get; private set; }

    public static string Screenshots { get; } = Path.Combine(AppContext.BaseDirectory, "dashboard-screenshots");

    public async Task InitializeAsync()
    {
        var keyFile = Path.Combine(_dir, "key");
        Tokens.CreateKeyFile(keyFile);
        _key = Tokens.LoadKey(keyFile);
        _service = await TestService.StartAsync(new ServerOptions { HttpPort = 0, SocketPort = null, TokenKeyFile = keyFile, GraphDirectory = _dir },
            HttpApiTests.BigLayer + "[[escalation.rules]]\nfrom = \"local\"\nto = \"big\"\ntrigger = \"error\"\n", Path.Combine(_dir, "runs.db"), metrics: true);
        using var http = Api("operator");
        Plain = await RunAsync(http, """{"name": "plain", "tasks": [{"id": "a", "handler": "noop"}, {"id": "b", "handler": "hash", "args": {"bytes": 1000}, "dependsOn": ["a"]}, {"id": "c", "handler": "noop", "dependsOn": ["a"]}]}""");
        Escalated = await RunAsync(http, """{"name": "moves", "tasks": [{"id": "first", "handler": "noop"}, {"id": "flaky", "handler": "fail", "args": {"message": "too weak here"}, "dependsOn": ["first"]}]}""");
        SeededTasks = 3 + 2;
        Directory.CreateDirectory(Screenshots);
    }

    public HttpClient Api(string role)
    {
        var http = new HttpClient { BaseAddress = Address, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", Token(role));
        return http;
    }

    private static async Task<string> RunAsync(HttpClient http, string graph)
    {
        using var submitted = await http.PostAsync("api/runs", new StringContent(graph, Encoding.UTF8, "application/json"));
        Assert.True(submitted.IsSuccessStatusCode, await submitted.Content.ReadAsStringAsync());
        string id = JsonDocument.Parse(await submitted.Content.ReadAsStringAsync()).RootElement.GetProperty("run_id").GetString()!;
        using var done = await http.GetAsync($"api/runs/{id}?wait=30");
        Assert.True(done.IsSuccessStatusCode);
        return id;
    }

    public async Task DisposeAsync()
    {
        if (_service is not null) await _service.DisposeAsync();
        Directory.Delete(_dir, recursive: true);
    }
}

/// <summary>Debian's Chromium, headless, through its ChromeDriver, with a profile of its own.</summary>
internal static class HeadlessChromium
{
    public static ChromeDriver Start(string profile)
    {
        Assert.True(File.Exists("/usr/bin/chromium") && File.Exists("/usr/bin/chromedriver"),
            "the browser tests need Debian's chromium and chromium-driver (scripts/test.sh installs them)");
        var options = new ChromeOptions { BinaryLocation = "/usr/bin/chromium" };
        options.AddArguments("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic", "--window-size=1400,1000", $"--user-data-dir={profile}");
        var service = ChromeDriverService.CreateDefaultService("/usr/bin", "chromedriver");
        service.HideCommandPromptWindow = true;
        service.SuppressInitialDiagnosticInformation = true;
        return new ChromeDriver(service, options, TimeSpan.FromSeconds(60));
    }
}

/// <summary>
/// The tests that run Chromium: alone, after the others (a browser's processes take both of this
/// machine's cores for a moment, and tests that time what they run would feel it).
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class BrowserCollection
{
    public const string Name = "browser";
}

[Collection(BrowserCollection.Name)]
public sealed class DashboardBrowserTests(DashboardFixture site) : IClassFixture<DashboardFixture>, IDisposable
{
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(20);
    private readonly string _profile = Directory.CreateTempSubdirectory("taskmesh-chromium-").FullName;
    private ChromeDriver? _browser;

    private ChromeDriver Browser => _browser ??= Start();

    private ChromeDriver Start() => HeadlessChromium.Start(_profile);

    public void Dispose()
    {
        _browser?.Quit();
        _browser?.Dispose();
        try { Directory.Delete(_profile, recursive: true); } catch (IOException) { }
    }

    private string Url(string path) => new Uri(site.Address, path).ToString();

    // A live page redraws its tables four times a second: an element read between two redraws may be
    // gone (stale) by the time it is asked something. Waits try again.
    private WebDriverWait Waiting()
    {
        var wait = new WebDriverWait(Browser, Wait);
        wait.IgnoreExceptionTypes(typeof(StaleElementReferenceException));
        return wait;
    }

    private IWebElement Find(string css)
    {
        try { return Waiting().Until(d => d.FindElements(By.CssSelector(css)).FirstOrDefault(e => e.Displayed))!; }
        catch (WebDriverTimeoutException)
        {
            Screenshot("timeout");
            throw new TimeoutException($"waited {Wait.TotalSeconds} s for {css} at {Browser.Url}; the page said: {Browser.FindElement(By.TagName("main")).Text}");
        }
    }

    /// <summary>Clicks what <paramref name="css"/> finds, again if a redraw replaced it first.</summary>
    private void Click(string css)
    {
        Find(css);
        Waiting().Until(d =>
        {
            var e = d.FindElements(By.CssSelector(css)).FirstOrDefault(x => x.Displayed);
            if (e is null) return false;
            e.Click();
            return true;
        });
    }

    private void Until(Func<IWebDriver, bool> condition, string what)
    {
        try { Waiting().Until(condition); }
        catch (WebDriverTimeoutException)
        {
            Screenshot("timeout");
            throw new TimeoutException($"waited {Wait.TotalSeconds} s for {what}; the page said: {Browser.FindElement(By.TagName("main")).Text}");
        }
    }

    private void Screenshot(string name) => Browser.GetScreenshot().SaveAsFile(Path.Combine(DashboardFixture.Screenshots, name + ".png"));

    private void SignIn(string token)
    {
        Browser.Navigate().GoToUrl(Url("/"));
        Until(d => d.Url.Contains("/signin", StringComparison.Ordinal), "the sign-in page");
        Find("#token").SendKeys(token);
        Click("#signin-button");
        Until(d => !d.Url.Contains("/signin", StringComparison.Ordinal), "signing in");
    }

    [Fact]
    public void AWrongToken_IsRefused_AndNothingIsShown()
    {
        Browser.Navigate().GoToUrl(Url("/runs/" + site.Plain));
        Until(d => d.Url.Contains("/signin?next=", StringComparison.Ordinal), "the redirect to sign in");
        Find("#token").SendKeys("not-a-token");
        Click("#signin-button");
        Until(d => d.FindElement(By.Id("signin-error")).Text.Length > 0, "the refusal");
        Assert.Contains("refused", Browser.FindElement(By.Id("signin-error")).Text);
        Assert.Contains("/signin", Browser.Url);
        Screenshot("signin-refused");
        // Nor does the API answer the browser without a session.
        Browser.Navigate().GoToUrl(Url("/api/runs"));
        Assert.Contains("unauthenticated", Browser.FindElement(By.TagName("body")).Text);
    }

    [Fact]
    public async Task TheOverview_ShowsTheStoresFigures_LayersAndRuns()
    {
        // The store's figures now (the seeded runs, and whatever this class's other tests ran before).
        using var api = site.Api("viewer");
        using var metrics = JsonDocument.Parse(await api.GetStringAsync("api/metrics?days=7"));
        long requests = metrics.RootElement.GetProperty("layers").EnumerateArray().Sum(d => d.GetProperty("requests").GetInt64());
        Assert.True(requests >= site.SeededTasks, metrics.RootElement.ToString());
        SignIn(site.Token("viewer"));
        Until(d => d.FindElements(By.CssSelector("[data-figure='tasks-7'] .value")).Count > 0, "the totals");
        string expected = requests.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);   // as the page writes it: 1,234
        Assert.Equal(expected, Find("[data-figure='tasks-7'] .value").Text);
        Assert.Equal(expected, Find("[data-figure='tasks-90'] .value").Text);
        // 5 tasks: 4 succeeded; flaky failed on local and on big — counted on each layer it ran on.
        Assert.Contains("%", Find("[data-figure='rate-7'] .value").Text);
        Assert.NotNull(Find("#layers tr[data-layer='local']"));
        Assert.NotNull(Find("#layers tr[data-layer='big']"));
        var moved = Find($"#runs tr[data-run='{site.Escalated}']");
        Assert.Contains("↑ 1", moved.Text);
        Assert.DoesNotContain("↑", Find($"#runs tr[data-run='{site.Plain}']").Text);
        Assert.Contains("escalations over", Find("#escalation-rate").Text);
        Assert.Contains("local → big", Find("table.heatmap").Text);
        Screenshot("overview");
    }

    [Fact]
    public void SigningIn_ReturnsToAPageOfThisSiteOnly()
    {
        foreach (var elsewhere in new[] { "%2F%2Fexample.com%2F", "%2F%5Cexample.com%2F", "https%3A%2F%2Fexample.com%2F" })
        {
            Browser.Manage().Cookies.DeleteAllCookies();
            Browser.Navigate().GoToUrl(Url("/signin?next=" + elsewhere));
            Find("#token").SendKeys(site.Token("viewer"));
            Click("#signin-button");
            Until(d => !d.Url.Contains("/signin", StringComparison.Ordinal), "signing in");
            Assert.StartsWith(site.Address.ToString(), Browser.Url);
        }
    }

    [Fact]
    public void ATaskPanel_ShowsItsEscalationHistory_AndAuditTrail()
    {
        SignIn(site.Token("viewer"));
        Browser.Navigate().GoToUrl(Url("/runs/" + site.Escalated));
        Click("tr[data-task='flaky']");
        Until(d => d.FindElements(By.CssSelector("#escalations li")).Count > 0, "the task's escalations");
        var history = Find("#escalations li");
        Assert.Contains("local → big on error", history.Text);
        Assert.Contains("too weak here", Find("#task-panel").Text);
        // Where it ran: its first layer, the layer it ended on, its attempts.
        var facts = Find("#task-panel dl").FindElements(By.TagName("dt")).Zip(Find("#task-panel dl").FindElements(By.TagName("dd"))).ToDictionary(p => p.First.Text, p => p.Second.Text);
        Assert.Equal(("fail", "local", "big", "2"), (facts["handler"], facts["first layer"], facts["layer"], facts["attempts"]));
        Assert.Contains("\"message\": \"too weak here\"", facts["arguments"]);   // its arguments, as JSON text
        Assert.StartsWith("local", facts["layer chosen"]);                        // the routing decision, from the audit trail
        Assert.NotNull(Find("#audit li"));
        // A viewer sees no escalation button.
        Assert.Empty(Browser.FindElements(By.Id("escalate")));
        Screenshot("run-task-panel");
    }

    [Fact]
    public void AnOperator_EscalatesAFinishedTask_AndWatchesTheNewRun()
    {
        SignIn(site.Token("operator"));
        Browser.Navigate().GoToUrl(Url("/runs/" + site.Plain));
        Click("tr[data-task='b']");
        Click("#escalate-to option[value='big']");
        Find("#escalate-reason").SendKeys("try the big one");
        Click("#escalate button[type=submit]");
        Until(d => d.Url.Contains("/runs/", StringComparison.Ordinal) && !d.Url.EndsWith(site.Plain, StringComparison.Ordinal), "the new run's view");
        Until(d => d.FindElement(By.Id("run-status")).Text == "succeeded", "the escalated run to succeed");
        Click("tr[data-task='b']");
        Until(d => d.FindElements(By.CssSelector("#escalations li")).Count > 0, "the manual escalation in the task's panel");
        var history = Find("#escalations li").Text;
        Assert.Contains("→ big on manual", history);
        Assert.Contains("try the big one", history);
        Screenshot("run-escalated");
    }

    [Fact]
    public void AnExample_IsPickedSubmittedAndRun()
    {
        SignIn(site.Token("operator"));
        Browser.Navigate().GoToUrl(Url("/submit"));
        Click("#example option[value='a fan-out and fan-in of 50 tasks']");
        Until(d => d.FindElement(By.Id("graph")).GetAttribute("value")!.Contains("gather", StringComparison.Ordinal), "the example in the text");
        Click("#submit-button");
        Until(d => d.Url.Contains("/runs/", StringComparison.Ordinal), "the run view");
        Until(d => d.FindElement(By.Id("run-status")).Text == "succeeded" && d.FindElements(By.CssSelector("#graph g.node.succeeded")).Count == 52, "the example's run");
    }

    [Fact]
    public async Task ABrokenGraph_ShowsItsErrors_WithLineAndTask_AndNothingRuns()
    {
        using var api = site.Api("viewer");
        int before = JsonDocument.Parse(await api.GetStringAsync("api/runs?limit=1000")).RootElement.GetProperty("runs").GetArrayLength();
        SignIn(site.Token("operator"));
        Browser.Navigate().GoToUrl(Url("/submit"));
        var text = Find("#graph");
        text.Clear();
        text.SendKeys("{\"name\": \"broken\", \"tasks\": [\n  {\"id\": \"a\", \"handler\": \"noop\"},\n  {\"id\": \"b\", \"handler\": \"no_such_handler\", \"dependsOn\": [\"a\", \"ghost\"]}\n]}");
        Click("#submit-button");
        var errors = Find("#graph-errors");
        Assert.Contains("ghost", errors.Text);
        Assert.Contains("b", errors.FindElements(By.CssSelector("tbody td")).Select(td => td.Text));
        Assert.Contains("3", errors.FindElements(By.CssSelector("tbody td")).Select(td => td.Text));   // the line of task b
        Assert.EndsWith("/submit", Browser.Url);
        Screenshot("submit-errors");
        int after = JsonDocument.Parse(await api.GetStringAsync("api/runs?limit=1000")).RootElement.GetProperty("runs").GetArrayLength();
        Assert.Equal(before, after);
    }

    [Fact]
    public void AGoodGraph_IsWatchedLiveUntilEveryTaskShowsItsFinalState_AndIdsAreText()
    {
        SignIn(site.Token("operator"));
        Browser.Navigate().GoToUrl(Url("/submit"));
        var text = Find("#graph");
        text.Clear();
        // Slow enough to be seen going; ids with markup and quotes, shown as text.
        var tasks = Enumerable.Range(0, 24).Select(i => $"{{\"id\": \"t{i:D2}\", \"handler\": \"sleep\", \"args\": {{\"millis\": 150}}}}").ToList();
        tasks.Add("{\"id\": \"<script>document.title='owned'</script>\\\"q\", \"handler\": \"noop\", \"dependsOn\": [\"t00\", {\"id\": \"t01\", \"type\": \"data\"}]}");
        text.SendKeys("{\"name\": \"watched\", \"defaults\": {}, \"tasks\": [" + string.Join(", ", tasks) + "]}");
        Click("#submit-button");
        Until(d => d.Url.Contains("/runs/", StringComparison.Ordinal), "the run view");
        Until(d => d.FindElement(By.Id("run-status")).Text == "running" || d.FindElement(By.Id("run-status")).Text == "succeeded", "the run's status");
        Screenshot("run-live");
        Until(d => d.FindElement(By.Id("run-status")).Text == "succeeded", "the run to succeed");
        Until(d => d.FindElements(By.CssSelector("#tasks tbody tr")).Count == 25
            && d.FindElements(By.CssSelector("#tasks tbody tr .status")).All(s => s.Text == "succeeded"), "every task's final state");
        string shown = Waiting().Until(d => d.FindElements(By.CssSelector("#tasks tbody tr"))
            .Single(r => r.GetAttribute("data-task")!.StartsWith("<script>", StringComparison.Ordinal)).FindElement(By.TagName("td")).Text);
        Assert.StartsWith("<script>document.title='owned'</script>\"q", shown);
        Assert.Equal("TaskMesh", Browser.Title);
        Assert.Empty(Browser.FindElements(By.CssSelector("main script")));
        // The graph: a node per task in its final state, the edges by kind, the critical path outlined.
        Until(d => d.FindElements(By.CssSelector("#graph g.node")).Count == 25
            && d.FindElements(By.CssSelector("#graph g.node")).All(n => n.GetAttribute("class")!.Contains("succeeded", StringComparison.Ordinal)), "every node's final colour");
        Assert.Single(Browser.FindElements(By.CssSelector("#graph path.edge.data")));
        Assert.Single(Browser.FindElements(By.CssSelector("#graph path.edge.hard")));
        Assert.NotEmpty(Browser.FindElements(By.CssSelector("#graph g.node.crit")));
        // The timeline: a bar per task, on lanes of the local layer's slots.
        Until(d => d.FindElements(By.CssSelector("#gantt rect.bar")).Count == 25, "the timeline");
        Screenshot("run-finished");
    }
}
