using System.Text;

namespace TaskMesh.Engine.IO;

/// <summary>
/// User data (graph names, task ids, errors, outputs) as a terminal may show it: control characters
/// — escape sequences that clear the screen or recolour it, carriage returns that overwrite a line,
/// newlines that forge one — and bidirectional controls written as <c>\u001b</c>, <c>\r</c>,
/// <c>\n</c>, so that what a graph or a task says is always printed, never obeyed.
/// </summary>
public static class TerminalText
{
    /// <summary><paramref name="s"/> with every control and bidirectional-control character escaped (nothing cut).</summary>
    public static string Safe(string? s)
    {
        if (s is null) return "";
        int i = 0;
        while (i < s.Length && !NeedsEscape(s[i])) i++;
        if (i == s.Length) return s;
        var sb = new StringBuilder(s.Length + 16).Append(s, 0, i);
        for (; i < s.Length; i++) Append(sb, s[i], escapeLineBreaks: true);
        return sb.ToString();
    }

    /// <summary>Whether <paramref name="c"/> must not reach a terminal as it is.</summary>
    public static bool NeedsEscape(char c) => char.IsControl(c) || Graph.GraphLimits.IsBidiControl(c);

    internal static void Append(StringBuilder sb, char c, bool escapeLineBreaks)
    {
        switch (c)
        {
            case '\n' when !escapeLineBreaks: sb.Append('\n'); break;
            case '\t' when !escapeLineBreaks: sb.Append('\t'); break;
            case '\n': sb.Append("\\n"); break;
            case '\r': sb.Append("\\r"); break;
            case '\t': sb.Append("\\t"); break;
            default:
                if (NeedsEscape(c)) sb.Append("\\u").Append(((int)c).ToString("x4", System.Globalization.CultureInfo.InvariantCulture));
                else sb.Append(c);
                break;
        }
    }
}

/// <summary>
/// A writer in front of a terminal stream: lines and tabs pass, every other control character
/// (ESC, CR, BEL, C1 controls) and bidirectional control is written escaped. The commands' own text
/// has none, so what it stops is user data that was not escaped where it was printed.
/// </summary>
public sealed class TerminalSafeWriter(TextWriter inner) : TextWriter
{
    /// <summary>The writer behind this one.</summary>
    public TextWriter Inner { get; } = inner;

    public override Encoding Encoding => Inner.Encoding;

    public override IFormatProvider FormatProvider => Inner.FormatProvider;

    public override void Write(char value)
    {
        if (!TerminalText.NeedsEscape(value) || value is '\n' or '\t') Inner.Write(value);
        else Inner.Write(TerminalText.Safe(value.ToString()));
    }

    public override void Write(string? value)
    {
        if (value is null) return;
        int i = 0;
        while (i < value.Length && (!TerminalText.NeedsEscape(value[i]) || value[i] is '\n' or '\t')) i++;
        if (i == value.Length) { Inner.Write(value); return; }
        var sb = new StringBuilder(value.Length + 16).Append(value, 0, i);
        // Every CR is escaped, "\r\n" too: this platform's line end is "\n", so a CR is user data.
        for (; i < value.Length; i++) TerminalText.Append(sb, value[i], escapeLineBreaks: false);
        Inner.Write(sb.ToString());
    }

    public override void Write(char[] buffer, int index, int count) => Write(new string(buffer, index, count));

    public override void WriteLine(string? value)
    {
        Write(value);
        Inner.WriteLine();
    }

    public override void WriteLine() => Inner.WriteLine();

    public override void Flush() => Inner.Flush();

    protected override void Dispose(bool disposing)
    {
        if (disposing) Inner.Flush();
        base.Dispose(disposing);
    }
}
