using TaskMesh.Engine.Graph;

namespace TaskMesh.Tests.Engine.Scheduling;

/// <summary>Seeded random DAGs: each task depends on up to <c>maxPreds</c> earlier tasks.</summary>
internal sealed class RandomDag
{
    public readonly int Count;
    public readonly List<(int src, int dst, EdgeKind kind)> Edges = new();

    public RandomDag(int seed, int count, int maxPreds, bool mixedKinds)
    {
        Count = count;
        var rnd = new Random(seed);
        for (int i = 1; i < count; i++)
        {
            int preds = rnd.Next(0, maxPreds + 1);
            var chosen = new HashSet<int>();
            for (int k = 0; k < preds; k++) chosen.Add(rnd.Next(0, i));
            foreach (var p in chosen)
            {
                var kind = !mixedKinds ? EdgeKind.Hard : (EdgeKind)rnd.Next(0, 3);
                Edges.Add((p, i, kind));
            }
        }
    }

    public GraphBuilder Build(Func<int, string> handler, Action<TaskRef, int>? configure = null)
    {
        var g = new GraphBuilder("random");
        var refs = new TaskRef[Count];
        for (int i = 0; i < Count; i++)
        {
            refs[i] = g.Task($"t{i}", handler(i));
            configure?.Invoke(refs[i], i);
        }
        foreach (var (s, d, k) in Edges) refs[d].DependsOn(refs[s], k);
        return g;
    }
}
