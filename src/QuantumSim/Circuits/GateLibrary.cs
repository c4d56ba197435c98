using System.Diagnostics.CodeAnalysis;
using System.Numerics;

namespace TaskMesh.QuantumSim.Circuits;

/// <summary>
/// A named gate: how many parameters and qubits it takes and its matrix. Qubit arguments are
/// written controls first, then targets (<c>cx c,t</c>; <c>cswap c,a,b</c>).
/// </summary>
public sealed class GateDefinition
{
    private readonly Func<double[], Complex[]> _matrix;

    internal GateDefinition(string name, int parameters, int controls, int targets, Func<double[], Complex[]> matrix)
    {
        Name = name;
        ParameterCount = parameters;
        ControlCount = controls;
        TargetCount = targets;
        _matrix = matrix;
    }

    /// <summary>The QASM name.</summary>
    public string Name { get; }

    /// <summary>Number of angle parameters.</summary>
    public int ParameterCount { get; }

    /// <summary>Number of leading qubit arguments that are controls.</summary>
    public int ControlCount { get; }

    /// <summary>Number of qubits the matrix acts on.</summary>
    public int TargetCount { get; }

    /// <summary>Total qubit arguments.</summary>
    public int QubitCount => ControlCount + TargetCount;

    /// <summary>True for gates that do nothing (<c>id</c>, <c>u0</c>); the simulator skips them.</summary>
    public bool IsIdentity => Name is "id" or "u0";

    /// <summary>The target matrix (row-major; bit j of an index is the j-th target argument).</summary>
    public Complex[] Matrix(double[] parameters) => _matrix(parameters);

    /// <summary>The gate as applied to concrete qubits (controls first, then targets).</summary>
    public MatrixGate Bind(double[] parameters, ReadOnlySpan<int> qubits) =>
        new(qubits[ControlCount..].ToArray(), Matrix(parameters), qubits[..ControlCount].ToArray());
}

/// <summary>
/// The gates of Qiskit's qelib1.inc (plus the built-in <c>U</c> and <c>CX</c>). Where the 2017
/// qelib1.inc differs, Qiskit's meaning is used: <c>cu3</c> is exactly a controlled <c>u3</c>.
/// </summary>
public static class GateLibrary
{
    private static readonly Complex I = Complex.ImaginaryOne;
    private static readonly Dictionary<string, GateDefinition> s_gates = Build();

    /// <summary>Every known gate, by name.</summary>
    public static IReadOnlyDictionary<string, GateDefinition> All => s_gates;

    /// <summary>Looks a gate up by its QASM name (case-sensitive).</summary>
    public static bool TryGet(string name, [MaybeNullWhen(false)] out GateDefinition gate) => s_gates.TryGetValue(name, out gate);

    /// <summary>u3(θ, φ, λ) as Qiskit defines it.</summary>
    public static Complex[] U3(double theta, double phi, double lambda)
    {
        double c = Math.Cos(theta / 2), s = Math.Sin(theta / 2);
        return [c, -Complex.FromPolarCoordinates(s, lambda), Complex.FromPolarCoordinates(s, phi), Complex.FromPolarCoordinates(c, phi + lambda)];
    }

    private static Complex[] Phase(double lambda) => [1, 0, 0, Complex.FromPolarCoordinates(1, lambda)];

