using System.Buffers;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MathNet.Numerics.LinearAlgebra.Double;

namespace TaskMesh.Engine.Handlers;

/// <summary>The built-in handlers (docs/graph-format.md, "Built-in handlers"), enough for examples, tests and benchmarks.</summary>
internal static class BuiltInHandlers
{
    internal sealed record SpinArgs(long Micros) : IMeasuredArgs { public TaskMeasures Measures => new(Micros: Micros); }
    internal sealed record SleepArgs(long Millis) : IMeasuredArgs { public TaskMeasures Measures => new(Millis: Millis); }
    internal sealed record HashArgs(long Bytes) : IMeasuredArgs { public TaskMeasures Measures => new(Bytes: Bytes); }
    internal sealed record MatmulArgs(int Size) : IMeasuredArgs { public TaskMeasures Measures => new(Size: Size); }
    internal sealed record FailArgs(string Message, long Attempts);
    internal sealed record ShellArgs(string Command, string[] Arguments, long OutputCapBytes);

    public const long MaxHashBytes = 1L << 30;
    public const int MaxMatmulSize = 2048;
    public const int MaxShellOutputBytes = 1 << 20;

    public static void RegisterAll(HandlerRegistry r, bool shellEnabled)
    {
        r.Register(new HandlerDescriptor("noop", static _ => null) { Cacheable = true });
        AggregationHandlers.Register(r);

        r.Register(new HandlerDescriptor("spin", SpinAsync)
        {
            Cacheable = true,
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var micros = rd.Integer("micros", 0, 600_000_000, null);
                rd.RejectUnknown();
                return (new SpinArgs(micros), rd.Problems);
            },
            EstimateMicros = static p => ((SpinArgs)p!).Micros,
        });

