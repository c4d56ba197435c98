using Microsoft.ML;
using Microsoft.ML.Calibrators;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers.FastTree;
using TaskMesh.Learning.Features;

namespace TaskMesh.Learning.Models;

/// <summary>
/// A trained FastTree model (regression, or binary classification with its Platt calibration)
/// evaluated directly from its trees: the same numbers as ML.NET's prediction engine (to float
/// rounding; a test holds them together), in about a microsecond instead of tens — the router
/// scores every new kind of task on every layer with both models. The handler's part of the input
/// (the hashed one-hot the model's featurizer makes) is computed once per handler by the featurizer
/// itself, so the encoding is ML.NET's own.
/// </summary>
internal sealed class CompiledTrees
{
    // The trees laid out for walking many tasks in lockstep: every node, leaves included, is one
    // 16-byte record — its split (feature, threshold) and its two children side by side — so a step
    // reads one cache line and takes no branch on the data; a leaf's children are itself, so a walk
    // that reached it stays there. A tree's leaves follow its splits; four walks interleave.
    private readonly Node[] _nodes;
    private readonly int[] _walkRoot, _firstLeaf;
    private readonly double[] _value;   // a leaf's value (0 for a split)

    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct Node
    {
        public int Feature;
        public float Threshold;
        public int Left, Right;   // adjacent: the right child is read as the one after the left
    }
    private readonly double[] _weight;   // per tree
    private readonly int[] _leafBase;    // per tree, where its leaves start among all trees' leaves
    private readonly double _bias;
    // The same trees as bit vectors (QuickScorer's layout), when every tree has at most 64 leaves: a
    // tree's leaves numbered left to right, a set bit per leaf a task may still reach. Per input
    // feature, the splits on it sorted by threshold, each with its tree and the mask that clears the
    // leaves of its left side: a task's value passes the splits below it (it goes right there) in one
    // sequential scan, clearing what it cannot reach, and each tree's exit is its lowest bit left. No
    // walk, no load that waits for the one before.
    private readonly float[]? _scanThreshold;
    private readonly int[]? _scanTree, _scanStart, _scanFeatures;   // _scanStart: per feature, where its splits start (one more at the end)
    private readonly ulong[]? _scanMask, _allLeaves;
    private readonly ulong[]? _scanRightMask;   // per split as _scanMask, the mask that clears the leaves of its right side (for bounds over a box)
    private readonly double[]? _leafInOrder;   // per tree from _leafBase, its leaves' values left to right
    private readonly int[]? _pathStart, _pathFeature;   // per leaf (as _leafInOrder), the features split on from the root to it
    private readonly (double Slope, double Offset)? _platt;
    private readonly MLContext _ml;
    private readonly ITransformer _featurizer;
    private readonly int _inputLength, _featureLength;
    private readonly string _inputColumn;
    private readonly Dictionary<string, float[]> _inputByHandler = new(StringComparer.Ordinal);

