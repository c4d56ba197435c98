using System.Globalization;
using System.Text.RegularExpressions;

namespace TaskMesh.QuantumSim;

/// <summary>A product of Pauli operators on chosen qubits, written like <c>"Z0 Z1"</c> or <c>"X3"</c>.</summary>
public sealed partial class PauliString
{
    private PauliString(string text, long x, long y, long z, int maxQubit)
    {
        Text = text;
        XMask = x;
        YMask = y;
        ZMask = z;
        MaxQubit = maxQubit;
    }

    /// <summary>The text it was parsed from, normalised (e.g. <c>"Z0 Z1"</c>).</summary>
    public string Text { get; }

    internal long XMask { get; }
    internal long YMask { get; }
    internal long ZMask { get; }

    /// <summary>True when the string has only Z (and I) factors: diagonal in the computational basis.</summary>
    public bool IsDiagonal => (XMask | YMask) == 0;

    /// <summary>The highest qubit named (-1 for the identity).</summary>
    public int MaxQubit { get; }

    [GeneratedRegex(@"^([IXYZ])(\d+)$", RegexOptions.CultureInvariant)]
    private static partial Regex Factor();

    /// <summary>Parses factors separated by spaces or <c>*</c>: a letter I, X, Y or Z followed by a qubit index.</summary>
    /// <exception cref="FormatException">A factor is malformed or a qubit appears twice.</exception>
    public static PauliString Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        long x = 0, y = 0, z = 0;
        int max = -1;
        var parts = new List<string>();
        foreach (var raw in text.Split([' ', '*', '\t'], StringSplitOptions.RemoveEmptyEntries))
        {
            var f = raw.ToUpperInvariant();
            if (f == "I") continue;
            var m = Factor().Match(f);
            if (!m.Success)
                throw new FormatException($"observable '{text}': '{raw}' is not a Pauli factor (write e.g. \"Z0 Z1\" or \"X3\")");
            if (!int.TryParse(m.Groups[2].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int q) || q >= 63)
                throw new FormatException($"observable '{text}': qubit index in '{raw}' is out of range");
            long bit = 1L << q;
            if (((x | y | z) & bit) != 0) throw new FormatException($"observable '{text}': qubit {q} appears twice");
            switch (m.Groups[1].Value)
            {
                case "X": x |= bit; break;
                case "Y": y |= bit; break;
                case "Z": z |= bit; break;
                default: continue;
            }
            max = Math.Max(max, q);
            parts.Add(m.Groups[1].Value + q.ToString(CultureInfo.InvariantCulture));
        }
        return new PauliString(parts.Count == 0 ? "I" : string.Join(' ', parts), x, y, z, max);
    }

    /// <inheritdoc />
    public override string ToString() => Text;
}
