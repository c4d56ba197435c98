using TaskMesh.Engine.Handlers;
using TaskMesh.QuantumSim;

namespace TaskMesh.Engine.Layers.Quantum;

/// <summary>
/// The <c>quantum</c> layer: a dedicated executor that runs a few circuits at a time on threads of
/// its own (each circuit already uses every core inside its kernels) and admits a circuit only if
/// its state vector fits beside the ones already running.
/// </summary>
public sealed class QuantumLayer : ExecutionLayer
{
    /// <summary>The layer's name in graphs.</summary>
    public const string LayerName = "quantum";

    /// <summary>Circuits from this many qubits run on a dedicated thread rather than the thread pool.</summary>
    private const int LongRunningQubits = 20;

    private readonly QuantumOptions _options;
    private readonly string _name;
    private long _reservedBytes;

    /// <summary>Creates the layer.</summary>
    /// <param name="options">Its settings.</param>
    /// <param name="name">Its name: several quantum layers of other settings may exist (e.g. <c>quantum-double</c>).</param>
    /// <param name="precision">The precision circuits run at here (a task that asks for double keeps it); null: as each task says.</param>
    /// <exception cref="ArgumentException">Invalid options.</exception>
    public QuantumLayer(QuantumOptions options, string name = LayerName, Precision? precision = null) : base(CapacityOf(options))
    {
        var problems = options.Problems().ToList();
        if (problems.Count > 0) throw new ArgumentException(string.Join("; ", problems));
        _options = options;
        _name = name;
        Precision = precision;
    }

    /// <inheritdoc />
    public override string Name => _name;

    /// <inheritdoc />
    public override string Kind => LayerKinds.Quantum;

    /// <summary>The precision circuits run at on this layer, or null when each task says.</summary>
    public Precision? Precision { get; }

    /// <summary>
    /// The layer a single-precision circuit whose norm drifts escalates to (a double-precision
    /// quantum layer of higher rank), or null: then it re-runs here in double precision, as a
    /// variant of the same task. Set by the engine from its layers.
    /// </summary>
    public string? EscalatesTo { get; internal set; }

    private static int CapacityOf(QuantumOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        return Math.Max(1, options.MaxConcurrentCircuits);
    }

    /// <summary>Bytes of state vectors held by running circuits.</summary>
    public long ReservedBytes => Interlocked.Read(ref _reservedBytes);

    /// <summary>Runs only <c>quantum</c> tasks; <c>MaxQubits</c> is the largest state (at the layer's precision) that fits now.</summary>
    /// <inheritdoc />
    public override IReadOnlyList<string>? RunsHandlers { get; } = [QuantumHandler.Name];

    /// <inheritdoc />
    public override LayerCapabilities Capabilities
    {
        get
        {
            long budget = Math.Min(_options.MemoryCapBytes, MemoryAdmission.AvailableBytes() - MemoryAdmission.ReserveBytes) - ReservedBytes;
            int max = 0;
            var precision = Precision ?? QuantumSim.Precision.Single;
            while (max < StateVector.MaxQubits && StateVector.RequiredBytes(max + 1, precision) <= budget) max++;
            return new LayerCapabilities(max, RunsHandlers);
        }
    }

    /// <inheritdoc />
    public override async ValueTask<object?> ExecuteAsync(LayerInvocation invocation, CancellationToken ct)
    {
        var ctx = invocation.Context;
        var args = ctx.ParsedArgs<QuantumArgs>() ?? throw new TaskFailedException($"handler '{invocation.Handler.Name}' cannot run on the quantum layer");
        long need = StateVector.RequiredBytes(args.Circuit.Qubits, QuantumHandler.PrecisionOf(args, ctx.EscalatedTo, Precision));
        long reserved = Interlocked.Add(ref _reservedBytes, need) - need;
        try
        {
            // The cap covers every running state; admission also checks what the machine has free.
            long cap = _options.MemoryCapBytes == MemoryAdmission.NoCap ? MemoryAdmission.NoCap : Math.Max(0, _options.MemoryCapBytes - reserved);
            // A large circuit gets a thread of its own for its seconds of sweeps; a small one
            // (milliseconds) is not worth creating a thread for.
            var creation = args.Circuit.Qubits >= LongRunningQubits ? TaskCreationOptions.LongRunning : TaskCreationOptions.None;
            return await Task.Factory.StartNew(
                () => (object?)QuantumHandler.Execute(ctx, _options, cap, reserved, ct, this),
                ct, creation, TaskScheduler.Default).ConfigureAwait(false);
        }
        catch (AdmissionException e)
        {
            throw new TaskFailedException($"not admitted to the quantum layer: {e.Message}");
        }
        finally
        {
            Interlocked.Add(ref _reservedBytes, -need);
        }
    }
}
