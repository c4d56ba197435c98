using TaskMesh.QuantumSim.Circuits;
using TaskMesh.QuantumSim.Simulation;

namespace TaskMesh.QuantumSim.Qasm;

/// <summary>
/// Reads OpenQASM 2.0: registers, <c>include "qelib1.inc"</c>, user <c>gate</c> definitions with
/// parameter expressions, register broadcasting, <c>barrier</c> and terminal <c>measure</c>.
/// Classical control (<c>if</c>), <c>reset</c>, <c>opaque</c> and gates after a measurement are
/// refused. Every error names the line and column.
/// </summary>
public static class QasmParser
{
    /// <summary>Most qubits a file may declare (memory admission decides what actually runs).</summary>
    public const int MaxDeclaredQubits = StateVector.MaxQubits;

    /// <summary>Deepest nesting of user gate calls (guards against recursion).</summary>
    public const int MaxGateNesting = 64;

    /// <summary>Most primitive gates one file may expand to.</summary>
    public const int MaxExpandedGates = 1_000_000;

    /// <summary>
    /// Most gate calls one file may expand through, user-gate calls included: bounds the work of
    /// expansion even for gates whose bodies end in nothing (a gate calling the previous one twice,
    /// sixty levels deep, is refused at its call, before anything is expanded).
    /// </summary>
    public const long MaxExpansionCalls = 4_000_000;

    /// <summary>Deepest nesting of a parameter expression (parentheses, signs, powers).</summary>
    public const int MaxExpressionDepth = 64;

    /// <summary>Most operators and operands in one parameter expression.</summary>
    public const int MaxExpressionTerms = 1_000;

    /// <summary>Largest source read by <see cref="ParseFile"/>: 64 MiB.</summary>
    public const long MaxSourceBytes = 64L << 20;

    /// <summary>Parses QASM text.</summary>
    /// <param name="text">The source.</param>
    /// <param name="file">File name for messages (null for inline text).</param>
    /// <param name="ct">Cancels parsing (checked between statements and during expansion).</param>
    /// <exception cref="QasmException">The source is not valid or uses an unsupported feature.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="ct"/> fired.</exception>
    public static Circuit Parse(string text, string? file = null, CancellationToken ct = default)
    {
        ArgumentNullException.ThrowIfNull(text);
        return new Reader(new QasmLexer(text, file), file, ct).Read();
    }

    /// <summary>Reads and parses a file of at most <see cref="MaxSourceBytes"/>.</summary>
    /// <exception cref="QasmException">The source is not valid or too large.</exception>
    /// <exception cref="IOException">The file cannot be read.</exception>
    public static Circuit ParseFile(string path, CancellationToken ct = default)
    {
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        if (stream.Length > MaxSourceBytes) throw new QasmException(path, 1, 1, $"the file is larger than {MaxSourceBytes >> 20} MiB");
        using var reader = new StreamReader(stream);
        var buffer = new char[64 * 1024];
        var text = new System.Text.StringBuilder();
        int n;
        while ((n = reader.Read(buffer, 0, buffer.Length)) > 0)
        {
            ct.ThrowIfCancellationRequested();
            text.Append(buffer, 0, n);
            if (text.Length > MaxSourceBytes) throw new QasmException(path, 1, 1, $"the file is larger than {MaxSourceBytes >> 20} MiB");
        }
        return Parse(text.ToString(), path, ct);
    }

    /// <param name="Calls">Gate calls one call of this gate expands through (saturating): 1 for itself plus its body's.</param>
    private sealed record UserGate(string Name, string[] Params, string[] Args, List<BodyCall> Body, int Line, long Calls);

    private sealed record BodyCall(string Name, Expr[] Params, string[] Args, Token At);

    private sealed class Reader(QasmLexer lexer, string? file, CancellationToken ct)
    {
        private readonly Circuit _circuit = new();
        private readonly Dictionary<string, UserGate> _userGates = new(StringComparer.Ordinal);
        private Token? _peek;
        private long _expansionCalls;
        private long _definedCalls;
        private int _exprDepth;
        private int _exprTerms;

        private Token Peek => _peek ??= lexer.Next();

        private Token Next()
        {
            var t = Peek;
            _peek = null;
            return t;
        }

        private QasmException Error(Token at, string reason) => new(file, at.Line, at.Column, reason);

        private Token Expect(string symbol)
        {
            var t = Next();
            if (!t.Is(symbol)) throw Error(t, $"expected '{symbol}' but found {t}");
            return t;
        }

