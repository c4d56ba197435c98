using TaskMesh.Engine.Store;
using TaskMesh.Learning.Features;
using TaskMesh.Learning.Models;
using Xunit;

namespace TaskMesh.Tests.Learning;

public sealed class ModelTrainerTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("taskmesh-models-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static int Col(string name) => FeatureExtractor.Names.ToList().IndexOf(name);

    /// <summary>
    /// A known history: duration = 10^(0.8 × log_estimate_us − 1) ms (± 5 %); on "quantum" a
    /// circuit fails with probability sigmoid(qubits − 22) and then escalates to "quantum-double",
    /// where it succeeds.
    /// </summary>
    private static List<TrainingRow> History(int n, int seed)
    {
        var rng = new Random(seed);
        var rows = new List<TrainingRow>();
        for (int i = 0; i < n; i++)
        {
            var f = new float[FeatureExtractor.Count];
            f[Col("log_estimate_us")] = (float)(rng.NextDouble() * 6);
            f[Col("qubits")] = rng.Next(10, 31);
            f[Col("gates")] = rng.Next(10, 500);
            double ms = Math.Pow(10, 0.8 * f[Col("log_estimate_us")] - 1) * (0.95 + 0.1 * rng.NextDouble());
            bool fails = rng.NextDouble() < 1 / (1 + Math.Exp(-(f[Col("qubits")] - 22)));
            rows.Add(fails
                ? new TrainingRow("quantum", "quantum", "quantum-double", "succeeded", ms, 1, f, null)
                : new TrainingRow("quantum", "quantum", "quantum", "succeeded", ms, 0, f, null));
        }
        return rows;
    }

    [Fact]
    public void Training_OnAKnownHistory_RecoversTheDurationAndTheFailureRelation()
    {
        var models = ModelTrainer.Train(History(3000, seed: 7));
        var q = models.Accuracy.Single(a => a.Layer == "quantum");
        Assert.True(q.DurationR2 >= 0.95, $"R² {q.DurationR2}");
        Assert.True(q.SuccessAuc >= 0.85, $"AUC {q.SuccessAuc}");
        Assert.True(q.CalibrationError <= 0.1, $"calibration error {q.CalibrationError}");

        float[] Circuit(int qubits, double logUs)
        {
            var f = new float[FeatureExtractor.Count];
            f[Col("qubits")] = qubits;
            f[Col("log_estimate_us")] = (float)logUs;
            f[Col("gates")] = 100;
            return f;
        }
        Assert.True(models.PredictConfidence("quantum", "quantum", Circuit(12, 3)) > 0.85);
        Assert.True(models.PredictConfidence("quantum", "quantum", Circuit(29, 3)) < 0.15);
        // 10^(0.8 × 4 − 1) = 158 ms, within 20 %.
        Assert.InRange(models.PredictDurationMs("quantum", "quantum", Circuit(15, 4))!.Value, 158 * 0.8, 158 * 1.2);
        Assert.Null(models.PredictConfidence("cluster", "quantum", Circuit(12, 3)));   // no model: cold start
    }

    [Fact]
    public void CompiledTrees_PredictWhatMlNetPredicts_FreshlyTrainedAndReloaded_ForKnownAndUnseenHandlers()
    {
        var rows = History(1500, seed: 11);
        // A second handler, so the hashed one-hot of the handler matters to the trees.
        rows.AddRange(History(600, seed: 12).Select(r => r with { Handler = "spin", DurationMs = r.DurationMs * 3 }));
        var models = ModelTrainer.Train(rows);
        models.Save(Path.Combine(_dir, "v1"), 1);
        var loaded = TrainedModels.Load(Path.Combine(_dir, "v1"), out var problem);
        Assert.Null(problem);
        var rng = new Random(5);
        foreach (var m in new[] { models, loaded! })
        {
            Assert.True(m.IsCompiled("quantum"));
            for (int i = 0; i < 300; i++)
            {
                var f = new float[FeatureExtractor.Count];
                for (int k = 0; k < f.Length; k++) f[k] = (float)(rng.NextDouble() * 30);
                string handler = (i % 3) switch { 0 => "quantum", 1 => "spin", _ => "never-seen" };
                double ms = m.PredictDurationMs("quantum", handler, f)!.Value, reference = m.EngineDurationMs("quantum", handler, f)!.Value;
                Assert.True(Math.Abs(ms - reference) <= 1e-4 * Math.Max(1, reference), $"duration {ms} vs ML.NET {reference}");
                Assert.Equal(m.EngineConfidence("quantum", handler, f)!.Value, m.PredictConfidence("quantum", handler, f)!.Value, 1e-6);   // float sums in another order: a tolerance, not rounding (which splits at a boundary)
            }
        }
    }

    [Fact]
    public void LearnedDurationEstimator_IsTheDurationModelOfTheTasksLayer_NullWithoutOne()
    {
        var models = ModelTrainer.Train(History(800, seed: 4));
        var engine = new TaskMesh.Engine.TaskMeshEngine();
        var g = new TaskMesh.Engine.Graph.GraphBuilder("e");
        g.Task("a", "spin", new { micros = 5000 });
        var prepared = engine.Prepare(g);
        var estimator = new LearnedDurationEstimator(models);
        var features = new FeatureExtractor(prepared);
        double? ms = estimator.EstimateMs(prepared, 0, "quantum");
        Assert.NotNull(ms);
        Assert.Equal(models.PredictDurationMs("quantum", "spin", features.Extract(0)), ms);
        Assert.Null(estimator.EstimateMs(prepared, 0, "cluster"));   // no model for that layer
    }

    [Fact]
    public void Models_SurviveASaveAndLoad_AndAnUnreadableFolderIsReportedNotThrown()
    {
        var models = ModelTrainer.Train(History(800, seed: 3));
        var folder = Path.Combine(_dir, "v1");
        models.Save(folder, 1);
        var loaded = TrainedModels.Load(folder, out var problem);
        Assert.Null(problem);
        var f = new float[FeatureExtractor.Count];
        f[Col("qubits")] = 20;
        f[Col("log_estimate_us")] = 2;
        Assert.Equal(models.PredictConfidence("quantum", "quantum", f), loaded!.PredictConfidence("quantum", "quantum", f));
        Assert.Equal(models.PredictDurationMs("quantum", "quantum", f), loaded.PredictDurationMs("quantum", "quantum", f));

        File.WriteAllBytes(Path.Combine(folder, "quantum.success.zip"), [1, 2, 3, 4]);   // corrupt: not the file the manifest lists
        Assert.Null(TrainedModels.Load(folder, out problem));
        Assert.Contains("quantum.success.zip: not the file the manifest lists", problem);
        // A manifest without file hashes (written before they were kept): the file itself is found unreadable.
        var manifest = Path.Combine(folder, "manifest.json");
        var node = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(manifest))!.AsObject();
        node.Remove("files");
        File.WriteAllText(manifest, node.ToJsonString());
        Assert.Null(TrainedModels.Load(folder, out problem));
        Assert.Contains("cannot be read", problem);
        File.WriteAllText(Path.Combine(folder, "manifest.json"), """{"format": 99, "rows": 1, "layers": []}""");
        Assert.Null(TrainedModels.Load(folder, out problem));
        Assert.Contains("model format 99", problem);
        Assert.Null(TrainedModels.Load(Path.Combine(_dir, "missing"), out problem));
        Assert.NotNull(problem);
    }
}
