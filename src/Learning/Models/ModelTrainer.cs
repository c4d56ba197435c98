using System.Globalization;
using System.Text.Json;
using Microsoft.ML;
using Microsoft.ML.Data;
using Microsoft.ML.Trainers.FastTree;
using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;

namespace TaskMesh.Learning.Models;

/// <summary>One training example: a task's features and handler, and what happened on a layer.</summary>
internal sealed class Example
{
    /// <summary>The fixed features, then the handler's argument slots (<see cref="ArgumentSchema.InputLength"/> in all; the data views say how long: <see cref="ModelTrainer.SchemaOf"/>).</summary>
    public float[] Features { get; set; } = [];

    public string Handler { get; set; } = "";

    /// <summary>log10(1 + duration in ms).</summary>
    public float LogDuration { get; set; }

    /// <summary>The attempt on the layer succeeded (with enough confidence: it did not have to escalate).</summary>
    public bool Succeeded { get; set; }
}

/// <summary>What a duration model predicts.</summary>
internal sealed class DurationPrediction
{
    public float Score { get; set; }
}

/// <summary>What a success model predicts (calibrated probability).</summary>
internal sealed class SuccessPrediction
{
    public bool PredictedLabel { get; set; }
    public float Probability { get; set; }
}

/// <summary>Held-out accuracy of one layer's models.</summary>
/// <param name="Layer">The layer.</param>
/// <param name="Rows">Examples (train + test).</param>
/// <param name="DurationMaeMs">Mean absolute error of predicted durations, ms (null: no duration model).</param>
/// <param name="DurationR2">R² of predicted log durations (null: no duration model).</param>
/// <param name="SuccessAuc">Area under the ROC curve of predicted success (null: no success model).</param>
/// <param name="CalibrationError">Expected calibration error of predicted success, 10 bins (null: no success model).</param>
/// <param name="SuccessRate">When every example on the layer had one outcome (no classifier can be trained): the smoothed success rate, (successes + 1) / (examples + 2), used as the predicted confidence.</param>
public sealed record LayerAccuracy(string Layer, int Rows, double? DurationMaeMs, double? DurationR2, double? SuccessAuc, double? CalibrationError, double? SuccessRate = null);

/// <summary>
/// Trains, per layer, a duration regression (FastTree on log10(1 + ms)) and a success classifier
/// (FastTree, Platt-calibrated: its probability is the task's predicted confidence on that layer)
/// from the run store's kept rows with features, on one thread, with a fixed seed; 20 % of the
/// rows (by a fixed shuffle) are held out to measure accuracy. A layer with fewer than
/// <see cref="MinRows"/> examples, or whose examples are all of one outcome, gets no success model
/// (the router uses its cold-start rules there) — except that a layer with enough examples all of
/// one outcome predicts their smoothed rate (<see cref="LayerAccuracy.SuccessRate"/>).
/// </summary>
public static class ModelTrainer
{
    /// <summary>Examples a layer needs for its models.</summary>
    public const int MinRows = 50;

    // Boosted trees per model, and their learning rate. 50 trees at 0.3 predict as well as 100 at
    // FastTree's default 0.2 on every world of the routing bench (R² and AUC within 0.01–0.03, the
    // same routing costs) and cost half as much per decision: every new kind of task is scored on
    // every layer with both models.
    private const int Trees = 50;
    private const double LearningRate = 0.3;

    // The success model is smoother: many shallow trees learning slowly, each leaf holding a share of
    // the examples (about 3 %, at least 5, at most 50). Where a layer's failure rises steeply with a
    // size, deeper trees fitted to a few examples near the edge put a step there and call the tasks
    // just before it sure to succeed; the router then starts them on a layer whose true success is
    // under the confidence floor. On the routing bench's seven worlds under `auto`, with the held-out
    // calibration below and the router's kinds cut at the floor, escalations went from 1.11–6.31× the
    // oracle's to 0.73–1.83× over three seeds, at the same success and cost (bench/README.md, routing).
    private const int SuccessTrees = 100;
    private const double SuccessLearningRate = 0.1;
    private const int SuccessLeaves = 4;

    /// <summary>Held-out examples of each outcome a layer needs for its success model to be calibrated on them.</summary>
    private const int MinHeldOutcomes = 20;

    /// <summary>Most argument features a model reads per handler unless told otherwise (<c>[routing] max_argument_features</c>).</summary>
    public const int DefaultArgumentFeatures = 8;

    /// <summary>The data view schema of examples whose feature vectors are <paramref name="length"/> long.</summary>
    internal static SchemaDefinition SchemaOf(int length)
    {
        var schema = SchemaDefinition.Create(typeof(Example));
        schema[nameof(Example.Features)].ColumnType = new VectorDataViewType(NumberDataViewType.Single, length);
        return schema;
    }

