using System.Globalization;
using System.Numerics;
using System.Text;

namespace TaskMesh.QuantumSim.Circuits;

/// <summary>A named range of qubits or classical bits; <see cref="Offset"/> is its first global index.</summary>
public sealed record Register(string Name, int Size, int Offset);

/// <summary>What an instruction does.</summary>
public enum InstructionKind
{
    /// <summary>A named library gate or a custom matrix.</summary>
    Gate,
    /// <summary>A terminal measurement of one qubit into one classical bit.</summary>
    Measure,
    /// <summary>A scheduling barrier; no effect on the state.</summary>
    Barrier,
}

/// <summary>One step of a circuit.</summary>
public sealed class Instruction
{
    internal Instruction(InstructionKind kind, string name, double[] parameters, int[] qubits, int clbit, MatrixGate? matrix)
    {
        Kind = kind;
        Name = name;
        Parameters = parameters;
        Qubits = qubits;
        Clbit = clbit;
        Matrix = matrix;
    }

    /// <summary>Gate, measure or barrier.</summary>
    public InstructionKind Kind { get; }

    /// <summary>The gate name (<c>unitary</c> for a custom matrix).</summary>
    public string Name { get; }

    /// <summary>Gate angles.</summary>
    public double[] Parameters { get; }

    /// <summary>Global qubit indices (controls first for controlled gates).</summary>
    public int[] Qubits { get; }

    /// <summary>The classical bit of a measurement, else -1.</summary>
    public int Clbit { get; }

    /// <summary>The bound matrix for gates (null for measure and barrier, and for identities).</summary>
    public MatrixGate? Matrix { get; }
}

/// <summary>
/// A quantum circuit: registers, gates and terminal measurements. Global qubit k (registers
/// concatenated in declaration order) is bit k of the basis index.
/// </summary>
public sealed class Circuit
{
    private readonly List<Register> _qregs = new();
    private readonly List<Register> _cregs = new();
    private readonly List<Instruction> _instructions = new();
    private readonly List<(int Qubit, int Clbit)> _measurements = new();
    private readonly HashSet<int> _measured = new();

    /// <summary>Total qubits.</summary>
    public int Qubits { get; private set; }

    /// <summary>Total classical bits.</summary>
    public int Clbits { get; private set; }

    /// <summary>Quantum registers in declaration order.</summary>
    public IReadOnlyList<Register> QuantumRegisters => _qregs;

    /// <summary>Classical registers in declaration order.</summary>
    public IReadOnlyList<Register> ClassicalRegisters => _cregs;

    /// <summary>All instructions in program order.</summary>
    public IReadOnlyList<Instruction> Instructions => _instructions;

    /// <summary>Terminal measurements (qubit, classical bit) in program order.</summary>
    public IReadOnlyList<(int Qubit, int Clbit)> Measurements => _measurements;

    /// <summary>Number of gate instructions (barriers and measurements excluded).</summary>
    public int GateCount { get; private set; }

    /// <summary>Messages about accepted but unusual input (e.g. a missing OPENQASM header).</summary>
    public List<string> Warnings { get; } = new();

    /// <summary>Declares a quantum register and returns it.</summary>
    /// <exception cref="ArgumentException">The name is taken or the size is not positive.</exception>
    public Register AddQuantumRegister(string name, int size)
    {
        CheckRegister(name, size);
        var r = new Register(name, size, Qubits);
        _qregs.Add(r);
        Qubits += size;
        return r;
    }

    /// <summary>Declares a classical register and returns it.</summary>
    /// <exception cref="ArgumentException">The name is taken or the size is not positive.</exception>
    public Register AddClassicalRegister(string name, int size)
    {
        CheckRegister(name, size);
        var r = new Register(name, size, Clbits);
        _cregs.Add(r);
        Clbits += size;
        return r;
    }

