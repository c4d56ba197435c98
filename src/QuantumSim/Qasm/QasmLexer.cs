using System.Globalization;

namespace TaskMesh.QuantumSim.Qasm;

internal enum TokenKind { Identifier, Number, String, Symbol, End }

internal readonly record struct Token(TokenKind Kind, string Text, double Value, int Line, int Column)
{
    public bool Is(string symbol) => Kind == TokenKind.Symbol && Text == symbol;
    public bool IsWord(string word) => Kind == TokenKind.Identifier && Text == word;
    public override string ToString() => Kind switch
    {
        TokenKind.End => "end of file",
        TokenKind.String => $"\"{Text}\"",
        _ => $"'{Text}'",
    };
}

/// <summary>
/// Splits OpenQASM 2.0 text into tokens with 1-based line and column, one token at a time as the
/// reader asks: a huge file is refused by the reader's limits long before it is all tokenized.
/// </summary>
internal sealed class QasmLexer(string text, string? file)
{
    private int _i;
    private int _line = 1;
    private int _lineStart;

    public Token Next()
    {
        while (_i < text.Length)
        {
            char c = text[_i];
            int col = _i - _lineStart + 1;
            if (c == '\n') { _i++; _line++; _lineStart = _i; continue; }
            if (char.IsWhiteSpace(c)) { _i++; continue; }
            if (c == '/' && _i + 1 < text.Length && text[_i + 1] == '/')
            {
                while (_i < text.Length && text[_i] != '\n') _i++;
                continue;
            }
            if (c == '/' && _i + 1 < text.Length && text[_i + 1] == '*')
            {
                int startLine = _line, startCol = col;
                _i += 2;
                while (_i < text.Length && !(text[_i] == '*' && _i + 1 < text.Length && text[_i + 1] == '/'))
                {
                    if (text[_i] == '\n') { _line++; _lineStart = _i + 1; }
                    _i++;
                }
                if (_i >= text.Length) throw new QasmException(file, startLine, startCol, "unterminated /* comment");
                _i += 2;
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int s = _i;
                while (_i < text.Length && (char.IsLetterOrDigit(text[_i]) || text[_i] == '_')) _i++;
                if (_i - s > MaxTokenLength) throw new QasmException(file, _line, col, $"an identifier longer than {MaxTokenLength} characters");
                return new Token(TokenKind.Identifier, text[s.._i], 0, _line, col);
            }
            if (char.IsDigit(c) || (c == '.' && _i + 1 < text.Length && char.IsDigit(text[_i + 1])))
            {
                int s = _i;
                while (_i < text.Length && (char.IsDigit(text[_i]) || text[_i] == '.')) _i++;
                if (_i < text.Length && (text[_i] == 'e' || text[_i] == 'E'))
                {
                    int save = _i;
                    _i++;
                    if (_i < text.Length && (text[_i] == '+' || text[_i] == '-')) _i++;
                    if (_i < text.Length && char.IsDigit(text[_i]))
                        while (_i < text.Length && char.IsDigit(text[_i])) _i++;
                    else _i = save;
                }
                if (_i - s > MaxTokenLength) throw new QasmException(file, _line, col, $"a number longer than {MaxTokenLength} characters");
                string num = text[s.._i];
                if (!double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                    throw new QasmException(file, _line, col, $"malformed number '{num}'");
                return new Token(TokenKind.Number, num, v, _line, col);
            }
            if (c == '"')
            {
                int s = ++_i;
                while (_i < text.Length && text[_i] != '"' && text[_i] != '\n' && _i - s <= MaxTokenLength) _i++;
                if (_i >= text.Length || text[_i] != '"') throw new QasmException(file, _line, col, "unterminated string");
                var token = new Token(TokenKind.String, text[s.._i], 0, _line, col);
                _i++;
                return token;
            }
            if (c == '-' && _i + 1 < text.Length && text[_i + 1] == '>') { _i += 2; return new Token(TokenKind.Symbol, "->", 0, _line, col); }
            if (c == '=' && _i + 1 < text.Length && text[_i + 1] == '=') { _i += 2; return new Token(TokenKind.Symbol, "==", 0, _line, col); }
            int sym = Symbols.IndexOf(c);
            if (sym >= 0) { _i++; return new Token(TokenKind.Symbol, SymbolText[sym], 0, _line, col); }
            throw new QasmException(file, _line, col, char.IsControl(c) ? $"unexpected character U+{(int)c:X4}" : $"unexpected character '{c}'");
        }
        return new Token(TokenKind.End, "", 0, _line, _i - _lineStart + 1);
    }

    /// <summary>Longest identifier, number or string.</summary>
    public const int MaxTokenLength = 1024;

    private const string Symbols = ";,()[]{}+-*/^";
    private static readonly string[] SymbolText = Symbols.Select(c => c.ToString()).ToArray();
}
