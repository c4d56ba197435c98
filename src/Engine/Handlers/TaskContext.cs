using System.Text.Json;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Engine.Handlers;

/// <summary>What a handler may know about the task it runs. A small struct: passing it allocates nothing.</summary>
public readonly struct TaskContext
{
    private readonly RunState _run;

    internal TaskContext(RunState run, int index, int attempt)
    {
        _run = run;
        Index = index;
        Attempt = attempt;
    }

    /// <summary>Dense index of the task in its graph.</summary>
    public int Index { get; }

    /// <summary>1 for the first attempt, 2 for the first retry, ...</summary>
    public int Attempt { get; }

    /// <summary>The task's id.</summary>
    public string Id => _run.Graph.IdOf(Index);

    /// <summary>The graph being run.</summary>
    public TaskGraph Graph => _run.Graph;

    /// <summary>The directory relative paths in arguments are resolved against (the graph file's folder).</summary>
    public string BaseDirectory => _run.BaseDirectory;

    /// <summary>The task's raw arguments (<c>default</c> when it has none).</summary>
    public JsonElement Args => _run.Graph.Specs[Index]?.Args ?? default;

    /// <summary>The arguments parsed by the handler's validator, cast to <typeparamref name="T"/>.</summary>
    public T? ParsedArgs<T>() where T : class => _run.Graph.Specs[Index]?.ParsedArgs as T;

    /// <summary>Outputs of the predecessors linked by data edges, as (id, output) pairs in edge order.</summary>
    public IReadOnlyList<KeyValuePair<string, object?>> Inputs => _run.InputsOf(Index);

    /// <summary>Records an escalation of this task (audited in the run summary and published as an event).</summary>
    /// <param name="from">What the task left, e.g. a layer name or <c>single</c>.</param>
    /// <param name="to">What it moved to.</param>
    /// <param name="trigger"><c>low_confidence</c>, <c>error</c> or <c>timeout</c>.</param>
    /// <param name="reason">Why, in words.</param>
    public void ReportEscalation(string from, string to, string trigger, string reason) => _run.RecordEscalation(Index, from, to, trigger, reason);
}