    private void CheckRegister(string name, int size)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(size, 1);
        if (_qregs.Any(r => r.Name == name) || _cregs.Any(r => r.Name == name))
            throw new ArgumentException($"register '{name}' is already declared");
    }

    /// <summary>A circuit with one quantum register <c>q</c> of <paramref name="qubits"/> qubits.</summary>
    public static Circuit WithQubits(int qubits)
    {
        var c = new Circuit();
        c.AddQuantumRegister("q", qubits);
        return c;
    }

    /// <summary>Appends a library gate (see <see cref="GateLibrary"/>), e.g. <c>Gate("cx", [], 0, 1)</c>.</summary>
    /// <exception cref="ArgumentException">Unknown gate, wrong parameter or qubit count, a repeated or out-of-range qubit, or a gate after a measurement of the same qubit.</exception>
    public Circuit Gate(string name, double[] parameters, params int[] qubits)
    {
        if (!GateLibrary.TryGet(name, out var def)) throw new ArgumentException($"unknown gate '{name}'");
        if (parameters.Length != def.ParameterCount)
            throw new ArgumentException($"gate '{name}' takes {def.ParameterCount} parameter(s), got {parameters.Length}");
        if (qubits.Length != def.QubitCount)
            throw new ArgumentException($"gate '{name}' acts on {def.QubitCount} qubit(s), got {qubits.Length}");
        CheckQubits(name, qubits);
        var matrix = def.IsIdentity ? null : def.Bind(parameters, qubits);
        _instructions.Add(new Instruction(InstructionKind.Gate, name, parameters, qubits, -1, matrix));
        GateCount++;
        return this;
    }

    /// <summary>Shorthand for a gate without parameters.</summary>
    public Circuit Gate(string name, params int[] qubits) => Gate(name, [], qubits);

    /// <summary>Appends an arbitrary (optionally controlled) unitary.</summary>
    /// <exception cref="ArgumentException">A qubit is out of range or already measured.</exception>
    public Circuit Unitary(MatrixGate gate)
    {
        ArgumentNullException.ThrowIfNull(gate);
        var qubits = gate.Controls.Concat(gate.Targets).ToArray();
        CheckQubits("unitary", qubits);
        _instructions.Add(new Instruction(InstructionKind.Gate, "unitary", [], qubits, -1, gate));
        GateCount++;
        return this;
    }

    /// <summary>Appends a terminal measurement of <paramref name="qubit"/> into <paramref name="clbit"/>.</summary>
    /// <exception cref="ArgumentException">Out of range, or the qubit was measured already.</exception>
    public Circuit Measure(int qubit, int clbit)
    {
        if ((uint)qubit >= (uint)Qubits) throw new ArgumentException($"qubit {qubit} is out of range (the circuit has {Qubits})");
        if ((uint)clbit >= (uint)Clbits) throw new ArgumentException($"classical bit {clbit} is out of range (the circuit has {Clbits})");
        if (!_measured.Add(qubit)) throw new ArgumentException($"qubit {qubit} is measured twice; only terminal measurements are supported");
        _instructions.Add(new Instruction(InstructionKind.Measure, "measure", [], [qubit], clbit, null));
        _measurements.Add((qubit, clbit));
        return this;
    }

    /// <summary>Appends a barrier (no effect on the state; kept for export).</summary>
    public Circuit Barrier(params int[] qubits)
    {
        foreach (int q in qubits)
            if ((uint)q >= (uint)Qubits) throw new ArgumentException($"qubit {q} is out of range (the circuit has {Qubits})");
        _instructions.Add(new Instruction(InstructionKind.Barrier, "barrier", [], qubits, -1, null));
        return this;
    }

    private void CheckQubits(string name, int[] qubits)
    {
        for (int i = 0; i < qubits.Length; i++)
        {
            if ((uint)qubits[i] >= (uint)Qubits)
                throw new ArgumentException($"gate '{name}': qubit {qubits[i]} is out of range (the circuit has {Qubits})");
            for (int j = 0; j < i; j++)
                if (qubits[j] == qubits[i]) throw new ArgumentException($"gate '{name}': qubit {qubits[i]} is used twice");
            if (_measured.Contains(qubits[i]))
                throw new ArgumentException($"gate '{name}' acts on {QubitName(qubits[i])} after it was measured; only terminal measurements are supported");
        }
    }

    /// <summary>The gates as matrices, in order (identities, barriers and measurements left out).</summary>
    public IEnumerable<MatrixGate> MatrixGates() =>
        _instructions.Where(i => i.Kind == InstructionKind.Gate && i.Matrix is not null).Select(i => i.Matrix!);

    /// <summary>Name of global qubit <paramref name="k"/>, e.g. <c>q[3]</c>.</summary>
    public string QubitName(int k)
    {
        var r = _qregs.Last(r => r.Offset <= k);
        return $"{r.Name}[{k - r.Offset}]";
    }

    /// <summary>Writes the circuit as OpenQASM 2.0 (user gate definitions appear expanded).</summary>
    /// <exception cref="NotSupportedException">The circuit holds a custom matrix, which QASM 2.0 cannot express.</exception>
    public string ToQasm()
    {
        var sb = new StringBuilder("OPENQASM 2.0;\ninclude \"qelib1.inc\";\n");
        foreach (var r in _qregs) sb.Append("qreg ").Append(r.Name).Append('[').Append(r.Size).Append("];\n");
        foreach (var r in _cregs) sb.Append("creg ").Append(r.Name).Append('[').Append(r.Size).Append("];\n");
        foreach (var ins in _instructions)
        {
            switch (ins.Kind)
            {
                case InstructionKind.Measure:
                    var c = _cregs.Last(r => r.Offset <= ins.Clbit);
                    sb.Append("measure ").Append(QubitName(ins.Qubits[0])).Append(" -> ").Append(c.Name).Append('[').Append(ins.Clbit - c.Offset).Append("];\n");
                    break;
                case InstructionKind.Barrier:
                    sb.Append("barrier ").AppendJoin(",", ins.Qubits.Select(QubitName)).Append(";\n");
                    break;
                default:
                    if (ins.Name == "unitary") throw new NotSupportedException("OpenQASM 2.0 cannot express a custom matrix gate");
                    sb.Append(ins.Name);
                    if (ins.Parameters.Length > 0)
                        sb.Append('(').AppendJoin(",", ins.Parameters.Select(p => p.ToString("R", CultureInfo.InvariantCulture))).Append(')');
                    sb.Append(' ').AppendJoin(",", ins.Qubits.Select(QubitName)).Append(";\n");
                    break;
            }
        }
        return sb.ToString();
    }
}
