using System.Numerics;

namespace TaskMesh.Engine.Store;

/// <summary>
/// Which task rows a <see cref="RunRecorder"/> keeps (the journal; <c>[store]</c> keys of the same
/// names in snake case). Runs up to <see cref="FullDetailTasks"/> tasks keep every task; larger
/// ones keep the tasks worth a look (failed, skipped, retried, escalated, reporting a confidence,
/// on a layer other than <c>local</c>, at least <see cref="SlowTaskMs"/> long) and a sample by index.
/// </summary>
public sealed record JournalOptions
{
    /// <summary>The defaults.</summary>
    public static readonly JournalOptions Default = new();

    /// <summary>Largest value of <see cref="SampleEvery"/>.</summary>
    public const int MaxSampleEvery = 1 << 30;

    /// <summary>The default of <see cref="FullDetailTasks"/>.</summary>
    public const int DefaultFullDetailTasks = 10_000;

    /// <summary>The default of <see cref="SlowTaskMs"/>.</summary>
    public const double DefaultSlowTaskMs = 10;

    /// <summary>The default of <see cref="SampleEvery"/>.</summary>
    public const int DefaultSampleEvery = 1024;

    /// <summary>The default of <see cref="MaxSampledRows"/>.</summary>
    public const int DefaultMaxSampledRows = 128;

    /// <summary>Runs up to this many tasks keep a row for every task (<c>store.full_detail_tasks</c>).</summary>
    /// <value>Default: <see cref="DefaultFullDetailTasks"/> (10,000).</value>
    public int FullDetailTasks { get; init; } = DefaultFullDetailTasks;

    /// <summary>In larger runs, tasks this slow (ms) or slower keep a row (<c>store.slow_task_ms</c>).</summary>
    /// <value>Default: <see cref="DefaultSlowTaskMs"/> (10).</value>
    public double SlowTaskMs { get; init; } = DefaultSlowTaskMs;

    /// <summary>In larger runs, one task in this many at least keeps a row anyway, by index; a power of two (<c>store.sample_every</c>).</summary>
    /// <value>Default: <see cref="DefaultSampleEvery"/> (1,024).</value>
    public int SampleEvery { get; init; } = DefaultSampleEvery;

    /// <summary>Most sampled rows a run keeps: its stride grows past <see cref="SampleEvery"/> to stay under (<c>store.max_sampled_rows</c>).</summary>
    /// <value>Default: <see cref="DefaultMaxSampledRows"/> (128).</value>
    public int MaxSampledRows { get; init; } = DefaultMaxSampledRows;

    /// <summary>
    /// The sampling stride of a run of <paramref name="tasks"/> tasks: <see cref="SampleEvery"/>, or
    /// in runs over <see cref="SampleEvery"/> × <see cref="MaxSampledRows"/> tasks the power of two
    /// that keeps between half of and <see cref="MaxSampledRows"/> sampled rows. Each sampled row
    /// costs its run tens of microseconds of store work (a row and two audit records): a
    /// million-task run sampled one in 1,024 spent 20 ns a task on them.
    /// </summary>
    public int SampleStride(int tasks)
    {
        uint perRow = (uint)(((long)tasks + MaxSampledRows - 1) / MaxSampledRows);
        return (int)Math.Min(MaxSampleEvery, Math.Max((uint)SampleEvery, BitOperations.RoundUpToPowerOf2(Math.Max(1u, perRow))));
    }

    /// <summary>Why these options cannot be used, or null when they can.</summary>
    public string? Problem()
    {
        if (FullDetailTasks < 0) return "full_detail_tasks must be 0 or more";
        if (!(SlowTaskMs >= 0) || double.IsInfinity(SlowTaskMs)) return "slow_task_ms must be a finite number, 0 or more";
        if (SampleEvery < 1 || SampleEvery > MaxSampleEvery || !BitOperations.IsPow2(SampleEvery)) return $"sample_every must be a power of two from 1 to {MaxSampleEvery}";
        if (MaxSampledRows < 1) return "max_sampled_rows must be 1 or more";
        return null;
    }
}