    /// <summary>Which argument features the models of <paramref name="rows"/> will read (<see cref="ArgumentSchema.Select"/>), from the rows as the last layer saw them.</summary>
    internal static ArgumentSchema SelectArguments(IReadOnlyList<TrainingRow> rows, int limit)
    {
        // The examples the models will learn from (ExamplesOf's): the last layer sees the outcome, a
        // first layer the task escalated from a failure.
        var examples = new List<(string, string, IReadOnlyList<KeyValuePair<string, double>>, bool, float)>(rows.Count);
        foreach (var r in rows)
        {
            if (r.Features.Length < FeatureExtractor.LayerFeatures || r.Status is "skipped" or "cancelled") continue;
            var stated = Engine.Handlers.ArgumentFeatures.FromJson(r.ArgumentFeatures);
            bool moved = r.Escalations > 0 && r.InitialLayer != r.FinalLayer;
            examples.Add((r.Handler, r.FinalLayer, stated, r.Status == "succeeded", LogDuration(r.LastAttemptMs ?? (moved ? null : r.DurationMs))));
            if (moved) examples.Add((r.Handler, r.InitialLayer, stated, false, LogDuration(r.FirstAttemptMs)));
        }
        return ArgumentSchema.Select(examples, limit);
    }

    /// <summary>The examples a store's rows give, by layer: the last layer sees the outcome; a first layer the task escalated from sees a failure.</summary>
    internal static Dictionary<string, List<Example>> ExamplesOf(IEnumerable<TrainingRow> rows) => ExamplesOf(rows, ArgumentSchema.None);

    /// <summary>The examples, each with its handler's argument slots under <paramref name="schema"/>.</summary>
    internal static Dictionary<string, List<Example>> ExamplesOf(IEnumerable<TrainingRow> rows, ArgumentSchema schema)
    {
        var byLayer = new Dictionary<string, List<Example>>(StringComparer.Ordinal);
        foreach (var r in rows)
        {
            if (r.Features.Length < FeatureExtractor.LayerFeatures || r.Status is "skipped" or "cancelled") continue;
            var features = new float[schema.InputLength];
            r.Features.AsSpan(0, FeatureExtractor.LayerFeatures).CopyTo(features);
            if (schema.Slots > 0) schema.Fill(r.Handler, Engine.Handlers.ArgumentFeatures.FromJson(r.ArgumentFeatures), features.AsSpan(FeatureExtractor.LayerFeatures));
            List<Example> Of(string layer) => byLayer.TryGetValue(layer, out var l) ? l : byLayer[layer] = new List<Example>();
            bool moved = r.Escalations > 0 && r.InitialLayer != r.FinalLayer;
            // A layer's durations are its own attempts': a task that moved summed two layers' (rows
            // stored before each attempt's duration was kept give none then).
            double? last = r.LastAttemptMs ?? (moved ? null : r.DurationMs);
            Of(r.FinalLayer).Add(new Example
            {
                Features = features,
                Handler = r.Handler,
                LogDuration = LogDuration(last),
                Succeeded = r.Status == "succeeded",
            });
            if (moved)
                Of(r.InitialLayer).Add(new Example { Features = features, Handler = r.Handler, LogDuration = LogDuration(r.FirstAttemptMs), Succeeded = false });
        }
        return byLayer;
    }

    private static float LogDuration(double? ms) => ms is double d ? (float)Math.Log10(1 + Math.Max(0, d)) : float.NaN;

