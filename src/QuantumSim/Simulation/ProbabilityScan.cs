namespace TaskMesh.QuantumSim.Simulation;

/// <summary>
/// One ordered pass over the probabilities that counts nonzero states, keeps the most probable
/// ones and draws all shots: shots are sorted uniforms generated on the fly, so sampling a
/// million shots costs one pass plus O(shots), not a pass per shot.
/// </summary>
internal sealed class ProbabilityScan
{
    private readonly bool _listAll;
    private readonly int _topK;
    private readonly PriorityQueue<long, double> _heap = new();
    private readonly List<(long, double)> _all = new();
    private readonly int _shots;
    private readonly Random _rng;
    private int _drawn;
    private double _nextUniform;
    private double _cumulative;
    private long _lastNonzero = -1;
    private bool _totalKnown;

    private readonly long[] _zMasks;
    private readonly int[] _marginal;

    /// <param name="zMasks">Z-only Pauli strings (as qubit masks) whose expectations ride along: Σ p_i (-1)^popcount(i &amp; mask).</param>
    /// <param name="marginalQubits">Qubits of an exact marginal to accumulate (bit j of a marginal index is qubit marginalQubits[j]).</param>
    public ProbabilityScan(int qubits, int topK, int shots, int seed, bool listAllSmall, long[]? zMasks = null, int[]? marginalQubits = null)
    {
        _zMasks = zMasks ?? [];
        _marginal = marginalQubits ?? [];
        if (_marginal.Length > 0) Marginal = new double[1 << _marginal.Length];
        ZSums = new double[_zMasks.Length];
        _listAll = listAllSmall && qubits <= Simulator.ListAllUpToQubits;
        _topK = topK;
        _shots = shots;
        _rng = new Random(seed);
        if (shots > 0) Counts = new Dictionary<long, int>();
    }

    public double Total { get; private set; }

    /// <summary>The unnormalised marginal distribution, when qubits were given.</summary>
    public double[]? Marginal { get; }

    /// <summary>Unnormalised expectation sums of the Z-only observables, in the order given.</summary>
    public double[] ZSums { get; }
    public long Nonzero { get; private set; }
    public bool Truncated { get; private set; }
    public Dictionary<long, int>? Counts { get; }
    public List<(long Index, double Probability)> Top { get; private set; } = new();

    // Sampling needs the total up front to scale the uniforms; an unnormalised state is
    // sampled as if normalised. Uniforms are drawn in ascending order: u_k = 1 - (1 - u_{k-1}) V^(1/(s-k+1)).
    private double NextUniform(int remaining) => 1 - (1 - _nextUniform) * Math.Pow(_rng.NextDouble(), 1.0 / remaining);

    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Visit(long start, ReadOnlySpan<double> probs)
    {
        if (!_totalKnown) throw new InvalidOperationException("call SetTotal before Visit");
        for (int k = 0; k < probs.Length; k++)
        {
            double p = probs[k];
            if (p <= Simulator.ZeroProbability)
            {
                _cumulative += p;
                continue;
            }
            long i = start + k;
            if (Marginal is not null)
            {
                int m = 0;
                for (int j = 0; j < _marginal.Length; j++) m |= (int)((i >> _marginal[j]) & 1) << j;
                Marginal[m] += p;
            }
            for (int z = 0; z < _zMasks.Length; z++)
                ZSums[z] += (System.Numerics.BitOperations.PopCount((ulong)(i & _zMasks[z])) & 1) == 0 ? p : -p;
            Nonzero++;
            _lastNonzero = i;
            if (_listAll) _all.Add((i, p));
            else if (_heap.Count < _topK) _heap.Enqueue(i, p);
            else if (p > _heap.MinPriority()) { _heap.DequeueEnqueue(i, p); }
            _cumulative += p;
            while (_drawn < _shots && _nextUniform * Total < _cumulative)
            {
                Counts![i] = Counts.GetValueOrDefault(i) + 1;
                _drawn++;
                if (_drawn < _shots) _nextUniform = NextUniform(_shots - _drawn);
            }
        }
    }

    public void SetTotal(double total)
    {
        Total = total;
        _totalKnown = true;
        if (_shots > 0) _nextUniform = NextUniform(_shots);
    }

    public void Finish()
    {
        // Rounding can leave the last few uniforms just above the final cumulative sum.
        if (_drawn < _shots && _lastNonzero >= 0)
            Counts![_lastNonzero] = Counts.GetValueOrDefault(_lastNonzero) + (_shots - _drawn);
        if (_listAll) Top = _all.OrderByDescending(e => e.Item2).ThenBy(e => e.Item1).ToList();
        else
        {
            Truncated = Nonzero > _heap.Count;
            var list = new List<(long, double)>(_heap.Count);
            while (_heap.TryDequeue(out long i, out double p)) list.Add((i, p));
            Top = list.OrderByDescending(e => e.Item2).ThenBy(e => e.Item1).ToList();
        }
    }
}

internal static class PriorityQueueExtensions
{
    public static double MinPriority(this PriorityQueue<long, double> q)
    {
        q.TryPeek(out _, out double p);
        return p;
    }
}
