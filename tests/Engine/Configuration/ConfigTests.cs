using TaskMesh.Engine.Configuration;
using Xunit;

namespace TaskMesh.Tests.Engine.Configuration;

public class ConfigTests
{
    [Fact]
    public void Parse_Empty_GivesDefaults()
    {
        var c = TaskMeshConfig.Parse("");
        Assert.Equal(Environment.ProcessorCount, c.MaxParallelTasks);
        Assert.Equal(300, c.TimeoutSeconds);
        Assert.False(c.ShellEnabled);
    }

    [Fact]
    public void TheClusterSection_IsRead_AndItsBadValuesNameTheKeyAndLine()
    {
        var c = TaskMeshConfig.Parse("""
            [cluster]
            enabled = true
            host = "10.0.0.1"
            port = 12000
            strategy = "resource_aware"
            batch_size = 64
            prefetch = 8
            poison_limit = 5
            fallback_to_local = false
            probe_timeout_ms = 1000
            missed_probes = 3
            votes_for_death = 1
            """);
        Assert.Equal(new ClusterSettings
        {
            Enabled = true, Host = "10.0.0.1", Port = 12000, Strategy = ClusterStrategies.ResourceAware, BatchSize = 64, Prefetch = 8, PoisonLimit = 5,
            FallbackToLocal = false, ProbeTimeout = TimeSpan.FromSeconds(1), MissedProbes = 3, VotesForDeath = 1,
        }, c.Cluster);
        Assert.Empty(c.Cluster.Problems());
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("[cluster]\nstrategy = \"random\"\nbatch_size = 0\nhost = \"there\"\nslots = 4\n", "t.toml"));
        Assert.Contains("t.toml:2: key 'cluster.strategy' must be one of round_robin, least_outstanding, resource_aware", ex.Message);
        Assert.Contains("t.toml:3: key 'cluster.batch_size'", ex.Message);
        Assert.Contains("t.toml:4: key 'cluster.host' must be an IP address", ex.Message);
        Assert.Contains("t.toml:5: unknown key 'cluster.slots'", ex.Message);
    }

    [Fact]
    public void Parse_AllSections_SetsValues()
    {
        var c = TaskMeshConfig.Parse("""
            [general]
            progress = "lines"
            [execution]
            max_parallel_tasks = 3
            timeout_seconds = 1.5
            retry_attempts = 2
            retry_base_delay_ms = 10
            [handlers]
            shell_enabled = true
            """);
        Assert.Equal("lines", c.Progress);
        Assert.Equal(3, c.MaxParallelTasks);
        Assert.Equal(1.5, c.TimeoutSeconds);
        Assert.Equal(2, c.RetryAttempts);
        Assert.True(c.ShellEnabled);
        Assert.Equal(TimeSpan.FromMilliseconds(10), c.ToEngineOptions().RetryBaseDelay);
    }

    [Fact]
    public void Parse_ReadyOrder_IsOneOfThreeNames()
    {
        Assert.Equal(TaskMesh.Engine.Scheduling.ReadyOrder.Auto, TaskMeshConfig.Parse("").ToEngineOptions().ReadyOrder);
        Assert.Equal(TaskMesh.Engine.Scheduling.ReadyOrder.CriticalPath,
            TaskMeshConfig.Parse("[execution]\nready_order = \"critical_path\"").ToEngineOptions().ReadyOrder);
        Assert.Equal(TaskMesh.Engine.Scheduling.ReadyOrder.Fifo, TaskMeshConfig.Parse("[execution]\nready_order = \"fifo\"").ReadyOrder);
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("[execution]\nready_order = \"heft\"", "t.toml"));
        Assert.Contains("t.toml:2: key 'execution.ready_order' must be auto, fifo or critical_path", ex.Message);
    }

    [Fact]
    public void Parse_BadKeys_NameKeyAndLine()
    {
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("""
            [execution]
            max_parallel_tasks = 0
            timeout_seconds = "soon"
            max_paralel_tasks = 4
            [nosuch]
            x = 1
            """, "t.toml"));
        Assert.Contains("t.toml:2: key 'execution.max_parallel_tasks' is 0; it must be between 1 and 100000", ex.Message);
        Assert.Contains("t.toml:3: key 'execution.timeout_seconds' must be a number, got a string", ex.Message);
        Assert.Contains("t.toml:4: unknown key 'execution.max_paralel_tasks'", ex.Message);
        Assert.Contains("t.toml:5: unknown section [nosuch]", ex.Message);
    }

    [Fact]
    public void Parse_StoreJournalKeys_SetWhichRowsARunKeeps()
    {
        var c = TaskMeshConfig.Parse("""
            [store]
            full_detail_tasks = 0
            slow_task_ms = 2.5
            sample_every = 64
            max_sampled_rows = 1000
            """);
        Assert.Equal(new TaskMesh.Engine.Store.JournalOptions { FullDetailTasks = 0, SlowTaskMs = 2.5, SampleEvery = 64, MaxSampledRows = 1000 }, c.Journal);
        Assert.Equal(TaskMesh.Engine.Store.JournalOptions.Default, TaskMeshConfig.Parse("").Journal);
    }

    [Fact]
    public void Parse_BadStoreJournalKeys_NameKeyAndLine()
    {
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("""
            [store]
            sample_every = 1000
            max_sampled_rows = 0
            slow_task_ms = -1
            """, "j.toml"));
        Assert.Contains("j.toml:2: key 'store.sample_every' must be a power of two", ex.Message);
        Assert.Contains("j.toml:3: key 'store.max_sampled_rows' is 0; it must be between 1 and 1000000", ex.Message);
        Assert.Contains("j.toml:4: key 'store.slow_task_ms'", ex.Message);
    }

    [Fact]
    public void Parse_OpenRunKeys_SetTheBoundAndTheRetentionWindow_AndBadOnesNameKeyAndLine()
    {
        var c = TaskMeshConfig.Parse("""
            [open_runs]
            max_pending = 64
            retain_tasks = 0
            retain_bytes = 1024
            """);
        Assert.Equal((64, 0, 1024L), (c.OpenMaxPending, c.OpenRetainTasks, c.OpenRetainBytes));
        var d = TaskMeshConfig.Parse("");
        Assert.Equal((TaskMesh.Engine.OpenRunOptions.DefaultMaxPending, TaskMesh.Engine.OpenRunOptions.DefaultRetainTasks, TaskMesh.Engine.OpenRunOptions.DefaultRetainBytes),
            (d.OpenMaxPending, d.OpenRetainTasks, d.OpenRetainBytes));
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("""
            [open_runs]
            max_pending = 0
            retain_bytes = -1
            """, "o.toml"));
        Assert.Contains("o.toml:2: key 'open_runs.max_pending' is 0; it must be between 1 and 100000000", ex.Message);
        Assert.Contains("o.toml:3: key 'open_runs.retain_bytes'", ex.Message);
    }

    [Fact]
    public void Parse_ExternalHandlers_AreNamesOfHandlers_AndABadOneNamesKeyAndLine()
    {
        var c = TaskMeshConfig.Parse("""
            [api]
            external_handlers = ["py.score", "rust.hash"]
            """);
        Assert.Equal(["py.score", "rust.hash"], c.ApiExternalHandlers);
        Assert.Empty(TaskMeshConfig.Parse("").ApiExternalHandlers);
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("""
            [api]
            external_handlers = ["ok", ""]
            """, "a.toml"));
        Assert.Contains("a.toml:2: key 'api.external_handlers'", ex.Message);
        Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("[api]\nexternal_handlers = \"py.score\"\n"));
    }

    [Fact]
    public void Parse_SyntaxError_HasLine()
    {
        var ex = Assert.Throws<ConfigException>(() => TaskMeshConfig.Parse("[execution]\nmax_parallel_tasks = = 3\n", "s.toml"));
        Assert.StartsWith("s.toml:2:", ex.Message);
    }
}
