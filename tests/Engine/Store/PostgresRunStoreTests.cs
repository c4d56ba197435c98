using Npgsql;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Tests.Cluster;
using Xunit;

namespace TaskMesh.Tests.Engine.Store;

/// <summary>One PostgreSQL server for the class; each test makes a database of its own on it.</summary>
public sealed class PostgresFixture : IAsyncLifetime
{
    private PostgresServer? _server;
    private int _databases;

    public async Task InitializeAsync() => _server = await PostgresServer.StartAsync();

    public async Task DisposeAsync()
    {
        if (_server is not null) await _server.DisposeAsync();
    }

    /// <summary>The URL of a database on the server (<c>postgres</c>: the server's own, shared).</summary>
    public string UrlOf(string database) => $"postgresql://taskmesh@127.0.0.1:{_server!.Port}/{database}";

    /// <summary>A new, empty database's URL.</summary>
    public async Task<string> NewDatabaseAsync()
    {
        string name = $"store_{Interlocked.Increment(ref _databases)}_{Guid.NewGuid():N}"[..24];
        await using var c = new NpgsqlConnection($"Host=127.0.0.1;Port={_server!.Port};Username=taskmesh;Database=postgres;Pooling=false");
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand($"CREATE DATABASE {name}", c);
        await cmd.ExecuteNonQueryAsync();
        return UrlOf(name);
    }

    /// <summary>Runs <paramref name="sql"/> in the database at <paramref name="url"/>.</summary>
    public async Task ExecuteAsync(string url, string sql)
    {
        await using var c = new NpgsqlConnection(PostgresUrl.ConnectionString(url, "test", b => b.Pooling = false));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        await cmd.ExecuteNonQueryAsync();
    }

    public async Task<object?> ScalarAsync(string url, string sql)
    {
        await using var c = new NpgsqlConnection(PostgresUrl.ConnectionString(url, "test", b => b.Pooling = false));
        await c.OpenAsync();
        await using var cmd = new NpgsqlCommand(sql, c);
        return await cmd.ExecuteScalarAsync();
    }
}

/// <summary>The run store's suite in a PostgreSQL database (Debian's server, started for the class), and what only a database has.</summary>
public sealed class PostgresRunStoreTests(PostgresFixture pg) : RunStoreContract, IClassFixture<PostgresFixture>, IAsyncLifetime
{
    private string _url = "";

    public async Task InitializeAsync() => _url = await pg.NewDatabaseAsync();

    public Task DisposeAsync() => Task.CompletedTask;

    protected override RunStore OpenStore(bool readOnly = false) => RunStore.Open(_url, readOnly);

    [Fact]
    public async Task Open_CreatesTheSchemaOfTheMigrations_AndAStoreThatPassesItsPasswordShowsNone()
    {
        using (var store = OpenStore())
        {
            Assert.True(store.IsPostgres);
            Assert.Empty(store.ListRuns());
        }
        Assert.Equal((long)StoreSchema.CurrentVersion, await pg.ScalarAsync(_url, "SELECT version FROM taskmesh_store"));
        // Every column the SQLite schema has, with PostgreSQL's names for its types.
        Assert.Equal("double precision", await pg.ScalarAsync(_url, "SELECT data_type FROM information_schema.columns WHERE table_name = 'runs' AND column_name = 'cost'"));
        Assert.Equal("bytea", await pg.ScalarAsync(_url, "SELECT data_type FROM information_schema.columns WHERE table_name = 'task_executions' AND column_name = 'features'"));
        Assert.Equal(12L, await pg.ScalarAsync(_url, $"SELECT count(*) FROM information_schema.tables WHERE table_name IN ('{string.Join("', '", StoreSchema.Tables)}')"));

        var withPassword = _url.Replace("taskmesh@", "taskmesh:s3cret@", StringComparison.Ordinal);
        using var again = RunStore.Open(withPassword);
        Assert.DoesNotContain("s3cret", again.Path);
        Assert.Contains("taskmesh:***@", again.Path);
    }

