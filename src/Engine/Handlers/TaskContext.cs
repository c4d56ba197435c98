using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Handlers;

/// <summary>What a handler may know about the task it runs. A small struct: passing it allocates nothing.</summary>
public readonly struct TaskContext
{
    private readonly AttemptHost _run;

    internal TaskContext(AttemptHost run, int index, int attempt)
    {
        _run = run;
        Index = index;
        Attempt = attempt;
    }

    /// <summary>Dense index of the task in its run (in a graph, its index there; in an open run, its place in submission order).</summary>
    public int Index { get; }

    /// <summary>1 for the first attempt, 2 for the first retry, ...</summary>
    public int Attempt { get; }

    /// <summary>The task's id.</summary>
    public string Id => _run.IdOf(Index);

    /// <summary>How long the attempt may run (a layer that sends it elsewhere sends this too).</summary>
    internal TimeSpan Timeout => _run.TimeoutOf(Index);

    /// <summary>The graph being run; for a task of an open run, a graph of that task alone.</summary>
    public TaskGraph Graph => _run.GraphOf(Index);

    /// <summary>The directory relative paths in arguments are resolved against (the graph file's folder).</summary>
    public string BaseDirectory => _run.BaseDirectory;

    /// <summary>The task's raw arguments (<c>default</c> when it has none).</summary>
    public JsonElement Args => _run.SpecOf(Index)?.Args ?? default;

    /// <summary>The arguments parsed by the handler's validator, cast to <typeparamref name="T"/>.</summary>
    public T? ParsedArgs<T>() where T : class => _run.ParsedArgsOf(Index) as T;

    /// <summary>Outputs of the predecessors linked by data edges, as (id, output) pairs in edge order.</summary>
    public IReadOnlyList<KeyValuePair<string, object?>> Inputs => _run.InputsOf(Index);

    /// <summary>
    /// The variant this attempt runs in after an escalation on the same layer (e.g. <c>double</c> for a
    /// circuit whose single-precision result drifted), or null.
    /// </summary>
    public string? EscalatedTo => _run.VariantOf(Index);

    /// <summary>Reports the attempt's confidence (0–1): the escalation policy sees it, and so do observers.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Outside 0–1.</exception>
    public void ReportConfidence(double confidence)
    {
        if (!(confidence is >= 0 and <= 1)) throw new ArgumentOutOfRangeException(nameof(confidence), confidence, "a confidence is between 0 and 1");
        _run.ReportConfidence(Index, Attempt, confidence);
    }

    /// <summary>
    /// Asks for another attempt in a more capable way once this one returns (its output is kept if
    /// that attempt fails). The engine's escalation policy decides; the escalation is audited.
    /// </summary>
    /// <param name="trigger"><c>low_confidence</c>, <c>error</c>, <c>timeout</c>, <c>complexity</c> or <c>manual</c>.</param>
    /// <param name="from">What the task leaves (e.g. <c>single</c>).</param>
    /// <param name="to">A layer name, or a variant of this handler (seen as <see cref="EscalatedTo"/> by the next attempt).</param>
    /// <param name="reason">Why, in words.</param>
    public void RequestEscalation(string trigger, string from, string to, string reason)
        => _run.RequestEscalation(Index, Attempt, new Scheduling.Attempts.EscalationRequest(trigger, from, to, reason));

    /// <summary>Records an escalation this task carried out by itself (audited in the run summary and published as an event).</summary>
    /// <param name="from">What the task left, e.g. a layer name or <c>single</c>.</param>
    /// <param name="to">What it moved to.</param>
    /// <param name="trigger"><c>low_confidence</c>, <c>error</c> or <c>timeout</c>.</param>
    /// <param name="reason">Why, in words.</param>
    public void ReportEscalation(string from, string to, string trigger, string reason) => _run.RecordEscalation(Index, from, to, trigger, reason);
}