        private Token ExpectIdentifier(string what)
        {
            var t = Next();
            if (t.Kind != TokenKind.Identifier) throw Error(t, $"expected {what} but found {t}");
            return t;
        }

        private int ExpectInteger(string what)
        {
            var t = Next();
            if (t.Kind != TokenKind.Number || t.Value != Math.Floor(t.Value) || t.Text.Contains('.') || t.Text.Contains('e') || t.Text.Contains('E'))
                throw Error(t, $"expected {what} (a non-negative integer) but found {t}");
            if (t.Value > int.MaxValue) throw Error(t, $"{what} {t.Text} is too large");
            return (int)t.Value;
        }

        public Circuit Read()
        {
            if (Peek.IsWord("OPENQASM"))
            {
                var at = Next();
                var v = Next();
                if (v.Kind != TokenKind.Number) throw Error(v, $"expected a version number after OPENQASM but found {v}");
                if (!v.Text.StartsWith("2", StringComparison.Ordinal)) throw Error(v, $"OpenQASM {v.Text} is not supported (only 2.0)");
                Expect(";");
            }
            else
            {
                _circuit.Warnings.Add($"{file ?? "<qasm>"}:{Peek.Line}:{Peek.Column}: no 'OPENQASM 2.0;' header; read as OpenQASM 2.0");
            }
            int statements = 0;
            while (Peek.Kind != TokenKind.End)
            {
                if ((++statements & 255) == 0) ct.ThrowIfCancellationRequested();
                Statement();
            }
            return _circuit;
        }

        private void Statement()
        {
            var t = Peek;
            if (t.Kind != TokenKind.Identifier) throw Error(t, $"expected a statement but found {t}");
            switch (t.Text)
            {
                case "include":
                    Next();
                    var f = Next();
                    if (f.Kind != TokenKind.String) throw Error(f, $"expected a file name in quotes but found {f}");
                    if (f.Text != "qelib1.inc") throw Error(f, $"cannot include \"{f.Text}\": only \"qelib1.inc\" is available");
                    Expect(";");
                    return;
                case "qreg":
                case "creg":
                    Register(Next());
                    return;
                case "gate":
                    GateDefinition(Next());
                    return;
                case "opaque":
                    throw Error(t, "opaque gates are not supported: the simulator needs a definition for every gate");
                case "reset":
                    throw Error(t, "'reset' is not supported: only terminal measurements are simulated");
                case "if":
                    throw Error(t, "'if' (classical control) is not supported: only terminal measurements are simulated");
                case "measure":
                    Measure(Next());
                    return;
                case "barrier":
                    Next();
                    var qs = new List<int>();
                    foreach (var a in ArgumentList()) qs.AddRange(a.Qubits);
                    Expect(";");
                    _circuit.Barrier(qs.ToArray());
                    return;
                case "OPENQASM":
                    throw Error(t, "OPENQASM must be the first statement");
                default:
                    GateCall();
                    return;
            }
        }

        private void Register(Token kw)
        {
            var name = ExpectIdentifier("a register name");
            Expect("[");
            var sizeTok = Peek;
            int size = ExpectInteger("a register size");
            Expect("]");
            Expect(";");
            if (size < 1) throw Error(sizeTok, $"register '{name.Text}' must have at least one bit");
            if (_circuit.QuantumRegisters.Any(r => r.Name == name.Text) || _circuit.ClassicalRegisters.Any(r => r.Name == name.Text))
                throw Error(name, $"register '{name.Text}' is already declared");
            if (kw.Text == "qreg")
            {
                if ((long)_circuit.Qubits + size > MaxDeclaredQubits)
                    throw Error(sizeTok, $"the circuit would have {(long)_circuit.Qubits + size} qubits; at most {MaxDeclaredQubits} are supported");
                _circuit.AddQuantumRegister(name.Text, size);
            }
            else
            {
                if ((long)_circuit.Clbits + size > 4096) throw Error(sizeTok, "more than 4096 classical bits");
                _circuit.AddClassicalRegister(name.Text, size);
            }
        }

