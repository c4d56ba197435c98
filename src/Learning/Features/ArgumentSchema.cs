using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace TaskMesh.Learning.Features;

/// <summary>
/// One argument feature a model uses: its name (as <see cref="Engine.Handlers.ArgumentFeatures"/>
/// names it), whether it is log-scaled (its positive values span two decades or more), and how
/// informative it was when chosen (the share of the outcome's and the duration's variance its
/// deciles explain, 0–1).
/// </summary>
/// <param name="Name">The name.</param>
/// <param name="Log">Log-scaled: the model reads log10(1 + x).</param>
/// <param name="Score">How informative it was (η² of success plus η² of log duration, beyond chance).</param>
/// <param name="Share">The share of the handler's rows that stated it.</param>
/// <param name="Min">The least value seen in training, as the model reads it (scaled).</param>
/// <param name="Max">The largest, scaled.</param>
public sealed record ArgumentFeature(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("log")] bool Log,
    [property: JsonPropertyName("score")] double Score,
    [property: JsonPropertyName("share")] double Share,
    [property: JsonPropertyName("min")] double Min,
    [property: JsonPropertyName("max")] double Max)
{
    /// <summary>Bins a feature's training range is cut into for a task's kind.</summary>
    public const int KindBins = 32;

    /// <summary>The bin of a value for a task's kind: 32 equal parts of the training range (scaled), one below it and one above.</summary>
    public int BinOf(double value)
    {
        double x = ArgumentSchema.Scale(value, Log);
        if (!(Max > Min)) return x < Min ? 0 : x > Max ? 2 : 1;
        double at = (x - Min) / (Max - Min) * KindBins;
        return at < 0 ? 0 : at >= KindBins ? KindBins + 1 : 1 + (int)at;
    }
}

/// <summary>
/// Which of the numbers tasks state in their own words a trained model reads, per handler:
/// decided when it is trained (<see cref="Select"/>), saved with the model version, and used to
/// lay each task's numbers into the model's input after the <see cref="FeatureExtractor.LayerFeatures"/>
/// fixed features — slot <c>j</c> holds the handler's <c>j</c>-th chosen name (0 when the task does
/// not state it). A handler the schema does not know, or a name it does not list, adds nothing: a
/// task with an argument never seen in training is routed on what the model knows.
/// </summary>
public sealed class ArgumentSchema
{
    /// <summary>The empty schema: models that read no argument features (those trained before they existed).</summary>
    public static ArgumentSchema None { get; } = new(new Dictionary<string, IReadOnlyList<ArgumentFeature>>(StringComparer.Ordinal));

    private readonly Dictionary<string, IReadOnlyList<ArgumentFeature>> _byHandler;

    public ArgumentSchema(IReadOnlyDictionary<string, IReadOnlyList<ArgumentFeature>> byHandler)
    {
        ArgumentNullException.ThrowIfNull(byHandler);
        _byHandler = byHandler.ToDictionary(kv => kv.Key, kv => kv.Value, StringComparer.Ordinal);
        Slots = _byHandler.Count == 0 ? 0 : _byHandler.Values.Max(v => v.Count);
    }

    /// <summary>Argument slots in a model's input (the most any handler uses).</summary>
    public int Slots { get; }

    /// <summary>The length of a model's input: the fixed features and the slots.</summary>
    public int InputLength => FeatureExtractor.LayerFeatures + Slots;

    /// <summary>The handlers with chosen features, and their features in slot order.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<ArgumentFeature>> ByHandler => _byHandler;

    /// <summary>The features <paramref name="handler"/>'s tasks are read by (empty when none).</summary>
    public IReadOnlyList<ArgumentFeature> Of(string handler) => _byHandler.TryGetValue(handler, out var f) ? f : [];

    /// <summary>
    /// Writes <paramref name="handler"/>'s chosen features of a task that states
    /// <paramref name="stated"/> into <paramref name="slots"/> (at least <see cref="Slots"/> long;
    /// cleared first): each in its slot, log-scaled where chosen so.
    /// </summary>
    public void Fill(string handler, IReadOnlyList<KeyValuePair<string, double>> stated, Span<float> slots)
    {
        slots[..Slots].Clear();
        if (!_byHandler.TryGetValue(handler, out var features)) return;
        for (int slot = 0; slot < features.Count; slot++) slots[slot] = Scale(ValueOf(features[slot].Name, stated), features[slot].Log);
    }

    /// <summary>
    /// The value of a chosen feature for a task that states <paramref name="stated"/>: the number it
    /// states under that name (the first, when it states one twice; 0 when it does not), and for a
    /// product (<c>width*height</c>, see <see cref="Select"/>) the product of the two.
    /// </summary>
    internal static double ValueOf(string name, IReadOnlyList<KeyValuePair<string, double>> stated)
    {
        int star = name.IndexOf('*');
        if (star < 0) return Stated(name, stated);
        return Stated(name.AsSpan(0, star), stated) * Stated(name.AsSpan(star + 1), stated);

        static double Stated(ReadOnlySpan<char> name, IReadOnlyList<KeyValuePair<string, double>> stated)
        {
            for (int i = 0; i < stated.Count; i++)
                if (name.SequenceEqual(stated[i].Key)) return stated[i].Value;
            return 0;
        }
    }