    [Fact]
    public async Task Open_ADatabaseWithAnotherApplicationsTablesUnderTheStoresNames_IsRefusedAndLeftUnchanged()
    {
        await pg.ExecuteAsync(_url, "CREATE TABLE runs (id serial PRIMARY KEY, note text); INSERT INTO runs (note) VALUES ('theirs');");
        var ex = Assert.Throws<StoreException>(() => OpenStore());
        Assert.Contains("another application", ex.Message);
        Assert.Contains("runs", ex.Message);
        Assert.Equal(0L, await pg.ScalarAsync(_url, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'taskmesh_store'"));
        Assert.Equal("theirs", await pg.ScalarAsync(_url, "SELECT note FROM runs"));
    }

    [Fact]
    public async Task Open_AStoreOfANewerTaskMesh_IsRefused_AndAMissingStoreReadOnlyToo()
    {
        Assert.Contains("no store", Assert.Throws<StoreException>(() => OpenStore(readOnly: true)).Message);
        using (OpenStore()) { }
        await pg.ExecuteAsync(_url, "UPDATE taskmesh_store SET version = 99");
        var ex = Assert.Throws<StoreException>(() => OpenStore());
        Assert.Contains("newer TaskMesh (schema version 99", ex.Message);
        Assert.Equal(99L, await pg.ScalarAsync(_url, "SELECT version FROM taskmesh_store"));
    }

    [Fact]
    public void Open_AnUnreachableServerOrAMissingDatabase_SaysWhich()
    {
        var missing = pg.UrlOf("no_such_database");
        Assert.Contains("does not exist", Assert.Throws<StoreException>(() => RunStore.Open(missing)).Message);
        // A port nothing listens on: this test's server's port + 1 is not PostgreSQL's (a refused connection).
        int port = new Uri(_url).Port;
        var ex = Assert.Throws<StoreException>(() => RunStore.Open($"postgresql://taskmesh:pw@127.0.0.1:{(port == 65535 ? 1 : port + 1)}/x?Timeout=2"));
        Assert.Contains("cannot reach the PostgreSQL server", ex.Message);
        Assert.DoesNotContain(":pw@", ex.Message);
        Assert.Contains("not a PostgreSQL connection setting", Assert.Throws<StoreException>(() => RunStore.Open(_url + "?Bogus=1")).Message);
    }

    [Fact]
    public async Task Open_ByManyProcessesAtOnce_MigratesOnce()
    {
        // Stores opened at once on an empty database: one creates the schema, the others find it.
        var opens = Enumerable.Range(0, 6).Select(_ => Task.Run(() => RunStore.Open(_url))).ToArray();
        var stores = await Task.WhenAll(opens);
        foreach (var s in stores) s.Dispose();
        Assert.Equal(1L, await pg.ScalarAsync(_url, "SELECT count(*) FROM taskmesh_store"));
    }

    [Fact]
    public async Task Open_AStoreOfSchemaVersion8_IsMigratedWithTheSameMigrations_KeepingItsAuditTrail()
    {
        await pg.ExecuteAsync(_url, string.Concat(StoreSchema.Migrations.Take(8).Select(StoreSchema.ForPostgres)) + $$"""
            ;
            CREATE TABLE taskmesh_store (application_id BIGINT NOT NULL, version BIGINT NOT NULL);
            INSERT INTO taskmesh_store VALUES ({{StoreSchema.ApplicationId}}, 8);
            INSERT INTO runs (run_id, graph_name, status, started_at, total, succeeded) VALUES ('old8', 'g', 'succeeded', '2026-12-01T00:00:00+00:00', 1, 1);
            INSERT INTO audit_log (run_id, task_id, category, at, detail) VALUES ('old8', NULL, 'task_submission', '2026-12-01T00:00:00+00:00', '{"graph":"g"}');
            """);
        using var store = OpenStore();
        Assert.Equal(AuditCategory.TaskSubmission, Assert.Single(store.AuditOf("old8")).Category);
        store.RecordAudit(null, null, AuditCategory.Api, """{"action":"train","caller":"ops"}""");
        await store.FlushAsync();
        Assert.Equal(("api", ""), (Assert.Single(store.ServiceAudit()).Category, store.ServiceAudit()[0].RunId));
        Assert.Equal((long)StoreSchema.CurrentVersion, await pg.ScalarAsync(_url, "SELECT version FROM taskmesh_store"));
    }

    [Fact]
    public async Task LargeOutputsAndCacheEntries_StayInTheirRows_AndResumeAndHitFromThere()
    {
        var engine = new TaskMeshEngine();
        int calls = 0;
        string big = new string('x', (3 << 20) / 2);   // 1.5 MiB: beside an SQLite store this would be a file
        engine.Handlers.Register(new HandlerDescriptor("big", _ => { Interlocked.Increment(ref calls); return big; }) { Cacheable = true });
        bool failLate = true;
        engine.Handlers.RegisterInline("late", ctx => failLate ? throw new TaskFailedException("not yet") : ((string)ctx.Inputs.Single().Value!).Length);
        var g = new GraphBuilder("large-outputs");
        var a = g.Task("a", "big").WithCache();
        g.Task("late", "late").DependsOn(a, EdgeKind.Data);
        var graph = engine.Prepare(g);
        using var store = OpenStore();

        var first = await engine.RunAsync(graph, new RunOptions { Observers = [new RunRecorder(store)], Cache = new StoreTaskCache(store) });
        await store.FlushAsync();
        Assert.Equal(RunStatus.Failed, first.Status);
        Assert.Equal(1L, await pg.ScalarAsync(_url, $"SELECT count(*) FROM task_outputs WHERE file IS NULL AND length(json) = {big.Length + 2}"));
        Assert.Equal(big.Length + 2, Assert.Single(store.CacheEntries()).Bytes);
        Assert.Equal("", store.FilesFolder);

        failLate = false;
        var second = await engine.RunAsync(graph, new RunOptions { Restored = store.LoadRestored(first.RunId, graph.Graph), KeepOutputs = true });
        Assert.Equal((RunStatus.Succeeded, 1, big.Length), (second.Status, second.Restored, (int)second.OutputOf(1)!));
        var third = await engine.RunAsync(graph, new RunOptions { Cache = new StoreTaskCache(store), KeepOutputs = true });
        Assert.Equal((RunStatus.Succeeded, 1), (third.Status, third.Cached));
        Assert.Equal(1, calls);
        Assert.Equal(1, await store.ClearCacheAsync());
        Assert.Empty(store.CacheEntries());
    }

    [Fact]
    public async Task TextPostgresCannotHold_NulAndLoneSurrogates_IsKeptWithReplacementCharacters()
    {
        var engine = new TaskMeshEngine();
        var g = new GraphBuilder("odd-text");
        g.Task("bad", "fail", new { message = "nul\0here and a lone \ud800 surrogate" });
        using var store = OpenStore();
        var result = await engine.RunAsync(engine.Prepare(g), new RunOptions { Observers = [new RunRecorder(store)] });
        await store.FlushAsync();
        Assert.Null(store.WriteFault);
        Assert.Equal("nul\uFFFDhere and a lone \uFFFD surrogate", Assert.Single(store.TasksOf(result.RunId)).Error);
    }

    /// <summary>An open run of <paramref name="tasks"/> tasks with ids of their own, recorded in <paramref name="store"/>; its result.</summary>
    private static async Task<OpenRunResult> RecordOpenRun(RunStore store, string name, int tasks)
    {
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 2 });
        engine.Handlers.RegisterInline("noop", _ => 1);
        var run = engine.Open(new OpenRunOptions { Store = store, Name = name });
        for (int i = 0; i < tasks; i++) run.Submit(new TaskRequest("noop") { Id = $"{name}-{i}" });
        run.Complete();
        var result = await run.Completion;
        await store.FlushAsync();
        return result;
    }

