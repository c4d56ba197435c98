using System.Numerics;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

using TaskMesh.QuantumSim.Simulation;

namespace TaskMesh.QuantumSim;

/// <summary>
/// 2^n complex amplitudes in 64-byte-aligned native memory, laid out in blocks of L reals then L
/// imaginaries for the SIMD kernels. Free it with <see cref="Dispose"/>: a 30-qubit double state
/// is 16 GiB and must not wait for a finalizer.
/// </summary>
/// <remarks>Qubit k is bit k of the basis index (q[0] is the least significant bit).</remarks>
public sealed unsafe class StateVector : IDisposable
{
    /// <summary>The largest qubit count a state vector can be created with (before memory admission).</summary>
    public const int MaxQubits = 40;

    private void* _data;
    private readonly int _lanes;
    private readonly long _vectors;

    /// <summary>Allocates |0…0⟩. Call <see cref="MemoryAdmission.Check"/> first for large states.</summary>
    /// <param name="qubits">1..<see cref="MaxQubits"/>.</param>
    /// <param name="precision">Element precision.</param>
    /// <param name="width">Kernel width; <see cref="SimdWidth.Auto"/> picks the widest accelerated one.</param>
    /// <param name="threads">Threads per sweep; 0 = <see cref="Environment.ProcessorCount"/>.</param>
    /// <exception cref="ArgumentOutOfRangeException">A qubit count outside 1..40.</exception>
    /// <exception cref="PlatformNotSupportedException">A width the hardware does not support was forced.</exception>
    /// <exception cref="OutOfMemoryException">The allocation failed.</exception>
    public StateVector(int qubits, Precision precision, SimdWidth width = SimdWidth.Auto, int threads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(qubits, 1);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(qubits, MaxQubits);
        ArgumentOutOfRangeException.ThrowIfNegative(threads);
        Qubits = qubits;
        Precision = precision;
        Width = Resolve(width);
        Threads = threads == 0 ? Environment.ProcessorCount : threads;
        _lanes = LanesOf(Width, precision);
        long amplitudes = Math.Max(1L << qubits, _lanes);
        _vectors = amplitudes / _lanes;
        ByteCount = amplitudes * 2 * ElementSize(precision);
        _data = NativeMemory.AlignedAlloc((nuint)ByteCount, 64);
        if (_data == null) throw new OutOfMemoryException($"could not allocate {ByteCount} bytes for a {qubits}-qubit state vector");
        GC.AddMemoryPressure(Math.Min(ByteCount, int.MaxValue));
        Clear();
        SetAmplitude(0, Complex.One);
    }

    /// <summary>Number of qubits n.</summary>
    public int Qubits { get; }

    /// <summary>Element precision.</summary>
    public Precision Precision { get; }

    /// <summary>The kernel width in use (never <see cref="SimdWidth.Auto"/>).</summary>
    public SimdWidth Width { get; }

    /// <summary>Threads per sweep.</summary>
    public int Threads { get; }

    /// <summary>2^n.</summary>
    public long Length => 1L << Qubits;

    /// <summary>Bytes of native memory held.</summary>
    public long ByteCount { get; }

    /// <summary>Bytes a state of this size and precision needs (what admission compares).</summary>
    public static long RequiredBytes(int qubits, Precision precision) =>
        Math.Max(1L << qubits, 16) * 2 * ElementSize(precision);

    /// <summary>The widest width the hardware accelerates.</summary>
    public static SimdWidth BestWidth =>
        Avx512F.IsSupported && Vector512.IsHardwareAccelerated ? SimdWidth.Vector512
        : Avx2.IsSupported && Fma.IsSupported ? SimdWidth.Vector256
        : SimdWidth.Scalar;

    /// <summary>True when the hardware can run <paramref name="width"/>.</summary>
    public static bool IsSupported(SimdWidth width) => width switch
    {
        SimdWidth.Vector512 => Avx512F.IsSupported,
        SimdWidth.Vector256 => Avx2.IsSupported && Fma.IsSupported,
        _ => true,
    };