    /// <summary>Trains every layer's models from <paramref name="rows"/>; returns them with their accuracy.</summary>
    /// <param name="rows">The store's kept rows with features.</param>
    /// <param name="seed">The seed of the shuffle and the trainers.</param>
    /// <param name="argumentFeatures">Most argument features the models read per handler (0: none, as before they existed).</param>
    public static TrainedModels Train(IEnumerable<TrainingRow> rows, int seed = 1, int argumentFeatures = DefaultArgumentFeatures)
    {
        var ml = new MLContext(seed);
        var list = rows as IReadOnlyList<TrainingRow> ?? rows.ToList();
        var arguments = SelectArguments(list, argumentFeatures);
        var schemaOf = SchemaOf(arguments.InputLength);
        var layers = new Dictionary<string, (ITransformer? Duration, ITransformer? Success, DataViewSchema Schema)>(StringComparer.Ordinal);
        var accuracy = new List<LayerAccuracy>();
        int total = 0;
        foreach (var (layer, all) in ExamplesOf(list, arguments).OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            total += all.Count;
            if (all.Count < MinRows) { accuracy.Add(new LayerAccuracy(layer, all.Count, null, null, null, null)); continue; }
            var (train, test) = Split(all, seed);
            ITransformer? duration = null, success = null;
            double? mae = null, r2 = null, auc = null, ece = null;
            var timed = train.Where(e => !float.IsNaN(e.LogDuration)).ToList();
            var timedTest = test.Where(e => !float.IsNaN(e.LogDuration)).ToList();
            if (timed.Count >= MinRows / 2 && timedTest.Count > 1)
            {
                var data = ml.Data.LoadFromEnumerable(timed, schemaOf);
                duration = Featurize(ml).Append(ml.Regression.Trainers.FastTree(new FastTreeRegressionTrainer.Options
                {
                    LabelColumnName = nameof(Example.LogDuration), FeatureColumnName = "Input", NumberOfThreads = 1,
                    NumberOfTrees = Trees, LearningRate = LearningRate, NumberOfLeaves = 16, MinimumExampleCountPerLeaf = 5,
                })).Fit(data);
                var predicted = duration.Transform(ml.Data.LoadFromEnumerable(timedTest, schemaOf));
                var scores = ml.Data.CreateEnumerable<DurationPrediction>(predicted, reuseRowObject: false).Select(p => (double)p.Score).ToList();
                mae = timedTest.Zip(scores, (e, s) => Math.Abs(Math.Pow(10, e.LogDuration) - Math.Pow(10, s))).Average();
                r2 = ml.Regression.Evaluate(predicted, nameof(Example.LogDuration)).RSquared;
            }
            if (train.Any(e => e.Succeeded) && train.Any(e => !e.Succeeded) && test.Any(e => e.Succeeded) && test.Any(e => !e.Succeeded))
            {
                var data = ml.Data.LoadFromEnumerable(train, schemaOf);
                var trees = Featurize(ml).Append(ml.BinaryClassification.Trainers.FastTree(new FastTreeBinaryTrainer.Options
                {
                    LabelColumnName = nameof(Example.Succeeded), FeatureColumnName = "Input", NumberOfThreads = 1,
                    NumberOfTrees = SuccessTrees, LearningRate = SuccessLearningRate, NumberOfLeaves = SuccessLeaves,
                    MinimumExampleCountPerLeaf = Math.Clamp(train.Count / 30, 5, 50),
                })).Fit(data);
                // Calibrated again on the held-out examples: the trainer's own Platt scaling is fitted to
                // the examples the trees were grown on, and is sure of itself where they are few (next to
                // a steep failure edge). The held-out fit is what the confidence floor is compared with —
                // when they hold enough of both outcomes to fit it; a layer that almost never fails keeps
                // the trainer's (three failures in the held-out fifth would set the slope at random).
                var held = ml.Data.LoadFromEnumerable(test, schemaOf);
                int heldFailures = test.Count(e => !e.Succeeded);
                success = Math.Min(heldFailures, test.Count - heldFailures) >= MinHeldOutcomes
                    ? trees.Append(ml.BinaryClassification.Calibrators.Platt(labelColumnName: nameof(Example.Succeeded)).Fit(trees.Transform(held)))
                    : trees;
                var predicted = success.Transform(held);
                auc = ml.BinaryClassification.Evaluate(predicted, nameof(Example.Succeeded)).AreaUnderRocCurve;
                var probs = ml.Data.CreateEnumerable<SuccessPrediction>(predicted, reuseRowObject: false).Select(p => (double)p.Probability).ToList();
                ece = CalibrationError(probs, test.Select(e => e.Succeeded).ToList());
            }
            double? rate = null;
            if (success is null && (all.All(e => e.Succeeded) || all.All(e => !e.Succeeded)))
                rate = (all.Count(e => e.Succeeded) + 1.0) / (all.Count + 2.0);
            layers[layer] = (duration, success, ml.Data.LoadFromEnumerable(all, schemaOf).Schema);
            accuracy.Add(new LayerAccuracy(layer, all.Count, mae, r2, auc, ece, rate));
        }
        return new TrainedModels(ml, layers, accuracy, total, arguments);
    }

    /// <summary>Handler one-hot (hashed: unseen handlers get a bucket too) beside the numeric features.</summary>
    private static IEstimator<ITransformer> Featurize(MLContext ml)
        => ml.Transforms.Categorical.OneHotHashEncoding("HandlerKey", nameof(Example.Handler), numberOfBits: 6)
            .Append(ml.Transforms.Concatenate("Input", nameof(Example.Features), "HandlerKey"));

    private static (List<Example> Train, List<Example> Test) Split(List<Example> all, int seed)
    {
        var shuffled = new List<Example>(all);
        var rng = new Random(seed);
        for (int i = shuffled.Count - 1; i > 0; i--)
        {
            int j = rng.Next(i + 1);
            (shuffled[i], shuffled[j]) = (shuffled[j], shuffled[i]);
        }
        int test = Math.Max(2, shuffled.Count / 5);
        return (shuffled.Skip(test).ToList(), shuffled.Take(test).ToList());
    }

