using TaskMesh.Engine.Handlers;

namespace TaskMesh.Engine.Graph;

/// <summary>
/// A graph validated against one engine: each task's handler resolved and its arguments parsed
/// once, for every attempt of every run. The <see cref="TaskGraph"/> itself is never written, so
/// several engines may prepare one graph at the same time, each with its own handlers.
/// </summary>
public sealed class PreparedGraph
{
    private readonly HandlerDescriptor[] _handlers;   // by the graph's handler index
    private readonly object?[] _sharedArgs;           // by handler: the parse of "no arguments"
    private readonly object?[]? _taskArgs;            // by task, for tasks that have arguments

    internal PreparedGraph(TaskGraph graph, object engine, HandlerDescriptor[] handlers, object?[] sharedArgs, object?[]? taskArgs, string baseDirectory)
    {
        Graph = graph;
        Engine = engine;
        _handlers = handlers;
        _sharedArgs = sharedArgs;
        _taskArgs = taskArgs;
        BaseDirectory = baseDirectory;
    }

    /// <summary>
    /// The arguments of <paramref name="spec"/> (options that set arguments only) for this graph's
    /// one task, checked by its handler as validation checks them: true with what the validator
    /// parsed (null without a validator), or false with its <paramref name="problems"/> (each naming
    /// the handler; nothing is allocated for them when there are none).
    /// </summary>
    internal bool TryParseArguments(TaskSpec spec, out object? parsed, out IReadOnlyList<string> problems)
    {
        var h = _handlers[0];
        parsed = null;
        problems = [];
        if (h.Validate is null && h.ValidateWithContext is null) return true;
        (parsed, problems) = GraphValidator.Parse(h, spec.Args, new ValidationContext(BaseDirectory));
        if (problems.Count == 0) return true;
        problems = Named(h.Name, problems);
        return false;
    }

    /// <summary>This prepared graph of one task with the arguments of <paramref name="spec"/>, as <see cref="TryParseArguments"/> parsed them.</summary>
    internal PreparedGraph WithParsedArguments(TaskSpec spec, object? parsed)
    {
        var h = _handlers[0];
        object?[]? own = h.Validate is not null || h.ValidateWithContext is not null ? [parsed] : null;
        return new PreparedGraph(Graph.WithArgumentsOnly(spec), Engine, _handlers, _sharedArgs, own, BaseDirectory);
    }

    private static List<string> Named(string handler, IReadOnlyList<string> problems)
    {
        var named = new List<string>(problems.Count);
        foreach (var p in problems) named.Add($"handler '{handler}': {p}");
        return named;
    }

    /// <summary>The graph.</summary>
    public TaskGraph Graph { get; }

    /// <summary>The folder that relative paths in arguments were resolved against.</summary>
    public string BaseDirectory { get; }

    /// <summary>The engine that prepared it.</summary>
    internal object Engine { get; }

    /// <summary>Number of tasks.</summary>
    public int Count => Graph.Count;

    /// <summary>The id of task <paramref name="index"/>.</summary>
    public string IdOf(int index) => Graph.IdOf(index);

    /// <summary>Finds a task by id.</summary>
    public bool TryGetIndex(string id, out int index) => Graph.TryGetIndex(id, out index);

    /// <summary>Handlers by the graph's handler index.</summary>
    internal HandlerDescriptor[] Handlers => _handlers;

    /// <summary>The handler that runs task <paramref name="task"/>.</summary>
    public HandlerDescriptor HandlerOf(int task) => _handlers[Graph.HandlerIndex(task)];

    /// <summary>The arguments of task <paramref name="task"/> as its handler's validator parsed them (null when it has no validator).</summary>
    public object? ParsedArgsOf(int task)
        => _taskArgs?[task] ?? (_taskArgs is not null && GraphValidator.HasOwnArgs(Graph, task) ? null : _sharedArgs[Graph.HandlerIndex(task)]);

    /// <summary>
    /// The files the tasks read (their parsed arguments are <see cref="Handlers.IReadsFiles"/>) with
    /// the hash of their content as validation read it: task id, path relative to
    /// <see cref="BaseDirectory"/> where it lies inside it, and SHA-256. Empty for most graphs.
    /// </summary>
    public IReadOnlyList<(string TaskId, string Path, string Sha256)> InputFiles()
    {
        var list = new List<(string, string, string)>();
        for (int i = 0; i < Count; i++)
            if (ParsedArgsOf(i) is Handlers.IReadsFiles reads)
                foreach (var f in reads.Files)
                    list.Add((IdOf(i), System.IO.Path.GetRelativePath(BaseDirectory, f.Path), f.Sha256));
        return list;
    }
}
