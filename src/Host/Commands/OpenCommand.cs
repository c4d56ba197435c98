using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using TaskMesh.Engine;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Store;
using TaskMesh.Hosting;

namespace TaskMesh.Host.Commands;

/// <summary>
/// <c>taskmesh open [TASKS|-] [--store FILE] [--no-store] [--resume RUN] [--name NAME] [--config F]</c>:
/// an open run fed from a stream of tasks — one JSON object per line, each the object a task is in
/// a graph file, whose <c>dependsOn</c> names tasks of earlier lines — run as they arrive. Each
/// task's end is printed as a JSON line on standard output
/// (<c>{"id","outcome","layer","attempts","output_summary","error"}</c>); a line the run refuses is
/// reported on standard error with its line number, and the stream goes on. At the end of the
/// input the run completes. Recorded in the store as an <c>open</c> run; <c>--resume RUN</c>
/// takes over an interrupted one, and the tasks it completed, sent again with the same id and
/// options, are answered from the store without running.
/// </summary>
internal static class OpenCommand
{
    /// <summary>The longest task line read (a longer one is refused, and skipped).</summary>
    public const int MaxLineChars = 1 << 20;

    public static Command Create(CliIO io)
    {
        var input = new Argument<string>("TASKS") { Description = "A file of tasks, one JSON object per line, or '-' for standard input.", DefaultValueFactory = _ => "-" };
        var config = CliOptions.Config();
        var store = StoreInput.StoreOption();
        var noStore = StoreInput.NoStoreOption();
        var resume = new Option<string?>("--resume") { Description = "Take over an interrupted open run of the store (its completed tasks, sent again, are answered from it).", HelpName = "RUN" };
        var name = new Option<string>("--name") { Description = "The run's name (default: open).", DefaultValueFactory = _ => "open" };
        var command = new Command("open", "Run tasks as they arrive, one JSON object per line, each after the earlier tasks it names; print each task's end as a JSON line.")
        {
            input, config, store, noStore, resume, name,
        };
        command.SetAction((parse, ct) => RunAsync(io, parse.GetValue(input)!, parse.GetValue(config), parse.GetValue(store), parse.GetValue(noStore),
            parse.GetValue(resume), parse.GetValue(name)!));
        return command;
    }