    /// <summary>
    /// Two stores on one database at once (as two processes: each its own sessions) record runs side
    /// by side with batched writes: each run ends recorded as it finished, neither sees the other's tasks.
    /// </summary>
    [Fact]
    public async Task TwoStoresOnOneDatabase_RecordingAtOnce_EachRunEndsAsItFinished()
    {
        using var first = OpenStore();
        using var second = OpenStore();
        var results = await Task.WhenAll(Task.Run(() => RecordOpenRun(first, "one", 1500)), Task.Run(() => RecordOpenRun(second, "two", 1500)));
        foreach (var (store, result, name) in new[] { (first, results[0], "one"), (second, results[1], "two") })
        {
            Assert.Null(store.WriteFault);
            Assert.Equal(1500, result.Succeeded);
            Assert.Equal(1500, store.CompletedCount(result.RunId));
            var rows = store.TasksOf(result.RunId);
            Assert.Equal(1500, rows.Count(t => t.Status == "succeeded"));
            Assert.All(rows, t => Assert.StartsWith(name + "-", t.Id));
        }
        // Each store reads the other's run as it ended.
        Assert.Equal("succeeded", first.GetRun(results[1].RunId).Status);
        Assert.Equal("succeeded", second.GetRun(results[0].RunId).Status);
    }

