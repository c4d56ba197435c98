using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Engine.Configuration;
using TaskMesh.Hosting;
using TaskMesh.Server;

namespace TaskMesh.Tests.Server;

/// <summary>
/// A service for a test: the composition root over <c>config</c> (with a run store when a path is
/// given, with metrics when asked) and <c>taskmesh serve</c>'s server on the options' ports; stopped
/// with its provider when disposed.
/// </summary>
internal sealed class TestService : IAsyncDisposable
{
    private TestService(ServiceProvider provider, TaskMeshRuntime runtime, TaskMeshServer server) => (Provider, Runtime, Server) = (provider, runtime, server);

    public ServiceProvider Provider { get; }
    public TaskMeshRuntime Runtime { get; }
    public TaskMeshServer Server { get; }

    public static async Task<TestService> StartAsync(ServerOptions options, string config = "", string? store = null, bool metrics = false)
    {
        var services = new ServiceCollection();
        var taskmesh = services.AddTaskMesh(TaskMeshConfig.Parse(config));
        if (store is not null) taskmesh.AddSqliteStore(store);
        if (metrics) taskmesh.AddMetrics();
        var provider = services.BuildServiceProvider();
        try
        {
            var runtime = provider.GetRequiredService<TaskMeshRuntime>();
            return new TestService(provider, runtime, await TaskMeshServer.StartAsync(runtime, options));
        }
        catch
        {
            await provider.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await Server.DisposeAsync();
        await Provider.DisposeAsync();
    }
}
