using Orleans;

namespace TaskMesh.Cluster;

/// <summary>One attempt of a task as the coordinator sends it to a worker (many to a grain call). Never sent twice in one call: no reference tracking.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
internal sealed class WorkItem
{
    /// <summary>The coordinator's key of this attempt: a worker's outcome names it.</summary>
    [Id(0)] public long Key { get; init; }
    [Id(1)] public string TaskId { get; init; } = "";
    [Id(2)] public string Handler { get; init; } = "";
    /// <summary>The task's arguments as JSON text, or null.</summary>
    [Id(3)] public string? Args { get; init; }
    [Id(4)] public int Attempt { get; init; }
    /// <summary>The variant after an escalation on the layer (e.g. <c>double</c>), or null.</summary>
    [Id(5)] public string? Variant { get; init; }
    [Id(6)] public int TimeoutMs { get; init; }
    /// <summary>Data-edge inputs as (predecessor id, output JSON), or null.</summary>
    [Id(7)] public KeyValuePair<string, string>[]? Inputs { get; init; }
}

/// <summary>How an attempt ended on a worker.</summary>
internal enum WorkStatus : byte
{
    Succeeded,
    Failed,
    TimedOut,
    /// <summary>The coordinator cancelled it (its timeout, or the run's end).</summary>
    Cancelled,
}

/// <summary>A worker's answer for one attempt (many to a grain call). Never sent twice in one call: no reference tracking.</summary>
[GenerateSerializer, Immutable, SuppressReferenceTracking]
internal sealed class WorkOutcome
{
    [Id(0)] public long Key { get; init; }
    [Id(1)] public WorkStatus Status { get; init; }
    /// <summary>The output as the run store's JSON (succeeded), or null.</summary>
    [Id(2)] public string? Output { get; init; }
    [Id(3)] public string? Error { get; init; }
    /// <summary>The confidence the handler reported, or NaN.</summary>
    [Id(4)] public double Confidence { get; init; } = double.NaN;
    /// <summary>An escalation the handler asked for: trigger, from, to, reason (or null).</summary>
    [Id(5)] public string[]? Escalation { get; init; }
    [Id(6)] public double DurationMs { get; init; }
}

/// <summary>What a worker offers, as it tells the coordinator when it joins.</summary>
[GenerateSerializer, Immutable]
internal sealed class WorkerInfo
{
    /// <summary>The worker silo's endpoint (<c>ip:port</c>): its grain's key.</summary>
    [Id(0)] public string Endpoint { get; init; } = "";
    [Id(1)] public string HostName { get; init; } = "";
    [Id(2)] public int ProcessId { get; init; }
    /// <summary>Tasks it runs at once.</summary>
    [Id(3)] public int Slots { get; init; }
    [Id(4)] public int Cores { get; init; }
    /// <summary>Memory a state vector may use there, in bytes (its quantum layer's cap, or what the machine has free).</summary>
    [Id(5)] public long MemoryBytes { get; init; }
    /// <summary>The largest circuit it can hold (0: it runs none).</summary>
    [Id(6)] public int MaxQubits { get; init; }
    [Id(7)] public string[] Handlers { get; init; } = [];
    /// <summary>The TaskMesh version it runs.</summary>
    [Id(8)] public string Version { get; init; } = "";
    /// <summary>The silo's full address (endpoint and generation): one process's membership.</summary>
    [Id(9)] public string Silo { get; init; } = "";
}
