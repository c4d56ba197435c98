using System.Diagnostics;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.Extensions.DependencyInjection;
using OpenQA.Selenium;
using OpenQA.Selenium.Chrome;
using OpenQA.Selenium.Support.UI;
using TaskMesh.Bench.Dag;
using TaskMesh.Engine.Configuration;
using TaskMesh.Hosting;
using TaskMesh.Server;

namespace TaskMesh.Bench.Dashboard;

/// <summary>
/// <c>bench -- dashboard [--tasks 100000] [--millis 5] [--slots 64] --json out.json</c>: the dashboard's
/// run view following a large run live in Debian's Chromium (headless, through ChromeDriver). The run:
/// <c>--tasks</c> sleeping tasks in 100 levels, each depending on one task of the level before.
/// Records how long the page takes to draw the run, the main thread's long tasks (over 50 ms, from
/// the browser's own <c>longtask</c> entries) while events stream in, and how long after the run ends
/// the page shows every task's final state.
/// </summary>
internal static class DashboardSuite
{
    private sealed record Record(string metric, double value, string unit);

    public static int Run(string[] args) => RunAsync(args).GetAwaiter().GetResult();

    private static async Task<int> RunAsync(string[] args)
    {
        int tasks = int.Parse(DagSuite.Opt(args, "--tasks") ?? "100000");
        int millis = int.Parse(DagSuite.Opt(args, "--millis") ?? "5");
        int slots = int.Parse(DagSuite.Opt(args, "--slots") ?? "64");
        string? json = DagSuite.Opt(args, "--json");
        var records = new List<Record>();
        void Add(string metric, double value, string unit)
        {
            records.Add(new Record(metric, Math.Round(value, 3), unit));
            Console.WriteLine($"{metric,-36} {value,12:N1} {unit}");
        }

        var services = new ServiceCollection();
        services.AddTaskMesh(TaskMeshConfig.Parse($"[store]\nenabled = false\n[execution]\nmax_parallel_tasks = {slots}\n[api]\nkeep_finished_runs = 4\n"));
        await using var provider = services.BuildServiceProvider();
        var runtime = provider.GetRequiredService<TaskMeshRuntime>();
        await using var server = await TaskMeshServer.StartAsync(runtime, new ServerOptions { HttpPort = 0, SocketPort = null, RequestsPerSecond = 0 });
        using var http = new HttpClient { BaseAddress = server.HttpAddress, Timeout = TimeSpan.FromMinutes(5) };
        Console.WriteLine($"dashboard bench: {tasks:N0} tasks of {millis} ms on {slots} slots, the run view in headless Chromium");

        var profile = Directory.CreateTempSubdirectory("taskmesh-bench-chromium-").FullName;
        var options = new ChromeOptions { BinaryLocation = "/usr/bin/chromium" };
        options.AddArguments("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic", "--window-size=1400,1000", $"--user-data-dir={profile}");
        var driverService = ChromeDriverService.CreateDefaultService("/usr/bin", "chromedriver");
        driverService.SuppressInitialDiagnosticInformation = true;
        using var browser = new ChromeDriver(driverService, options, TimeSpan.FromMinutes(2));
        try
        {
            // The browser keeps its long tasks from the first script of every page on (injected by the
            // driver, so the pages' own policy is untouched).
            browser.ExecuteCdpCommand("Page.addScriptToEvaluateOnNewDocument", new Dictionary<string, object?>
            {
                ["source"] = "window.__long = []; new PerformanceObserver(l => { for (const e of l.getEntries()) window.__long.push([e.startTime, e.duration]); }).observe({ type: 'longtask', buffered: true });",
            });
            var wait = new WebDriverWait(browser, TimeSpan.FromMinutes(5)) { PollingInterval = TimeSpan.FromMilliseconds(20) };

            // Warm: a small run watched to its end (the service's and the browser's first page).
            string warm = await SubmitAsync(http, Graph(2_000, 1, 1));
            browser.Navigate().GoToUrl(new Uri(server.HttpAddress, $"/runs/{warm}").ToString());
            wait.Until(d => Text(d, "#run-status") == "succeeded" && Text(d, "[data-count='succeeded'] .value") == "2,000");

            string runId = await SubmitAsync(http, Graph(tasks, millis, 100));
            long opened = Stopwatch.GetTimestamp();
            browser.Navigate().GoToUrl(new Uri(server.HttpAddress, $"/runs/{runId}").ToString());
            wait.Until(d => d.FindElements(By.CssSelector("#graph svg")).Count > 0);
            Add("page_drawn_ms", Stopwatch.GetElapsedTime(opened).TotalMilliseconds, "ms");

            // While it goes: the page's redraws against the events, as the browser's long tasks say.
            var done = await http.GetAsync($"api/runs/{runId}?wait=600");
            long ended = Stopwatch.GetTimestamp();
            var live = LongTasks(browser);
            using (var summary = JsonDocument.Parse(await done.Content.ReadAsStringAsync()))
                Add("run_wall_ms", summary.RootElement.GetProperty("wall_ms").GetDouble(), "ms");
            string total = tasks.ToString("N0", System.Globalization.CultureInfo.InvariantCulture);
            wait.Until(d => Text(d, "#run-status") == "succeeded" && Text(d, "[data-count='succeeded'] .value") == total
                && d.FindElements(By.CssSelector("#graph rect.bar.succeeded")).Count >= 100 && d.FindElements(By.CssSelector("#graph rect.bar.waiting")).Count == 0);
            Add("final_state_after_end_ms", Stopwatch.GetElapsedTime(ended).TotalMilliseconds, "ms");
            var all = LongTasks(browser);
            Add("long_tasks_while_running", live.Count, "tasks");
            Add("longest_task_while_running_ms", live.Count == 0 ? 0 : live.Max(), "ms");
            Add("blocking_while_running_ms", live.Sum(d => Math.Max(0, d - 50)), "ms");
            Add("longest_task_overall_ms", all.Count == 0 ? 0 : all.Max(), "ms");
            // Responsive: a click on a task opens its panel.
            long click = Stopwatch.GetTimestamp();
            browser.FindElement(By.CssSelector("#tasks tbody tr")).Click();
            wait.Until(d => d.FindElements(By.CssSelector("#task-panel dl")).Count > 0);
            Add("task_panel_after_click_ms", Stopwatch.GetElapsedTime(click).TotalMilliseconds, "ms");
        }
        finally
        {
            browser.Quit();
            try { Directory.Delete(profile, recursive: true); } catch (IOException) { }
        }

        if (json is not null)
        {
            await File.WriteAllTextAsync(json, JsonSerializer.Serialize(records, new JsonSerializerOptions { WriteIndented = true }));
            Console.WriteLine($"wrote {json}");
        }
        return 0;
    }