    private CompiledTrees(RegressionTreeEnsemble ensemble, (double, double)? platt, MLContext ml, ITransformer featurizer, string inputColumn, int inputLength, int featureLength)
    {
        _featureLength = featureLength;
        int nodes = 0, leaves = 0, trees = ensemble.Trees.Count;
        (_leafBase, _weight) = (new int[trees], new double[trees]);
        for (int i = 0; i < trees; i++)
        {
            var t = ensemble.Trees[i];
            if (t.CategoricalSplitFlags.Any(c => c)) throw new NotSupportedException("categorical splits");
            if (t.NumericalSplitFeatureIndexes.Any(f => f >= inputLength)) throw new NotSupportedException("a split on a feature past the input");
            (_leafBase[i], _weight[i]) = (leaves, ensemble.TreeWeights[i]);
            nodes += t.NumberOfNodes;
            leaves += t.NumberOfLeaves;
        }
        int all = nodes + leaves;
        (_nodes, _value, _walkRoot, _firstLeaf) = (new Node[all], new double[all], new int[trees], new int[trees]);
        for (int t = 0, next = 0; t < trees; t++)
        {
            var tree = ensemble.Trees[t];
            int splitsAt = next, leavesAt = next + tree.NumberOfNodes;
            // A child below 0 is leaf ~child; here every node has an index: leaves after the tree's splits.
            int Index(int child) => child >= 0 ? splitsAt + child : leavesAt + ~child;
            for (int k = 0; k < tree.NumberOfNodes; k++)
            {
                _nodes[splitsAt + k] = new Node { Feature = tree.NumericalSplitFeatureIndexes[k], Threshold = tree.NumericalSplitThresholds[k], Left = Index(tree.LeftChild[k]), Right = Index(tree.RightChild[k]) };
            }
            for (int k = 0; k < tree.NumberOfLeaves; k++)
            {
                int leaf = leavesAt + k;
                _nodes[leaf] = new Node { Feature = 0, Threshold = float.PositiveInfinity, Left = leaf, Right = leaf };
                _value[leaf] = tree.LeafValues[k];
            }
            _walkRoot[t] = tree.NumberOfNodes == 0 ? leavesAt : splitsAt;
            _firstLeaf[t] = leavesAt;
            next = leavesAt + tree.NumberOfLeaves;
        }

        _bias = ensemble.Bias;
        if (ensemble.Trees.All(t => t.NumberOfLeaves <= 64))
        {
            var splits = new List<(int Feature, float Threshold, int Tree, ulong Mask, ulong RightMask)>(nodes);
            (_allLeaves, _leafInOrder, _pathStart) = (new ulong[trees], new double[leaves], new int[leaves + 1]);
            var path = new List<int>();
            var pathFeatures = new List<int>(leaves * 4);
            for (int t = 0; t < trees; t++)
            {
                var tree = ensemble.Trees[t];
                int leafCount = Math.Max(1, tree.NumberOfLeaves);
                _allLeaves[t] = leafCount == 64 ? ulong.MaxValue : (1UL << leafCount) - 1;
                if (tree.NumberOfNodes == 0) { _leafInOrder[_leafBase[t]] = tree.LeafValues[0]; _pathStart[_leafBase[t] + 1] = pathFeatures.Count; continue; }
                int position = 0;
                Number(0);

                // Numbers the leaves under `child` (a split, or ~leaf) left to right from `position`, keeping each leaf's path; returns the bits of those leaves.
                ulong Number(int child)
                {
                    if (child < 0)
                    {
                        _leafInOrder[_leafBase[t] + position] = tree.LeafValues[~child];
                        pathFeatures.AddRange(path);
                        _pathStart[_leafBase[t] + position + 1] = pathFeatures.Count;
                        return 1UL << position++;
                    }
                    path.Add(tree.NumericalSplitFeatureIndexes[child]);
                    ulong left = Number(tree.LeftChild[child]), right = Number(tree.RightChild[child]);
                    path.RemoveAt(path.Count - 1);
                    splits.Add((tree.NumericalSplitFeatureIndexes[child], tree.NumericalSplitThresholds[child], t, ~left, ~right));
                    return left | right;
                }
            }
            // Stable by (feature, threshold): splits of equal threshold apply together either way.
            var sorted = splits.OrderBy(x => x.Feature).ThenBy(x => x.Threshold).ToArray();
            (_scanThreshold, _scanTree, _scanMask, _scanRightMask, _scanStart) = (new float[sorted.Length], new int[sorted.Length], new ulong[sorted.Length], new ulong[sorted.Length], new int[inputLength + 1]);
            for (int k = 0; k < sorted.Length; k++)
                (_scanThreshold[k], _scanTree[k], _scanMask[k], _scanRightMask[k]) = (sorted[k].Threshold, sorted[k].Tree, sorted[k].Mask, sorted[k].RightMask);
            for (int f = 0, k = 0; f <= inputLength; f++)
            {
                while (k < sorted.Length && sorted[k].Feature < f) k++;
                _scanStart[f] = k;
            }
            _scanFeatures = sorted.Select(x => x.Feature).Distinct().ToArray();
            _pathFeature = pathFeatures.ToArray();
        }
        _platt = platt;
        _ml = ml;
        _featurizer = featurizer;
        _inputLength = inputLength;
        _inputColumn = inputColumn;
    }

