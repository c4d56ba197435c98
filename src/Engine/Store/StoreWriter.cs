using System.Data.Common;
using System.Threading.Channels;

namespace TaskMesh.Engine.Store;

/// <summary>One write to the store, applied by the writer inside a batch's transaction.</summary>
internal abstract class StoreWrite
{
    public abstract void Apply(StoreBatch batch);

    /// <summary>Memory this write holds while queued, when it can be large (outputs, bitmaps); 0 for small rows.</summary>
    public virtual long Bytes => 0;

    /// <summary>
    /// False for a write that does something outside the database (moves a folder): a batch holding
    /// one is not applied a second time after its connection was lost.
    /// </summary>
    public virtual bool Repeatable => true;
}

/// <summary>
/// What a write sees: the batch's transaction and commands kept for the writer's life, one per SQL
/// text (the database prepares each statement once, not once per row). On a database reached over
/// the network (PostgreSQL: its provider sends many statements at once) the statements that return
/// nothing are queued and sent together — one round trip per <see cref="MaxQueued"/> statements
/// instead of one per row; <see cref="Flush"/> sends what is queued, before the transaction commits.
/// </summary>
internal sealed class StoreBatch(DbConnection connection, string? filesFolder)
{
    /// <summary>
    /// The folder beside the store for outputs too large for a row (<see cref="OutputFiles"/>); null
    /// for a PostgreSQL store, which has no "beside" and keeps every output in its row.
    /// </summary>
    public string? FilesFolder => filesFolder;

    /// <summary>Most statements queued before they are sent (a bound on the request and its replies in flight).</summary>
    public const int MaxQueued = 512;

    private readonly Dictionary<string, DbCommand> _commands = new(StringComparer.Ordinal);
    private readonly bool _queues = connection.CanCreateBatch;
    private DbBatch? _queued;

    public DbTransaction? Transaction { get; set; }

    /// <summary>The command for <paramref name="sql"/>, in this batch's transaction, its parameters cleared.</summary>
    public StoreCommand Command(string sql)
    {
        if (_queues)
        {
            if (_queued is { } full && full.BatchCommands.Count >= MaxQueued) Flush();
            var batch = _queued ??= connection.CreateBatch();
            var queued = batch.CreateBatchCommand();
            queued.CommandText = sql;
            batch.BatchCommands.Add(queued);
            return new StoreCommand(this, null, queued);
        }
        if (!_commands.TryGetValue(sql, out var cmd))
        {
            cmd = connection.CreateCommand();
            cmd.CommandText = sql;
            _commands[sql] = cmd;
        }
        cmd.Transaction = Transaction;
        cmd.Parameters.Clear();
        return new StoreCommand(this, cmd, null);
    }

    /// <summary>Sends the queued statements (in their order), in the batch's transaction.</summary>
    public void Flush()
    {
        if (_queued is not { } batch) return;
        _queued = null;
        using (batch)
        {
            if (batch.BatchCommands.Count == 0) return;
            batch.Transaction = Transaction;
            batch.ExecuteNonQuery();
        }
    }

    /// <summary>
    /// A queued statement whose result is read now (<see cref="StoreCommand.ExecuteScalar"/>,
    /// <see cref="StoreCommand.ExecuteReader"/>): the statements queued before it are sent first; it
    /// is then run alone, as a command of its own.
    /// </summary>
    internal DbCommand Now(DbBatchCommand statement)
    {
        _queued!.BatchCommands.Remove(statement);
        Flush();
        var cmd = connection.CreateCommand();
        cmd.CommandText = statement.CommandText;
        cmd.Transaction = Transaction;
        foreach (DbParameter p in statement.Parameters)
        {
            var copy = cmd.CreateParameter();
            (copy.ParameterName, copy.Value) = (p.ParameterName, p.Value);
            cmd.Parameters.Add(copy);
        }
        return cmd;
    }
}

/// <summary>A statement of a write: run at once, or queued to be sent with the batch's others (<see cref="StoreBatch"/>).</summary>
internal sealed class StoreCommand(StoreBatch batch, DbCommand? command, DbBatchCommand? queued)
{
    public DbParameterCollection Parameters => command?.Parameters ?? queued!.Parameters;

    /// <summary>Runs the statement — or leaves it queued: it is sent, in order, before the batch commits.</summary>
    public void ExecuteNonQuery() => command?.ExecuteNonQuery();

    /// <summary>Runs the statement now and returns the first column of its first row.</summary>
    public object? ExecuteScalar()
    {
        if (command is not null) return command.ExecuteScalar();
        using var now = batch.Now(queued!);
        return now.ExecuteScalar();
    }

    /// <summary>Runs the statement now and reads its rows (a command made for it holds nothing past the reader: not prepared).</summary>
    public DbDataReader ExecuteReader() => (command ?? batch.Now(queued!)).ExecuteReader();
}