    /// <summary>Expected calibration error over 10 equal-width bins of predicted probability.</summary>
    internal static double CalibrationError(IReadOnlyList<double> predicted, IReadOnlyList<bool> actual)
    {
        double error = 0;
        for (int b = 0; b < 10; b++)
        {
            var idx = Enumerable.Range(0, predicted.Count).Where(i => Math.Min(9, (int)(predicted[i] * 10)) == b).ToList();
            if (idx.Count == 0) continue;
            double meanP = idx.Average(i => predicted[i]);
            double rate = idx.Count(i => actual[i]) / (double)idx.Count;
            error += idx.Count / (double)predicted.Count * Math.Abs(meanP - rate);
        }
        return error;
    }
}

/// <summary>A trained set of per-layer models, with their held-out accuracy.</summary>
public sealed class TrainedModels
{
    private readonly MLContext _ml;
    private readonly Dictionary<string, (ITransformer? Duration, ITransformer? Success, DataViewSchema Schema)> _layers;

    internal TrainedModels(MLContext ml, Dictionary<string, (ITransformer?, ITransformer?, DataViewSchema)> layers, IReadOnlyList<LayerAccuracy> accuracy, int rows, ArgumentSchema arguments)
    {
        _ml = ml;
        _layers = layers;
        Arguments = arguments;
        _schemaOf = ModelTrainer.SchemaOf(arguments.InputLength);
        foreach (var (layer, (duration, success, schema)) in layers)
            _compiled[layer] = (CompiledTrees.TryCompile(ml, duration, schema, arguments.InputLength), CompiledTrees.TryCompile(ml, success, schema, arguments.InputLength));
        Accuracy = accuracy;
        Rows = rows;
    }

    private readonly SchemaDefinition _schemaOf;

    /// <summary>The argument features the models read, per handler (<see cref="ArgumentSchema.None"/> for models trained before they existed).</summary>
    public ArgumentSchema Arguments { get; }

    /// <summary>The length of the models' input (<see cref="ArgumentSchema.InputLength"/>): what <see cref="FeatureExtractor.ModelInput"/> gives.</summary>
    public int InputLength => Arguments.InputLength;

    /// <summary>Held-out accuracy per layer.</summary>
    public IReadOnlyList<LayerAccuracy> Accuracy { get; }

    /// <summary>Examples trained and tested on.</summary>
    public int Rows { get; }

    /// <summary>Layers that have a duration or a success model.</summary>
    public IEnumerable<string> Layers => _layers.Keys;

    /// <summary>Predicted duration (ms) of a task with <paramref name="features"/> on <paramref name="layer"/>, or null without a model.</summary>
    public double? PredictDurationMs(string layer, string handler, float[] features)
    {
        if (!_layers.TryGetValue(layer, out var m) || m.Duration is null) return null;
        if (_compiled[layer].Duration is { } trees) return Math.Max(0, Math.Pow(10, trees.Predict(handler, features)) - 1);
        return EngineDurationMs(layer, handler, features);
    }

    /// <summary>
    /// The first trees whose paths <see cref="DriversOf(string, string, float[], int)"/> counts: in a boosted ensemble the first
    /// trees carry the largest corrections. Measured on the bench's world.json when drivers were found
    /// by walking the trees (before the bit-vector scan): a decision 10.4 µs with all 50, 8.7 without
    /// drivers, 9.2–9.5 with the first 20.
    /// </summary>
    internal const int DriverTrees = 20;

    /// <summary>
    /// The features that drove a prediction on <paramref name="layer"/>: those its success model (else
    /// its duration model) split on most along the task's paths through its first
    /// <see cref="DriverTrees"/> trees, most first, at most
    /// <paramref name="most"/>, with the task's value of each (as the model reads it). Empty without a
    /// compiled model.
    /// </summary>
    public IReadOnlyList<(string Name, float Value)> DriversOf(string layer, string handler, float[] features, int most = 3)
    {
        if (DriverTreesOf(layer) is not { } trees) return [];
        int length = trees.FeatureLength;
        Span<int> counts = length < 256 ? stackalloc int[length + 1] : new int[length + 1];
        trees.SplitsOnPath(handler, features, counts, DriverTrees);
        return MostSplitOn(handler, features, counts, length, most);
    }

    /// <summary>
    /// <see cref="DriversOf(string, string, float[], int)"/> from the leaves <see cref="PredictMany(string, IReadOnlyList{ValueTuple{string, float[]}}, out byte[])"/>
    /// kept for the task (its <see cref="CompiledTrees.TreeCount"/> bytes): the same drivers, without scoring the task again.
    /// </summary>
    internal IReadOnlyList<(string Name, float Value)> DriversOf(string layer, string handler, float[] features, ReadOnlySpan<byte> leaves, int most = 3)
    {
        if (DriverTreesOf(layer) is not { } trees) return [];
        int length = trees.FeatureLength;
        Span<int> counts = length < 256 ? stackalloc int[length + 1] : new int[length + 1];
        trees.SplitsOnLeaves(leaves, counts, DriverTrees);
        return MostSplitOn(handler, features, counts, length, most);
    }

