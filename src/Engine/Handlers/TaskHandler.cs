using System.Text.Json;

namespace TaskMesh.Engine.Handlers;

/// <summary>
/// An asynchronous task body. It must honour <paramref name="ct"/>: it is cancelled on timeout
/// and on run cancellation, and abandoned after a grace period if it does not stop.
/// </summary>
/// <returns>The task's output, handed to successors over data edges (may be null).</returns>
public delegate ValueTask<object?> TaskHandler(TaskContext ctx, JsonElement args, CancellationToken ct);

/// <summary>
/// A synchronous, short, non-blocking task body. It runs directly on a scheduler worker with no
/// timeout, slot or hop; use it for tiny tasks only. A failure with retries left is retried
/// through the local layer with back-off.
/// </summary>
public delegate object? InlineTaskHandler(TaskContext ctx);

/// <summary>Checks a handler's arguments before anything runs.</summary>
/// <returns>The parsed arguments to hand to every attempt, and the problems found (empty when valid).</returns>
public delegate (object? Parsed, IReadOnlyList<string> Problems) ArgsValidator(JsonElement args);

/// <summary>Where a graph is being validated: relative paths in args resolve against <see cref="BaseDirectory"/>.</summary>
/// <param name="BaseDirectory">The graph file's directory, or the current directory for graphs built in code.</param>
public sealed record ValidationContext(string BaseDirectory)
{
    /// <summary>Files the command reads (the graph file, its config): a task must never write over them.</summary>
    public IReadOnlyList<string> InputFiles { get; init; } = [];

    /// <summary>Cancels a long validation (parsing large circuits, say); validators should pass it on.</summary>
    public CancellationToken CancellationToken { get; init; }
}

/// <summary>Like <see cref="ArgsValidator"/>, for handlers whose args name files relative to the graph.</summary>
public delegate (object? Parsed, IReadOnlyList<string> Problems) ContextArgsValidator(JsonElement args, ValidationContext context);

/// <summary>A registered handler and what the engine needs to know about it.</summary>
public sealed class HandlerDescriptor
{
    public HandlerDescriptor(string name, TaskHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        Name = name;
        Async = handler;
    }

    public HandlerDescriptor(string name, InlineTaskHandler handler)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(handler);
        Name = name;
        Inline = handler;
    }

    public string Name { get; }

    /// <summary>The asynchronous body, or null for inline handlers.</summary>
    public TaskHandler? Async { get; }

    /// <summary>The inline body, or null for asynchronous handlers.</summary>
    public InlineTaskHandler? Inline { get; }

    public bool IsInline => Inline is not null;

    /// <summary>Argument check run during validation; null accepts anything.</summary>
    public ArgsValidator? Validate { get; init; }

    /// <summary>Predicted duration in microseconds from the (parsed) arguments, for the critical path; null means unknown.</summary>
    public Func<object?, double>? EstimateMicros { get; init; }

    /// <summary>True when the handler may only run in the local layer (e.g. <c>shell</c>).</summary>
    public bool LocalOnly { get; init; }

    /// <summary>
    /// The kind of the only layers that run this handler (e.g. <c>external</c>: its body lives in a
    /// worker outside the process), or null for any layer that lists it.
    /// </summary>
    public string? OnlyOn { get; init; }

    /// <summary>Validates args with the graph's location (used instead of <see cref="Validate"/> when set).</summary>
    public ContextArgsValidator? ValidateWithContext { get; init; }

    /// <summary>
    /// Whether a task of this handler may be answered from the result cache: its output depends on
    /// its arguments and data-edge inputs alone (no clock, no randomness without a seed, no side
    /// effect anyone relies on). Default false.
    /// </summary>
    public bool Cacheable { get; init; }

    /// <summary>
    /// The part of a task's output that depends on the layer it runs on (a quantum layer's precision
    /// for a task that does not set its own), from its parsed arguments and that layer: kept in its
    /// cache key, so a result made on one layer is not served where it would differ. Null (the
    /// default): the output is the same on every layer.
    /// </summary>
    public Func<object?, Layers.ExecutionLayer, string?>? CacheVariant { get; init; }

    /// <summary>Part of the cache key: change it when the handler's output for the same arguments changes. Default "1".</summary>
    public string Version { get; init; } = "1";

    /// <summary>The layer an <c>auto</c> task of this handler goes to when that layer is registered (null = the router decides). Default null.</summary>
    public string? PreferredLayer { get; init; }
}
