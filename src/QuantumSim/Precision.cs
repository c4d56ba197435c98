namespace TaskMesh.QuantumSim;

/// <summary>Floating-point precision of the amplitudes.</summary>
public enum Precision
{
    /// <summary>32-bit floats: half the memory and bandwidth, about 1e-7 relative error per gate.</summary>
    Single,
    /// <summary>64-bit floats.</summary>
    Double,
}

/// <summary>Which kernels sweep the state vector.</summary>
public enum SimdWidth
{
    /// <summary>The widest the hardware accelerates: 512-bit, then 256-bit, then scalar.</summary>
    Auto,
    /// <summary>Plain scalar code; the reference the vector paths are tested against.</summary>
    Scalar,
    /// <summary>256-bit vectors (AVX2 + FMA).</summary>
    Vector256,
    /// <summary>512-bit vectors (AVX-512F).</summary>
    Vector512,
}

/// <summary>Names used on the command line and in JSON.</summary>
public static class PrecisionNames
{
    /// <summary>"single" or "double".</summary>
    public static string ToName(this Precision p) => p == Precision.Single ? "single" : "double";

    /// <summary>Parses "single"/"float"/"f32" or "double"/"f64".</summary>
    public static bool TryParse(string? s, out Precision precision)
    {
        switch (s?.ToLowerInvariant())
        {
            case "single" or "float" or "f32": precision = Precision.Single; return true;
            case "double" or "f64": precision = Precision.Double; return true;
            default: precision = Precision.Double; return false;
        }
    }
}
