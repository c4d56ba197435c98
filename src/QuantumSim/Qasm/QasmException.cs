namespace TaskMesh.QuantumSim.Qasm;

/// <summary>An OpenQASM source that cannot be read; the message names the file, line and column.</summary>
public sealed class QasmException : Exception
{
    /// <summary>Creates the error; <see cref="Exception.Message"/> becomes <c>file:line:column: reason</c>.</summary>
    public QasmException(string? file, int line, int column, string reason)
        : base($"{file ?? "<qasm>"}:{line}:{column}: {reason}")
    {
        File = file;
        Line = line;
        Column = column;
        Reason = reason;
    }

    /// <summary>The source file, or null for inline text.</summary>
    public string? File { get; }

    /// <summary>1-based line.</summary>
    public int Line { get; }

    /// <summary>1-based column.</summary>
    public int Column { get; }

    /// <summary>The problem without the location.</summary>
    public string Reason { get; }
}
