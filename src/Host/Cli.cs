using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Host.Commands;

namespace TaskMesh.Host;

/// <summary>Exit codes of every command.</summary>
public static class ExitCodes
{
    public const int Ok = 0;
    public const int TasksFailed = 1;
    public const int BadInput = 2;
    public const int Cancelled = 130;
}

/// <summary>Thrown for a malformed command line; the message says what is wrong.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>The <c>taskmesh</c> command: dispatches the verb.</summary>
public static class Cli
{
    public const string Usage = """
        usage: taskmesh <command> [options]

        commands:
          run GRAPH.json [--json SUMMARY.json] [--max-parallel N] [--config taskmesh.toml]
                         [--nodes] [--progress auto|bar|lines|none]
                                     run a graph; exit 0 all succeeded, 1 some task failed,
                                     2 bad input, 130 cancelled (Ctrl+C)
          validate GRAPH.json [--config taskmesh.toml]
                                     check a graph and report every problem (exit 2 if any)
          graph GRAPH.json [--dot [FILE]] [--critical-path]
                                     Graphviz DOT with the critical path marked, or the path itself
          qsim CIRCUIT.qasm [--shots N] [--seed S] [--precision single|double] [--fusion K]
                            [--noise SPEC] [--observable "Z0 Z1"]... [--top N] [--json OUT.json]
                            [--marginal 0,3] [--kernel simd|scalar] [--memory-cap-mb MB]
                            [--export-qasm OUT.qasm]
                                     simulate an OpenQASM 2.0 circuit; table of the most
                                     probable outcomes, JSON with probabilities and counts
          gen qaoa [--vertices 12] [--degree 3] [--graph-seed 7] [--grid 16x16] [--rounds 1]
                   [--shots 2000] [--precision single|double] [--report out/qaoa-report.json]
                   [--out GRAPH.json]
                                     write a QAOA MaxCut parameter-sweep graph
        """;

    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help" or "help")
        {
            (args.Length == 0 ? stderr : stdout).WriteLine(Usage);
            return args.Length == 0 ? ExitCodes.BadInput : ExitCodes.Ok;
        }
        try
        {
            var rest = args[1..];
            return args[0] switch
            {
                "run" => await RunCommand.ExecuteAsync(new ArgList(rest), stdout, stderr, ct),
                "validate" => ValidateCommand.Execute(new ArgList(rest), stdout, stderr),
                "graph" => GraphCommand.Execute(new ArgList(rest), stdout, stderr),
                "qsim" => QsimCommand.Execute(new ArgList(rest), stdout, stderr, ct),
                "gen" => GenCommand.Execute(new ArgList(rest), stdout, stderr),
                _ => throw new UsageException($"unknown command '{args[0]}'"),
            };
        }
        catch (UsageException ex)
        {
            stderr.WriteLine($"taskmesh: {ex.Message}");
            stderr.WriteLine("run 'taskmesh --help' for usage");
            return ExitCodes.BadInput;
        }
        catch (GraphValidationException ex)
        {
            stderr.WriteLine(ex.Message);
            return ExitCodes.BadInput;
        }
        catch (ConfigException ex)
        {
            stderr.WriteLine($"taskmesh: bad config:\n{ex.Message}");
            return ExitCodes.BadInput;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            stderr.WriteLine("taskmesh: cancelled");
            return ExitCodes.Cancelled;
        }
    }
}

/// <summary>A tiny option parser: positionals, <c>--flag</c>, <c>--key value</c>; unknown options are errors.</summary>
public sealed class ArgList
{
    private readonly List<string> _args;
    private readonly HashSet<int> _used = new();

    public ArgList(IEnumerable<string> args) => _args = args.ToList();

    public bool Flag(string name)
    {
        int i = _args.IndexOf(name);
        if (i < 0) return false;
        _used.Add(i);
        return true;
    }

    public string? Value(string name)
    {
        int i = _args.IndexOf(name);
        if (i < 0) return null;
        if (i + 1 >= _args.Count || _args[i + 1].StartsWith("--", StringComparison.Ordinal))
            throw new UsageException($"option {name} needs a value");
        _used.Add(i);
        _used.Add(i + 1);
        return _args[i + 1];
    }

    /// <summary>A flag that may take a value (<c>--dot</c> or <c>--dot FILE</c>).</summary>
    /// <summary>Every value of an option that may repeat (<c>--observable A --observable B</c>).</summary>
    public List<string> Values(string name)
    {
        var list = new List<string>();
        for (int i = 0; i < _args.Count; i++)
        {
            if (_args[i] != name) continue;
            if (i + 1 >= _args.Count || _args[i + 1].StartsWith("--", StringComparison.Ordinal))
                throw new UsageException($"option {name} needs a value");
            _used.Add(i);
            _used.Add(i + 1);
            list.Add(_args[++i]);
        }
        return list;
    }

    public (bool present, string? value) OptionalValue(string name)
    {
        int i = _args.IndexOf(name);
        if (i < 0) return (false, null);
        _used.Add(i);
        if (i + 1 < _args.Count && !_args[i + 1].StartsWith("--", StringComparison.Ordinal) && i + 1 > FirstPositionalIndex())
        {
            _used.Add(i + 1);
            return (true, _args[i + 1]);
        }
        return (true, null);
    }

    public int? Int(string name, int min, int max)
    {
        var v = Value(name);
        if (v is null) return null;
        if (!int.TryParse(v, out int x) || x < min || x > max)
            throw new UsageException($"option {name} must be an integer between {min} and {max}, got '{v}'");
        return x;
    }

    private int FirstPositionalIndex()
    {
        for (int i = 0; i < _args.Count; i++)
            if (!_args[i].StartsWith("--", StringComparison.Ordinal)) return i;
        return -1;
    }

    /// <summary>The single positional argument; call after every option has been read.</summary>
    public string Positional(string what)
    {
        var left = Enumerable.Range(0, _args.Count).Where(i => !_used.Contains(i)).Select(i => _args[i]).ToList();
        var unknown = left.FirstOrDefault(a => a.StartsWith("--", StringComparison.Ordinal));
        if (unknown is not null) throw new UsageException($"unknown option '{unknown}'");
        if (left.Count == 0) throw new UsageException($"missing {what}");
        if (left.Count > 1) throw new UsageException($"unexpected argument '{left[1]}'");
        return left[0];
    }
}
