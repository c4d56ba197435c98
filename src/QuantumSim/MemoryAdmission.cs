using System.Globalization;

using TaskMesh.QuantumSim.Simulation;

namespace TaskMesh.QuantumSim;

/// <summary>A circuit whose state vector does not fit the memory it may use.</summary>
public sealed class AdmissionException(string message, long requiredBytes, long availableBytes, long capBytes) : Exception(message)
{
    /// <summary>Bytes the state vector needs.</summary>
    public long RequiredBytes { get; } = requiredBytes;

    /// <summary>Bytes of memory available when checked.</summary>
    public long AvailableBytes { get; } = availableBytes;

    /// <summary>The configured cap (<see cref="MemoryAdmission.NoCap"/> when none).</summary>
    public long CapBytes { get; } = capBytes;
}

/// <summary>
/// Decides before allocating whether a state vector fits: the need must be within the configured
/// cap and within the memory the machine has available now, less a reserve for everything else.
/// </summary>
public static class MemoryAdmission
{
    /// <summary>"No cap" for <see cref="Check"/>.</summary>
    public const long NoCap = long.MaxValue;

    /// <summary>Memory left for the rest of the process beside a state vector.</summary>
    public const long ReserveBytes = 512L << 20;

    /// <summary>Bytes available for new allocations: MemAvailable on Linux, else the GC's view.</summary>
    public static long AvailableBytes()
    {
        var gc = GC.GetGCMemoryInfo();
        long limit = gc.TotalAvailableMemoryBytes - gc.MemoryLoadBytes;
        try
        {
            if (File.Exists("/proc/meminfo"))
            {
                foreach (var line in File.ReadLines("/proc/meminfo"))
                {
                    if (!line.StartsWith("MemAvailable:", StringComparison.Ordinal)) continue;
                    var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
                    // A container limit (seen by the GC) can be tighter than the host's free memory.
                    return Math.Min(kb * 1024, gc.TotalAvailableMemoryBytes);
                }
            }
        }
        catch (IOException) { }
        catch (FormatException) { }
        return Math.Max(0, limit);
    }

    /// <summary>Throws unless a state of <paramref name="qubits"/> qubits fits.</summary>
    /// <param name="qubits">Qubit count.</param>
    /// <param name="precision">Element precision.</param>
    /// <param name="capBytes">Most bytes one state may take (<see cref="NoCap"/> for none).</param>
    /// <param name="alreadyReservedBytes">Bytes promised to other circuits and not yet visible in the free memory (the quantum layer's bookkeeping); negative for memory the caller is about to free.</param>
    /// <exception cref="AdmissionException">The state does not fit; the message names the need, the memory available and the cap.</exception>
    public static void Check(int qubits, Precision precision, long capBytes = NoCap, long alreadyReservedBytes = 0)
    {
        long need = qubits > StateVector.MaxQubits ? long.MaxValue : StateVector.RequiredBytes(qubits, precision);
        long available = Math.Max(0, AvailableBytes() - alreadyReservedBytes);
        string What() => $"a {qubits}-qubit {precision.ToName()}-precision state vector needs {FormatBytes(need)}";
        if (need > capBytes)
            throw new AdmissionException($"{What()}, more than the configured cap of {FormatBytes(capBytes)} ({FormatBytes(available)} available)", need, available, capBytes);
        if (need > available - ReserveBytes)
            throw new AdmissionException($"{What()} but only {FormatBytes(available)} of memory is available (keeping {FormatBytes(ReserveBytes)} in reserve; cap {(capBytes == NoCap ? "none" : FormatBytes(capBytes))})", need, available, capBytes);
    }

    /// <summary>Formats a byte count as GiB/MiB/KiB.</summary>
    public static string FormatBytes(long bytes) => bytes switch
    {
        long.MaxValue => "unlimited",
        >= 1L << 30 => $"{bytes / (double)(1L << 30):0.0} GiB",
        >= 1L << 20 => $"{bytes / (double)(1L << 20):0.0} MiB",
        _ => $"{bytes / 1024.0:0.0} KiB",
    };
}