    /// <summary>The model's trees, or null when it is not a FastTree model of the shape this class knows (the caller keeps ML.NET's prediction engine).</summary>
    /// <param name="featureLength">The length of the task's feature vector the model was trained on (<see cref="ArgumentSchema.InputLength"/>).</param>
    public static CompiledTrees? TryCompile(MLContext ml, ITransformer? model, DataViewSchema schema, int featureLength)
    {
        if (model is not IEnumerable<ITransformer> chain) return null;
        var parts = chain.ToList();
        // A success model calibrated again after training (on held-out examples) ends with that calibration: it is the one applied.
        (double, double)? recalibrated = null;
        if (parts.Count == 3 && parts[^1] is ISingleFeaturePredictionTransformer<PlattCalibrator> again)
        {
            recalibrated = (again.Model.Slope, again.Model.Offset);
            parts.RemoveAt(2);
        }
        if (parts.Count != 2 || parts[^1] is not ISingleFeaturePredictionTransformer<object> predictor) return null;
        (RegressionTreeEnsemble Trees, (double, double)? Platt)? found = predictor.Model switch
        {
            TreeEnsembleModelParametersBasedOnRegressionTree r when recalibrated is null => (r.TrainedTreeEnsemble, null),
            CalibratedModelParametersBase<FastTreeBinaryModelParameters, PlattCalibrator> c => (c.SubModel.TrainedTreeEnsemble, recalibrated ?? (c.Calibrator.Slope, c.Calibrator.Offset)),
            _ => null,
        };
        if (found is not { } f) return null;
        try
        {
            var inputType = parts[0].GetOutputSchema(schema)[predictor.FeatureColumnName].Type as VectorDataViewType;
            if (inputType is null || !inputType.IsKnownSize) return null;
            return new CompiledTrees(f.Trees, f.Platt, ml, parts[0], predictor.FeatureColumnName, inputType.Size, featureLength);
        }
        catch (Exception ex) when (ex is NotSupportedException or ArgumentException or InvalidOperationException)
        {
            return null;
        }
    }

    /// <summary>
    /// The model's outputs for many tasks at once, into <paramref name="into"/>: each task's scan of the
    /// bit vectors, else (trees of more than 64 leaves) tree by tree over all of them, so each tree's
    /// nodes are read from cache once per batch, and the walks of different tasks (independent of each
    /// other) overlap in the processor. The same numbers as <see cref="Predict"/>.
    /// </summary>
    public void PredictMany(IReadOnlyList<(string Handler, float[] Features)> tasks, Span<double> into) => PredictMany(tasks, into, scan: CanScan);

    /// <summary>True when the trees are kept as bit vectors too (every tree has at most 64 leaves): the router's batches scan them instead of walking.</summary>
    internal bool CanScan => _scanFeatures is not null;

    /// <summary>The trees of the model, each scored for every task.</summary>
    internal int TreeCount => _walkRoot.Length;

    /// <summary>
    /// The model's outputs for many tasks, by scanning the bit vectors, or by walking the trees (a
    /// test holds the two equal). A scan can keep the leaf each task reached in each tree
    /// (<paramref name="leaves"/>: <see cref="TreeCount"/> bytes a task, the leaf's place in its
    /// tree), from which <see cref="SplitsOnLeaves"/> counts a task's drivers without scoring it again.
    /// </summary>
    internal void PredictMany(IReadOnlyList<(string Handler, float[] Features)> tasks, Span<double> into, bool scan, Span<byte> leaves = default)
    {
        if (!leaves.IsEmpty && (!scan || leaves.Length < tasks.Count * TreeCount)) throw new ArgumentException("leaves are kept by a scan, a tree count a task", nameof(leaves));
        if (scan && !CanScan) throw new InvalidOperationException("these trees have no bit vectors");
        int n = tasks.Count, width = _inputLength;
        var inputs = System.Buffers.ArrayPool<float>.Shared.Rent(n * width);
        try
        {
            for (int i = 0; i < n; i++)
            {
                var x = inputs.AsSpan(i * width, width);
                InputFor(tasks[i].Handler).CopyTo(x);
                var f = tasks[i].Features;
                f.AsSpan(0, Math.Min(f.Length, _featureLength)).CopyTo(x);
            }
            into[..n].Fill(_bias);
            if (scan)
            {
                Span<ulong> reach = _walkRoot.Length <= 512 ? stackalloc ulong[_walkRoot.Length] : new ulong[_walkRoot.Length];
                for (int i = 0; i < n; i++)
                {
                    into[i] = Scan(inputs.AsSpan(i * width, width), reach);
                    if (leaves.IsEmpty) continue;
                    var kept = leaves.Slice(i * reach.Length, reach.Length);
                    for (int t = 0; t < reach.Length; t++) kept[t] = (byte)System.Numerics.BitOperations.TrailingZeroCount(reach[t]);
                }
            }
            else Walk(inputs, n, into);
            if (_platt is var (slope, offset))
                for (int i = 0; i < n; i++) into[i] = 1 / (1 + Math.Exp(slope * into[i] + offset));
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(inputs);
        }
    }

