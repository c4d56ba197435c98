namespace TaskMesh.Engine.Scheduling;

/// <summary>SplitMix64: a fast, well-mixed hash of a 64-bit value, for deterministic draws without shared state or locks.</summary>
internal static class SplitMix
{
    public const ulong Golden = 0x9E3779B97F4A7C15UL;

    /// <summary>The SplitMix64 output for state <paramref name="x"/>.</summary>
    public static ulong Next(ulong x)
    {
        x += Golden;
        x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9UL;
        x = (x ^ (x >> 27)) * 0x94D049BB133111EBUL;
        return x ^ (x >> 31);
    }

    /// <summary>A uniform value in [0, 1) from the top 53 bits of <paramref name="hash"/>.</summary>
    public static double Unit(ulong hash) => (hash >> 11) * (1.0 / (1UL << 53));
}
