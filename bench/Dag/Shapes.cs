namespace TaskMesh.Bench.Dag;

/// <summary>A DAG shape as flat edge arrays (source → target), generated once and shared by every system.</summary>
internal sealed class Shape
{
    public required string Name { get; init; }
    public required int Tasks { get; init; }
    public required int[] Source { get; init; }
    public required int[] Target { get; init; }

    public static readonly string[] All = ["linear_chain", "binary_tree", "embarrassing_parallel", "wavefront", "random_dag"];

    /// <summary>
    /// The shape at about 2,000 tasks, for task bodies of milliseconds (<c>--task-ms</c>): a second or
    /// so of work per run on two workers (the chain, which runs one task at a time: 1,000).
    /// </summary>
    public static Shape CreateForSlowTasks(string name) => name switch
    {
        "linear_chain" => Chain(1_000),
        "binary_tree" => BinaryTree(11),
        "embarrassing_parallel" => new Shape { Name = name, Tasks = 2_048, Source = [], Target = [] },
        "wavefront" => Wavefront(45),
        "random_dag" => RandomDag(2_000, 4, seed: 42),
        _ => Create(name),
    };

    /// <summary>The shape at full size, or a small version of it (for warming the JIT up).</summary>
    public static Shape Create(string name, bool small = false) => name switch
    {
        "linear_chain" => Chain(small ? 50_000 : 1_000_000),
        "binary_tree" => BinaryTree(small ? 16 : 20),
        "embarrassing_parallel" => new Shape { Name = name, Tasks = small ? 50_000 : 1_000_000, Source = [], Target = [] },
        "wavefront" => Wavefront(small ? 224 : 1024),
        "random_dag" => RandomDag(small ? 20_000 : 200_000, 4, seed: 42),
        _ => throw new ArgumentException($"unknown shape '{name}' (known: {string.Join(", ", All)}, all)"),
    };

    private static Shape Chain(int n)
    {
        var s = new int[n - 1];
        var t = new int[n - 1];
        for (int i = 1; i < n; i++) { s[i - 1] = i - 1; t[i - 1] = i; }
        return new Shape { Name = "linear_chain", Tasks = n, Source = s, Target = t };
    }

    /// <summary>Root 0 fans out to 2i+1 and 2i+2, down to depth levels (2^depth - 1 tasks).</summary>
    private static Shape BinaryTree(int depth)
    {
        int n = (1 << depth) - 1;
        var s = new int[n - 1];
        var t = new int[n - 1];
        for (int i = 1; i < n; i++) { s[i - 1] = (i - 1) / 2; t[i - 1] = i; }
        return new Shape { Name = "binary_tree", Tasks = n, Source = s, Target = t };
    }

    /// <summary>Cell (r, c) depends on (r-1, c) and (r, c-1).</summary>
    private static Shape Wavefront(int side)
    {
        var s = new List<int>(2 * side * side);
        var t = new List<int>(2 * side * side);
        for (int r = 0; r < side; r++)
            for (int c = 0; c < side; c++)
            {
                int id = r * side + c;
                if (r > 0) { s.Add(id - side); t.Add(id); }
                if (c > 0) { s.Add(id - 1); t.Add(id); }
            }
        return new Shape { Name = "wavefront", Tasks = side * side, Source = s.ToArray(), Target = t.ToArray() };
    }

    /// <summary>Each task depends on up to <paramref name="maxPreds"/> distinct random earlier tasks.</summary>
    private static Shape RandomDag(int n, int maxPreds, int seed)
    {
        var rnd = new Random(seed);
        var s = new List<int>(n * maxPreds / 2);
        var t = new List<int>(n * maxPreds / 2);
        Span<int> chosen = stackalloc int[maxPreds];
        for (int i = 1; i < n; i++)
        {
            int k = rnd.Next(0, maxPreds + 1), m = 0;
            for (int j = 0; j < k; j++)
            {
                int p = rnd.Next(0, i);
                if (chosen[..m].Contains(p)) continue;
                chosen[m++] = p;
                s.Add(p);
                t.Add(i);
            }
        }
        return new Shape { Name = "random_dag", Tasks = n, Source = s.ToArray(), Target = t.ToArray() };
    }
}