    private static string Text(IWebDriver d, string css) => d.FindElements(By.CssSelector(css)).FirstOrDefault()?.Text ?? "";

    private static List<double> LongTasks(ChromeDriver browser)
        => ((IEnumerable<object>)browser.ExecuteScript("return window.__long.map(e => e[1]);")!).Select(Convert.ToDouble).ToList();

    /// <summary>n sleeping tasks in <paramref name="levels"/> levels, each depending on one task of the level before.</summary>
    private static string Graph(int n, int millis, int levels)
    {
        int width = Math.Max(1, n / levels);
        var list = new JsonArray();
        for (int i = 0; i < n; i++)
        {
            var t = new JsonObject { ["id"] = $"t{i}", ["handler"] = "sleep", ["args"] = new JsonObject { ["millis"] = millis } };
            if (i >= width) t["dependsOn"] = new JsonArray($"t{i - width}");
            list.Add(t);
        }
        return new JsonObject { ["name"] = "dashboard-bench", ["tasks"] = list }.ToJsonString();
    }

    private static async Task<string> SubmitAsync(HttpClient http, string graph)
    {
        using var response = await http.PostAsync("api/runs", new StringContent(graph, Encoding.UTF8, "application/json"));
        var text = await response.Content.ReadAsStringAsync();
        if (!response.IsSuccessStatusCode) throw new InvalidOperationException($"the graph was refused: {text}");
        return JsonDocument.Parse(text).RootElement.GetProperty("run_id").GetString()!;
    }
}
