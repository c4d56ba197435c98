using TaskMesh.QuantumSim;
using TaskMesh.QuantumSim.Qasm;
using Xunit;

namespace TaskMesh.Tests.QuantumSim;

public sealed class QasmParserTests
{
    private const string Header = "OPENQASM 2.0;\ninclude \"qelib1.inc\";\n";

    [Theory]
    [InlineData("qreg q[2];\nfoo q[0];", 4, 1, "unknown gate 'foo'")]
    [InlineData("qreg q[2];\nh q[0]", 4, 7, "expected ';' but found end of file")]
    [InlineData("qreg q[2];\nh q[2];", 4, 5, "index 2 is out of range for register 'q' of size 2")]
    [InlineData("qreg q[2];\ncreg c[2];\nmeasure q[0] -> c[0];\nh q[0];", 6, 1, "after it was measured")]
    [InlineData("qreg q[2];\nreset q[0];", 4, 1, "'reset' is not supported")]
    [InlineData("qreg q[2];\ncreg c[2];\nif (c==1) x q[0];", 5, 1, "'if' (classical control) is not supported")]
    [InlineData("opaque g a;", 3, 1, "opaque gates are not supported")]
    [InlineData("qreg q[2];\ncx q[0], q[0];", 4, 10, "twice")]
    [InlineData("qreg q[2];\nqreg r[3];\ncx q, r;", 5, 7, "has 3 qubits but another argument has 2")]
    [InlineData("qreg q[2];\nrx(theta) q[0];", 4, 4, "unknown identifier 'theta'")]
    [InlineData("qreg q[2];\nrx(1, 2) q[0];", 4, 1, "takes 1 parameter(s), got 2")]
    [InlineData("qreg q[2];\ngate g(a) x { rx(b) x; }", 4, 18, "unknown parameter 'b'")]
    [InlineData("qreg q[2];\nh r[0];", 4, 3, "unknown quantum register 'r'")]
    [InlineData("qreg q[2];\nqreg q[3];", 4, 6, "already declared")]
    [InlineData("qreg q[2];\nh q[0]; $", 4, 9, "unexpected character '$'")]
    [InlineData("qreg q[2];\nrx(1/0) q[0];", 4, 1, "not a finite number")]
    public void Errors_NameLineAndColumn(string body, int line, int column, string fragment)
    {
        var e = Assert.Throws<QasmException>(() => QasmParser.Parse(Header + body, "bad.qasm"));
        Assert.Equal(line, e.Line);
        Assert.Equal(column, e.Column);
        Assert.Contains(fragment, e.Message);
        Assert.StartsWith($"bad.qasm:{line}:{column}: ", e.Message);
    }

    [Fact]
    public void OnlyQelib1_CanBeIncluded()
    {
        var e = Assert.Throws<QasmException>(() => QasmParser.Parse("OPENQASM 2.0;\ninclude \"other.inc\";"));
        Assert.Equal((2, 9), (e.Line, e.Column));
    }

    [Fact]
    public void Version3_IsRefused()
    {
        Assert.Contains("only 2.0", Assert.Throws<QasmException>(() => QasmParser.Parse("OPENQASM 3.0;")).Message);
    }

    [Fact]
    public void Expressions_FollowPrecedence()
    {
        var c = QasmParser.Parse(Header + "qreg q[1];\nrz(-pi/2 + 2^3*0.5 - sqrt(4) + ln(exp(1)) + cos(0)*sin(pi/2) + tan(0) - 2^-1) q[0];");
        double expected = -Math.PI / 2 + 4 - 2 + 1 + 1 + 0 - 0.5;
        Assert.Equal(expected, c.Instructions.Single().Parameters.Single(), 14);
    }

    [Fact]
    public void Broadcasting_ExpandsRegisters()
    {
        var c = QasmParser.Parse(Header + "qreg a[3];\nqreg b[3];\ncreg c[3];\nh a;\ncx a, b;\ncx a[0], b;\nmeasure b -> c;");
        Assert.Equal(3 + 3 + 3, c.GateCount);
        Assert.Equal([0, 3], c.Instructions[3].Qubits);
        Assert.Equal([0, 5], c.Instructions[8].Qubits);
        Assert.Equal(3, c.Measurements.Count);
    }

    [Fact]
    public void UserGates_NestAndTakeParameters()
    {
        var c = QasmParser.Parse(Header + """
            qreg q[2];
            gate inner(a) x { rz(a*2) x; }
            gate outer(a, b) x, y
            {
              inner(a + b) x;
              cx x, y;
              barrier x, y;
            }
            outer(0.25, 0.5) q[1], q[0];
            """);
        Assert.Equal(2, c.GateCount);
        Assert.Equal(1.5, c.Instructions[0].Parameters[0], 14);
        Assert.Equal([1], c.Instructions[0].Qubits);
        Assert.Equal([1, 0], c.Instructions[1].Qubits);
    }

    [Fact]
    public void Comments_AreSkipped_AndPositionsStayRight()
    {
        var e = Assert.Throws<QasmException>(() => QasmParser.Parse("// title\n/* a\n b */ OPENQASM 2.0;\nqreg q[1];\n  bogus q;"));
        Assert.Equal((5, 3), (e.Line, e.Column));
    }

    [Fact]
    public void TooManyQubits_IsRefusedAtTheDeclaration()
    {
        var e = Assert.Throws<QasmException>(() => QasmParser.Parse(Header + "qreg q[41];"));
        Assert.Contains("at most 40", e.Message);
    }
}