    /// <summary>
    /// Another session holds a lock on the tables the writer writes for three seconds: the writer's
    /// batched statements wait for it (lock_timeout is minutes), then the run ends recorded, no fault.
    /// </summary>
    [Fact]
    public async Task ALockHeldByAnotherSession_ForSeconds_DelaysTheWriter_AndLosesNothing()
    {
        using var store = OpenStore();
        await using var holder = new NpgsqlConnection(PostgresUrl.ConnectionString(_url, "test", b => b.Pooling = false));
        await holder.OpenAsync();
        await using (var tx = await holder.BeginTransactionAsync())
        {
            await using (var lockIt = new NpgsqlCommand("LOCK TABLE task_executions, audit_log IN ACCESS EXCLUSIVE MODE", holder, tx))
                await lockIt.ExecuteNonQueryAsync();
            var recording = Task.Run(() => RecordOpenRun(store, "locked", 800));
            await Task.Delay(TimeSpan.FromSeconds(3));
            Assert.False(recording.IsCompleted, "the writer could not have committed past the lock");
            await tx.CommitAsync();
            var result = await recording.WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Null(store.WriteFault);
            Assert.Equal(800, store.CompletedCount(result.RunId));
            Assert.Equal(800, store.TasksOf(result.RunId).Count(t => t.Status == "succeeded"));
        }
    }

    /// <summary>
    /// The writer's session ends between two batches (a server restart, a dropped connection): the
    /// writer opens another and applies its next batch there — the run goes on, nothing is lost, no
    /// fault. (A loss during a commit would leave unknown whether it was kept: that still faults.)
    /// </summary>
    [Fact]
    public async Task TheWritersSessionLost_BetweenBatches_IsReplaced_AndTheRunLosesNothing()
    {
        using var store = OpenStore();
        int reconnected = 0;
        store.WriterReconnected += () => Interlocked.Increment(ref reconnected);
        var engine = new TaskMeshEngine(new EngineOptions { WorkerThreads = 2, MaxParallelTasks = 2 });
        engine.Handlers.RegisterInline("noop", _ => 1);
        var run = engine.Open(new OpenRunOptions { Store = store, Name = "dropped" });
        for (int i = 0; i < 500; i++) run.Submit(new TaskRequest("noop") { Id = $"a{i}" });
        await store.FlushAsync();
        // Every session of the store ends, as when the server restarts.
        await TerminateSessionsAsync();
        for (int i = 0; i < 500; i++) run.Submit(new TaskRequest("noop") { Id = $"b{i}" });
        run.Complete();
        var result = await run.Completion;
        await store.FlushAsync();
        Assert.Null(store.WriteFault);
        Assert.Equal(1, reconnected);
        Assert.Equal(1000, result.Succeeded);
        Exception? first = Record.Exception(() => store.CompletedCount(result.RunId));   // the reader's first read after it may fail (it reconnects)
        Assert.True(first is null or StoreException or System.Data.Common.DbException, $"{first}");
        Assert.Equal(1000, store.CompletedCount(result.RunId));
        Assert.Equal(1000, store.TasksOf(result.RunId).Count(t => t.Status == "succeeded"));
    }

