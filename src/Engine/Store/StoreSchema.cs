namespace TaskMesh.Engine.Store;

/// <summary>
/// The store's schema, versioned by SQLite's <c>user_version</c> and marked as TaskMesh's by its
/// <c>application_id</c>. <see cref="Migrations"/>[v] takes a store from version v to v + 1; a
/// store is migrated on open, in one transaction, and a store newer than this build is refused.
/// </summary>
internal static class StoreSchema
{
    /// <summary>"TMSH": what <c>PRAGMA application_id</c> holds in every TaskMesh store.</summary>
    public const int ApplicationId = 0x544D5348;

    /// <summary>The schema this build writes.</summary>
    public static int CurrentVersion => Migrations.Length;

    public static readonly string[] Migrations =
    [
        // v0 -> v1: every table of the run store.
        """
        CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            graph_name TEXT NOT NULL,
            graph_hash TEXT,
            graph_path TEXT,
            status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled', 'interrupted')),
            started_at TEXT NOT NULL,
            finished_at TEXT,
            total INTEGER NOT NULL,
            succeeded INTEGER NOT NULL DEFAULT 0,
            failed INTEGER NOT NULL DEFAULT 0,
            timed_out INTEGER NOT NULL DEFAULT 0,
            skipped INTEGER NOT NULL DEFAULT 0,
            cancelled INTEGER NOT NULL DEFAULT 0,
            restored INTEGER NOT NULL DEFAULT 0,
            cached INTEGER NOT NULL DEFAULT 0,
            escalations INTEGER NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0,
            wall_ms REAL,
            critical_path_ms REAL,
            config TEXT
        );
        CREATE INDEX runs_started ON runs (started_at DESC);
        CREATE TABLE task_executions (
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            task_index INTEGER NOT NULL,
            task_id TEXT NOT NULL,
            handler TEXT NOT NULL,
            initial_layer TEXT,
            final_layer TEXT,
            status TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            complexity REAL,
            confidence REAL,
            escalations INTEGER NOT NULL DEFAULT 0,
            started_ms REAL,
            duration_ms REAL,
            cost REAL,
            error TEXT,
            output_summary TEXT,
            skipped_because TEXT,
            kept_because TEXT NOT NULL,
            ended_at TEXT NOT NULL,
            PRIMARY KEY (run_id, task_index)
        );
        CREATE TABLE run_checkpoints (
            run_id TEXT PRIMARY KEY REFERENCES runs (run_id),
            completed INTEGER NOT NULL,
            bitmap BLOB NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE layers (
            name TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            status TEXT NOT NULL,
            priority INTEGER NOT NULL DEFAULT 0,
            capacity INTEGER NOT NULL,
            capabilities TEXT,
            price_per_second REAL NOT NULL DEFAULT 0,
            updated_at TEXT NOT NULL
        );
        CREATE TABLE escalation_rules (
            id INTEGER PRIMARY KEY,
            from_layer TEXT NOT NULL,
            to_layer TEXT NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('low_confidence', 'error', 'timeout', 'complexity', 'manual')),
            threshold REAL,
            priority INTEGER NOT NULL DEFAULT 0,
            active INTEGER NOT NULL DEFAULT 1
        );
        CREATE TABLE escalation_history (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            task_id TEXT NOT NULL,
            from_layer TEXT NOT NULL,
            to_layer TEXT NOT NULL,
            rule_id INTEGER REFERENCES escalation_rules (id),
            trigger TEXT NOT NULL,
            reason TEXT NOT NULL,
            previous_confidence REAL,
            previous_output_summary TEXT,
            at TEXT NOT NULL
        );
        CREATE INDEX escalation_history_run ON escalation_history (run_id, task_id);
        CREATE TABLE layer_metrics_daily (
            day TEXT NOT NULL,
            layer TEXT NOT NULL,
            requests INTEGER NOT NULL DEFAULT 0,
            successes INTEGER NOT NULL DEFAULT 0,
            failures INTEGER NOT NULL DEFAULT 0,
            total_duration_ms REAL NOT NULL DEFAULT 0,
            confidence_sum REAL NOT NULL DEFAULT 0,
            confidence_count INTEGER NOT NULL DEFAULT 0,
            cost REAL NOT NULL DEFAULT 0,
            PRIMARY KEY (day, layer)
        );
        CREATE TABLE audit_log (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            task_id TEXT,
            category TEXT NOT NULL CHECK (category IN ('task_submission', 'layer_selection', 'task_execution', 'confidence_evaluation', 'escalation', 'task_completion', 'error')),
            at TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        CREATE INDEX audit_log_run ON audit_log (run_id, task_id, id);
        """,
        // v1 -> v2: outputs that successors read over data edges, for resuming a run.
        """
        CREATE TABLE task_outputs (
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            task_index INTEGER NOT NULL,
            json TEXT NOT NULL,
            PRIMARY KEY (run_id, task_index)
        );
        ALTER TABLE runs ADD COLUMN resumed_from TEXT;
        ALTER TABLE layer_metrics_daily ADD COLUMN timed INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE task_cache (
            key TEXT PRIMARY KEY,
            handler TEXT NOT NULL,
            json TEXT NOT NULL,
            run_id TEXT,
            task_id TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE run_layers (
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            layer TEXT NOT NULL,
            tasks INTEGER NOT NULL,
            succeeded INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            duration_ms REAL NOT NULL,
            cost REAL NOT NULL,
            PRIMARY KEY (run_id, layer)
        );
        """,
        // v2 -> v3: outputs over 1 MiB in files beside the store (the row names the file; json is empty).
        """
        ALTER TABLE task_outputs ADD COLUMN file TEXT;
        ALTER TABLE task_outputs ADD COLUMN bytes INTEGER;
        ALTER TABLE task_cache ADD COLUMN file TEXT;
        ALTER TABLE task_cache ADD COLUMN bytes INTEGER;
        """,
        // v3 -> v4: each kept task row's feature vector (float32, little-endian) for training, and the trained models.
        """
        ALTER TABLE task_executions ADD COLUMN features BLOB;
        CREATE TABLE models (
            version INTEGER PRIMARY KEY,
            trained_at TEXT NOT NULL,
            rows INTEGER NOT NULL,
            folder TEXT NOT NULL,
            metrics TEXT NOT NULL
        );
        """,
        // v4 -> v5: the order ready tasks took free slots in (fifo, critical_path).
        """
        ALTER TABLE runs ADD COLUMN ready_order TEXT;
        """,
        // v5 -> v6: the durations of a task's last attempt (on final_layer) and of its first (on
        // initial_layer, when it ran to its end): duration_ms sums every attempt, which is no layer's duration.
        """
        ALTER TABLE task_executions ADD COLUMN last_attempt_ms REAL;
        ALTER TABLE task_executions ADD COLUMN first_attempt_ms REAL;
        """,
        // v6 -> v7: escalation history outlives the rules: it keeps the text of the rule that fired
        // (rule_id no longer a foreign key, which made a changed rule set fail every later run), and
        // rule ids are never reused (AUTOINCREMENT). A run names the process that owns it (host, pid,
        // start time), so a row a dead process left "running" reads as interrupted and a live run
        // cannot be resumed twice; and the content hashes of the files its tasks read (inputs).
        """
        CREATE TABLE escalation_history_v7 (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (run_id),
            task_id TEXT NOT NULL,
            from_layer TEXT NOT NULL,
            to_layer TEXT NOT NULL,
            rule_id INTEGER,
            rule TEXT,
            trigger TEXT NOT NULL,
            reason TEXT NOT NULL,
            previous_confidence REAL,
            previous_output_summary TEXT,
            at TEXT NOT NULL
        );
        INSERT INTO escalation_history_v7 (id, run_id, task_id, from_layer, to_layer, rule_id, rule, trigger, reason, previous_confidence, previous_output_summary, at)
            SELECT h.id, h.run_id, h.task_id, h.from_layer, h.to_layer, h.rule_id,
                (SELECT r.from_layer || ' → ' || r.to_layer || ' on ' || r.trigger || coalesce(' ' || r.threshold, '') FROM escalation_rules r WHERE r.id = h.rule_id),
                h.trigger, h.reason, h.previous_confidence, h.previous_output_summary, h.at
            FROM escalation_history h;
        DROP TABLE escalation_history;
        ALTER TABLE escalation_history_v7 RENAME TO escalation_history;
        CREATE INDEX escalation_history_run ON escalation_history (run_id, task_id);
        CREATE TABLE escalation_rules_v7 (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            from_layer TEXT NOT NULL,
            to_layer TEXT NOT NULL,
            trigger TEXT NOT NULL CHECK (trigger IN ('low_confidence', 'error', 'timeout', 'complexity', 'manual')),
            threshold REAL,
            priority INTEGER NOT NULL DEFAULT 0,
            active INTEGER NOT NULL DEFAULT 1
        );
        INSERT INTO escalation_rules_v7 (id, from_layer, to_layer, trigger, threshold, priority, active)
            SELECT id, from_layer, to_layer, trigger, threshold, priority, active FROM escalation_rules;
        DROP TABLE escalation_rules;
        ALTER TABLE escalation_rules_v7 RENAME TO escalation_rules;
        ALTER TABLE runs ADD COLUMN owner_host TEXT;
        ALTER TABLE runs ADD COLUMN owner_pid INTEGER;
        ALTER TABLE runs ADD COLUMN owner_started TEXT;
        ALTER TABLE runs ADD COLUMN inputs TEXT;
        CREATE INDEX runs_resumed_from ON runs (resumed_from);
        """,
        // v7 -> v8: open runs (tasks submitted while the run goes): the run's kind ('open'; null for
        // a graph), and each task's spec hash, so that a task resubmitted after a crash under the id
        // it completed with is answered from its row instead of run again.
        """
        ALTER TABLE runs ADD COLUMN kind TEXT;
        ALTER TABLE task_executions ADD COLUMN spec_hash TEXT;
        CREATE INDEX task_executions_task_id ON task_executions (run_id, task_id);
        """,
        // v8 -> v9: the audit trail records who acted through the service's API (category 'api');
        // an action on the service rather than a run (a layer's capacity, the rules, training) has no run.
        """
        CREATE TABLE audit_log_v9 (
            id INTEGER PRIMARY KEY,
            run_id TEXT,
            task_id TEXT,
            category TEXT NOT NULL CHECK (category IN ('task_submission', 'layer_selection', 'task_execution', 'confidence_evaluation', 'escalation', 'task_completion', 'error', 'api')),
            at TEXT NOT NULL,
            detail TEXT NOT NULL
        );
        INSERT INTO audit_log_v9 (id, run_id, task_id, category, at, detail) SELECT id, run_id, task_id, category, at, detail FROM audit_log;
        DROP TABLE audit_log;
        ALTER TABLE audit_log_v9 RENAME TO audit_log;
        CREATE INDEX audit_log_run ON audit_log (run_id, task_id, id);
        """,
    ];
}
