namespace TaskMesh.Engine.Handlers;

/// <summary>
/// The sizes a task's arguments state, in the units of the graph format's well-known arguments
/// (<c>micros</c>, <c>millis</c>, <c>bytes</c>, <c>size</c>, and for tasks that stand for a circuit
/// <c>qubits</c> and <c>gates</c>); 0 where the task states none. Routing learns from them.
/// </summary>
public readonly record struct TaskMeasures(double Micros = 0, double Millis = 0, double Bytes = 0, double Size = 0, double Qubits = 0, double Gates = 0);

/// <summary>
/// Parsed arguments (what a handler's validator returns) that state their <see cref="TaskMeasures"/>:
/// the feature extractor reads these numbers from them instead of reading the task's JSON again,
/// which on a graph of a million small tasks is most of what routing a task costs. Implement it only
/// when the validator refuses arguments it does not know, so the measures are all the task states.
/// </summary>
public interface IMeasuredArgs
{
    /// <summary>The task's sizes.</summary>
    TaskMeasures Measures { get; }
}