    private static SimdWidth Resolve(SimdWidth width)
    {
        if (width == SimdWidth.Auto) return BestWidth;
        if (!IsSupported(width)) throw new PlatformNotSupportedException($"{width} kernels are not supported by this CPU");
        return width;
    }

    private static int ElementSize(Precision p) => p == Precision.Single ? 4 : 8;

    private static int LanesOf(SimdWidth w, Precision p) => (w, p) switch
    {
        (SimdWidth.Vector512, Precision.Single) => 16,
        (SimdWidth.Vector512, Precision.Double) => 8,
        (SimdWidth.Vector256, Precision.Single) => 8,
        (SimdWidth.Vector256, Precision.Double) => 4,
        _ => 1,
    };

    private void* Data => _data != null ? _data : throw new ObjectDisposedException(nameof(StateVector));

    private long Offset(long index) => ElementOffset(index, _lanes - 1);

    /// <summary>Where the real part of amplitude <paramref name="index"/> sits: block index × 2L plus the lane (L a power of two, mask = L - 1).</summary>
    private static long ElementOffset(long index, long mask) => ((index & ~mask) << 1) | (index & mask);

    /// <summary>Amplitude of basis state <paramref name="index"/>.</summary>
    public Complex GetAmplitude(long index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Length);
        long o = Offset(index);
        return Precision == Precision.Single
            ? new Complex(((float*)Data)[o], ((float*)Data)[o + _lanes])
            : new Complex(((double*)Data)[o], ((double*)Data)[o + _lanes]);
    }

    /// <summary>Sets the amplitude of basis state <paramref name="index"/> (no renormalisation).</summary>
    public void SetAmplitude(long index, Complex value)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Length);
        long o = Offset(index);
        if (Precision == Precision.Single)
        {
            ((float*)Data)[o] = (float)value.Real;
            ((float*)Data)[o + _lanes] = (float)value.Imaginary;
        }
        else
        {
            ((double*)Data)[o] = value.Real;
            ((double*)Data)[o + _lanes] = value.Imaginary;
        }
    }

    /// <summary>Sets every amplitude to zero.</summary>
    public void Clear()
    {
        byte* p = (byte*)Data;
        long total = ByteCount;
        const long Chunk = 1 << 26;
        if (total <= Chunk || Threads == 1)
        {
            NativeMemory.Clear(p, (nuint)total);
            return;
        }
        // First touch from several threads: a large state is zeroed (and paged in) at full bandwidth.
        long chunks = (total + Chunk - 1) / Chunk;
        nint basePtr = (nint)p;
        Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, c =>
        {
            long start = c * Chunk;
            NativeMemory.Clear((byte*)basePtr + start, (nuint)Math.Min(Chunk, total - start));
        });
    }

    /// <summary>Resets to the basis state |index⟩.</summary>
    public void SetBasisState(long index)
    {
        Clear();
        SetAmplitude(index, Complex.One);
    }

    /// <summary>Applies a gate in one sweep.</summary>
    /// <exception cref="ArgumentException">The gate touches a qubit ≥ <see cref="Qubits"/>.</exception>
    public void Apply(MatrixGate gate)
    {
        ArgumentNullException.ThrowIfNull(gate);
        if (gate.MaxQubit >= Qubits)
            throw new ArgumentException($"gate touches qubit {gate.MaxQubit} but the state has {Qubits} qubit(s)", nameof(gate));
        switch (Width, Precision)
        {
            case (SimdWidth.Vector512, Precision.Single): Kernels<V512F, Vector512<float>, float>.Apply((float*)Data, _vectors, gate, Threads); break;
            case (SimdWidth.Vector512, Precision.Double): Kernels<V512D, Vector512<double>, double>.Apply((double*)Data, _vectors, gate, Threads); break;
            case (SimdWidth.Vector256, Precision.Single): Kernels<V256F, Vector256<float>, float>.Apply((float*)Data, _vectors, gate, Threads); break;
            case (SimdWidth.Vector256, Precision.Double): Kernels<V256D, Vector256<double>, double>.Apply((double*)Data, _vectors, gate, Threads); break;
            case (_, Precision.Single): Kernels<ScalarF, float, float>.Apply((float*)Data, _vectors, gate, Threads); break;
            default: Kernels<ScalarD, double, double>.Apply((double*)Data, _vectors, gate, Threads); break;
        }
    }

    /// <summary>Bytes of one cache block: half the 1 MiB L2 of a core here, leaving room for the coefficients and the next block's prefetch.</summary>
    public const int CacheBlockBytes = 512 << 10;

    /// <summary>
    /// Gates on qubits below this many can be applied block by block (<see cref="ApplyBlocked"/>):
    /// a block of 2^BlockQubits amplitudes is <see cref="CacheBlockBytes"/>.
    /// </summary>
    public int BlockQubits => BitOperations.Log2((ulong)(CacheBlockBytes / (2 * ElementSize(Precision))));

    /// <summary>
    /// Applies a run of gates that all act below <see cref="BlockQubits"/>, one cache-sized block
    /// at a time: every gate runs on a block while it sits in the core's cache, so the run costs one
    /// pass over memory instead of one per gate. Blocks are spread over the threads.
    /// </summary>
    /// <exception cref="ArgumentException">A gate touches a qubit at or above <see cref="BlockQubits"/>.</exception>
    public void ApplyBlocked(IReadOnlyList<MatrixGate> gates)
    {
        ArgumentNullException.ThrowIfNull(gates);
        int bq = BlockQubits;
        foreach (var g in gates)
            if (g.MaxQubit >= Math.Min(bq, Qubits))
                throw new ArgumentException($"gate touches qubit {g.MaxQubit}; blocked application needs every qubit below {Math.Min(bq, Qubits)}", nameof(gates));
        if (Qubits <= bq)
        {
            foreach (var g in gates) Apply(g);
            return;
        }
        long blockVectors = (1L << bq) / _lanes;
        switch (Width, Precision)
        {
            case (SimdWidth.Vector512, Precision.Single): RunBlocked<V512F, Vector512<float>, float>((float*)Data, blockVectors, gates); break;
            case (SimdWidth.Vector512, Precision.Double): RunBlocked<V512D, Vector512<double>, double>((double*)Data, blockVectors, gates); break;
            case (SimdWidth.Vector256, Precision.Single): RunBlocked<V256F, Vector256<float>, float>((float*)Data, blockVectors, gates); break;
            case (SimdWidth.Vector256, Precision.Double): RunBlocked<V256D, Vector256<double>, double>((double*)Data, blockVectors, gates); break;
            case (_, Precision.Single): RunBlocked<ScalarF, float, float>((float*)Data, blockVectors, gates); break;
            default: RunBlocked<ScalarD, double, double>((double*)Data, blockVectors, gates); break;
        }
    }

    private void RunBlocked<S, TV, T>(T* data, long blockVectors, IReadOnlyList<MatrixGate> gates)
        where S : struct, ISimd<TV, T> where TV : unmanaged where T : unmanaged
    {
        var plans = gates.Select(Kernels<S, TV, T>.Prepare).ToArray();
        long blocks = _vectors / blockVectors;
        nint basePtr = (nint)data;
        int lanes = S.Lanes;
        Parallel.For(0L, blocks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, b =>
        {
            T* block = (T*)basePtr + b * blockVectors * 2 * lanes;
            foreach (var plan in plans) Kernels<S, TV, T>.Run(block, blockVectors, plan, threads: 1);
        });
    }

    /// <summary>‖ψ‖², accumulated in double precision.</summary>
    public double NormSquared() => (Width, Precision) switch
    {
        (SimdWidth.Vector512, Precision.Single) => Kernels<V512F, Vector512<float>, float>.NormSquared((float*)Data, _vectors, Threads),
        (SimdWidth.Vector512, Precision.Double) => Kernels<V512D, Vector512<double>, double>.NormSquared((double*)Data, _vectors, Threads),
        (SimdWidth.Vector256, Precision.Single) => Kernels<V256F, Vector256<float>, float>.NormSquared((float*)Data, _vectors, Threads),
        (SimdWidth.Vector256, Precision.Double) => Kernels<V256D, Vector256<double>, double>.NormSquared((double*)Data, _vectors, Threads),
        (_, Precision.Single) => Kernels<ScalarF, float, float>.NormSquared((float*)Data, _vectors, Threads),
        _ => Kernels<ScalarD, double, double>.NormSquared((double*)Data, _vectors, Threads),
    };

    /// <summary>Multiplies every amplitude by <paramref name="factor"/> (renormalisation after a non-unitary step).</summary>
    public void Scale(double factor)
    {
        long count = ByteCount / ElementSize(Precision);
        nint basePtr = (nint)Data;
        bool single = Precision == Precision.Single;
        const long Chunk = 1 << 20;
        long chunks = (count + Chunk - 1) / Chunk;
        Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, c =>
        {
            long start = c * Chunk;
            int len = (int)Math.Min(Chunk, count - start);
            if (single) ScaleSpan(new Span<float>((float*)basePtr + start, len), (float)factor);
            else ScaleSpan(new Span<double>((double*)basePtr + start, len), factor);
        });
    }

    private static void ScaleSpan<T>(Span<T> span, T factor) where T : unmanaged, INumber<T>
    {
        var vs = MemoryMarshal.Cast<T, Vector<T>>(span);
        var f = new Vector<T>(factor);
        for (int i = 0; i < vs.Length; i++) vs[i] *= f;
        for (int i = vs.Length * Vector<T>.Count; i < span.Length; i++) span[i] *= factor;
    }

    /// <summary>Writes |amplitude|² of every basis state into <paramref name="destination"/> (length 2^n).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void CopyProbabilities(Span<double> destination)
    {
        if (destination.Length != Length) throw new ArgumentException($"destination needs {Length} elements, got {destination.Length}", nameof(destination));
        fixed (double* dst = destination)
        {
            nint d = (nint)dst, src = (nint)Data;
            long len = Length;
            int lanes = _lanes;
            bool single = Precision == Precision.Single;
            long vectors = Math.Max(1, len / lanes);
            int chunks = len < 1 << 16 ? 1 : Threads * 4;
            Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, c =>
            {
                long v0 = vectors * c / chunks, v1 = vectors * (c + 1) / chunks;
                double* o = (double*)d;
                for (long v = v0; v < v1; v++)
                {
                    int count = (int)Math.Min(lanes, len - v * lanes);
                    for (int l = 0; l < count; l++)
                    {
                        long e = v * 2 * lanes + l;
                        double re, im;
                        if (single) { re = ((float*)src)[e]; im = ((float*)src)[e + lanes]; }
                        else { re = ((double*)src)[e]; im = ((double*)src)[e + lanes]; }
                        o[v * lanes + l] = re * re + im * im;
                    }
                }
            });
        }
    }

    /// <summary>|amplitude|² of every basis state (2^n doubles).</summary>
    /// <exception cref="InvalidOperationException">More than 2^30 states: use <see cref="CopyProbabilities(long, Span{double})"/> on a native buffer.</exception>
    public double[] Probabilities()
    {
        if (Qubits > 30) throw new InvalidOperationException($"a {Qubits}-qubit probability vector does not fit a managed array");
        var p = GC.AllocateUninitializedArray<double>((int)Length);
        CopyProbabilities(p);
        return p;
    }

    /// <summary>Copies every amplitude out (for small states and tests).</summary>
    public Complex[] ToArray()
    {
        if (Qubits > 26) throw new InvalidOperationException($"a {Qubits}-qubit state is too large to copy into a managed array");
        var a = new Complex[Length];
        for (long i = 0; i < a.Length; i++) a[i] = GetAmplitude(i);
        return a;
    }

    /// <summary>Writes |amplitude|² of basis states <paramref name="start"/> .. start+destination.Length-1 (one thread).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal void CopyProbabilities(long start, Span<double> destination)
    {
        int lanes = _lanes;
        if (Precision == Precision.Single)
        {
            float* d = (float*)Data;
            for (int k = 0; k < destination.Length; k++)
            {
                long i = start + k, e = ElementOffset(i, lanes - 1);
                double re = d[e], im = d[e + lanes];
                destination[k] = re * re + im * im;
            }
        }
        else
        {
            double* d = (double*)Data;
            for (int k = 0; k < destination.Length; k++)
            {
                long i = start + k, e = ElementOffset(i, lanes - 1);
                double re = d[e], im = d[e + lanes];
                destination[k] = re * re + im * im;
            }
        }
    }

    /// <summary>Probability that <paramref name="qubit"/> reads 1 (unnormalised: divide by ‖ψ‖²).</summary>
    internal double ProbabilityOfOne(int qubit)
    {
        long len = Length, bit = 1L << qubit;
        var buf = new double[Math.Min(len, 1 << 14)];
        double sum = 0;
        for (long start = 0; start < len; start += buf.Length)
        {
            var span = buf.AsSpan(0, (int)Math.Min(buf.Length, len - start));
            CopyProbabilities(start, span);
            for (int k = 0; k < span.Length; k++)
                if (((start + k) & bit) != 0) sum += span[k];
        }
        return sum;
    }

    /// <summary>⟨ψ|P|ψ⟩ for a Pauli string P (real because P is Hermitian).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    internal double Expectation(PauliString pauli)
    {
        long flip = pauli.XMask | pauli.YMask, sign = pauli.YMask | pauli.ZMask;
        int ny = BitOperations.PopCount((ulong)pauli.YMask);
        // P|i> = i^ny (-1)^popcount(i & sign) |i ^ flip>, so <psi|P|psi> = sum_i conj(psi[i^flip]) i^ny (-1)^.. psi[i].
        Complex phase = (ny & 3) switch { 0 => 1, 1 => Complex.ImaginaryOne, 2 => -1, _ => -Complex.ImaginaryOne };
        long len = Length;
        int lanes = _lanes;
        bool single = Precision == Precision.Single;
        nint src = (nint)Data;
        int chunks = len < 1 << 16 ? 1 : Threads * 4;
        var partial = new double[chunks];
        if (chunks == 1) Body(0);
        else Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = Threads }, Body);
        return partial.Sum();

        void Body(int c)
        {
            long i0 = len * c / chunks, i1 = len * (c + 1) / chunks;
            double accRe = 0, accIm = 0;
            for (long i = i0; i < i1; i++)
            {
                long j = i ^ flip;
                long ei = ElementOffset(i, lanes - 1), ej = ElementOffset(j, lanes - 1);
                double ar, ai, br, bi;
                if (single)
                {
                    float* d = (float*)src;
                    ar = d[ei]; ai = d[ei + lanes]; br = d[ej]; bi = d[ej + lanes];
                }
                else
                {
                    double* d = (double*)src;
                    ar = d[ei]; ai = d[ei + lanes]; br = d[ej]; bi = d[ej + lanes];
                }
                // conj(b) * a
                double re = br * ar + bi * ai, im = br * ai - bi * ar;
                if ((BitOperations.PopCount((ulong)(i & sign)) & 1) != 0) { re = -re; im = -im; }
                accRe += re;
                accIm += im;
            }
            partial[c] = (new Complex(accRe, accIm) * phase).Real;
        }
    }

    /// <summary>Frees the native memory.</summary>
    public void Dispose()
    {
        if (_data == null) return;
        NativeMemory.AlignedFree(_data);
        _data = null;
        GC.RemoveMemoryPressure(Math.Min(ByteCount, int.MaxValue));
        GC.SuppressFinalize(this);
    }

    /// <summary>Frees the memory if <see cref="Dispose"/> was not called.</summary>
    ~StateVector()
    {
        if (_data != null) NativeMemory.AlignedFree(_data);
    }
}
