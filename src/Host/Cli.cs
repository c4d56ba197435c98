using System.CommandLine;
using TaskMesh.Engine.Configuration;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.IO;
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

/// <summary>Thrown for a malformed command line or a value a command refuses; the message says what is wrong.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The <c>taskmesh</c> command line on System.CommandLine: one <see cref="Command"/> per verb
/// (each file in <c>Commands/</c> builds its own), typed options, per-command <c>--help</c>, and
/// completion through the <c>[suggest]</c> directive (<c>taskmesh completion bash</c>). Usage
/// errors exit 2 with a message naming the option; bad input (a graph, a config, a circuit, an
/// output path) exits 2 before anything runs.
/// </summary>
public static class Cli
{
    /// <summary>Builds the command tree; <paramref name="io"/> carries the output writers and the cancellation token.</summary>
    internal static RootCommand Build(CliIO io)
    {
        var root = new RootCommand("TaskMesh: a DAG execution engine with local and quantum layers.");
        root.Subcommands.Add(RunCommand.Create(io));
        root.Subcommands.Add(ValidateCommand.Create(io));
        root.Subcommands.Add(GraphCommand.Create(io));
        root.Subcommands.Add(QsimCommand.Create(io));
        root.Subcommands.Add(GenCommand.Create(io));
        root.Subcommands.Add(ImportCommand.Create(io));
        root.Subcommands.Add(RunsCommand.Create(io));
        root.Subcommands.Add(AuditCommand.Create(io));
        root.Subcommands.Add(RunCommand.CreateResume(io));
        root.Subcommands.Add(OpenCommand.Create(io));
        root.Subcommands.Add(ServeCommand.Create(io));
        root.Subcommands.Add(DashboardCommand.Create(io));
        root.Subcommands.Add(WorkerCommand.Create(io));
        root.Subcommands.Add(RemoteCommands.CreateWorkers(io));
        root.Subcommands.Add(TokenCommand.Create(io));
        root.Subcommands.Add(RemoteCommands.CreateSubmit(io));
        root.Subcommands.Add(RemoteCommands.CreateStatus(io));
        root.Subcommands.Add(RemoteCommands.CreateCancel(io));
        root.Subcommands.Add(RunCommand.CreateEscalate(io));
        root.Subcommands.Add(MetricsCommand.Create(io));
        root.Subcommands.Add(LayersCommand.Create(io));
        root.Subcommands.Add(CacheCommand.Create(io));
        root.Subcommands.Add(RulesCommand.Create(io));
        root.Subcommands.Add(TrainCommand.CreateTrain(io));
        root.Subcommands.Add(TrainCommand.CreateModels(io));
        root.Subcommands.Add(PredictCommand.Create(io));
        root.Subcommands.Add(CompletionCommand.Create(io));
        return root;
    }

    /// <summary>How long a command gets to stop after its token is cancelled (a signal) before the process exits on its own, unless the command says otherwise (<see cref="StopGrace"/>).</summary>
    public static readonly TimeSpan DefaultStopGrace = TimeSpan.FromSeconds(10);

    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct) => RunAsync(args, stdout, stderr, ct, null);

    /// <summary>
    /// Runs the command line; <paramref name="stopGrace"/>, when given, holds how long the command
    /// asks to be given to stop once <paramref name="ct"/> is cancelled: <see cref="DefaultStopGrace"/>,
    /// or longer for a command that drains (<c>serve</c>: its runs' drain, <c>worker</c>: the attempts it holds).
    /// </summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken ct, StopGrace? stopGrace)
    {
        // Nothing a graph or a task says reaches the terminal as control characters (see TerminalSafeWriter).
        stdout = new TerminalSafeWriter(stdout);
        stderr = new TerminalSafeWriter(stderr);
        var io = new CliIO(stdout, stderr, ct) { StopGrace = stopGrace ?? new StopGrace() };
        var root = Build(io);
        var logFormat = CliOptions.OneOf("--log-format", "Logs on standard error: text lines, or one JSON object per line (error messages too).", "text", "json");
        var logLevel = CliOptions.OneOf("--log-level", "The least severe log entries written (default: warning, or the config's observability.logs.level).",
            TaskMesh.Engine.Configuration.TaskMeshConfig.LogLevels);
        logFormat.Recursive = true;
        logLevel.Recursive = true;
        root.Options.Add(logFormat);
        root.Options.Add(logLevel);
        var parse = root.Parse(args);
        // A value the options refuse is a parse error reported below, not a value to read.
        bool logOptionsBad = parse.Errors.Any(e => e.SymbolResult is System.CommandLine.Parsing.OptionResult o && (o.Option == logFormat || o.Option == logLevel));
        io.LogFormat = logOptionsBad ? null : parse.GetValue(logFormat);
        io.LogLevel = logOptionsBad ? null : parse.GetValue(logLevel);
        if (io.LogFormat == "json") io.Error = stderr = new JsonLinesWriter(stderr, "taskmesh");
        var invocation = new System.CommandLine.InvocationConfiguration
        {
            Output = stdout,
            Error = stderr,
            EnableDefaultExceptionHandler = false,
            // Signals are the host's (Program.cs): it cancels the token the commands observe.
            ProcessTerminationTimeout = null,
        };
        // Errors and no --help: report them our way (exit 2, the option named) instead of the default help dump.
        if (parse.Action is System.CommandLine.Invocation.ParseErrorAction)
        {
            foreach (var e in parse.Errors) stderr.WriteLine($"taskmesh: {e.Message}");
            // The whole path of the command (taskmesh rules add), not its last word.
            var names = new List<string>();
            for (var r = parse.CommandResult; r is not null && r.Command is not RootCommand; r = r.Parent as System.CommandLine.Parsing.CommandResult)
                names.Insert(0, r.Command.Name);
            stderr.WriteLine($"run 'taskmesh {string.Concat(names.Select(n => n + " "))}--help' for usage");
            return ExitCodes.BadInput;
        }
        try
        {
            return await parse.InvokeAsync(invocation, ct);
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
        catch (TaskMesh.Engine.Store.StoreException ex)
        {
            stderr.WriteLine($"taskmesh: {ex.Message}");
            return ExitCodes.BadInput;
        }
        catch (UnsafeFileException ex)
        {
            stderr.WriteLine($"taskmesh: {ex.Message}");
            return ExitCodes.BadInput;
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            stderr.WriteLine("taskmesh: cancelled");
            return ExitCodes.Cancelled;
        }
        finally
        {
            stderr.Flush();   // a JSON-lines writer's last, unfinished line
        }
    }
}

