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
    // All trees' nodes end to end: a tree starts at _root[t]; a child below 0 is the leaf ~child of the tree (leaves at _leafBase[t]).
    private readonly int[] _root, _leafBase, _feature, _left, _right;
    private readonly float[] _threshold;
    // The same trees laid out for walking many tasks in lockstep: every node, leaves included, has a
    // split (feature, threshold) and two children side by side (left at 2·node, right at 2·node + 1);
    // a leaf's children are itself, so a walk that reached it stays there. Each tree is walked its
    // depth in steps, no branch taken on the data, and the walks of four tasks interleave.
    private readonly Split[] _splits;
    private readonly int[] _children, _walkRoot, _depth, _firstLeaf;
    private readonly double[] _value;   // a leaf's value (0 for a split)

    private readonly record struct Split(int Feature, float Threshold);
    private readonly double[] _leaf, _weight;
    private readonly double _bias;
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
        foreach (var t in ensemble.Trees) { nodes += t.NumberOfNodes; leaves += t.NumberOfLeaves; }
        (_root, _leafBase, _weight) = (new int[trees], new int[trees], new double[trees]);
        (_feature, _left, _right, _threshold, _leaf) = (new int[nodes], new int[nodes], new int[nodes], new float[nodes], new double[leaves]);
        int n = 0, l = 0;
        for (int i = 0; i < trees; i++)
        {
            var t = ensemble.Trees[i];
            if (t.CategoricalSplitFlags.Any(c => c)) throw new NotSupportedException("categorical splits");
            (_root[i], _leafBase[i], _weight[i]) = (t.NumberOfNodes == 0 ? -1 : n, l, ensemble.TreeWeights[i]);
            for (int k = 0; k < t.NumberOfNodes; k++, n++)
            {
                _feature[n] = t.NumericalSplitFeatureIndexes[k];
                _threshold[n] = t.NumericalSplitThresholds[k];
                _left[n] = t.LeftChild[k] >= 0 ? _root[i] + t.LeftChild[k] : t.LeftChild[k];
                _right[n] = t.RightChild[k] >= 0 ? _root[i] + t.RightChild[k] : t.RightChild[k];
                if (_feature[n] >= inputLength) throw new NotSupportedException("a split on a feature past the input");
            }
            for (int k = 0; k < t.NumberOfLeaves; k++) _leaf[l++] = t.LeafValues[k];
        }
        int all = nodes + leaves;
        (_splits, _children, _value, _walkRoot, _depth, _firstLeaf) = (new Split[all], new int[2 * all], new double[all], new int[trees], new int[trees], new int[trees]);
        for (int t = 0, next = 0; t < trees; t++)
        {
            var tree = ensemble.Trees[t];
            int splitsAt = next, leavesAt = next + tree.NumberOfNodes;
            // A child below 0 is leaf ~child; here every node has an index: leaves after the tree's splits.
            int Index(int child) => child >= 0 ? splitsAt + child : leavesAt + ~child;
            for (int k = 0; k < tree.NumberOfNodes; k++)
            {
                _splits[splitsAt + k] = new Split(tree.NumericalSplitFeatureIndexes[k], tree.NumericalSplitThresholds[k]);
                (_children[2 * (splitsAt + k)], _children[2 * (splitsAt + k) + 1]) = (Index(tree.LeftChild[k]), Index(tree.RightChild[k]));
            }
            for (int k = 0; k < tree.NumberOfLeaves; k++)
            {
                int leaf = leavesAt + k;
                _splits[leaf] = new Split(0, float.PositiveInfinity);
                (_children[2 * leaf], _children[2 * leaf + 1]) = (leaf, leaf);
                _value[leaf] = tree.LeafValues[k];
            }
            _walkRoot[t] = tree.NumberOfNodes == 0 ? leavesAt : splitsAt;
            _firstLeaf[t] = leavesAt;
            _depth[t] = tree.NumberOfNodes == 0 ? 0 : Depth(tree, 0);
            next = leavesAt + tree.NumberOfLeaves;
        }

        static int Depth(RegressionTree tree, int node)
            => 1 + Math.Max(tree.LeftChild[node] >= 0 ? Depth(tree, tree.LeftChild[node]) : 0, tree.RightChild[node] >= 0 ? Depth(tree, tree.RightChild[node]) : 0);
        _bias = ensemble.Bias;
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
        if (parts.Count != 2 || parts[^1] is not ISingleFeaturePredictionTransformer<object> predictor) return null;
        (RegressionTreeEnsemble Trees, (double, double)? Platt)? found = predictor.Model switch
        {
            TreeEnsembleModelParametersBasedOnRegressionTree r => (r.TrainedTreeEnsemble, null),
            CalibratedModelParametersBase<FastTreeBinaryModelParameters, PlattCalibrator> c => (c.SubModel.TrainedTreeEnsemble, (c.Calibrator.Slope, c.Calibrator.Offset)),
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
    /// The model's outputs for many tasks at once, into <paramref name="into"/>: tree by tree over all
    /// of them, so each tree's nodes are read from cache once per batch, and the walks of different
    /// tasks (independent of each other) overlap in the processor. The same numbers as <see cref="Predict"/>.
    /// </summary>
    public void PredictMany(IReadOnlyList<(string Handler, float[] Features)> tasks, Span<double> into)
    {
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
            ref var splits = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_splits);
            ref var children = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(_children);
            ref float x0 = ref System.Runtime.InteropServices.MemoryMarshal.GetArrayDataReference(inputs);
            for (int t = 0; t < _walkRoot.Length; t++)
            {
                int root = _walkRoot[t], depth = _depth[t], firstLeaf = _firstLeaf[t];
                double weight = _weight[t];
                int i = 0;
                for (; i + 4 <= n; i += 4)
                {
                    int a = root, b = root, c = root, d = root;
                    for (int step = 0; step < depth; step++)
                    {
                        a = Step(ref splits, ref children, ref x0, i * width, a);
                        b = Step(ref splits, ref children, ref x0, (i + 1) * width, b);
                        c = Step(ref splits, ref children, ref x0, (i + 2) * width, c);
                        d = Step(ref splits, ref children, ref x0, (i + 3) * width, d);
                    }
                    into[i] += weight * _value[a];
                    into[i + 1] += weight * _value[b];
                    into[i + 2] += weight * _value[c];
                    into[i + 3] += weight * _value[d];
                }
                for (; i < n; i++)
                {
                    int a = root;
                    for (int step = 0; step < depth && a < firstLeaf; step++) a = Step(ref splits, ref children, ref x0, i * width, a);   // one walk: it may stop at its leaf
                    into[i] += weight * _value[a];
                }
            }
            if (_platt is var (slope, offset))
                for (int i = 0; i < n; i++) into[i] = 1 / (1 + Math.Exp(slope * into[i] + offset));
        }
        finally
        {
            System.Buffers.ArrayPool<float>.Shared.Return(inputs);
        }
    }

    /// <summary>One step of a walk: the child of <paramref name="node"/> the task at <paramref name="at"/> goes to (right when not x ≤ threshold: NaN goes right, as in ML.NET's trees).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static int Step(ref Split splits, ref int children, ref float x0, int at, int node)
    {
        var split = System.Runtime.CompilerServices.Unsafe.Add(ref splits, node);
        bool right = !(System.Runtime.CompilerServices.Unsafe.Add(ref x0, at + split.Feature) <= split.Threshold);
        return System.Runtime.CompilerServices.Unsafe.Add(ref children, 2 * node + System.Runtime.CompilerServices.Unsafe.As<bool, byte>(ref right));
    }

    /// <summary>
    /// How often each input feature was split on along the paths one task takes through the trees,
    /// into <paramref name="counts"/> (cleared first; index: the task's feature vector, and
    /// <see cref="FeatureLength"/> for the handler's encoding): the features that drove its prediction.
    /// </summary>
    /// <param name="trees">How many of the first trees to walk: boosting's first trees carry most of a prediction (each later one corrects what is left).</param>
    public void SplitsOnPath(string handler, ReadOnlySpan<float> features, Span<int> counts, int trees = int.MaxValue)
    {
        var input = InputFor(handler);
        Span<float> x = input.Length <= 256 ? stackalloc float[input.Length] : new float[input.Length];
        input.CopyTo(x);
        features[..Math.Min(features.Length, _featureLength)].CopyTo(x);
        counts[..(_featureLength + 1)].Clear();
        for (int t = 0; t < Math.Min(trees, _walkRoot.Length); t++)
        {
            int node = _walkRoot[t], firstLeaf = _firstLeaf[t];
            while (node < firstLeaf)
            {
                var split = _splits[node];
                counts[Math.Min(split.Feature, _featureLength)]++;
                node = _children[2 * node + (x[split.Feature] <= split.Threshold ? 0 : 1)];
            }
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
        double sum = _bias;
        for (int t = 0; t < _root.Length; t++)
        {
            int node = _root[t];
            if (node < 0) { sum += _weight[t] * _leaf[_leafBase[t]]; continue; }
            while (node >= 0) node = x[_feature[node]] <= _threshold[node] ? _left[node] : _right[node];
            sum += _weight[t] * _leaf[_leafBase[t] + ~node];
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
