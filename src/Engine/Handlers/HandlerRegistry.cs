using System.Collections.Concurrent;
using System.Diagnostics.CodeAnalysis;
using System.Text.Json;

namespace TaskMesh.Engine.Handlers;

/// <summary>
/// Handlers by name. The built-ins (docs/graph-format.md, "Built-in handlers") are registered by <see cref="CreateWithBuiltIns"/>;
/// library users add their own with <see cref="Register(string, TaskHandler)"/> or
/// <see cref="RegisterInline"/>. Workers load the same registry.
/// </summary>
public sealed class HandlerRegistry
{
    private readonly ConcurrentDictionary<string, HandlerDescriptor> _handlers = new(StringComparer.Ordinal);

    /// <summary>A registry holding the built-in handlers (<c>noop spin sleep hash matmul fail shell</c>).</summary>
    /// <param name="shellEnabled">Whether <c>shell</c> tasks may run; when false they fail validation.</param>
    public static HandlerRegistry CreateWithBuiltIns(bool shellEnabled = false)
    {
        var r = new HandlerRegistry();
        BuiltInHandlers.RegisterAll(r, shellEnabled);
        return r;
    }

    /// <summary>Registers (or replaces) an asynchronous handler.</summary>
    public HandlerRegistry Register(string name, TaskHandler handler) => Register(new HandlerDescriptor(name, handler));

    /// <summary>Registers (or replaces) an inline handler: synchronous, short, run on the scheduler worker itself.</summary>
    public HandlerRegistry RegisterInline(string name, InlineTaskHandler handler) => Register(new HandlerDescriptor(name, handler));

    /// <summary>Registers (or replaces) a handler described in full.</summary>
    public HandlerRegistry Register(HandlerDescriptor descriptor)
    {
        ArgumentNullException.ThrowIfNull(descriptor);
        _handlers[descriptor.Name] = descriptor;
        return this;
    }

    public bool TryGet(string name, [MaybeNullWhen(false)] out HandlerDescriptor descriptor) => _handlers.TryGetValue(name, out descriptor);

    /// <summary>Registered names, sorted.</summary>
    public IReadOnlyList<string> Names => _handlers.Keys.Order(StringComparer.Ordinal).ToArray();
}

/// <summary>Thrown by a handler to fail its task with a message (no stack trace in the summary).</summary>
public sealed class TaskFailedException(string message) : Exception(message);

/// <summary>Small helpers that built-in validators share: one pass over an args object, all problems collected.</summary>
internal sealed class ArgsReader
{
    private readonly JsonElement _args;
    private readonly HashSet<string> _known = new(StringComparer.Ordinal);

    public ArgsReader(JsonElement args) => _args = args;

    public List<string> Problems { get; } = new();

    private bool TryGet(string name, out JsonElement value)
    {
        _known.Add(name);
        value = default;
        return _args.ValueKind == JsonValueKind.Object && _args.TryGetProperty(name, out value);
    }

    public long Integer(string name, long min, long max, long? fallback)
    {
        if (!TryGet(name, out var v))
        {
            if (fallback is null) Problems.Add($"missing argument '{name}' (an integer {min}..{max})");
            return fallback ?? min;
        }
        if (v.ValueKind != JsonValueKind.Number || !v.TryGetInt64(out long x))
        {
            Problems.Add($"argument '{name}' must be an integer, got {v.ValueKind.ToString().ToLowerInvariant()}");
            return fallback ?? min;
        }
        if (x < min || x > max)
        {
            Problems.Add($"argument '{name}' is {x}; it must be between {min} and {max}");
            return Math.Clamp(x, min, max);
        }
        return x;
    }

    public string? String(string name, bool required)
    {
        if (!TryGet(name, out var v))
        {
            if (required) Problems.Add($"missing argument '{name}' (a string)");
            return null;
        }
        if (v.ValueKind != JsonValueKind.String)
        {
            Problems.Add($"argument '{name}' must be a string");
            return null;
        }
        return v.GetString();
    }

    public string[]? StringArray(string name)
    {
        if (!TryGet(name, out var v)) return null;
        if (v.ValueKind != JsonValueKind.Array || v.EnumerateArray().Any(e => e.ValueKind != JsonValueKind.String))
        {
            Problems.Add($"argument '{name}' must be an array of strings");
            return null;
        }
        return v.EnumerateArray().Select(e => e.GetString()!).ToArray();
    }

    /// <summary>Reports arguments that the handler does not know (typos are errors, not silence).</summary>
    /// <summary>Marks an argument as known without reading it (for free-form values).</summary>
    public void Known(string name) => _known.Add(name);

    public void RejectUnknown()
    {
        if (_args.ValueKind == JsonValueKind.Undefined || _args.ValueKind == JsonValueKind.Null) return;
        if (_args.ValueKind != JsonValueKind.Object)
        {
            Problems.Add("args must be an object");
            return;
        }
        foreach (var p in _args.EnumerateObject())
            if (!_known.Contains(p.Name))
                Problems.Add($"unknown argument '{p.Name}' (expected {string.Join(", ", _known)})");
    }
}
