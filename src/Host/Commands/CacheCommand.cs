using System.CommandLine;
using System.Globalization;

namespace TaskMesh.Host.Commands;

/// <summary><c>taskmesh cache list|clear [--store FILE]</c>: the result cache kept in the run store.</summary>
internal static class CacheCommand
{
    public static Command Create(CliIO io)
    {
        var cache = new Command("cache", "The result cache (tasks marked \"cache\": true reuse a stored successful execution).");
        var store = StoreInput.StoreOption();
        var config = CliOptions.Config();
        var limit = CliOptions.Int("--limit", 1, 1_000_000, "Most entries to list (default 100).");
        var list = new Command("list", "The cached executions, newest first.") { store, config, limit };
        list.SetAction(parse =>
        {
            using var s = StoreInput.OpenForReport(io, parse.GetValue(config), parse.GetValue(store), jsonPath: null);
            var entries = s.CacheEntries(parse.GetValue(limit) ?? 100);
            foreach (var e in entries)
                io.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{e.Key[..16]}  {e.Handler,-10}  {e.TaskId,-24}  run {e.RunId ?? "-",-12}  {e.CreatedAt.UtcDateTime:yyyy-MM-dd HH:mm:ss}  {e.Bytes,8} B"));
            io.Out.WriteLine($"{entries.Count} cached execution(s)");
            return ExitCodes.Ok;
        });
        var store2 = StoreInput.StoreOption();
        var config2 = CliOptions.Config();
        var clear = new Command("clear", "Forget every cached execution.") { store2, config2 };
        clear.SetAction(async (parse, ct) =>
        {
            var cfg = GraphInput.LoadConfig(parse.GetValue(config2), io.Token);
            using var s = StoreInput.Open(StoreInput.PathOf(parse.GetValue(store2), cfg), readOnly: false, cfg);
            int n = await s.ClearCacheAsync();
            io.Out.WriteLine($"cleared {n} cached execution(s)");
            return ExitCodes.Ok;
        });
        cache.Subcommands.Add(list);
        cache.Subcommands.Add(clear);
        return cache;
    }
}