    /// <summary>One task's score (before calibration) from the bit vectors: the same sum, tree by tree in order, as a walk's.</summary>
    private double Scan(ReadOnlySpan<float> x, Span<ulong> reach)
    {
        _allLeaves.AsSpan().CopyTo(reach);
        var thresholds = _scanThreshold!;
        var trees = _scanTree!;
        var masks = _scanMask!;
        foreach (int f in _scanFeatures!)
        {
            float value = x[f];
            // Splits sorted by threshold: the task goes right (not x ≤ threshold; NaN always) at every one below its value.
            for (int k = _scanStart![f], end = _scanStart[f + 1]; k < end && !(value <= thresholds[k]); k++)
                reach[trees[k]] &= masks[k];
        }
        double sum = _bias;
        for (int t = 0; t < reach.Length; t++)
            sum += _weight[t] * _leafInOrder![_leafBase[t] + System.Numerics.BitOperations.TrailingZeroCount(reach[t])];
        return sum;
    }

    /// <summary>
    /// The least and the greatest output (calibrated, as <see cref="Predict"/>'s) of any task whose
    /// features lie in the box <paramref name="low"/>…<paramref name="high"/> (each feature's range,
    /// both ends included; a point where they are equal): per tree, the leaves a task in the box may
    /// reach (a split whose threshold lies inside the box keeps both sides), their least and greatest
    /// values summed over the trees. The bounds hold; they are not always reached (the trees' extremes
    /// need not fall on one task). Null when the trees are not kept as bit vectors.
    /// </summary>
    internal (double Low, double High)? Bounds(string handler, ReadOnlySpan<float> low, ReadOnlySpan<float> high)
    {
        if (!CanScan) return null;
        var input = InputFor(handler);
        int n = input.Length;
        Span<float> lo = n <= 256 ? stackalloc float[n] : new float[n];
        Span<float> hi = n <= 256 ? stackalloc float[n] : new float[n];
        input.CopyTo(lo);
        input.CopyTo(hi);
        int own = Math.Min(_featureLength, Math.Min(low.Length, high.Length));
        low[..own].CopyTo(lo);
        high[..own].CopyTo(hi);
        Span<ulong> reach = _walkRoot.Length <= 512 ? stackalloc ulong[_walkRoot.Length] : new ulong[_walkRoot.Length];
        _allLeaves.AsSpan().CopyTo(reach);
        var thresholds = _scanThreshold!;
        foreach (int f in _scanFeatures!)
        {
            float a = lo[f], b = hi[f];
            for (int k = _scanStart![f], end = _scanStart[f + 1]; k < end; k++)
            {
                float t = thresholds[k];
                if (!(a <= t)) reach[_scanTree![k]] &= _scanMask![k];            // the whole box goes right
                else if (b <= t) reach[_scanTree![k]] &= _scanRightMask![k];     // the whole box goes left
            }
        }
        double least = _bias, most = _bias;
        for (int tree = 0; tree < reach.Length; tree++)
        {
            double w = _weight[tree], min = double.PositiveInfinity, max = double.NegativeInfinity;
            for (ulong bits = reach[tree]; bits != 0; bits &= bits - 1)
            {
                double v = w * _leafInOrder![_leafBase[tree] + System.Numerics.BitOperations.TrailingZeroCount(bits)];
                if (v < min) min = v;
                if (v > max) max = v;
            }
            least += min;
            most += max;
        }
        if (_platt is not var (slope, offset)) return (least, most);
        double p = 1 / (1 + Math.Exp(slope * least + offset)), q = 1 / (1 + Math.Exp(slope * most + offset));
        return p <= q ? (p, q) : (q, p);
    }

    /// <summary>
    /// Adds to <paramref name="into"/> the thresholds of the splits on feature <paramref name="feature"/>
    /// (of the task's part of the input) that lie inside <paramref name="low"/>…<paramref name="high"/>
    /// (low ≤ threshold &lt; high): where tasks in that range part ways in some tree. Nothing when the
    /// trees are not kept as bit vectors.
    /// </summary>
    internal void ThresholdsInside(int feature, float low, float high, List<float> into)
    {
        if (!CanScan || (uint)feature >= (uint)_featureLength) return;
        var thresholds = _scanThreshold!;
        for (int k = _scanStart![feature], end = _scanStart[feature + 1]; k < end; k++)
        {
            float t = thresholds[k];
            if (t >= high) break;
            if (t >= low) into.Add(t);
        }
    }

