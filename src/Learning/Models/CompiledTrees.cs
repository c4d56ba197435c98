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
