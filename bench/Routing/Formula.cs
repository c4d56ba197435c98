using System.Globalization;

namespace TaskMesh.Bench.Routing;

/// <summary>
/// An arithmetic formula over a task's features, as a world file writes it: numbers, variables,
/// <c>+ - * / ^</c>, parentheses and the functions <c>sigmoid exp log log10 sqrt min max abs</c>.
/// Parsed once into a tree; evaluated per task.
/// </summary>
internal sealed class Formula
{
    private readonly Func<IReadOnlyDictionary<string, double>, double> _eval;

    public string Text { get; }

    private Formula(string text, Func<IReadOnlyDictionary<string, double>, double> eval)
    {
        Text = text;
        _eval = eval;
    }

    public double Evaluate(IReadOnlyDictionary<string, double> variables) => _eval(variables);

    /// <exception cref="FormatException">The text is not a formula (the message says where).</exception>
    public static Formula Parse(string text)
    {
        var p = new Parser(text);
        var e = p.Expression();
        p.SkipSpace();
        if (!p.AtEnd) throw new FormatException($"unexpected '{text[p.Pos..]}' at {p.Pos + 1} in '{text}'");
        return new Formula(text, e);
    }

    private sealed class Parser(string text)
    {
        public int Pos;
        public bool AtEnd => Pos >= text.Length;

        public void SkipSpace() { while (Pos < text.Length && char.IsWhiteSpace(text[Pos])) Pos++; }

        private bool Take(char c)
        {
            SkipSpace();
            if (Pos < text.Length && text[Pos] == c) { Pos++; return true; }
            return false;
        }

        public Func<IReadOnlyDictionary<string, double>, double> Expression()
        {
            var left = Term();
            while (true)
            {
                if (Take('+')) { var a = left; var b = Term(); left = v => a(v) + b(v); }
                else if (Take('-')) { var a = left; var b = Term(); left = v => a(v) - b(v); }
                else return left;
            }
        }

        private Func<IReadOnlyDictionary<string, double>, double> Term()
        {
            var left = Power();
            while (true)
            {
                if (Take('*')) { var a = left; var b = Power(); left = v => a(v) * b(v); }
                else if (Take('/')) { var a = left; var b = Power(); left = v => a(v) / b(v); }
                else return left;
            }
        }

        private Func<IReadOnlyDictionary<string, double>, double> Power()
        {
            var b = Unary();
            if (!Take('^')) return b;
            var e = Power();   // right-associative
            return v => Math.Pow(b(v), e(v));
        }

        private Func<IReadOnlyDictionary<string, double>, double> Unary()
        {
            if (Take('-')) { var x = Unary(); return v => -x(v); }
            return Primary();
        }

        private Func<IReadOnlyDictionary<string, double>, double> Primary()
        {
            SkipSpace();
            if (Take('('))
            {
                var inner = Expression();
                if (!Take(')')) throw new FormatException($"missing ')' at {Pos + 1} in '{text}'");
                return inner;
            }
            int start = Pos;
            if (Pos < text.Length && (char.IsDigit(text[Pos]) || text[Pos] == '.'))
            {
                while (Pos < text.Length && (char.IsDigit(text[Pos]) || text[Pos] is '.' or 'e' or 'E' || (text[Pos] is '+' or '-' && text[Pos - 1] is 'e' or 'E'))) Pos++;
                double c = double.Parse(text[start..Pos], CultureInfo.InvariantCulture);
                return _ => c;
            }
            while (Pos < text.Length && (char.IsLetterOrDigit(text[Pos]) || text[Pos] == '_')) Pos++;
            if (start == Pos) throw new FormatException($"expected a number, a name or '(' at {Pos + 1} in '{text}'");
            string name = text[start..Pos];
            if (!Take('('))
                return v => v.TryGetValue(name, out var x) ? x : throw new KeyNotFoundException($"'{name}' is not a feature of the world's tasks");
            var args = new List<Func<IReadOnlyDictionary<string, double>, double>> { Expression() };
            while (Take(',')) args.Add(Expression());
            if (!Take(')')) throw new FormatException($"missing ')' after the arguments of {name} in '{text}'");
            var a0 = args[0];
            return (name, args.Count) switch
            {
                ("sigmoid", 1) => v => 1 / (1 + Math.Exp(-a0(v))),
                ("exp", 1) => v => Math.Exp(a0(v)),
                ("log", 1) => v => Math.Log(a0(v)),
                ("log10", 1) => v => Math.Log10(a0(v)),
                ("sqrt", 1) => v => Math.Sqrt(a0(v)),
                ("abs", 1) => v => Math.Abs(a0(v)),
                ("min", 2) => v => Math.Min(a0(v), args[1](v)),
                ("max", 2) => v => Math.Max(a0(v), args[1](v)),
                _ => throw new FormatException($"unknown function {name}/{args.Count} in '{text}' (sigmoid, exp, log, log10, sqrt, abs, min, max)"),
            };
        }
    }
}