/// <summary>
/// The store's single writer: records arrive through a bounded channel from any thread and are
/// committed in batches (up to <see cref="MaxBatch"/> records, or what arrived within
/// <see cref="MaxBatchDelay"/>) in one transaction each, on a thread of its own — the scheduler
/// never waits on the database. When the writer falls behind and the channel is full, or the large writes
/// queued (outputs, bitmaps) hold more than <see cref="MaxQueuedBytes"/>, the thread that records
/// waits for room: the run slows down, no record is lost, memory stays bounded. A failed batch (disk full,
/// read-only file) faults the writer: every later record and flush throws a
/// <see cref="StoreException"/> naming the cause, and what was committed before stays.
/// </summary>
internal sealed class StoreWriter : IDisposable
{
    public const int Capacity = 65_536;
    public const int MaxBatch = 4_096;
    public static readonly TimeSpan MaxBatchDelay = TimeSpan.FromMilliseconds(20);

    /// <summary>Most memory the queued large writes may hold before recording threads wait (one write larger than this still goes, alone).</summary>
    public const long MaxQueuedBytes = 64L << 20;

    private DbConnection _connection;
    private readonly Func<DbConnection>? _reconnect;
    private readonly string? _filesFolder;
    private readonly string _path;
    private readonly Func<DbException, string> _describe;
    private readonly Channel<StoreWrite> _channel = Channel.CreateBounded<StoreWrite>(new BoundedChannelOptions(Capacity)
    {
        SingleReader = true,
        FullMode = BoundedChannelFullMode.Wait,
    });
    private readonly Task _loop;
    private StoreBatch _batch;
    private volatile StoreException? _fault;
    private int _depth;
    private long _queuedBytes;
    private readonly object _room = new();

    /// <summary>Raised on the writer's thread after each committed batch: how long its transaction took, and its writes.</summary>
    public event Action<TimeSpan, int>? Committed;

