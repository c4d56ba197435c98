using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using System.Runtime.Intrinsics.X86;

namespace TaskMesh.QuantumSim.Simulation;

/// <summary>
/// One vector width and element type for the kernels. Each implementation is a struct so the
/// JIT compiles a separate, fully inlined kernel per width (the runtime's TensorPrimitives
/// operator-struct pattern).
/// </summary>
/// <typeparam name="TV">The vector type (or the scalar itself for the scalar path).</typeparam>
/// <typeparam name="T">The element type, <see cref="float"/> or <see cref="double"/>.</typeparam>
internal unsafe interface ISimd<TV, T> where TV : unmanaged where T : unmanaged
{
    /// <summary>Elements per vector; a block of the state vector holds this many amplitudes.</summary>
    static abstract int Lanes { get; }
    static abstract TV Load(T* p);
    static abstract void Store(T* p, TV v);
    static abstract TV Zero { get; }
    static abstract TV Add(TV a, TV b);
    static abstract TV Sub(TV a, TV b);
    static abstract TV Mul(TV a, TV b);
    /// <summary>a * b + c.</summary>
    static abstract TV MulAdd(TV a, TV b, TV c);
    /// <summary>c - a * b.</summary>
    static abstract TV NegMulAdd(TV a, TV b, TV c);
    /// <summary>Lane l of the result is lane <c>l ^ x</c> of <paramref name="v"/>; <paramref name="perm"/> comes from <see cref="MakePermutation"/>.</summary>
    static abstract TV Permute(TV v, TV perm);
    /// <summary>The permutation operand for "lane l takes lane l ^ x".</summary>
    static abstract TV MakePermutation(int x);
    static abstract T FromDouble(double x);
    static abstract double SumSquares(TV re, TV im);
}

