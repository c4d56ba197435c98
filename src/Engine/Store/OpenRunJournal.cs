using System.Globalization;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Store;

/// <summary>
/// Records an open run in the run store as it goes: the run's row (kind <c>open</c>, owned by this
/// process, so it reads <c>open</c> while the process lives and <c>interrupted</c> after a crash),
/// a row for every task worth one (every task with an id of its own — so that, resubmitted after a
/// crash, it is answered from the store — and every task that did not simply succeed on the local
/// layer at once), the output of each task with an id of its own, the audit trail of those tasks,
/// the escalations, a heartbeat with the counts, and the run's end. Writes go through the store's
/// writer thread, in order, a batch per commit.
/// </summary>
internal sealed class OpenRunJournal
{
    private readonly RunStore _store;
    private readonly StoreWriter _writer;
    private readonly string _runId;
    private readonly Timer _heartbeat;
    private readonly Func<(long Total, long Succeeded, long Failed, long TimedOut, long Skipped, long Cancelled)> _counts;
    private long _escalations;
    private double _costBits;

    public OpenRunJournal(RunStore store, string runId, string name, bool resumed, Func<(long, long, long, long, long, long)> counts)
    {
        _store = store;
        _writer = store.Writer ?? throw new StoreException($"store '{store.Path}' is open read-only: an open run cannot be recorded in it");
        _runId = runId;
        _counts = counts;
        _writer.Enqueue(new Opened(runId, name, resumed, Now()));
        _heartbeat = new Timer(static s => ((OpenRunJournal)s!).Beat(), this, RunRecorder.CheckpointInterval, RunRecorder.CheckpointInterval);
    }

    private static string Now() => DateTimeOffset.UtcNow.ToString("O", CultureInfo.InvariantCulture);

    /// <summary>What the store recorded for a task resubmitted under <paramref name="id"/> (see <see cref="RunStore.OpenTaskOf"/>).</summary>
    public (string Status, string? SpecHash, bool HasOutput, object? Output)? Recorded(string id) => _store.OpenTaskOf(_runId, id);

    public void Submitted(string id, string handler, string layer, string priority, int dependencies, string? submittedBy)
        => Audit(id, AuditCategory.TaskSubmission, w =>
        {
            w.WriteString("handler", handler);
            w.WriteString("priority", priority);
            w.WriteNumber("predecessors", dependencies);
            w.WriteString("layer", layer);
            if (submittedBy is not null) w.WriteString("submitted_by", submittedBy);
        });

    /// <summary>A task ended: its row (when it is worth one), its output (when it has an id of its own), its audit.</summary>
    public void Ended(int index, string id, bool givenId, string handler, string? initialLayer, string? layer, TaskOutcome outcome, int attempts, double? confidence,
        int escalations, double startedMs, double durationMs, double cost, string? error, object? output, string? skippedBecause, string? specHash)
    {
        AddCost(cost);
        bool plain = outcome == TaskOutcome.Succeeded && attempts <= 1 && escalations == 0 && layer == Layers.Local.LocalLayer.LayerName;
        if (!givenId && plain) return;   // counted in the heartbeat, nothing more
        string status = RunRecorder.Status(outcome);
        if (givenId && outcome == TaskOutcome.Succeeded && StoredOutput.Serialize(output, RunRecorder.MaxStoredOutputBytes) is string json)
            _writer.Enqueue(new OutputRow(_runId, index, json));
        string why = givenId ? "open-run" : outcome switch
        {
            TaskOutcome.Succeeded => escalations > 0 ? "escalated" : attempts > 1 ? "retried" : "layer",
            TaskOutcome.TimedOut => "timed-out",
            TaskOutcome.Skipped => "skipped",
            TaskOutcome.Cancelled => "cancelled",
            _ => "failed",
        };
        _writer.Enqueue(new RunRecorder.TaskRow(_runId, index, id, handler, initialLayer, layer, status, attempts, confidence, escalations,
            startedMs, durationMs, cost, error, outcome == TaskOutcome.Succeeded ? OutputSummary.Of(output) : null, skippedBecause, why, Now())
        {
            LastAttemptMs = layer is null ? null : durationMs,
            SpecHash = specHash,
        });
        Audit(id, AuditCategory.TaskCompletion, w =>
        {
            w.WriteString("status", status);
            if (layer is not null) w.WriteString("layer", layer);
            w.WriteNumber("attempts", attempts);
            w.WriteNumber("duration_ms", Math.Round(durationMs, 3));
            if (skippedBecause is not null) w.WriteString("skipped_because", skippedBecause);
            if (error is not null && outcome != TaskOutcome.Succeeded) w.WriteString("error", error);
        });
    }

    public void Escalated(EscalationRecord e)
    {
        Interlocked.Increment(ref _escalations);
        _writer.Enqueue(new RunRecorder.EscalationRow(_runId, e));
        Audit(e.TaskId, AuditCategory.Escalation, w =>
        {
            w.WriteString("from", e.From);
            w.WriteString("to", e.To);
            w.WriteString("trigger", e.Trigger);
            w.WriteString("reason", e.Reason);
            if (e.PreviousConfidence is double c) w.WriteNumber("previous_confidence", c);
        });
    }

