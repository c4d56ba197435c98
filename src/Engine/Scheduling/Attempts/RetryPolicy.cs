namespace TaskMesh.Engine.Scheduling.Attempts;

/// <summary>
/// Exponential back-off with equal jitter: the delay before retry <c>k</c> is
/// <c>min(base·2^(k-1), max)</c>, half of it fixed and half random, so that many tasks failing
/// together spread their retries out instead of striking in step.
/// <para>
/// The random half comes from a seeded hash of (seed, task, attempt) rather than a shared
/// <see cref="Random"/>: no lock, no shared state between threads, and the same seed gives the
/// same delays whatever order the workers interleave in.
/// </para>
/// </summary>
public sealed class RetryPolicy
{
    /// <summary>Creates a policy.</summary>
    /// <param name="baseDelay">Delay before the first retry.</param>
    /// <param name="maxDelay">Upper bound of one delay.</param>
    /// <param name="seed">Seed of the jitter.</param>
    /// <exception cref="ArgumentOutOfRangeException">A negative delay, or <paramref name="maxDelay"/> below <paramref name="baseDelay"/>.</exception>
    public RetryPolicy(TimeSpan baseDelay, TimeSpan maxDelay, ulong seed)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(baseDelay, TimeSpan.Zero);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxDelay, baseDelay);
        BaseDelay = baseDelay;
        MaxDelay = maxDelay;
        Seed = seed;
    }

    /// <summary>Delay before the first retry.</summary>
    public TimeSpan BaseDelay { get; }

    /// <summary>Upper bound of one delay.</summary>
    public TimeSpan MaxDelay { get; }

    /// <summary>Seed of the jitter.</summary>
    public ulong Seed { get; }

    /// <summary>The delay before attempt <paramref name="failedAttempt"/> + 1 of task <paramref name="task"/>.</summary>
    public TimeSpan DelayAfter(int task, int failedAttempt)
    {
        double ms = BaseDelay.TotalMilliseconds * Math.Pow(2, Math.Clamp(failedAttempt - 1, 0, 30));
        ms = Math.Min(ms, MaxDelay.TotalMilliseconds);
        return TimeSpan.FromMilliseconds(ms * (0.5 + 0.5 * Jitter(task, failedAttempt)));
    }

    /// <summary>A uniform value in [0, 1) for (task, attempt): SplitMix64 of the seed and both.</summary>
    internal double Jitter(int task, int attempt)
        => SplitMix.Unit(SplitMix.Next(Seed + SplitMix.Golden * ((ulong)(uint)task << 32 | (uint)attempt)));
}