    [Fact]
    public async Task AServerRestart_BreaksNoReadAfterIt()
    {
        using var store = OpenStore();
        store.RecordAudit(null, null, AuditCategory.Api, """{"action":"x"}""");
        await store.FlushAsync();
        // Every other session ends, as when the server restarts: the store's reader reconnects.
        await pg.ExecuteAsync(pg.UrlOf("postgres"), $"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{new Uri(_url).AbsolutePath.Trim('/')}' AND application_name = 'taskmesh' AND state IS NOT NULL AND pid <> pg_backend_pid()");
        Exception? first = Record.Exception(() => store.ServiceAudit());
        Assert.True(first is null or StoreException or System.Data.Common.DbException, $"{first}");   // the read that finds the session gone may fail
        Assert.Single(store.ServiceAudit());
    }

    /// <summary>Ends every session the store under test has open on the server, as a restart or a cut connection would.</summary>
    private Task TerminateSessionsAsync()
        => pg.ExecuteAsync(pg.UrlOf("postgres"), $"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{new Uri(_url).AbsolutePath.Trim('/')}' AND application_name = 'taskmesh' AND pid <> pg_backend_pid()");

    /// <summary>A store holding one row of the service's audit trail, read back once (the reader's session is open).</summary>
    private async Task<RunStore> StoreWithOneAuditRowAsync()
    {
        var store = OpenStore();
        store.RecordAudit(null, null, AuditCategory.Api, """{"action":"x"}""");
        await store.FlushAsync();
        Assert.Single(store.ServiceAudit());
        return store;
    }

    /// <summary>A session the server dropped while the reader was idle is noticed (a keepalive every 2 s): the first read after it works.</summary>
    [Fact]
    public async Task AReaderIdleWhenItsSessionWasDropped_ReadsAtOnce()
    {
        using var store = await StoreWithOneAuditRowAsync();
        await TerminateSessionsAsync();
        await Task.Delay(TimeSpan.FromSeconds(5));   // two keepalives
        Assert.Single(store.ServiceAudit());
        Assert.Equal(0, store.ReaderReconnects);   // the keepalive found the loss: the read opened a new session first, nothing failed to retry
    }

    /// <summary>A read right after its session was dropped (before any keepalive could notice) runs again on a new session: the caller sees rows, not the loss.</summary>
    [Fact]
    public async Task AReadRightAfterItsSessionWasDropped_RunsAgainOnANewSession()
    {
        using var store = await StoreWithOneAuditRowAsync();
        Assert.Equal(0, store.ReaderReconnects);
        await TerminateSessionsAsync();
        Assert.Single(store.ServiceAudit());                   // at once: the keepalive (every 2 s) has not run
        Assert.Equal(1, store.ReaderReconnects);
        Assert.Equal(0, store.TaskPage("no-run", null, 10, 0).Total);   // and the new session serves the next reads
        Assert.Equal(1, store.ReaderReconnects);
        // A server that refuses the statement itself (not a lost session) is not retried: its error stands.
        await pg.ExecuteAsync(_url, "ALTER TABLE audit_log RENAME TO audit_log_gone");
        try
        {
            Assert.ThrowsAny<System.Data.Common.DbException>(() => store.ServiceAudit());
            Assert.Equal(1, store.ReaderReconnects);
        }
        finally
        {
            await pg.ExecuteAsync(_url, "ALTER TABLE audit_log_gone RENAME TO audit_log");
        }
    }
}
