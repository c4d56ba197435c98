namespace TaskMesh.Engine.Store;

/// <summary>The categories of the audit trail, as stored and as <c>taskmesh audit --category</c> takes them.</summary>
public static class AuditCategory
{
    /// <summary>A run was submitted (task id empty), or one of its tasks (small runs).</summary>
    public const string TaskSubmission = "task_submission";
    /// <summary>The router chose a layer for a task queued for a layer (prediction and reason when the router gives them).</summary>
    public const string LayerSelection = "layer_selection";
    /// <summary>An attempt ran: layer, attempt, outcome, duration, what came next.</summary>
    public const string TaskExecution = "task_execution";
    /// <summary>An attempt reported a confidence (with the task's minimum, when it sets one).</summary>
    public const string ConfidenceEvaluation = "confidence_evaluation";
    /// <summary>A task moved to another layer or variant.</summary>
    public const string Escalation = "escalation";
    /// <summary>A task's final status, and why its row was kept.</summary>
    public const string TaskCompletion = "task_completion";
    /// <summary>An attempt failed or timed out.</summary>
    public const string Error = "error";
    /// <summary>
    /// Someone acted on the run (or, with no run, on the service) through the service's API: the
    /// action, the caller (a token's subject) and what they asked.
    /// </summary>
    public const string Api = "api";

    /// <summary>Every category, in the order of a task's life; the API's actions last.</summary>
    public static readonly string[] All = [TaskSubmission, LayerSelection, TaskExecution, ConfidenceEvaluation, Escalation, TaskCompletion, Error, Api];
}