    private static async Task<int> RunAsync(CliIO io, string input, string? configPath, string? storeOption, bool noStore, string? resume, string name)
    {
        var cfg = GraphInput.LoadConfig(configPath, io.Token);
        bool storeOn = !noStore && (cfg.StoreEnabled || storeOption is not null);
        if (resume is not null && !storeOn) throw new UsageException("--resume needs the run store (it is disabled; pass --store FILE)");
        if (input != "-" && !File.Exists(input)) throw new UsageException($"no task file '{input}'");
        using var logs = Logs.Create(io.LogFormat ?? cfg.LogFormat, io.LogLevel ?? cfg.LogLevel);
        var services = new ServiceCollection();
        services.AddSingleton(logs);
        var taskmesh = services.AddTaskMesh(cfg);
        if (storeOn) taskmesh.AddRunStore(StoreInput.PathOf(storeOption, cfg));
        using var provider = services.BuildServiceProvider(new ServiceProviderOptions { ValidateOnBuild = true });
        var runtime = RunCommand.Resolve(provider);
        OpenRun run;
        try
        {
            run = runtime.Open(name, resume: resume);
        }
        catch (Exception ex) when (ex is ArgumentException or InvalidOperationException)
        {
            throw new UsageException(ex.Message);
        }

        var results = new ResultWriter(io.Out);
        int refused = 0;
        await using (run.ConfigureAwait(false))
        {
            using var reader = input == "-" ? new StreamReader(Console.OpenStandardInput(), Encoding.UTF8) : new StreamReader(input, Encoding.UTF8);
            using var stop = io.Token.Register(run.Cancel);
            string where = input == "-" ? "stdin" : input;
            int line = 0;
            var lines = new BoundedLineReader(reader, MaxLineChars);
            while (!io.Token.IsCancellationRequested)
            {
                var (text, tooLong) = await lines.ReadAsync(io.Token).ConfigureAwait(false);
                if (text is null) break;
                line++;
                if (tooLong)
                {
                    refused++;
                    io.Error.WriteLine($"{where}:{line}: the line is longer than {MaxLineChars:N0} characters: skipped");
                    continue;
                }
                if (string.IsNullOrWhiteSpace(text)) continue;
                try
                {
                    var task = await run.SubmitAsync(TaskRequestJson.Parse(text), io.Token).ConfigureAwait(false);
                    results.Watch(task);
                }
                catch (TaskRefusedException ex)
                {
                    refused++;
                    foreach (var e in ex.Errors)
                        io.Error.WriteLine($"{where}:{line}: {(e.TaskId is null ? "" : $"task '{GraphLimits.Printable(e.TaskId)}': ")}{e.Message}");
                }
                catch (OperationCanceledException) when (io.Token.IsCancellationRequested)
                {
                    break;
                }
            }
            run.Complete();
            var summary = await run.Completion.ConfigureAwait(false);
            await results.DrainAsync().ConfigureAwait(false);
            io.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"open run {summary.RunId}: {summary.Status.ToString().ToLowerInvariant()}, {summary.Submitted} submitted, {summary.Succeeded} succeeded, {summary.Failed} failed, {summary.Skipped} skipped, {summary.Cancelled} cancelled{(refused > 0 ? $", {refused} line(s) refused" : "")}"));
            if (io.Token.IsCancellationRequested) return ExitCodes.Cancelled;
            return refused > 0 ? ExitCodes.BadInput : summary.Status == RunStatus.Succeeded ? ExitCodes.Ok : ExitCodes.TasksFailed;
        }
    }

    /// <summary>
    /// Lines of at most a given length, read through a buffer: a longer line is read to its end
    /// without being kept, and reported as too long — the input never makes the command hold more.
    /// </summary>
    private sealed class BoundedLineReader(TextReader reader, int maxChars)
    {
        private readonly char[] _buffer = new char[8192];
        private int _at, _filled;
        private readonly StringBuilder _line = new();

        /// <summary>The next line (without its end), whether it was too long (then empty), or null at the end of the input.</summary>
        public async Task<(string? Line, bool TooLong)> ReadAsync(CancellationToken ct)
        {
            _line.Clear();
            bool tooLong = false, any = false;
            while (true)
            {
                if (_at == _filled)
                {
                    _filled = await reader.ReadAsync(_buffer.AsMemory(), ct).ConfigureAwait(false);
                    _at = 0;
                    if (_filled == 0) return any ? (tooLong ? "" : _line.ToString(), tooLong) : (null, false);
                }
                any = true;
                int end = Array.IndexOf(_buffer, '\n', _at, _filled - _at);
                int stop = end < 0 ? _filled : end;
                if (!tooLong)
                {
                    if (_line.Length + (stop - _at) > maxChars)
                    {
                        tooLong = true;
                        _line.Clear();
                    }
                    else _line.Append(_buffer, _at, stop - _at);
                }
                _at = end < 0 ? _filled : end + 1;
                if (end >= 0) return (tooLong ? "" : _line.ToString().TrimEnd('\r'), tooLong);
            }
        }
    }

    /// <summary>Prints each task's end as one JSON line, as it happens (one writer at a time).</summary>
    private sealed class ResultWriter(TextWriter output)
    {
        private int _pending;
        private readonly TaskCompletionSource _drained = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private volatile bool _closing;

        public void Watch(SubmittedTask task)
        {
            Interlocked.Increment(ref _pending);
            task.Completion.ContinueWith(static (t, s) =>
            {
                var self = (ResultWriter)s!;
                self.Write(t.Result);
                if (Interlocked.Decrement(ref self._pending) == 0 && self._closing) self._drained.TrySetResult();
            }, this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        private void Write(TaskResult r)
        {
            var buffer = new System.Buffers.ArrayBufferWriter<byte>(256);
            using (var w = new Utf8JsonWriter(buffer))
            {
                w.WriteStartObject();
                w.WriteString("id", r.Id);
                w.WriteString("outcome", r.OutcomeName);
                if (r.Layer is not null) w.WriteString("layer", r.Layer);
                w.WriteNumber("attempts", r.Attempts);
                if (r.OutputSummary is string summary) w.WriteString("output_summary", summary);
                if (r.Error is not null) w.WriteString("error", r.Error);
                w.WriteNumber("duration_ms", Math.Round(r.Duration.TotalMilliseconds, 3));
                w.WriteEndObject();
            }
            string line = Encoding.UTF8.GetString(buffer.WrittenSpan);
            lock (this)
            {
                output.WriteLine(line);
                output.Flush();
            }
        }

        public Task DrainAsync()
        {
            _closing = true;
            if (Volatile.Read(ref _pending) == 0) _drained.TrySetResult();
            return _drained.Task;
        }
    }
}
