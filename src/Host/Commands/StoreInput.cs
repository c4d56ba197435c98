using System.CommandLine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Store;

namespace TaskMesh.Host.Commands;

/// <summary>The <c>--store FILE</c> / <c>--no-store</c> options and opening the store they name.</summary>
internal static class StoreInput
{
    public static Option<string?> StoreOption() => new("--store")
    {
        Description = "The run store: an SQLite file, or a postgresql://user:password@host:port/database URL. Default: [store] path or url in the config, else $TASKMESH_HOME/taskmesh.db or ~/.taskmesh/taskmesh.db.",
        HelpName = "FILE|URL",
    };

    public static Option<bool> NoStoreOption() => new("--no-store") { Description = "Record nothing in a run store." };

    /// <summary>The store path the options and config name (the flag wins, then the config, then the default).</summary>
    /// <exception cref="StoreException">The option names no file (an empty path).</exception>
    public static string PathOf(string? option, TaskMeshConfig? config)
        => option is not null && string.IsNullOrWhiteSpace(option)
            ? throw new StoreException("the store path is empty: give --store FILE or [store] path a file name")
            : option ?? config?.StoreLocation ?? RunStore.DefaultPath();

    /// <summary>Opens the store or explains why not (exit 2 through <see cref="StoreException"/>); waits for another process's lock as long as the config says.</summary>
    public static RunStore Open(string path, bool readOnly, TaskMeshConfig? config)
        => RunStore.Open(path, readOnly, config is null ? RunStore.DefaultLockTimeout : TimeSpan.FromSeconds(config.StoreLockTimeoutSeconds));

    /// <summary>
    /// What a report command does first: the config, the store path, a check that <paramref name="jsonPath"/>
    /// may be written (not over the store or the config), then the store opened read-only.
    /// </summary>
    public static RunStore OpenForReport(CliIO io, string? configPath, string? storeOption, string? jsonPath)
    {
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        var path = PathOf(storeOption, cfg);
        CliOptions.CheckOutput("--json", jsonPath, path, configPath);
        return Open(path, readOnly: true, cfg);
    }
}