        r.Register(new HandlerDescriptor("sleep", SleepAsync)
        {
            Cacheable = true,
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var millis = rd.Integer("millis", 0, 86_400_000, null);
                rd.RejectUnknown();
                return (new SleepArgs(millis), rd.Problems);
            },
            EstimateMicros = static p => ((SleepArgs)p!).Millis * 1000.0,
        });

        r.Register(new HandlerDescriptor("hash", HashAsync)
        {
            Cacheable = true,
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var bytes = rd.Integer("bytes", 0, MaxHashBytes, null);
                rd.RejectUnknown();
                return (new HashArgs(bytes), rd.Problems);
            },
            // SHA-256 runs at about 1-2 GB/s here: a byte per nanosecond is a fair guess.
            EstimateMicros = static p => ((HashArgs)p!).Bytes / 1000.0,
        });

        r.Register(new HandlerDescriptor("matmul", MatmulAsync)
        {
            Cacheable = true,
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var size = rd.Integer("size", 1, MaxMatmulSize, null);
                rd.RejectUnknown();
                return (new MatmulArgs((int)size), rd.Problems);
            },
            // 2 n^3 flops at about 2 GFLOP/s on one core.
            EstimateMicros = static p => { double n = ((MatmulArgs)p!).Size; return 2 * n * n * n / 2000.0; },
        });

        r.Register(new HandlerDescriptor("fail", FailAsync)
        {
            Validate = static a =>
            {
                var rd = new ArgsReader(a);
                var msg = rd.String("message", required: false) ?? "failed on purpose";
                var attempts = rd.Integer("attempts", 1, 1000, long.MaxValue);
                rd.RejectUnknown();
                return (new FailArgs(msg, attempts), rd.Problems);
            },
            EstimateMicros = static _ => 1,
        });

        r.Register(new HandlerDescriptor("shell", ShellAsync)
        {
            LocalOnly = true,
            Validate = a =>
            {
                var rd = new ArgsReader(a);
                var cmd = rd.String("command", required: true);
                var args = rd.StringArray("args") ?? [];
                rd.RejectUnknown();
                if (!shellEnabled)
                    rd.Problems.Add("the shell handler is disabled; set [handlers] shell_enabled = true in the config to allow it");
                return (new ShellArgs(cmd ?? "", args, MaxShellOutputBytes), rd.Problems);
            },
        });
    }

    private static ValueTask<object?> SpinAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var micros = ctx.ParsedArgs<SpinArgs>()?.Micros ?? 0;
        long until = Stopwatch.GetTimestamp() + micros * Stopwatch.Frequency / 1_000_000;
        int n = 0;
        while (Stopwatch.GetTimestamp() < until)
        {
            if ((++n & 255) == 0) ct.ThrowIfCancellationRequested();
            Thread.SpinWait(8);
        }
        return new ValueTask<object?>(micros);
    }

    private static async ValueTask<object?> SleepAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var millis = ctx.ParsedArgs<SleepArgs>()?.Millis ?? 0;
        // Task.Delay ends up to a kernel tick late (4 ms on a 250 Hz kernel): a sleep of 5 ms took 8.
        await Scheduling.PreciseTimer.Delay(TimeSpan.FromMilliseconds(millis), ct).ConfigureAwait(false);
        return millis;
    }

    private static ValueTask<object?> HashAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        long bytes = ctx.ParsedArgs<HashArgs>()?.Bytes ?? 0;
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = ArrayPool<byte>.Shared.Rent(64 * 1024);
        try
        {
            // Deterministic bytes (a counter pattern), so the same task always yields the same digest.
            ulong state = 0x9E3779B97F4A7C15UL ^ (ulong)bytes;
            for (long done = 0; done < bytes;)
            {
                ct.ThrowIfCancellationRequested();
                int chunk = (int)Math.Min(buffer.Length, bytes - done);
                var span = buffer.AsSpan(0, chunk);
                int i = 0;
                for (; i + 8 <= chunk; i += 8)
                {
                    state = state * 6364136223846793005UL + 1442695040888963407UL;
                    BitConverter.TryWriteBytes(span[i..], state);
                }
                // The last few bytes from the pattern too (the pooled buffer holds whatever its last user left).
                if (i < chunk)
                {
                    state = state * 6364136223846793005UL + 1442695040888963407UL;
                    ulong last = state;
                    for (; i < chunk; i++, last >>= 8) span[i] = (byte)last;
                }
                sha.AppendData(span);
                done += chunk;
            }
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(buffer);
        }
        return new ValueTask<object?>(Convert.ToHexStringLower(sha.GetHashAndReset()));
    }

    private static ValueTask<object?> MatmulAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        int n = ctx.ParsedArgs<MatmulArgs>()?.Size ?? 1;
        var rnd = new Random(n);
        var a = DenseMatrix.Create(n, n, (_, _) => rnd.NextDouble());
        var b = DenseMatrix.Create(n, n, (_, _) => rnd.NextDouble());
        ct.ThrowIfCancellationRequested();
        var c = a * b;
        return new ValueTask<object?>(c.Trace());
    }

    private static ValueTask<object?> FailAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var a = ctx.ParsedArgs<FailArgs>() ?? new FailArgs("failed on purpose", long.MaxValue);
        if (ctx.Attempt <= a.Attempts)
            throw new TaskFailedException(a.Message);
        return new ValueTask<object?>($"succeeded on attempt {ctx.Attempt}");
    }

    private static async ValueTask<object?> ShellAsync(TaskContext ctx, JsonElement args, CancellationToken ct)
    {
        var a = ctx.ParsedArgs<ShellArgs>() ?? throw new TaskFailedException("shell task has no arguments");
        var psi = new ProcessStartInfo(a.Command)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = ctx.BaseDirectory,
        };
        foreach (var x in a.Arguments) psi.ArgumentList.Add(x);
        using var p = Process.Start(psi) ?? throw new TaskFailedException($"could not start '{a.Command}'");
        try
        {
            var stdout = ReadCappedAsync(p.StandardOutput, a.OutputCapBytes, ct);
            var stderr = ReadCappedAsync(p.StandardError, a.OutputCapBytes, ct);
            await p.WaitForExitAsync(ct).ConfigureAwait(false);
            var output = await stdout.ConfigureAwait(false);
            var error = await stderr.ConfigureAwait(false);
            if (p.ExitCode != 0)
                throw new TaskFailedException($"'{a.Command}' exited with code {p.ExitCode}: {error.Trim()}");
            return output;
        }
        catch (OperationCanceledException)
        {
            try { p.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
    }

    private static async Task<string> ReadCappedAsync(StreamReader reader, long cap, CancellationToken ct)
    {
        var sb = new StringBuilder();
        var buf = new char[4096];
        int n;
        while ((n = await reader.ReadAsync(buf, ct).ConfigureAwait(false)) > 0)
        {
            if (sb.Length < cap) sb.Append(buf, 0, (int)Math.Min(n, cap - sb.Length));
        }
        return sb.ToString();
    }
}