    private void AddCost(double cost)
    {
        if (cost <= 0) return;
        double seen, next;
        do
        {
            seen = Volatile.Read(ref _costBits);
            next = seen + cost;
        }
        while (Interlocked.CompareExchange(ref _costBits, next, seen) != seen);
    }

    private void Beat()
    {
        try { _writer.Enqueue(new Counts(_runId, _counts(), Interlocked.Read(ref _escalations), Volatile.Read(ref _costBits), null, null, Now())); }
        catch (StoreException) { /* the writer reports its fault */ }
    }

    /// <summary>The run ended: its final counts and status.</summary>
    public void Closed(OpenRunResult result)
    {
        _heartbeat.Dispose();
        _writer.Enqueue(new Counts(_runId, _counts(), Interlocked.Read(ref _escalations), Volatile.Read(ref _costBits),
            result.Status switch { RunStatus.Succeeded => "succeeded", RunStatus.Failed => "failed", _ => "cancelled" }, result.Duration.TotalMilliseconds, Now()));
    }

    /// <summary>Waits until everything recorded so far is committed.</summary>
    public Task FlushAsync() => _writer.FlushAsync();

    private void Audit(string id, string category, Action<System.Text.Json.Utf8JsonWriter> detail)
    {
        try { _writer.Enqueue(new RunRecorder.AuditRow(_runId, id, category, Now(), RunRecorder.AuditRow.Detail(detail))); }
        catch (StoreException) { /* the writer reports its fault */ }
    }

    private static object Db(object? v) => v ?? DBNull.Value;

    private sealed class Opened(string runId, string name, bool resumed, string at) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            var owner = RunOwner.Current;
            var cmd = b.Command(resumed
                ? """
                  UPDATE runs SET status = 'running', finished_at = NULL, owner_host = @host, owner_pid = @pid, owner_started = @pstart WHERE run_id = @id
                  """
                : """
                  INSERT INTO runs (run_id, graph_name, status, started_at, total, kind, owner_host, owner_pid, owner_started)
                  VALUES (@id, @name, 'running', @at, 0, 'open', @host, @pid, @pstart)
                  """);
            cmd.Parameters.AddWithValue("@id", runId);
            cmd.Parameters.AddWithValue("@name", name);
            cmd.Parameters.AddWithValue("@at", at);
            cmd.Parameters.AddWithValue("@host", owner.Host);
            cmd.Parameters.AddWithValue("@pid", owner.Pid);
            cmd.Parameters.AddWithValue("@pstart", Db(owner.Started));
            cmd.ExecuteNonQuery();
            var beat = b.Command("""
                INSERT INTO run_checkpoints (run_id, completed, bitmap, updated_at) VALUES (@id, 0, @empty, @at)
                ON CONFLICT (run_id) DO UPDATE SET completed = excluded.completed, bitmap = excluded.bitmap, updated_at = excluded.updated_at
                """);
            beat.Parameters.AddWithValue("@id", runId);
            beat.Parameters.AddWithValue("@empty", Array.Empty<byte>());
            beat.Parameters.AddWithValue("@at", at);
            beat.ExecuteNonQuery();
        }
    }

    private sealed class Counts(string runId, (long Total, long Succeeded, long Failed, long TimedOut, long Skipped, long Cancelled) c, long escalations, double cost,
        string? status, double? wallMs, string at) : StoreWrite
    {
        public override void Apply(StoreBatch b)
        {
            // A resumed run adds to what its earlier life counted: the counts are this life's, kept apart in the checkpoint.
            var cmd = b.Command($"""
                UPDATE runs SET total = @total, succeeded = @ok, failed = @failed, timed_out = @timedOut, skipped = @skipped, cancelled = @cancelled,
                    escalations = @escalations, cost = @cost{(status is null ? "" : ", status = @status, finished_at = @at, wall_ms = @wall")}
                WHERE run_id = @id
                """);
            cmd.Parameters.AddWithValue("@id", runId);
            cmd.Parameters.AddWithValue("@total", c.Total);
            cmd.Parameters.AddWithValue("@ok", c.Succeeded);
            cmd.Parameters.AddWithValue("@failed", c.Failed);
            cmd.Parameters.AddWithValue("@timedOut", c.TimedOut);
            cmd.Parameters.AddWithValue("@skipped", c.Skipped);
            cmd.Parameters.AddWithValue("@cancelled", c.Cancelled);
            cmd.Parameters.AddWithValue("@escalations", escalations);
            cmd.Parameters.AddWithValue("@cost", cost);
            cmd.Parameters.AddWithValue("@at", at);
            if (status is not null)
            {
                cmd.Parameters.AddWithValue("@status", status);
                cmd.Parameters.AddWithValue("@wall", Db(wallMs));
            }
            cmd.ExecuteNonQuery();
            var beat = b.Command("UPDATE run_checkpoints SET completed = @done, updated_at = @at WHERE run_id = @id");
            beat.Parameters.AddWithValue("@id", runId);
            beat.Parameters.AddWithValue("@done", c.Succeeded);
            beat.Parameters.AddWithValue("@at", at);
            beat.ExecuteNonQuery();
        }
    }

    private sealed class OutputRow(string runId, int task, string json) : StoreWrite
    {
        public override long Bytes => 2L * json.Length;

        public override void Apply(StoreBatch b) => RunRecorder.WriteOutput(b, runId, task, json);
    }
}