    /// <summary>The model a layer's drivers are read from: its success model, else its duration model (null when neither is compiled).</summary>
    private CompiledTrees? DriverTreesOf(string layer) => _compiled.TryGetValue(layer, out var c) ? c.Success ?? c.Duration : null;

    private List<(string Name, float Value)> MostSplitOn(string handler, float[] features, Span<int> counts, int length, int most)
    {
        var arguments = Arguments.Of(handler);
        var drivers = new List<(string Name, float Value)>(most);
        // The most split on first (the lower index on a tie), one by one: a handful of picks from a few dozen counts.
        for (int pick = 0; pick < most; pick++)
        {
            int best = -1;
            for (int i = 0; i <= length; i++)
                if (counts[i] > 0 && (best < 0 || counts[i] > counts[best])) best = i;
            if (best < 0) break;
            counts[best] = 0;
            string name = best == length ? "handler"
                : best < FeatureExtractor.LayerFeatures ? FeatureExtractor.Names[best]
                : best - FeatureExtractor.LayerFeatures < arguments.Count ? arguments[best - FeatureExtractor.LayerFeatures].Name
                : $"argument_{best - FeatureExtractor.LayerFeatures}";
            drivers.Add((name, best < features.Length && best < length ? features[best] : float.NaN));
        }
        return drivers;
    }

    /// <summary>True when the layer's success model was calibrated on the held-out examples (it ends with that calibration), false when it keeps the trainer's own, or has none.</summary>
    internal bool CalibratedOnHeldOut(string layer)
        => _layers.TryGetValue(layer, out var m) && m.Success is IEnumerable<ITransformer> chain && chain.Count() == 3
            && chain.Last() is ISingleFeaturePredictionTransformer<Microsoft.ML.Calibrators.PlattCalibrator>;

    /// <summary>The layer's compiled models (tests look inside).</summary>
    internal (CompiledTrees? Duration, CompiledTrees? Success) CompiledOf(string layer) => _compiled[layer];

    /// <summary>True when both of the layer's models (those it has) are evaluated from their compiled trees.</summary>
    internal bool IsCompiled(string layer)
        => _layers.TryGetValue(layer, out var m) && (m.Duration is null || _compiled[layer].Duration is not null) && (m.Success is null || _compiled[layer].Success is not null);

    /// <summary>What ML.NET's own prediction engine says the duration is (ms): the reference the compiled trees are held to.</summary>
    internal double? EngineDurationMs(string layer, string handler, float[] features)
    {
        if (!_layers.TryGetValue(layer, out var m) || m.Duration is null) return null;
        lock (_engines)
        {
            // A prediction engine is made once per model (making one takes milliseconds) and is not thread-safe: calls are serialised.
            if (!_engines.TryGetValue((layer, false), out var e)) _engines[(layer, false)] = e = _ml.Model.CreatePredictionEngine<Example, DurationPrediction>(m.Duration, inputSchemaDefinition: _schemaOf);
            var p = ((PredictionEngine<Example, DurationPrediction>)e).Predict(ExampleOf(handler, features));
            return Math.Max(0, Math.Pow(10, p.Score) - 1);
        }
    }

    private readonly Dictionary<(string Layer, bool Success), object> _engines = new();
    private readonly Dictionary<string, (CompiledTrees? Duration, CompiledTrees? Success)> _compiled = new(StringComparer.Ordinal);

    /// <summary>Up to this many tasks, <see cref="PredictMany(string, IReadOnlyList{ValueTuple{string, float[]}})"/> calls the prediction engines task by task (a prediction engine call takes tens of µs; a pass over a data view, milliseconds).</summary>
    private const int FewPredictions = 64;

    /// <summary>
    /// Predicted durations (ms) and confidences on <paramref name="layer"/> for many tasks at once —
    /// one pass of each model over them, far cheaper per task than a prediction engine call each.
    /// Nulls where the layer has no such model.
    /// </summary>
    public (double?[] DurationMs, double?[] Confidence) PredictMany(string layer, IReadOnlyList<(string Handler, float[] Features)> tasks)
        => PredictMany(layer, tasks, out _);