        private void GateDefinition(Token kw)
        {
            var name = ExpectIdentifier("a gate name");
            var ps = new List<string>();
            if (Peek.Is("("))
            {
                Next();
                if (!Peek.Is(")"))
                {
                    do ps.Add(ExpectIdentifier("a parameter name").Text);
                    while (Peek.Is(",") && Next().Is(","));
                }
                Expect(")");
            }
            var args = new List<string>();
            do args.Add(ExpectIdentifier("a qubit argument name").Text);
            while (Peek.Is(",") && Next().Is(","));
            if (args.Distinct().Count() != args.Count) throw Error(name, $"gate '{name.Text}' repeats an argument name");
            Expect("{");
            var body = new List<BodyCall>();
            while (!Peek.Is("}"))
            {
                var t = Peek;
                if (t.Kind == TokenKind.End) throw Error(t, $"gate '{name.Text}' is not closed with '}}'");
                var gname = ExpectIdentifier("a gate call");
                if (gname.Text == "barrier")
                {
                    while (!Peek.Is(";") && Peek.Kind != TokenKind.End) Next();
                    Expect(";");
                    continue;
                }
                if (gname.Text is "measure" or "reset" or "if" or "opaque")
                    throw Error(gname, $"'{gname.Text}' is not allowed inside a gate definition");
                var exprs = new List<Expr>();
                if (Peek.Is("("))
                {
                    Next();
                    if (!Peek.Is(")"))
                    {
                        do exprs.Add(Expression(ps));
                        while (Peek.Is(",") && Next().Is(","));
                    }
                    Expect(")");
                }
                var callArgs = new List<string>();
                do
                {
                    var a = ExpectIdentifier("a qubit argument");
                    if (!args.Contains(a.Text)) throw Error(a, $"'{a.Text}' is not an argument of gate '{name.Text}'");
                    if (Peek.Is("[")) throw Error(Peek, "qubit arguments inside a gate definition cannot be indexed");
                    callArgs.Add(a.Text);
                }
                while (Peek.Is(",") && Next().Is(","));
                Expect(";");
                CheckCallable(gname, exprs.Count, callArgs.Count);
                if (callArgs.Distinct().Count() != callArgs.Count) throw Error(gname, $"gate '{gname.Text}' is given the same qubit twice");
                body.Add(new BodyCall(gname.Text, exprs.ToArray(), callArgs.ToArray(), gname));
            }
            Expect("}");
            if (_userGates.ContainsKey(name.Text)) throw Error(name, $"gate '{name.Text}' is already defined");
            if (GateLibrary.TryGet(name.Text, out _))
                _circuit.Warnings.Add($"{file ?? "<qasm>"}:{name.Line}:{name.Column}: gate '{name.Text}' redefines the qelib1.inc gate; the file's definition is used");
            _definedCalls += body.Count;
            if (_definedCalls > MaxExpandedGates)
                throw Error(name, $"gate definitions hold more than {MaxExpandedGates:N0} calls in all");
            long calls = 1;
            foreach (var call in body)
                calls = SaturatingAdd(calls, _userGates.TryGetValue(call.Name, out var callee) ? callee.Calls : 1);
            _userGates[name.Text] = new UserGate(name.Text, ps.ToArray(), args.ToArray(), body, name.Line, calls);
        }

        private void CheckCallable(Token name, int paramCount, int argCount)
        {
            int wantParams, wantArgs;
            if (_userGates.TryGetValue(name.Text, out var u)) { wantParams = u.Params.Length; wantArgs = u.Args.Length; }
            else if (GateLibrary.TryGet(name.Text, out var g)) { wantParams = g.ParameterCount; wantArgs = g.QubitCount; }
            else throw Error(name, $"unknown gate '{name.Text}'");
            if (paramCount != wantParams) throw Error(name, $"gate '{name.Text}' takes {wantParams} parameter(s), got {paramCount}");
            if (argCount != wantArgs) throw Error(name, $"gate '{name.Text}' acts on {wantArgs} qubit(s), got {argCount}");
        }

        private readonly record struct Argument(Token At, int[] Qubits, bool Whole);

        private List<Argument> ArgumentList(bool classical = false)
        {
            var list = new List<Argument>();
            do list.Add(ArgumentRef(classical));
            while (Peek.Is(",") && Next().Is(","));
            return list;
        }

        private Argument ArgumentRef(bool classical)
        {
            var name = ExpectIdentifier(classical ? "a classical register" : "a qubit register");
            var regs = classical ? _circuit.ClassicalRegisters : _circuit.QuantumRegisters;
            var reg = regs.FirstOrDefault(r => r.Name == name.Text)
                ?? throw Error(name, $"unknown {(classical ? "classical" : "quantum")} register '{name.Text}'");
            if (!Peek.Is("[")) return new Argument(name, Enumerable.Range(reg.Offset, reg.Size).ToArray(), true);
            Next();
            var idxTok = Peek;
            int idx = ExpectInteger("an index");
            Expect("]");
            if (idx >= reg.Size) throw Error(idxTok, $"index {idx} is out of range for register '{reg.Name}' of size {reg.Size}");
            return new Argument(name, [reg.Offset + idx], false);
        }