    private static Dictionary<string, GateDefinition> Build()
    {
        double h = 1 / Math.Sqrt(2);
        Complex[] x = [0, 1, 1, 0], y = [0, -I, I, 0], z = [1, 0, 0, -1], hm = [h, h, h, -h];
        Complex[] sx = [new(0.5, 0.5), new(0.5, -0.5), new(0.5, -0.5), new(0.5, 0.5)];
        Complex[] sxdg = [new(0.5, -0.5), new(0.5, 0.5), new(0.5, 0.5), new(0.5, -0.5)];
        Complex[] swap = [1, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1];
        Complex[] Rx(double t) { double c = Math.Cos(t / 2), s = Math.Sin(t / 2); return [c, -I * s, -I * s, c]; }
        Complex[] Ry(double t) { double c = Math.Cos(t / 2), s = Math.Sin(t / 2); return [c, -s, s, c]; }
        Complex[] Rz(double t) => [Complex.FromPolarCoordinates(1, -t / 2), 0, 0, Complex.FromPolarCoordinates(1, t / 2)];
        Complex[] Rxx(double t)
        {
            Complex c = Math.Cos(t / 2), s = -I * Math.Sin(t / 2);
            return [c, 0, 0, s, 0, c, s, 0, 0, s, c, 0, s, 0, 0, c];
        }
        Complex[] Rzz(double t)
        {
            Complex a = Complex.FromPolarCoordinates(1, -t / 2), b = Complex.FromPolarCoordinates(1, t / 2);
            return [a, 0, 0, 0, 0, b, 0, 0, 0, 0, b, 0, 0, 0, 0, a];
        }
        Complex[] Fixed(Complex[] m) => m;

        var list = new List<GateDefinition>
        {
            new("U", 3, 0, 1, p => U3(p[0], p[1], p[2])),
            new("u3", 3, 0, 1, p => U3(p[0], p[1], p[2])),
            new("u", 3, 0, 1, p => U3(p[0], p[1], p[2])),
            new("u2", 2, 0, 1, p => U3(Math.PI / 2, p[0], p[1])),
            new("u1", 1, 0, 1, p => Phase(p[0])),
            new("p", 1, 0, 1, p => Phase(p[0])),
            new("u0", 1, 0, 1, _ => [1, 0, 0, 1]),
            new("id", 0, 0, 1, _ => [1, 0, 0, 1]),
            new("x", 0, 0, 1, _ => Fixed(x)),
            new("y", 0, 0, 1, _ => Fixed(y)),
            new("z", 0, 0, 1, _ => Fixed(z)),
            new("h", 0, 0, 1, _ => Fixed(hm)),
            new("s", 0, 0, 1, _ => Phase(Math.PI / 2)),
            new("sdg", 0, 0, 1, _ => Phase(-Math.PI / 2)),
            new("t", 0, 0, 1, _ => Phase(Math.PI / 4)),
            new("tdg", 0, 0, 1, _ => Phase(-Math.PI / 4)),
            new("sx", 0, 0, 1, _ => Fixed(sx)),
            new("sxdg", 0, 0, 1, _ => Fixed(sxdg)),
            new("rx", 1, 0, 1, p => Rx(p[0])),
            new("ry", 1, 0, 1, p => Ry(p[0])),
            new("rz", 1, 0, 1, p => Rz(p[0])),
            new("CX", 0, 1, 1, _ => Fixed(x)),
            new("cx", 0, 1, 1, _ => Fixed(x)),
            new("cy", 0, 1, 1, _ => Fixed(y)),
            new("cz", 0, 1, 1, _ => Fixed(z)),
            new("ch", 0, 1, 1, _ => Fixed(hm)),
            new("csx", 0, 1, 1, _ => Fixed(sx)),
            new("cp", 1, 1, 1, p => Phase(p[0])),
            new("cu1", 1, 1, 1, p => Phase(p[0])),
            new("crx", 1, 1, 1, p => Rx(p[0])),
            new("cry", 1, 1, 1, p => Ry(p[0])),
            new("crz", 1, 1, 1, p => Rz(p[0])),
            new("cu3", 3, 1, 1, p => U3(p[0], p[1], p[2])),
            new("cu", 4, 1, 1, p => U3(p[0], p[1], p[2]).Select(e => e * Complex.FromPolarCoordinates(1, p[3])).ToArray()),
            new("swap", 0, 0, 2, _ => Fixed(swap)),
            new("rxx", 1, 0, 2, p => Rxx(p[0])),
            new("rzz", 1, 0, 2, p => Rzz(p[0])),
            new("ccx", 0, 2, 1, _ => Fixed(x)),
            new("cswap", 0, 1, 2, _ => Fixed(swap)),
            new("c3x", 0, 3, 1, _ => Fixed(x)),
            new("c4x", 0, 4, 1, _ => Fixed(x)),
        };
        return list.ToDictionary(g => g.Name, StringComparer.Ordinal);
    }
}