    /// <summary>
    /// <see cref="PredictMany(string, IReadOnlyList{ValueTuple{string, float[]}})"/>, keeping the
    /// leaves each task reached in the layer's driver model when its trees are scanned
    /// (<paramref name="driverLeaves"/>: <see cref="CompiledTrees.TreeCount"/> bytes a task, in the
    /// tasks' order; null otherwise), for <see cref="DriversOf(string, string, float[], ReadOnlySpan{byte}, int)"/>.
    /// </summary>
    internal (double?[] DurationMs, double?[] Confidence) PredictMany(string layer, IReadOnlyList<(string Handler, float[] Features)> tasks, out byte[]? driverLeaves)
    {
        driverLeaves = null;
        var ms = new double?[tasks.Count];
        var confidence = new double?[tasks.Count];
        if (tasks.Count == 0 || !_layers.TryGetValue(layer, out var m)) return (ms, confidence);
        if (IsCompiled(layer))
        {
            // All the tasks through each compiled model at once.
            var (durationTrees, successTrees) = _compiled[layer];
            var scores = new double[tasks.Count];
            var drivers = successTrees ?? durationTrees;
            if (drivers is { CanScan: true }) driverLeaves = new byte[tasks.Count * drivers.TreeCount];
            if (durationTrees is not null)
            {
                durationTrees.PredictMany(tasks, scores, durationTrees.CanScan, drivers == durationTrees ? driverLeaves : default);
                for (int i = 0; i < tasks.Count; i++) ms[i] = Math.Max(0, Math.Pow(10, scores[i]) - 1);
            }
            if (successTrees is not null)
            {
                successTrees.PredictMany(tasks, scores, successTrees.CanScan, driverLeaves);
                for (int i = 0; i < tasks.Count; i++) confidence[i] = scores[i];
            }
            else if (m.Success is null && Accuracy.FirstOrDefault(a => a.Layer == layer)?.SuccessRate is double rate)
                Array.Fill(confidence, rate);
            return (ms, confidence);
        }
        if (tasks.Count <= FewPredictions)
        {
            // The compiled trees take about a microsecond a task; without them, a pass over a data
            // view costs milliseconds however few its rows, so few tasks go through the prediction engines.
            for (int i = 0; i < tasks.Count; i++)
            {
                ms[i] = PredictDurationMs(layer, tasks[i].Handler, tasks[i].Features);
                confidence[i] = PredictConfidence(layer, tasks[i].Handler, tasks[i].Features);
            }
            return (ms, confidence);
        }
        var data = _ml.Data.LoadFromEnumerable(tasks.Select(t => ExampleOf(t.Handler, t.Features)), _schemaOf);
        if (m.Duration is not null)
        {
            int i = 0;
            foreach (var p in _ml.Data.CreateEnumerable<DurationPrediction>(m.Duration.Transform(data), reuseRowObject: true))
                ms[i++] = Math.Max(0, Math.Pow(10, p.Score) - 1);
        }
        if (m.Success is not null)
        {
            int i = 0;
            foreach (var p in _ml.Data.CreateEnumerable<SuccessPrediction>(m.Success.Transform(data), reuseRowObject: true))
                confidence[i++] = p.Probability;
        }
        else if (Accuracy.FirstOrDefault(a => a.Layer == layer)?.SuccessRate is double rate)
            Array.Fill(confidence, rate);
        return (ms, confidence);
    }

    /// <summary>Predicted probability that a task with <paramref name="features"/> succeeds on <paramref name="layer"/> (its predicted confidence), or null without a model.</summary>
    public double? PredictConfidence(string layer, string handler, float[] features)
    {
        if (!_layers.TryGetValue(layer, out var m)) return null;
        if (m.Success is null) return Accuracy.FirstOrDefault(a => a.Layer == layer)?.SuccessRate;
        if (_compiled[layer].Success is { } trees) return trees.Predict(handler, features);
        return EngineConfidence(layer, handler, features);
    }

    /// <summary>
    /// The least and greatest confidence on <paramref name="layer"/> of any task of
    /// <paramref name="handler"/> whose features lie in the box <paramref name="low"/>…<paramref name="high"/>
    /// (<see cref="CompiledTrees.Bounds"/>); the layer's success rate both ways when it has no success
    /// model; null when the layer has no model, or its trees cannot be bounded.
    /// </summary>
    internal (double Low, double High)? ConfidenceBounds(string layer, string handler, ReadOnlySpan<float> low, ReadOnlySpan<float> high)
    {
        if (!_layers.TryGetValue(layer, out var m)) return null;
        if (m.Success is null) return Accuracy.FirstOrDefault(a => a.Layer == layer)?.SuccessRate is double rate ? (rate, rate) : null;
        return _compiled[layer].Success?.Bounds(handler, low, high);
    }

    /// <summary>The thresholds of <paramref name="layer"/>'s success model on <paramref name="feature"/> inside <paramref name="low"/>…<paramref name="high"/> (<see cref="CompiledTrees.ThresholdsInside"/>), into <paramref name="into"/>.</summary>
    internal void SuccessThresholdsInside(string layer, int feature, float low, float high, List<float> into)
    {
        if (_layers.ContainsKey(layer)) _compiled[layer].Success?.ThresholdsInside(feature, low, high, into);
    }