/// <summary>What every command writes to and the token that cancels it.</summary>
internal sealed class CliIO(TextWriter output, TextWriter error, CancellationToken token)
{
    public TextWriter Out { get; } = output;

    /// <summary>Standard error; under <c>--log-format json</c>, a writer that makes each line a JSON object.</summary>
    public TextWriter Error { get; set; } = error;

    public CancellationToken Token { get; } = token;

    /// <summary><c>--log-format</c>, when given (else the config's <c>observability.logs.format</c>).</summary>
    public string? LogFormat { get; set; }

    /// <summary><c>--log-level</c>, when given (else the config's <c>observability.logs.level</c>).</summary>
    public string? LogLevel { get; set; }

    /// <summary>How long the command asks to be given to stop after a signal (a command that drains lengthens it).</summary>
    public StopGrace StopGrace { get; init; } = new();
}

/// <summary>How long a command asks to be given to stop once it is told to (its token cancelled by a signal) before the process exits on its own.</summary>
public sealed class StopGrace
{
    private long _ticks = Cli.DefaultStopGrace.Ticks;

    /// <summary>The time asked for (<see cref="Cli.DefaultStopGrace"/> until a command asks for more).</summary>
    public TimeSpan Value
    {
        get => TimeSpan.FromTicks(Interlocked.Read(ref _ticks));
        set => Interlocked.Exchange(ref _ticks, Math.Max(0, value.Ticks));
    }
}

/// <summary>Options and checks several commands share.</summary>
internal static class CliOptions
{
    public static Option<string?> Config() => new("--config")
    {
        Description = "Configuration file (TOML); every key has a default.",
        HelpName = "taskmesh.toml",
    };

    /// <summary>An integer option checked against a range; the message names the option.</summary>
    public static Option<int?> Int(string name, int min, int max, string description, string? helpName = null)
    {
        return new Option<int?>(name)
        {
            Description = description,
            HelpName = helpName ?? "N",
            CustomParser = r =>
            {
                var text = r.Tokens.Count > 0 ? r.Tokens[^1].Value : "";
                if (long.TryParse(text, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out long v) && v >= min && v <= max)
                    return (int)v;
                r.AddError($"option {name} must be an integer between {min} and {max}, got '{text}'");
                return null;
            },
        };
    }

    /// <summary>A string option that takes one of <paramref name="values"/>.</summary>
    public static Option<string?> OneOf(string name, string description, params string[] values)
    {
        var o = new Option<string?>(name) { Description = description, HelpName = string.Join('|', values) };
        o.AcceptOnlyFromAmong(values);
        return o;
    }

    /// <summary>Refuses an output path that cannot receive the output (before anything runs).</summary>
    /// <exception cref="UsageException">A directory, a special file, an input, or a folder that cannot be created.</exception>
    public static void CheckOutput(string option, string? path, params string?[] inputs)
    {
        if (path is null) return;
        if (SafeFile.CheckOutput(path, inputs) is string problem)
            throw new UsageException($"{option}: {problem}");
        // Whatever the command reads, an output never replaces a run store (its history would be gone).
        if (TaskMesh.Engine.Store.RunStore.IsStoreFile(path))
            throw new UsageException($"{option}: '{GraphLimits.Printable(path)}' is a TaskMesh run store; it is never written over (choose another file)");
    }
}