    /// <param name="connection">The open connection the writer owns.</param>
    /// <param name="path">The store as messages name it.</param>
    /// <param name="filesFolder">Where outputs too large for a row go; null to keep them in their rows.</param>
    /// <param name="describe">A database error as the store's message.</param>
    /// <param name="reconnect">
    /// For a database reached over the network: opens a new connection when this one was lost (a
    /// server restart, a dropped session), after which the batch that was under way is applied again
    /// (see <see cref="Commit"/>); null: a lost connection faults the writer.
    /// </param>
    public StoreWriter(DbConnection connection, string path, string? filesFolder, Func<DbException, string> describe, Func<DbConnection>? reconnect = null)
    {
        _connection = connection;
        _reconnect = reconnect;
        _filesFolder = filesFolder;
        _path = path;
        _describe = describe;
        _batch = new StoreBatch(connection, filesFolder);
        _loop = Task.Factory.StartNew(Loop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
    }

    public int QueueDepth => Volatile.Read(ref _depth);

    /// <summary>Set once a batch failed.</summary>
    public StoreException? Fault => _fault;

    /// <summary>Raised (once, on the writer's thread) when a batch fails.</summary>
    public event Action<StoreException>? Faulted;

    /// <summary>Queues a write; waits for room when the writer is behind.</summary>
    /// <exception cref="StoreException">The writer failed earlier.</exception>
    public void Enqueue(StoreWrite write)
    {
        if (_fault is { } f) throw f;
        if (write.Bytes > 0) WaitForBytes(write.Bytes);
        Interlocked.Increment(ref _depth);
        if (_channel.Writer.TryWrite(write)) return;
        try
        {
            _channel.Writer.WriteAsync(write).AsTask().GetAwaiter().GetResult();
        }
        catch (ChannelClosedException)
        {
            Interlocked.Decrement(ref _depth);
            if (write.Bytes > 0) lock (_room) _queuedBytes -= write.Bytes;
            throw _fault ?? new StoreException($"store '{_path}' is closed");
        }
    }

    /// <summary>
    /// Takes <paramref name="bytes"/> of the queue's memory budget, first waiting while what is
    /// queued already holds the budget (a write over the budget waits for an empty queue).
    /// </summary>
    private void WaitForBytes(long bytes)
    {
        lock (_room)
        {
            while (_queuedBytes > 0 && _queuedBytes + bytes > MaxQueuedBytes)
            {
                if (_fault is { } f) throw f;
                if (_loop.IsCompleted) throw new StoreException($"store '{_path}' is closed");
                Monitor.Wait(_room, 100);
            }
            _queuedBytes += bytes;
        }
    }

    /// <summary>Memory the queued large writes hold now.</summary>
    public long QueuedBytes { get { lock (_room) return _queuedBytes; } }

    /// <summary>Completes once everything queued before the call is committed.</summary>
    public Task FlushAsync(CancellationToken ct = default)
    {
        var flush = new FlushWrite();
        Enqueue(flush);
        return flush.Done.Task.WaitAsync(ct);
    }

    private sealed class FlushWrite : StoreWrite
    {
        public readonly TaskCompletionSource Done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public override void Apply(StoreBatch batch) { }
    }

    private void Loop()
    {
        var reader = _channel.Reader;
        var batch = new List<StoreWrite>(MaxBatch);
        while (reader.WaitToReadAsync().AsTask().GetAwaiter().GetResult())
        {
            // Gather a batch: what is there now, then a little more while it keeps coming.
            var deadline = DateTime.UtcNow + MaxBatchDelay;
            while (batch.Count < MaxBatch)
            {
                if (reader.TryRead(out var w)) { batch.Add(w); continue; }
                if (DateTime.UtcNow >= deadline || batch.Exists(static b => b is FlushWrite)) break;
                Thread.Sleep(1);
            }
            Commit(batch);
            Interlocked.Add(ref _depth, -batch.Count);
            long bytes = 0;
            foreach (var w in batch) bytes += w.Bytes;
            if (bytes > 0)
                lock (_room)
                {
                    _queuedBytes -= bytes;
                    Monitor.PulseAll(_room);
                }
            // Flushes complete last: whoever waited sees the queue without this batch.
            CompleteFlushes(batch);
            batch.Clear();
        }
    }

    /// <summary>How long the writer tries to reconnect to a database whose connection was lost before it faults.</summary>
    public static readonly TimeSpan ReconnectFor = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Applies a batch in one transaction. When the connection is lost before the commit is sent (the
    /// transaction then ends with the session, nothing of it kept) and the writer can reconnect, it
    /// does — for up to <see cref="ReconnectFor"/> — and applies the batch again. A loss during the
    /// commit itself leaves unknown whether the batch was kept: the writer faults, as on any other error.
    /// </summary>
    private void Commit(List<StoreWrite> batch)
    {
        if (_fault is not null) return;
        while (true)
        {
            bool committing = false;
            try
            {
                long started = System.Diagnostics.Stopwatch.GetTimestamp();
                using var tx = _connection.BeginTransaction();
                _batch.Transaction = tx;
                foreach (var w in batch) w.Apply(_batch);
                _batch.Flush();
                committing = true;
                tx.Commit();
                if (Committed is { } committed)
                    try { committed(System.Diagnostics.Stopwatch.GetElapsedTime(started), batch.Count); } catch { /* a listener's failure is not the store's */ }
                return;
            }
            catch (Exception ex) when (ex is DbException or InvalidOperationException or IOException or UnauthorizedAccessException or TimeoutException)
            {
                if (!committing && ConnectionLost() && batch.TrueForAll(static w => w.Repeatable) && Reconnect()) continue;
                var fault = new StoreException(ex is DbException d ? _describe(d) : $"store '{_path}': {ex.Message}", ex);
                _fault = fault;
                try { Faulted?.Invoke(fault); } catch { /* a listener's failure must not stop the writer's bookkeeping */ }
                return;
            }
        }
    }

    private bool ConnectionLost() => _reconnect is not null && _connection.State != System.Data.ConnectionState.Open;

    /// <summary>A new connection in place of the lost one, tried with growing pauses for <see cref="ReconnectFor"/>; false when none could be made.</summary>
    private bool Reconnect()
    {
        var until = DateTime.UtcNow + ReconnectFor;
        var pause = TimeSpan.FromMilliseconds(50);
        try { _connection.Dispose(); } catch (Exception ex) when (ex is DbException or IOException or InvalidOperationException) { }
        while (true)
        {
            try
            {
                var connection = _reconnect!();
                (_connection, _batch) = (connection, new StoreBatch(connection, _filesFolder));
                try { Reconnected?.Invoke(); } catch { /* a listener's failure is not the store's */ }
                return true;
            }
            catch (Exception ex) when (ex is DbException or IOException or InvalidOperationException or TimeoutException)
            {
                if (DateTime.UtcNow + pause > until || _channel.Reader.Completion.IsCompleted) return false;
                Thread.Sleep(pause);
                pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, TimeSpan.FromSeconds(2).Ticks));
            }
        }
    }

    /// <summary>Raised on the writer's thread when it replaced a lost connection (the batch under way is applied again).</summary>
    public event Action? Reconnected;

    private void CompleteFlushes(List<StoreWrite> batch)
    {
        foreach (var w in batch)
        {
            if (w is not FlushWrite f) continue;
            if (_fault is { } fault) f.Done.TrySetException(fault);
            else f.Done.TrySetResult();
        }
    }

    public void Dispose()
    {
        _channel.Writer.TryComplete();
        try { _loop.Wait(TimeSpan.FromSeconds(30)); } catch (AggregateException) { }
        _connection.Dispose();
    }
}