        private void Measure(Token kw)
        {
            var q = ArgumentRef(false);
            Expect("->");
            var c = ArgumentRef(true);
            Expect(";");
            if (q.Qubits.Length != c.Qubits.Length)
                throw Error(kw, $"measure maps {q.Qubits.Length} qubit(s) to {c.Qubits.Length} classical bit(s)");
            for (int i = 0; i < q.Qubits.Length; i++)
            {
                try { _circuit.Measure(q.Qubits[i], c.Qubits[i]); }
                catch (ArgumentException e) { throw Error(kw, e.Message); }
            }
        }

        private void GateCall()
        {
            var name = Next();
            var ps = new List<double>();
            if (Peek.Is("("))
            {
                Next();
                if (!Peek.Is(")"))
                {
                    do ps.Add(Expression([]).Evaluate([]));
                    while (Peek.Is(",") && Next().Is(","));
                }
                Expect(")");
            }
            var args = ArgumentList();
            Expect(";");
            CheckCallable(name, ps.Count, args.Count);
            // Broadcasting: whole registers must agree in size; single qubits repeat.
            int width = 1;
            foreach (var a in args.Where(a => a.Whole))
            {
                if (width != 1 && a.Qubits.Length != width && a.Qubits.Length != 1)
                    throw Error(a.At, $"register '{a.At.Text}' has {a.Qubits.Length} qubits but another argument has {width}");
                width = Math.Max(width, a.Qubits.Length);
            }
            // The whole expansion is bounded before any of it is done.
            long cost = _userGates.TryGetValue(name.Text, out var user) ? user.Calls : 1;
            _expansionCalls = SaturatingAdd(_expansionCalls, cost > long.MaxValue / width ? long.MaxValue : cost * width);
            if (_expansionCalls > MaxExpansionCalls)
                throw Error(name, $"gate '{name.Text}' expands to {(cost == long.MaxValue ? "more than 9.2e18" : cost.ToString("N0"))} gate call(s){(width > 1 ? $" per qubit, {width} times" : "")}; a circuit may expand through at most {MaxExpansionCalls:N0}");
            var qubits = new int[args.Count];
            for (int i = 0; i < width; i++)
            {
                for (int j = 0; j < args.Count; j++) qubits[j] = args[j].Qubits.Length == 1 ? args[j].Qubits[0] : args[j].Qubits[i];
                for (int j = 0; j < qubits.Length; j++)
                    for (int k = 0; k < j; k++)
                        if (qubits[j] == qubits[k]) throw Error(args[j].At, $"gate '{name.Text}' is given qubit {_circuit.QubitName(qubits[j])} twice");
                Emit(name, name.Text, ps.ToArray(), (int[])qubits.Clone(), 0);
            }
        }

        private static long SaturatingAdd(long a, long b) => a > long.MaxValue - b ? long.MaxValue : a + b;

        private void Emit(Token at, string gate, double[] ps, int[] qubits, int depth)
        {
            if (_userGates.TryGetValue(gate, out var u))
            {
                ct.ThrowIfCancellationRequested();
                if (depth >= MaxGateNesting) throw Error(at, $"gate '{gate}' nests deeper than {MaxGateNesting} levels");
                foreach (var call in u.Body)
                {
                    var values = call.Params.Select(e => e.Evaluate(ps)).ToArray();
                    var q = call.Args.Select(a => qubits[Array.IndexOf(u.Args, a)]).ToArray();
                    Emit(at, call.Name, values, q, depth + 1);
                }
                return;
            }
            foreach (double v in ps)
                if (!double.IsFinite(v)) throw Error(at, $"gate '{gate}' gets a parameter that is not a finite number ({v})");
            if (_circuit.GateCount >= MaxExpandedGates) throw Error(at, $"the circuit expands to more than {MaxExpandedGates} gates");
            try { _circuit.Gate(gate, ps, qubits); }
            catch (ArgumentException e) { throw Error(at, e.Message); }
        }