    /// <summary>What ML.NET's own prediction engine says the confidence is: the reference the compiled trees are held to.</summary>
    internal double? EngineConfidence(string layer, string handler, float[] features)
    {
        if (!_layers.TryGetValue(layer, out var m) || m.Success is null) return null;
        lock (_engines)
        {
            if (!_engines.TryGetValue((layer, true), out var e)) _engines[(layer, true)] = e = _ml.Model.CreatePredictionEngine<Example, SuccessPrediction>(m.Success, inputSchemaDefinition: _schemaOf);
            return ((PredictionEngine<Example, SuccessPrediction>)e).Predict(ExampleOf(handler, features)).Probability;
        }
    }

    /// <summary>An example of the models' input length: <paramref name="features"/> cut or padded with zeros.</summary>
    private Example ExampleOf(string handler, float[] features)
    {
        int n = InputLength;
        var x = new float[n];
        features.AsSpan(0, Math.Min(n, features.Length)).CopyTo(x);
        return new Example { Handler = handler, Features = x };
    }

    /// <summary>Writes the models and a manifest into <paramref name="folder"/> (created).</summary>
    /// <remarks>The manifest lists each model file with its layer, kind and SHA-256; <see cref="Load"/> checks them.</remarks>
    public void Save(string folder, int version)
    {
        Directory.CreateDirectory(folder);
        var files = new List<ModelFileEntry>();
        foreach (var (layer, m) in _layers)
        {
            foreach (var (kind, model) in new[] { ("duration", m.Duration), ("success", m.Success) })
            {
                if (model is null) continue;
                string name = $"{layer}.{kind}.zip";
                _ml.Model.Save(model, m.Schema, Path.Combine(folder, name));
                files.Add(new ModelFileEntry(name, layer, kind, Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(folder, name))))));
            }
        }
        _files = files;
        WriteManifest(folder, version);
    }

    private List<ModelFileEntry> _files = [];

    /// <summary>(Re)writes the manifest of models saved in <paramref name="folder"/>, naming them version <paramref name="version"/>.</summary>
    public void WriteManifest(string folder, int version)
    {
        File.WriteAllText(Path.Combine(folder, "manifest.json"), JsonSerializer.Serialize(new
        {
            format = ModelFiles.Format,
            version,
            features = FeatureExtractor.Names.Take(FeatureExtractor.LayerFeatures).Concat(Enumerable.Range(0, Arguments.Slots).Select(i => $"argument_{i}")),
            arguments = JsonDocument.Parse(ArgumentsJson()).RootElement,
            rows = Rows,
            layers = Accuracy,
            files = _files,
        }, new JsonSerializerOptions { WriteIndented = true }));
    }

    private string ArgumentsJson()
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer)) Arguments.Write(w);
        return System.Text.Encoding.UTF8.GetString(buffer.ToArray());
    }

    /// <summary>One model file as the manifest lists it.</summary>
    private sealed record ModelFileEntry(string name, string layer, string kind, string sha256);

    /// <summary>Largest manifest read: 1 MiB.</summary>
    public const long MaxManifestBytes = 1L << 20;

    /// <summary>Largest model file read: 256 MiB.</summary>
    public const long MaxModelBytes = 256L << 20;

    /// <summary>
    /// Reads models written by <see cref="Save"/>; null, with the reason in <paramref name="problem"/>,
    /// when the folder holds none this build can use. Every file is read as an input is (a regular
    /// file under a size cap: never a device, a FIFO or a link to one); each model file must be the
    /// one the manifest lists for its layer and kind (its SHA-256), and a duration model must be a
    /// regression and a success model a classifier.
    /// </summary>
    public static TrainedModels? Load(string folder, out string? problem)
    {
        problem = null;
        var ml = new MLContext(1);
        try
        {
            var manifestPath = Path.Combine(folder, "manifest.json");
            using var manifest = JsonDocument.Parse(Engine.IO.SafeFile.ReadInput(manifestPath, MaxManifestBytes, "model manifest"));
            if (!manifest.RootElement.TryGetProperty("format", out var format) || format.ValueKind != JsonValueKind.Number
                || !format.TryGetInt32(out int formatNumber) || formatNumber < ModelFiles.OldestFormat || formatNumber > ModelFiles.Format)
            {
                problem = $"{manifestPath}: written by another version of TaskMesh (model format {(format.ValueKind == JsonValueKind.Number ? format.GetRawText() : "none")}, this build reads {ModelFiles.OldestFormat}–{ModelFiles.Format})";
                return null;
            }
            // Format 1 (before argument features): the models read the fixed features alone.
            var arguments = formatNumber >= 2 && manifest.RootElement.TryGetProperty("arguments", out var argumentsElement)
                ? ArgumentSchema.Read(argumentsElement) : ArgumentSchema.None;
            var accuracy = manifest.RootElement.GetProperty("layers").Deserialize<List<LayerAccuracy>>() ?? [];
            // Manifests written before files were listed have no hashes: their files are checked by kind only.
            Dictionary<string, ModelFileEntry>? listed = null;
            if (manifest.RootElement.TryGetProperty("files", out var filesElement))
                listed = (filesElement.Deserialize<List<ModelFileEntry>>() ?? []).ToDictionary(f => f.name, StringComparer.Ordinal);
            var layers = new Dictionary<string, (ITransformer?, ITransformer?, DataViewSchema)>(StringComparer.Ordinal);
            foreach (var a in accuracy)
            {
                if (!Engine.Graph.GraphNames.IsValidLayerName(a.Layer))
                {
                    problem = $"{manifestPath}: layer '{Engine.Graph.GraphLimits.Printable(a.Layer ?? "")}' is not a layer name";
                    return null;
                }
                DataViewSchema? schema = null;
                ITransformer? duration = LoadOne(a.Layer, "duration", ref schema);
                ITransformer? success = LoadOne(a.Layer, "success", ref schema);
                if (schema is not null) layers[a.Layer] = (duration, success, schema);
                else if (a.SuccessRate is not null) layers[a.Layer] = (null, null, new DataViewSchema.Builder().ToSchema());
            }
            var models = new TrainedModels(ml, layers, accuracy, manifest.RootElement.GetProperty("rows").GetInt32(), arguments);
            // The models must read as long an input as the schema lays out (a manifest edited or mismatched otherwise).
            foreach (var (layer, (_, _, schema)) in layers)
                if (schema.GetColumnOrNull(nameof(Example.Features)) is { Type: VectorDataViewType { Size: var size } } && size != arguments.InputLength)
                    throw new BadModelFile($"{manifestPath}: the models of layer {layer} read {size} features, the manifest lays out {arguments.InputLength}");
            return models;

            ITransformer? LoadOne(string layer, string kind, ref DataViewSchema? schema)
            {
                string name = $"{layer}.{kind}.zip", path = Path.Combine(folder, name);
                if (Engine.IO.SafeFile.KindOf(path) == Engine.IO.FileKind.Missing)
                {
                    if (listed?.ContainsKey(name) == true) throw new BadModelFile($"{path}: the manifest lists it, and it is missing");
                    return null;
                }
                var bytes = Engine.IO.SafeFile.ReadInput(path, MaxModelBytes, "model file");
                if (listed is not null)
                {
                    if (!listed.TryGetValue(name, out var entry) || entry.layer != layer || entry.kind != kind)
                        throw new BadModelFile($"{path}: the manifest does not list it as the {kind} model of layer {layer}");
                    if (Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(bytes)) != entry.sha256)
                        throw new BadModelFile($"{path}: not the file the manifest lists as the {kind} model of layer {layer} (its SHA-256 differs: swapped, replaced or damaged)");
                }
                using var stream = new MemoryStream(bytes, writable: false);
                var model = ml.Model.Load(stream, out var inputSchema);
                // A duration model is a regression (a score, no probability); a success model a calibrated classifier.
                bool classifier = model.GetOutputSchema(inputSchema).GetColumnOrNull("Probability") is not null;
                if (classifier != (kind == "success"))
                    throw new BadModelFile($"{path}: a {(classifier ? "success (classifier)" : "duration (regression)")} model where the {kind} model of layer {layer} belongs");
                schema = inputSchema;
                return model;
            }
        }
        catch (BadModelFile ex)
        {
            problem = ex.Message;
            return null;
        }
        catch (Engine.IO.UnsafeFileException ex)
        {
            problem = ex.Message;
            return null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException or InvalidOperationException
            or InvalidDataException or FormatException or KeyNotFoundException or ArgumentException or NotSupportedException)
        {
            problem = $"the models in {folder} cannot be read ({ex.GetType().Name}: {ex.Message})";
            return null;
        }
    }

    private sealed class BadModelFile(string message) : Exception(message);
}

/// <summary>Where model versions live: <c>STORE.models/vN/</c> beside the run store.</summary>
public static class ModelFiles
{
    /// <summary>The manifest format this build writes (2: with the argument features the models read; 3: products of two among them, success models calibrated on held-out examples — a build that reads up to 2 refuses it with the reason instead of failing on a name it does not know).</summary>
    public const int Format = 3;

    /// <summary>The oldest manifest format this build reads (1: the fixed features alone).</summary>
    public const int OldestFormat = 1;

    /// <summary>The argument features the models in <paramref name="folder"/> read, from its manifest (none for format 1); null when the manifest cannot be read.</summary>
    public static Features.ArgumentSchema? ArgumentsOf(string folder)
    {
        try
        {
            using var manifest = JsonDocument.Parse(Engine.IO.SafeFile.ReadInput(Path.Combine(folder, "manifest.json"), TrainedModels.MaxManifestBytes, "model manifest"));
            return manifest.RootElement.TryGetProperty("arguments", out var a) ? Features.ArgumentSchema.Read(a) : Features.ArgumentSchema.None;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or JsonException or FormatException or Engine.IO.UnsafeFileException or InvalidOperationException)
        {
            return null;
        }
    }

}
