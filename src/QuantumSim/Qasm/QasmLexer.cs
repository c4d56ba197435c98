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

/// <summary>Splits OpenQASM 2.0 text into tokens with 1-based line and column.</summary>
internal static class QasmLexer
{
    public static List<Token> Tokenize(string text, string? file)
    {
        var tokens = new List<Token>();
        int i = 0, line = 1, lineStart = 0;
        while (i < text.Length)
        {
            char c = text[i];
            int col = i - lineStart + 1;
            if (c == '\n') { i++; line++; lineStart = i; continue; }
            if (char.IsWhiteSpace(c)) { i++; continue; }
            if (c == '/' && i + 1 < text.Length && text[i + 1] == '/')
            {
                while (i < text.Length && text[i] != '\n') i++;
                continue;
            }
            if (c == '/' && i + 1 < text.Length && text[i + 1] == '*')
            {
                int startLine = line, startCol = col;
                i += 2;
                while (i < text.Length && !(text[i] == '*' && i + 1 < text.Length && text[i + 1] == '/'))
                {
                    if (text[i] == '\n') { line++; lineStart = i + 1; }
                    i++;
                }
                if (i >= text.Length) throw new QasmException(file, startLine, startCol, "unterminated /* comment");
                i += 2;
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int s = i;
                while (i < text.Length && (char.IsLetterOrDigit(text[i]) || text[i] == '_')) i++;
                tokens.Add(new Token(TokenKind.Identifier, text[s..i], 0, line, col));
                continue;
            }
            if (char.IsDigit(c) || (c == '.' && i + 1 < text.Length && char.IsDigit(text[i + 1])))
            {
                int s = i;
                while (i < text.Length && (char.IsDigit(text[i]) || text[i] == '.')) i++;
                if (i < text.Length && (text[i] == 'e' || text[i] == 'E'))
                {
                    int save = i;
                    i++;
                    if (i < text.Length && (text[i] == '+' || text[i] == '-')) i++;
                    if (i < text.Length && char.IsDigit(text[i]))
                        while (i < text.Length && char.IsDigit(text[i])) i++;
                    else i = save;
                }
                string num = text[s..i];
                if (!double.TryParse(num, NumberStyles.Float, CultureInfo.InvariantCulture, out double v))
                    throw new QasmException(file, line, col, $"malformed number '{num}'");
                tokens.Add(new Token(TokenKind.Number, num, v, line, col));
                continue;
            }
            if (c == '"')
            {
                int s = ++i;
                while (i < text.Length && text[i] != '"' && text[i] != '\n') i++;
                if (i >= text.Length || text[i] != '"') throw new QasmException(file, line, col, "unterminated string");
                tokens.Add(new Token(TokenKind.String, text[s..i], 0, line, col));
                i++;
                continue;
            }
            if (c == '-' && i + 1 < text.Length && text[i + 1] == '>') { tokens.Add(new Token(TokenKind.Symbol, "->", 0, line, col)); i += 2; continue; }
            if (c == '=' && i + 1 < text.Length && text[i + 1] == '=') { tokens.Add(new Token(TokenKind.Symbol, "==", 0, line, col)); i += 2; continue; }
            if (";,()[]{}+-*/^".Contains(c)) { tokens.Add(new Token(TokenKind.Symbol, c.ToString(), 0, line, col)); i++; continue; }
            throw new QasmException(file, line, col, $"unexpected character '{c}'");
        }
        tokens.Add(new Token(TokenKind.End, "", 0, line, i - lineStart + 1));
        return tokens;
    }
}