        // Expressions: precedence climbing. '^' binds tightest and is right-associative; unary minus
        // sits between '^' and '*' as in most QASM readers (-x^2 = -(x^2)).
        private Expr Expression(IReadOnlyList<string> ps)
        {
            // One bound on the recursion of the parse (and of Evaluate, which follows the tree):
            // nesting depth per expression, and terms per top-level expression.
            if (_exprDepth == 0) _exprTerms = 0;
            return Additive(ps);
        }

        private void Enter(Token at)
        {
            if (++_exprDepth > MaxExpressionDepth)
                throw Error(at, $"the expression nests deeper than {MaxExpressionDepth} levels (parentheses, signs and powers)");
        }

        private void Term(Token at)
        {
            if (++_exprTerms > MaxExpressionTerms)
                throw Error(at, $"the expression has more than {MaxExpressionTerms} terms");
        }

        private Expr Additive(IReadOnlyList<string> ps)
        {
            var left = Multiplicative(ps);
            while (Peek.Is("+") || Peek.Is("-"))
            {
                var t = Next();
                Term(t);
                left = new Expr.Binary(t.Text[0], left, Multiplicative(ps));
            }
            return left;
        }

        private Expr Multiplicative(IReadOnlyList<string> ps)
        {
            var left = Unary(ps);
            while (Peek.Is("*") || Peek.Is("/"))
            {
                var t = Next();
                Term(t);
                left = new Expr.Binary(t.Text[0], left, Unary(ps));
            }
            return left;
        }

        private Expr Unary(IReadOnlyList<string> ps)
        {
            var at = Peek;
            Enter(at);
            try
            {
                if (at.Is("-")) { Next(); Term(at); return new Expr.Negate(Unary(ps)); }
                if (at.Is("+")) { Next(); Term(at); return Unary(ps); }
                return Power(ps);
            }
            finally { _exprDepth--; }
        }

        private Expr Power(IReadOnlyList<string> ps)
        {
            var b = Primary(ps);
            if (Peek.Is("^"))
            {
                var t = Next();
                Term(t);
                return new Expr.Binary('^', b, Unary(ps));
            }
            return b;
        }

        private Expr Primary(IReadOnlyList<string> ps)
        {
            var t = Next();
            Term(t);
            if (t.Kind == TokenKind.Number) return new Expr.Constant(t.Value);
            if (t.Is("("))
            {
                var e = Expression(ps);
                Expect(")");
                return e;
            }
            if (t.Kind == TokenKind.Identifier)
            {
                if (t.Text == "pi") return new Expr.Constant(Math.PI);
                if (Expr.Function.IsKnown(t.Text))
                {
                    Expect("(");
                    var arg = Expression(ps);
                    Expect(")");
                    return new Expr.Function(t.Text, arg);
                }
                for (int i = 0; i < ps.Count; i++)
                    if (ps[i] == t.Text) return new Expr.Parameter(i);
                throw Error(t, ps.Count == 0 ? $"unknown identifier '{t.Text}' in an expression (only pi and numbers are allowed here)" : $"unknown parameter '{t.Text}'");
            }
            throw Error(t, $"expected an expression but found {t}");
        }
    }
}

/// <summary>A parameter expression inside a gate definition.</summary>
internal abstract record Expr
{
    public abstract double Evaluate(double[] parameters);

    public sealed record Constant(double Value) : Expr
    {
        public override double Evaluate(double[] p) => Value;
    }

    public sealed record Parameter(int Index) : Expr
    {
        public override double Evaluate(double[] p) => p[Index];
    }

    public sealed record Negate(Expr Operand) : Expr
    {
        public override double Evaluate(double[] p) => -Operand.Evaluate(p);
    }

    public sealed record Binary(char Op, Expr Left, Expr Right) : Expr
    {
        public override double Evaluate(double[] p)
        {
            double a = Left.Evaluate(p), b = Right.Evaluate(p);
            return Op switch { '+' => a + b, '-' => a - b, '*' => a * b, '/' => a / b, _ => Math.Pow(a, b) };
        }
    }

    public sealed record Function(string Name, Expr Operand) : Expr
    {
        public static bool IsKnown(string name) => name is "sin" or "cos" or "tan" or "exp" or "ln" or "sqrt";

        public override double Evaluate(double[] p)
        {
            double x = Operand.Evaluate(p);
            return Name switch
            {
                "sin" => Math.Sin(x),
                "cos" => Math.Cos(x),
                "tan" => Math.Tan(x),
                "exp" => Math.Exp(x),
                "ln" => Math.Log(x),
                _ => Math.Sqrt(x),
            };
        }
    }
}
