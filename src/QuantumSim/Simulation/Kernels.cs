using System.Numerics;
using System.Runtime.CompilerServices;

namespace TaskMesh.QuantumSim.Simulation;

/// <summary>
/// Gate kernels over the blocked layout: vector v holds amplitudes v*L .. v*L+L-1 as L reals
/// followed by L imaginaries (L = lanes of the chosen width). Qubits below log2(L) live inside a
/// vector ("low" qubits: lanes are permuted); the others select whole vectors ("high" qubits).
/// </summary>
/// <remarks>
/// A gate on targets T and controls C visits groups of 2^|high T| vectors; every lane of the
/// output is a lane-wise complex dot product of a coefficient vector with the (permuted) inputs,
/// so low targets, low controls and the gate matrix are folded into per-lane coefficients once per
/// gate, and the sweep itself is FMAs only. High controls are fixed bits in the group index, so
/// groups where a control is 0 are never visited.
/// </remarks>
internal static unsafe partial class Kernels<S, TV, T>
    where S : struct, ISimd<TV, T>
    where TV : unmanaged
    where T : unmanaged
{
    /// <summary>Vectors below which a sweep stays on the calling thread (threading costs more than it saves).</summary>
    private const long ParallelThreshold = 1 << 13;

    internal sealed class Plan
    {
        public int HighCount;
        public int LowCount;
        public int[] GroupPositions = [];
        public long ControlBits;
        public long[] Offsets = [];
        public TV[] Perms = [];
        public TV[] CoefRe = [];
        public TV[] CoefIm = [];
        // For the unrolled kernels' three-multiplication product: Im - Re and Re + Im of each coefficient.
        public TV[] CoefDMinusC = [];
        public TV[] CoefCPlusD = [];
        public bool Diagonal;
        // Software prefetch for targets a few vectors apart (see Prefetch): the vector offsets of
        // the streams, the run mask, and how far ahead to fetch; null when not needed.
        public long[]? PrefetchStreams;
        public long PrefetchRunMask;
        public long PrefetchAhead;
    }

    /// <summary>Bytes fetched ahead of a sweep whose lowest target is a few vectors apart.</summary>
    private const int PrefetchBytes = 8192;

    /// <summary>The largest block (2^(p+1) vectors, p the lowest target position) that gets a software prefetch.</summary>
    private const int PrefetchMaxBlockBytes = 16384;

    /// <summary>
    /// Hardware prefetchers lose track when the lowest target sits 4–64 vectors away: each load
    /// then walks a run of a few vectors and jumps, and a sweep runs at half the bandwidth. The
    /// memory such a group reads is still consumed in address order, block by block (two vectors
    /// per group per stream), so it is fetched linearly, PrefetchBytes ahead.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Prefetch(T* data, Plan plan, long g, long vectorBase)
    {
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported) return;
        var streams = plan.PrefetchStreams!;
        int L = S.Lanes;
        long v = vectorBase + (g & plan.PrefetchRunMask) + plan.PrefetchAhead;
        foreach (long off in streams)
        {
            byte* p = (byte*)(data + (v + off) * 2 * L);
            // Two vectors per group: 2 × (L reals + L imaginaries).
            for (int b = 0; b < 4 * L * sizeof(T); b += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch0(p + b);
        }
    }

    public static void Apply(T* data, long vectors, MatrixGate gate, int threads) => Run(data, vectors, BuildPlan(gate), threads);

    /// <summary>Builds the per-gate coefficients once, for gates applied many times (cache-blocked runs).</summary>
    public static Plan Prepare(MatrixGate gate) => BuildPlan(gate);

    /// <summary>Applies a prepared gate to <paramref name="vectors"/> vectors at <paramref name="data"/> (a whole state or a block of it).</summary>
    public static void Run(T* data, long vectors, Plan plan, int threads)
    {
        long groups = vectors >> plan.GroupPositions.Length;
        if (groups == 0) return; // a high control beyond the vector count cannot be set (padding-sized states)
        var body = plan.Diagonal ? s_generic : Unrolled(1 << plan.HighCount, 1 << plan.LowCount) ?? s_generic;
        ForChunks(data, groups, vectors, threads, plan, body);
    }

    private static readonly Action<nint, Plan, long, long> s_generic = RunRange;

    private static void ForChunks(T* data, long groups, long vectors, int threads, Plan plan, Action<nint, Plan, long, long> body)
    {
        if (threads <= 1 || vectors < ParallelThreshold)
        {
            body((nint)data, plan, 0, groups);
            return;
        }
        int chunks = (int)Math.Min(groups, threads * 4L);
        long per = groups / chunks, rem = groups % chunks;
        nint d = (nint)data;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            long start = c * per + Math.Min(c, rem);
            long end = start + per + (c < rem ? 1 : 0);
            body(d, plan, start, end);
        });
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static long Deposit(long g, int[] positions)
    {
        foreach (int p in positions)
            g = ((g >> p) << (p + 1)) | (g & ((1L << p) - 1));
        return g;
    }

    // Kernels are compiled optimised at once: tier-0 vector code is 10-50x slower, and a process
    // that runs a few hundred small circuits would spend most of its time there.
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void RunRange(nint dataPtr, Plan plan, long g0, long g1)
    {
        T* data = (T*)dataPtr;
        int L = S.Lanes;
        int H = 1 << plan.HighCount, X = 1 << plan.LowCount, K = H * X;
        var positions = plan.GroupPositions;
        long ctl = plan.ControlBits;
        fixed (TV* cr = plan.CoefRe, ci = plan.CoefIm, perms = plan.Perms)
        fixed (long* offs = plan.Offsets)
        {
            if (plan.Diagonal)
            {
                for (long g = g0; g < g1; g++)
                {
                    T* b = data + (Deposit(g, positions) | ctl) * 2 * L;
                    for (int h = 0; h < H; h++)
                    {
                        T* p = b + offs[h] * 2 * L;
                        TV re = S.Load(p), im = S.Load(p + L);
                        S.Store(p, S.NegMulAdd(ci[h], im, S.Mul(cr[h], re)));
                        S.Store(p + L, S.MulAdd(ci[h], re, S.Mul(cr[h], im)));
                    }
                }
                return;
            }

            TV* inRe = stackalloc TV[K];
            TV* inIm = stackalloc TV[K];
            for (long g = g0; g < g1; g++)
            {
                long vb = Deposit(g, positions) | ctl;
                if (plan.PrefetchStreams is not null) Prefetch(data, plan, g, vb);
                T* b = data + vb * 2 * L;
                for (int h = 0; h < H; h++)
                {
                    T* p = b + offs[h] * 2 * L;
                    TV re = S.Load(p), im = S.Load(p + L);
                    inRe[h * X] = re;
                    inIm[h * X] = im;
                    for (int x = 1; x < X; x++)
                    {
                        inRe[h * X + x] = S.Permute(re, perms[x]);
                        inIm[h * X + x] = S.Permute(im, perms[x]);
                    }
                }
                for (int ho = 0; ho < H; ho++)
                {
                    TV* rr = cr + ho * K, ri = ci + ho * K;
                    // Four independent chains so the loop is bound by FMA throughput, not latency.
                    TV a = S.Zero, bb = S.Zero, c = S.Zero, d = S.Zero;
                    for (int j = 0; j < K; j++)
                    {
                        a = S.MulAdd(rr[j], inRe[j], a);
                        bb = S.MulAdd(ri[j], inIm[j], bb);
                        c = S.MulAdd(rr[j], inIm[j], c);
                        d = S.MulAdd(ri[j], inRe[j], d);
                    }
                    T* p = b + offs[ho] * 2 * L;
                    S.Store(p, S.Sub(a, bb));
                    S.Store(p + L, S.Add(c, d));
                }
            }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static Plan BuildPlan(MatrixGate gate)
    {
        int L = S.Lanes;
        int lowBits = BitOperations.Log2((uint)L);
        // Sort the targets ascending (low ones first) and reorder the matrix to match.
        int k = gate.Targets.Length;
        var order = Enumerable.Range(0, k).OrderBy(j => gate.Targets[j]).ToArray();
        var sorted = order.Select(j => gate.Targets[j]).ToArray();
        var m = ReorderMatrix(gate.Matrix, order);

        var lowTargets = sorted.Where(q => q < lowBits).ToArray();
        var highTargets = sorted.Where(q => q >= lowBits).ToArray();
        int lowCtlMask = 0;
        long highCtlBits = 0;
        var highCtlPositions = new List<int>();
        foreach (int c in gate.Controls)
        {
            if (c < lowBits) lowCtlMask |= 1 << c;
            else
            {
                highCtlBits |= 1L << (c - lowBits);
                highCtlPositions.Add(c - lowBits);
            }
        }

        var plan = new Plan
        {
            HighCount = highTargets.Length,
            LowCount = lowTargets.Length,
            ControlBits = highCtlBits,
            GroupPositions = highTargets.Select(q => q - lowBits).Concat(highCtlPositions).Order().ToArray(),
            Diagonal = gate.IsDiagonal,
        };
        int H = 1 << plan.HighCount, X = 1 << plan.LowCount, lc = plan.LowCount;
        plan.Offsets = new long[H];
        for (int h = 0; h < H; h++)
        {
            long off = 0;
            for (int j = 0; j < highTargets.Length; j++)
                if ((h >> j & 1) != 0) off |= 1L << (highTargets[j] - lowBits);
            plan.Offsets[h] = off;
        }
        if (highTargets.Length > 0)
        {
            int p0 = highTargets[0] - lowBits;
            long vectorBytes = 2L * L * sizeof(T);
            // Only when the lowest target is the lowest group bit (a control below it would halve the block's use).
            if (p0 >= 2 && (2L << p0) * vectorBytes <= PrefetchMaxBlockBytes && plan.GroupPositions[0] == p0)
            {
                plan.PrefetchStreams = plan.Offsets.Where(o => (o >> p0 & 1) == 0).ToArray();
                plan.PrefetchRunMask = (1L << p0) - 1;
                plan.PrefetchAhead = PrefetchBytes / vectorBytes;
            }
        }
        int lowMask = 0;
        foreach (int q in lowTargets) lowMask |= 1 << q;
        int LowIndex(int lane)
        {
            int r = 0;
            for (int j = 0; j < lowTargets.Length; j++) r |= ((lane >> lowTargets[j]) & 1) << j;
            return r;
        }
        int LowLane(int index)
        {
            int r = 0;
            for (int j = 0; j < lowTargets.Length; j++) r |= ((index >> j) & 1) << lowTargets[j];
            return r;
        }

        plan.Perms = new TV[X];
        for (int x = 0; x < X; x++) plan.Perms[x] = S.MakePermutation(LowLane(x));

        int dim = 1 << k;
        int count = plan.Diagonal ? H : H * H * X;
        plan.CoefRe = new TV[count];
        plan.CoefIm = new TV[count];
        plan.CoefDMinusC = new TV[count];
        plan.CoefCPlusD = new TV[count];
        fixed (TV* pr = plan.CoefRe, pi = plan.CoefIm, pdc = plan.CoefDMinusC, pcd = plan.CoefCPlusD)
        {
            T* er = (T*)pr, ei = (T*)pi, edc = (T*)pdc, ecd = (T*)pcd;
            for (int lane = 0; lane < L; lane++)
            {
                bool active = (lane & lowCtlMask) == lowCtlMask;
                int lowOut = LowIndex(lane);
                if (plan.Diagonal)
                {
                    for (int h = 0; h < H; h++)
                    {
                        var c = active ? m[(lowOut | h << lc) * (dim + 1)] : Complex.One;
                        er[h * L + lane] = S.FromDouble(c.Real);
                        ei[h * L + lane] = S.FromDouble(c.Imaginary);
                    }
                    continue;
                }
                for (int ho = 0; ho < H; ho++)
                    for (int hi = 0; hi < H; hi++)
                        for (int x = 0; x < X; x++)
                        {
                            Complex c;
                            if (!active) c = ho == hi && x == 0 ? Complex.One : Complex.Zero;
                            else
                            {
                                int lowIn = LowIndex(lane ^ LowLane(x));
                                c = m[(lowOut | ho << lc) * dim + (lowIn | hi << lc)];
                            }
                            int e = ((ho * H + hi) * X + x) * L + lane;
                            er[e] = S.FromDouble(c.Real);
                            ei[e] = S.FromDouble(c.Imaginary);
                            edc[e] = S.FromDouble(c.Imaginary - c.Real);
                            ecd[e] = S.FromDouble(c.Real + c.Imaginary);
                        }
            }
        }
        return plan;
    }

    /// <summary>Rewrites a matrix so that bit j of the new index is bit <c>order[j]</c> of the old one.</summary>
    private static Complex[] ReorderMatrix(Complex[] m, int[] order)
    {
        int k = order.Length, dim = 1 << k;
        bool identity = true;
        for (int j = 0; j < k; j++) identity &= order[j] == j;
        if (identity) return m;
        int Map(int idx)
        {
            int r = 0;
            for (int j = 0; j < k; j++) r |= ((idx >> j) & 1) << order[j];
            return r;
        }
        var res = new Complex[m.Length];
        for (int r = 0; r < dim; r++)
            for (int c = 0; c < dim; c++)
                res[r * dim + c] = m[Map(r) * dim + Map(c)];
        return res;
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static double NormSquared(T* data, long vectors, int threads)
    {
        int L = S.Lanes;
        if (threads <= 1 || vectors < ParallelThreshold)
        {
            double s = 0;
            for (long v = 0; v < vectors; v++) s += S.SumSquares(S.Load(data + v * 2 * L), S.Load(data + v * 2 * L + L));
            return s;
        }
        int chunks = threads * 4;
        var partial = new double[chunks];
        nint d = (nint)data;
        Parallel.For(0, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads }, c =>
        {
            T* p = (T*)d;
            long start = vectors * c / chunks, end = vectors * (c + 1) / chunks;
            double s = 0;
            for (long v = start; v < end; v++) s += S.SumSquares(S.Load(p + v * 2 * L), S.Load(p + v * 2 * L + L));
            partial[c] = s;
        });
        return partial.Sum();
    }
}