    /// <summary>The walks of a batch (trees of more than 64 leaves): scores into <paramref name="into"/>, which holds the bias.</summary>
    private void Walk(float[] inputs, int n, Span<double> into)
    {
        int width = _inputLength;
        {
            ref var nodes = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_nodes);
            ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(inputs);
            // Four walks at a time, independent of each other, so that the processor overlaps their
            // loads: the walks of four tasks through one tree (the tree's nodes read from cache once
            // per four tasks), and for the last tasks (fewer than four) the walks of one task through
            // four trees. Each task's trees are added in order, so the sum is the same either way.
            int grouped = n & ~3;
            for (int t = 0; t < _walkRoot.Length; t++)
            {
                int root = _walkRoot[t], firstLeaf = _firstLeaf[t];
                double weight = _weight[t];
                for (int i = 0; i < grouped; i += 4)
                {
                    int a = root, b = root, c = root, d = root;
                    // Until all four reached their leaves (a leaf steps to itself): FastTree grows its
                    // trees leaf by leaf, lopsided, and most paths end well above the tree's depth.
                    while ((a < firstLeaf) | (b < firstLeaf) | (c < firstLeaf) | (d < firstLeaf))
                    {
                        a = Step(ref nodes, ref x0, i * width, a);
                        b = Step(ref nodes, ref x0, (i + 1) * width, b);
                        c = Step(ref nodes, ref x0, (i + 2) * width, c);
                        d = Step(ref nodes, ref x0, (i + 3) * width, d);
                    }
                    into[i] += weight * _value[a];
                    into[i + 1] += weight * _value[b];
                    into[i + 2] += weight * _value[c];
                    into[i + 3] += weight * _value[d];
                }
            }
            for (int i = grouped; i < n; i++)
            {
                int at = i * width, t = 0;
                double sum = into[i];
                for (; t + 4 <= _walkRoot.Length; t += 4)
                {
                    int a = _walkRoot[t], b = _walkRoot[t + 1], c = _walkRoot[t + 2], d = _walkRoot[t + 3];
                    int la = _firstLeaf[t], lb = _firstLeaf[t + 1], lc = _firstLeaf[t + 2], ld = _firstLeaf[t + 3];
                    while ((a < la) | (b < lb) | (c < lc) | (d < ld))
                    {
                        a = Step(ref nodes, ref x0, at, a);
                        b = Step(ref nodes, ref x0, at, b);
                        c = Step(ref nodes, ref x0, at, c);
                        d = Step(ref nodes, ref x0, at, d);
                    }
                    sum += _weight[t] * _value[a];
                    sum += _weight[t + 1] * _value[b];
                    sum += _weight[t + 2] * _value[c];
                    sum += _weight[t + 3] * _value[d];
                }
                for (; t < _walkRoot.Length; t++)
                {
                    int a = _walkRoot[t];
                    while (a < _firstLeaf[t]) a = Step(ref nodes, ref x0, at, a);
                    sum += _weight[t] * _value[a];
                }
                into[i] = sum;
            }
        }
    }

    /// <summary>One step of a walk: the child of <paramref name="node"/> the task at <paramref name="at"/> goes to (right when not x ≤ threshold: NaN goes right, as in ML.NET's trees).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static int Step(ref Node nodes, ref float x0, int at, int node)
    {
        ref var n = ref System.Runtime.CompilerServices.Unsafe.Add(ref nodes, node);
        bool right = !(System.Runtime.CompilerServices.Unsafe.Add(ref x0, at + n.Feature) <= n.Threshold);
        return System.Runtime.CompilerServices.Unsafe.Add(ref n.Left, System.Runtime.CompilerServices.Unsafe.As<bool, byte>(ref right));
    }

    /// <summary>
    /// How often each input feature was split on along the paths one task takes through the trees,
    /// into <paramref name="counts"/> (cleared first; index: the task's feature vector, and
    /// <see cref="FeatureLength"/> for the handler's encoding): the features that drove its prediction.
    /// </summary>
    /// <param name="trees">How many of the first trees to walk: boosting's first trees carry most of a prediction (each later one corrects what is left).</param>
    public void SplitsOnPath(string handler, ReadOnlySpan<float> features, Span<int> counts, int trees = int.MaxValue)
        => SplitsOnPath(handler, features, counts, trees, scan: CanScan);

    /// <summary><see cref="SplitsOnPath(string, ReadOnlySpan{float}, Span{int}, int)"/> from the leaves a scan reaches (each leaf's path kept), or by walking.</summary>
    internal void SplitsOnPath(string handler, ReadOnlySpan<float> features, Span<int> counts, int trees, bool scan)
    {
        if (scan && !CanScan) throw new InvalidOperationException("these trees have no bit vectors");
        var input = InputFor(handler);
        Span<float> x = input.Length <= 256 ? stackalloc float[input.Length] : new float[input.Length];
        input.CopyTo(x);
        features[..Math.Min(features.Length, _featureLength)].CopyTo(x);
        counts[..(_featureLength + 1)].Clear();
        if (scan)
        {
            Span<ulong> reach = _walkRoot.Length <= 512 ? stackalloc ulong[_walkRoot.Length] : new ulong[_walkRoot.Length];
            Scan(x, reach);
            for (int t = 0; t < Math.Min(trees, reach.Length); t++)
            {
                int leaf = _leafBase[t] + System.Numerics.BitOperations.TrailingZeroCount(reach[t]);
                for (int k = _pathStart![leaf]; k < _pathStart[leaf + 1]; k++) counts[Math.Min(_pathFeature![k], _featureLength)]++;
            }
            return;
        }
        for (int t = 0; t < Math.Min(trees, _walkRoot.Length); t++)
        {
            int node = _walkRoot[t], firstLeaf = _firstLeaf[t];
            while (node < firstLeaf)
            {
                var split = _nodes[node];
                counts[Math.Min(split.Feature, _featureLength)]++;
                node = x[split.Feature] <= split.Threshold ? split.Left : split.Right;
            }
        }
    }

    /// <summary>
    /// <see cref="SplitsOnPath(string, ReadOnlySpan{float}, Span{int}, int)"/> from the leaves a
    /// scan kept for one task (<see cref="PredictMany(IReadOnlyList{ValueTuple{string, float[]}}, Span{double}, bool, Span{byte})"/>).
    /// </summary>
    internal void SplitsOnLeaves(ReadOnlySpan<byte> leaves, Span<int> counts, int trees)
    {
        counts[..(_featureLength + 1)].Clear();
        for (int t = 0; t < Math.Min(trees, Math.Min(leaves.Length, TreeCount)); t++)
        {
            int leaf = _leafBase[t] + leaves[t];
            for (int k = _pathStart![leaf]; k < _pathStart[leaf + 1]; k++) counts[Math.Min(_pathFeature![k], _featureLength)]++;
        }
    }

    /// <summary>The length of the task's part of the input (<see cref="ArgumentSchema.InputLength"/>); the handler's encoding follows.</summary>
    public int FeatureLength => _featureLength;

    /// <summary>The model's output for one task: the regression's score, or the calibrated probability.</summary>
    public double Predict(string handler, ReadOnlySpan<float> features)
    {
        var input = InputFor(handler);
        // The input is the handler's (features zero) with the task's features over its first part.
        Span<float> x = input.Length <= 256 ? stackalloc float[input.Length] : new float[input.Length];
        input.CopyTo(x);
        features[..Math.Min(features.Length, _featureLength)].CopyTo(x);
        double sum;
        if (CanScan)
        {
            Span<ulong> reach = _walkRoot.Length <= 512 ? stackalloc ulong[_walkRoot.Length] : new ulong[_walkRoot.Length];
            sum = Scan(x, reach);
        }
        else
        {
            sum = _bias;
            ref var nodes = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_nodes);
            ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(x);
            for (int t = 0; t < _walkRoot.Length; t++)
            {
                int a = _walkRoot[t];
                while (a < _firstLeaf[t]) a = Step(ref nodes, ref x0, 0, a);
                sum += _weight[t] * _value[a];
            }
        }
        return _platt is var (slope, offset) ? 1 / (1 + Math.Exp(slope * sum + offset)) : sum;
    }

    private float[] InputFor(string handler)
    {
        lock (_inputByHandler)
        {
            if (_inputByHandler.TryGetValue(handler, out var input)) return input;
            var view = _featurizer.Transform(_ml.Data.LoadFromEnumerable(new[] { new Example { Handler = handler, Features = new float[_featureLength] } }, ModelTrainer.SchemaOf(_featureLength)));
            input = view.GetColumn<VBuffer<float>>(view.Schema[_inputColumn]).First().DenseValues().ToArray();
            if (input.Length != _inputLength) throw new InvalidOperationException($"the featurizer made {input.Length} inputs, the trees read {_inputLength}");
            _inputByHandler[handler] = input;
            return input;
        }
    }
}