    /// <summary>Whether <paramref name="name"/> can name a chosen feature: a stated name, or the product of two (<c>a*b</c>).</summary>
    internal static bool IsFeatureName(string name)
    {
        int star = name.IndexOf('*');
        return star < 0 ? Engine.Handlers.ArgumentFeatures.IsName(name)
            : Engine.Handlers.ArgumentFeatures.IsName(name[..star]) && Engine.Handlers.ArgumentFeatures.IsName(name[(star + 1)..]);
    }

    /// <summary>A value as the model reads it: log10(1 + x) for a log-scaled feature (negative values kept negative), else itself.</summary>
    public static float Scale(double value, bool log)
        => !double.IsFinite(value) ? 0 : log ? (float)(Math.Sign(value) * Math.Log10(1 + Math.Abs(value))) : (float)value;

    /// <summary>
    /// Chooses, per handler, the names the models will read from the examples
    /// <paramref name="rows"/> give (handler, the layer the example is of, the task's stated
    /// features, whether it succeeded there, log10 of its duration there or NaN): names stated by at
    /// least 5 % of the handler's examples (and 10) are candidates; each is scored, layer by layer,
    /// by how much of the variance of success and of log duration the deciles of its values explain
    /// (the correlation ratio η², less what chance gives with that many examples), weighted by the
    /// layer's share of the examples; the best <paramref name="limit"/> that explain more than 1 %
    /// are kept, by score, then by how often they are stated, then by name. No randomness: the same
    /// rows give the same schema.
    /// </summary>
    public static ArgumentSchema Select(IEnumerable<(string Handler, string Layer, IReadOnlyList<KeyValuePair<string, double>> Stated, bool Succeeded, float LogDuration)> rows, int limit)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(limit);
        var byHandler = new Dictionary<string, List<(string Layer, IReadOnlyList<KeyValuePair<string, double>> Stated, bool Ok, float LogMs)>>(StringComparer.Ordinal);
        foreach (var r in rows)
        {
            if (!byHandler.TryGetValue(r.Handler, out var list)) byHandler[r.Handler] = list = new();
            list.Add((r.Layer, r.Stated, r.Succeeded, r.LogDuration));
        }
        var chosen = new Dictionary<string, IReadOnlyList<ArgumentFeature>>(StringComparer.Ordinal);
        if (limit == 0) return new ArgumentSchema(chosen);
        foreach (var (handler, list) in byHandler.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            // Each name's values, by example (examples that do not state it: 0, as the model will see them).
            var values = new Dictionary<string, double[]>(StringComparer.Ordinal);
            var stated = new Dictionary<string, int>(StringComparer.Ordinal);
            for (int i = 0; i < list.Count; i++)
                foreach (var (name, value) in list[i].Stated)
                {
                    if (!values.TryGetValue(name, out var column))
                    {
                        if (values.Count >= 256) continue;   // a handler stating hundreds of names: the first 256 are candidates
                        values[name] = column = new double[list.Count];
                    }
                    stated[name] = stated.GetValueOrDefault(name) + 1;
                    column[i] = value;
                }
            int minimum = Math.Max(10, (int)Math.Ceiling(0.05 * list.Count));
            var layers = list.Select((r, i) => (r.Layer, i)).GroupBy(x => x.Layer, StringComparer.Ordinal).OrderBy(g => g.Key, StringComparer.Ordinal)
                .Select(g => g.Select(x => x.i).ToArray()).ToList();
            var scored = new List<(ArgumentFeature Feature, int Stated)>();
            foreach (var (name, column) in values.OrderBy(kv => kv.Key, StringComparer.Ordinal))
            {
                int count = stated[name];
                if (count >= minimum && Score(name, column, count) is { } feature) scored.Add((feature, count));
            }
            // Sizes that matter together (an image's width and height, a job's rows and columns): the
            // product of two log-scaled ones, among the four that explain most, is a candidate too —
            // trees cut one feature at a time, and an edge along the product is a staircase to them.
            var sizes = scored.Where(x => x.Feature.Log).OrderByDescending(x => x.Feature.Score).ThenBy(x => x.Feature.Name, StringComparer.Ordinal).Take(4)
                .Select(x => x.Feature.Name).Order(StringComparer.Ordinal).ToList();
            for (int a = 0; a < sizes.Count; a++)
                for (int b = a + 1; b < sizes.Count; b++)
                {
                    var (x, y) = (values[sizes[a]], values[sizes[b]]);
                    var product = new double[x.Length];
                    int both = 0;
                    for (int i = 0; i < product.Length; i++)
                        if ((product[i] = x[i] * y[i]) != 0) both++;
                    if (both >= minimum && Score(sizes[a] + "*" + sizes[b], product, both) is { } feature) scored.Add((feature, both));
                }

            // A feature's score: η² of success and of log duration by its deciles, layer by layer, beyond chance; null when under 1 %.
            ArgumentFeature? Score(string name, double[] column, int count)
            {
                var (bins, distinct) = Deciles(column);
                if (distinct < 2) return null;   // one value: nothing to tell apart
                double score = 0;
                foreach (var at in layers)
                {
                    if (at.Length < 2) continue;
                    var groups = at.Select(i => bins[i]).ToArray();
                    // What chance gives: with k groups and n examples, η² of noise averages (k − 1) / (n − 1).
                    double chance = (distinct - 1.0) / (at.Length - 1);
                    double success = CorrelationRatio(groups, distinct, at.Select(i => list[i].Ok ? 1.0 : 0.0).ToArray());
                    double duration = CorrelationRatio(groups, distinct, at.Select(i => (double)list[i].LogMs).ToArray());
                    score += at.Length / (double)list.Count * (Math.Max(0, success - chance) + Math.Max(0, duration - chance));
                }
                if (score <= 0.01) return null;   // explains under 1 % beyond chance: an argument that does not matter
                double positiveMin = column.Where(v => v > 0).DefaultIfEmpty(0).Min(), max = column.Max();
                bool log = positiveMin > 0 && max / positiveMin >= 100;
                return new ArgumentFeature(name, log, Math.Round(score, 4), Math.Round(count / (double)list.Count, 4), Scale(column.Min(), log), Scale(max, log));
            }
            var keep = scored.OrderByDescending(s => s.Feature.Score).ThenByDescending(s => s.Stated).ThenBy(s => s.Feature.Name, StringComparer.Ordinal)
                .Take(limit).Select(s => s.Feature).ToList();
            if (keep.Count > 0) chosen[handler] = keep;
        }
        return new ArgumentSchema(chosen);
    }

    /// <summary>Each value's decile (by rank; equal values always share one), and how many groups there are.</summary>
    private static (int[] Bins, int Count) Deciles(double[] column)
    {
        var order = Enumerable.Range(0, column.Length).OrderBy(i => column[i]).ToArray();
        var bins = new int[column.Length];
        int group = 0, startedAt = 0;
        for (int r = 0; r < order.Length; r++)
        {
            if (r > 0 && column[order[r]] != column[order[r - 1]])
            {
                int decile = (int)(10L * r / order.Length);
                if (decile != startedAt) (group, startedAt) = (group + 1, decile);
            }
            bins[order[r]] = group;
        }
        return (bins, order.Length == 0 ? 0 : group + 1);
    }

    /// <summary>η²: the share of <paramref name="y"/>'s variance (NaN values left out) that the groups' means explain.</summary>
    private static double CorrelationRatio(int[] groups, int count, double[] y)
    {
        var sum = new double[count];
        var n = new int[count];
        double total = 0;
        int all = 0;
        for (int i = 0; i < y.Length; i++)
        {
            if (double.IsNaN(y[i])) continue;
            sum[groups[i]] += y[i];
            n[groups[i]]++;
            total += y[i];
            all++;
        }
        if (all < 2) return 0;
        double mean = total / all, between = 0, within = 0;
        for (int g = 0; g < count; g++)
            if (n[g] > 0) between += n[g] * Math.Pow(sum[g] / n[g] - mean, 2);
        for (int i = 0; i < y.Length; i++)
            if (!double.IsNaN(y[i])) within += Math.Pow(y[i] - mean, 2);
        return within <= 0 ? 0 : between / within;
    }

    /// <summary>The schema as the model manifest keeps it: <c>{"HANDLER": [{"name", "log", "score", "share"}, …], …}</c>.</summary>
    public void Write(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        foreach (var (handler, features) in _byHandler.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            w.WritePropertyName(handler);
            JsonSerializer.Serialize(w, features);
        }
        w.WriteEndObject();
    }

    /// <summary>A schema read from a manifest's <c>arguments</c> (what <see cref="Write"/> wrote).</summary>
    /// <exception cref="FormatException">It is not of that shape, or names a feature that cannot be one.</exception>
    public static ArgumentSchema Read(JsonElement e)
    {
        if (e.ValueKind != JsonValueKind.Object) throw new FormatException("arguments is an object of handlers");
        var byHandler = new Dictionary<string, IReadOnlyList<ArgumentFeature>>(StringComparer.Ordinal);
        foreach (var p in e.EnumerateObject())
        {
            var features = p.Value.Deserialize<List<ArgumentFeature>>() ?? [];
            if (features.Count > 64 || features.Any(f => f is null || !IsFeatureName(f.Name ?? "")) || features.Select(f => f.Name).Distinct().Count() != features.Count)
                throw new FormatException($"the argument features of handler '{Engine.Graph.GraphLimits.Printable(p.Name)}' are not a list of distinct feature names");
            byHandler[p.Name] = features;
        }
        return new ArgumentSchema(byHandler);
    }

    /// <summary>One line per handler: <c>handler: rows (log, 0.41), prompt.length (0.12)</c>.</summary>
    public IEnumerable<string> Describe()
        => _byHandler.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => $"{Engine.Graph.GraphLimits.Printable(kv.Key)}: " + string.Join(", ", kv.Value.Select(f =>
            string.Create(CultureInfo.InvariantCulture, $"{f.Name} ({(f.Log ? "log, " : "")}{f.Score:0.###})"))));
}