internal unsafe struct V512F : ISimd<Vector512<float>, float>
{
    public static int Lanes => 16;
    public static Vector512<float> Zero => Vector512<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Load(float* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector512<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Add(Vector512<float> a, Vector512<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Sub(Vector512<float> a, Vector512<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Mul(Vector512<float> a, Vector512<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> MulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> NegMulAdd(Vector512<float> a, Vector512<float> b, Vector512<float> c) => Avx512F.FusedMultiplyAddNegated(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<float> Permute(Vector512<float> v, Vector512<float> perm) => Avx512F.PermuteVar16x32(v, perm.AsInt32());
    public static Vector512<float> MakePermutation(int x)
    {
        var idx = stackalloc int[16];
        for (int l = 0; l < 16; l++) idx[l] = l ^ x;
        return Vector512.Load(idx).AsSingle();
    }
    public static float FromDouble(double x) => (float)x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumSquares(Vector512<float> re, Vector512<float> im)
    {
        // Widen before summing so a single-precision state's norm is not itself rounded to float.
        var (rl, rh) = Vector512.Widen(re);
        var (il, ih) = Vector512.Widen(im);
        return Vector512.Sum(rl * rl + rh * rh + il * il + ih * ih);
    }
}

internal unsafe struct V512D : ISimd<Vector512<double>, double>
{
    public static int Lanes => 8;
    public static Vector512<double> Zero => Vector512<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Load(double* p) => Vector512.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(double* p, Vector512<double> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Add(Vector512<double> a, Vector512<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Sub(Vector512<double> a, Vector512<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Mul(Vector512<double> a, Vector512<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> MulAdd(Vector512<double> a, Vector512<double> b, Vector512<double> c) => Avx512F.FusedMultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> NegMulAdd(Vector512<double> a, Vector512<double> b, Vector512<double> c) => Avx512F.FusedMultiplyAddNegated(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector512<double> Permute(Vector512<double> v, Vector512<double> perm) => Avx512F.PermuteVar8x64(v, perm.AsInt64());
    public static Vector512<double> MakePermutation(int x)
    {
        var idx = stackalloc long[8];
        for (int l = 0; l < 8; l++) idx[l] = l ^ x;
        return Vector512.Load(idx).AsDouble();
    }
    public static double FromDouble(double x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumSquares(Vector512<double> re, Vector512<double> im) => Vector512.Sum(re * re + im * im);
}

internal unsafe struct V256F : ISimd<Vector256<float>, float>
{
    public static int Lanes => 8;
    public static Vector256<float> Zero => Vector256<float>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Load(float* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(float* p, Vector256<float> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Add(Vector256<float> a, Vector256<float> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Sub(Vector256<float> a, Vector256<float> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Mul(Vector256<float> a, Vector256<float> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> MulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> NegMulAdd(Vector256<float> a, Vector256<float> b, Vector256<float> c) => Fma.MultiplyAddNegated(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<float> Permute(Vector256<float> v, Vector256<float> perm) => Avx2.PermuteVar8x32(v, perm.AsInt32());
    public static Vector256<float> MakePermutation(int x)
    {
        var idx = stackalloc int[8];
        for (int l = 0; l < 8; l++) idx[l] = l ^ x;
        return Vector256.Load(idx).AsSingle();
    }
    public static float FromDouble(double x) => (float)x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumSquares(Vector256<float> re, Vector256<float> im)
    {
        var (rl, rh) = Vector256.Widen(re);
        var (il, ih) = Vector256.Widen(im);
        return Vector256.Sum(rl * rl + rh * rh + il * il + ih * ih);
    }
}

internal unsafe struct V256D : ISimd<Vector256<double>, double>
{
    public static int Lanes => 4;
    public static Vector256<double> Zero => Vector256<double>.Zero;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Load(double* p) => Vector256.Load(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static void Store(double* p, Vector256<double> v) => v.Store(p);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Add(Vector256<double> a, Vector256<double> b) => a + b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Sub(Vector256<double> a, Vector256<double> b) => a - b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Mul(Vector256<double> a, Vector256<double> b) => a * b;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> MulAdd(Vector256<double> a, Vector256<double> b, Vector256<double> c) => Fma.MultiplyAdd(a, b, c);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> NegMulAdd(Vector256<double> a, Vector256<double> b, Vector256<double> c) => Fma.MultiplyAddNegated(a, b, c);
    // AVX2 has no variable cross-lane permute for 64-bit elements; move each double as a pair of 32-bit halves.
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Vector256<double> Permute(Vector256<double> v, Vector256<double> perm) => Avx2.PermuteVar8x32(v.AsSingle(), perm.AsInt32()).AsDouble();
    public static Vector256<double> MakePermutation(int x)
    {
        var idx = stackalloc int[8];
        for (int l = 0; l < 4; l++)
        {
            idx[2 * l] = 2 * (l ^ x);
            idx[2 * l + 1] = 2 * (l ^ x) + 1;
        }
        return Vector256.Load(idx).AsDouble();
    }
    public static double FromDouble(double x) => x;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static double SumSquares(Vector256<double> re, Vector256<double> im) => Vector256.Sum(re * re + im * im);
}

internal unsafe struct ScalarF : ISimd<float, float>
{
    public static int Lanes => 1;
    public static float Zero => 0f;
    public static float Load(float* p) => *p;
    public static void Store(float* p, float v) => *p = v;
    public static float Add(float a, float b) => a + b;
    public static float Sub(float a, float b) => a - b;
    public static float Mul(float a, float b) => a * b;
    public static float MulAdd(float a, float b, float c) => a * b + c;
    public static float NegMulAdd(float a, float b, float c) => c - a * b;
    public static float Permute(float v, float perm) => v;
    public static float MakePermutation(int x) => 0;
    public static float FromDouble(double x) => (float)x;
    public static double SumSquares(float re, float im) => (double)re * re + (double)im * im;
}

internal unsafe struct ScalarD : ISimd<double, double>
{
    public static int Lanes => 1;
    public static double Zero => 0;
    public static double Load(double* p) => *p;
    public static void Store(double* p, double v) => *p = v;
    public static double Add(double a, double b) => a + b;
    public static double Sub(double a, double b) => a - b;
    public static double Mul(double a, double b) => a * b;
    public static double MulAdd(double a, double b, double c) => a * b + c;
    public static double NegMulAdd(double a, double b, double c) => c - a * b;
    public static double Permute(double v, double perm) => v;
    public static double MakePermutation(int x) => 0;
    public static double FromDouble(double x) => x;
    public static double SumSquares(double re, double im) => re * re + im * im;
}
