using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using TaskMesh.Engine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Store;

namespace TaskMesh.Hosting;

/// <summary>
/// The composition root on Microsoft.Extensions.DependencyInjection, the way Orleans is hosted:
/// <code>
/// services.AddTaskMesh(config)          // the engine from the config's provider table and rules
///         .AddSqliteStore("runs.db")    // the run store (rules in force, history, models)
///         .AddLearnedRouter()           // learned routing, cold-start rules until models exist
///         .AddBackgroundTraining();     // retrain as the config's [learning] says, off the runs
/// var runtime = provider.GetRequiredService&lt;TaskMeshRuntime&gt;();
/// </code>
/// Options are validated once (<see cref="TaskMeshOptionsValidator"/>), when the runtime is first
/// resolved; the engine, the store and the runtime are singletons.
/// </summary>
public static class TaskMeshServiceCollectionExtensions
{
    /// <summary>Adds a TaskMesh built from <paramref name="config"/> (null: the defaults).</summary>
    public static TaskMeshBuilder AddTaskMesh(this IServiceCollection services, TaskMeshConfig? config = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        services.AddOptions<TaskMeshOptions>().Configure(o => o.Config = config ?? new TaskMeshConfig());
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TaskMeshOptions>, TaskMeshOptionsValidator>());
        services.TryAddSingleton(sp => new TaskMeshRuntime(sp.GetRequiredService<IOptions<TaskMeshOptions>>(),
            sp.GetService<ILoggerFactory>(), sp.GetService<TaskMeshMetrics>()));
        services.TryAddSingleton<TaskMeshEngine>(sp => sp.GetRequiredService<TaskMeshRuntime>().Engine);
        return new TaskMeshBuilder(services);
    }
}

/// <summary>Adds the parts of a TaskMesh (<see cref="TaskMeshServiceCollectionExtensions.AddTaskMesh"/>).</summary>
public sealed class TaskMeshBuilder
{
    internal TaskMeshBuilder(IServiceCollection services) => Services = services;

    /// <summary>The service collection.</summary>
    public IServiceCollection Services { get; }

    /// <summary>
    /// Records runs into the run store at <paramref name="location"/>: an SQLite file, or a
    /// PostgreSQL database's <c>postgresql://user:password@host:port/database</c> URL (null: the
    /// config's <c>[store] url</c> or <c>path</c>, else <c>$TASKMESH_HOME/taskmesh.db</c> or
    /// <c>~/.taskmesh/taskmesh.db</c>); <paramref name="readOnly"/> for reports and predictions that
    /// record nothing.
    /// </summary>
    public TaskMeshBuilder AddRunStore(string? location = null, bool readOnly = false)
        => Store(o => location ?? o.Config.StoreLocation ?? RunStore.DefaultPath(), readOnly);

    private TaskMeshBuilder Store(Func<TaskMeshOptions, string> location, bool readOnly)
    {
        Services.Configure<TaskMeshOptions>(o =>
        {
            o.StorePath = location(o);
            o.StoreReadOnly = readOnly;
        });
        Services.TryAddSingleton<RunStore>(sp => sp.GetRequiredService<TaskMeshRuntime>().Store
            ?? throw new InvalidOperationException("the TaskMesh has no run store"));
        return this;
    }

    /// <summary>
    /// Records runs into the SQLite run store at <paramref name="path"/> (null: the config's
    /// <c>[store] path</c>, else <c>$TASKMESH_HOME/taskmesh.db</c> or <c>~/.taskmesh/taskmesh.db</c>);
    /// <paramref name="readOnly"/> for reports and predictions that record nothing.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="path"/> is a PostgreSQL URL (<see cref="AddPostgresStore"/>).</exception>
    public TaskMeshBuilder AddSqliteStore(string? path = null, bool readOnly = false)
    {
        if (RunStore.IsDatabaseUrl(path)) throw new ArgumentException("a postgresql:// URL is not an SQLite file: use AddPostgresStore", nameof(path));
        return Store(o => path ?? o.Config.StorePath ?? RunStore.DefaultPath(), readOnly);
    }

    /// <summary>
    /// Records runs into the run store in a PostgreSQL database
    /// (<c>postgresql://user:password@host:port/database</c>; the same schema as the SQLite file,
    /// created or migrated on open): a store that outlives the coordinator's machine and that
    /// several machines share.
    /// </summary>
    /// <exception cref="ArgumentException"><paramref name="url"/> is not a <c>postgresql://</c> URL.</exception>
    public TaskMeshBuilder AddPostgresStore(string url, bool readOnly = false)
    {
        if (!RunStore.IsDatabaseUrl(url)) throw new ArgumentException("the store URL must be postgresql://user:password@host:port/database", nameof(url));
        return AddRunStore(url, readOnly);
    }

    /// <summary>Routes every run with the learned router (<paramref name="objective"/>: over the config's; its cold-start rules serve until the store has models).</summary>
    public TaskMeshBuilder AddLearnedRouter(string? objective = null)
    {
        Services.Configure<TaskMeshOptions>(o =>
        {
            o.Routing = LearnedRouting.Always;
            if (objective is not null) o.Objective = objective;
        });
        return this;
    }

    /// <summary>Routes runs with the learned router only when something asks for it (the default; see <see cref="LearnedRouting.WhenNeeded"/>), with <paramref name="objective"/> when given.</summary>
    public TaskMeshBuilder AddRouting(LearnedRouting routing, string? objective = null)
    {
        Services.Configure<TaskMeshOptions>(o =>
        {
            o.Routing = routing;
            if (objective is not null) o.Objective = objective;
        });
        return this;
    }

    /// <summary>Prometheus metrics (their own registry) for every run and the store.</summary>
    public TaskMeshBuilder AddMetrics()
    {
        Services.TryAddSingleton<TaskMeshMetrics>();
        return this;
    }

    /// <summary>
    /// Trains new model versions in the background, when the config's <c>[learning]</c> says one is
    /// due (a hosted service for a long-lived host; runs then do not train after they end).
    /// </summary>
    public TaskMeshBuilder AddBackgroundTraining(TimeSpan? checkEvery = null)
    {
        Services.Configure<TaskMeshOptions>(o => o.TrainAfterRuns = false);
        Services.AddHostedService(sp => new ModelTrainingService(sp.GetRequiredService<TaskMeshRuntime>(), checkEvery ?? TimeSpan.FromMinutes(1),
            sp.GetService<ILoggerFactory>()?.CreateLogger("TaskMesh.Training")));
        return this;
    }

    /// <summary>Changes the options in code.</summary>
    public TaskMeshBuilder Configure(Action<TaskMeshOptions> configure)
    {
        Services.Configure(configure);
        return this;
    }
}
