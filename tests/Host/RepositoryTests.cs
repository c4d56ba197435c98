using System.Text.RegularExpressions;
using Xunit;

namespace TaskMesh.Tests.Host;

/// <summary>
/// The repository stands on its own: what its docs, examples and bench use is inside it (with its
/// licence), and nothing names a place outside it — not the folder it was developed beside, not
/// the machine it was written on, not a design file it does not ship.
/// </summary>
public sealed class RepositoryTests
{
    /// <summary>The clone the tests were built from (the folder with Engine.sln above the test binaries).</summary>
    private static string Root()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "Engine.sln"))) return d.FullName;
        throw new InvalidOperationException("the tests do not run inside a clone of the repository");
    }

    private static IEnumerable<string> TrackedText(string root)
    {
        foreach (var top in new[] { "src", "bench", "docs", "examples", "scripts", ".ci" })
        {
            var dir = Path.Combine(root, top);
            if (!Directory.Exists(dir)) continue;
            foreach (var f in Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories))
            {
                var rel = Path.GetRelativePath(root, f);
                if (rel.Contains("/bin/") || rel.Contains("/obj/") || rel.StartsWith("bench/results/", StringComparison.Ordinal)) continue;
                if (Path.GetExtension(f) is ".cs" or ".md" or ".sh" or ".toml" or ".json" or ".csproj" or "" && new FileInfo(f).Length < 4 << 20) yield return f;
            }
        }
        yield return Path.Combine(root, "README.md");
    }

    [Fact]
    public void Docs_Code_And_Bench_NameNothingOutsideTheRepository()
    {
        var root = Root();
        string outside = ".." + "/shared", design = "DESIGN" + ".md";
        var machinePath = new Regex(@"(?<![\w.])/work/\w+/");
        var found = new List<string>();
        foreach (var f in TrackedText(root))
        {
            var text = File.ReadAllText(f);
            if (text.Contains(outside, StringComparison.Ordinal)) found.Add($"{Path.GetRelativePath(root, f)}: {outside}");
            if (text.Contains(design, StringComparison.Ordinal)) found.Add($"{Path.GetRelativePath(root, f)}: {design}");
            if (machinePath.IsMatch(text)) found.Add($"{Path.GetRelativePath(root, f)}: a path of the machine it was written on");
        }
        Assert.Empty(found);
    }

    [Fact]
    public async Task WorkflowTraces_ShipWithTheirLicence_AndImportAsTheReadmeSays()
    {
        var folder = Path.Combine(Root(), "examples", "workflows");
        Assert.True(File.Exists(Path.Combine(folder, "LICENSE.WfInstances")));
        var expected = new Dictionary<string, int>
        {
            ["1000genome-chameleon-2ch-100k-001.json"] = 76, ["blast-chameleon-small-001.json"] = 120, ["cycles-chameleon-1l-1c-9p-001.json"] = 97,
            ["cycles-chameleon-2l-1c-12p-001.json"] = 650, ["epigenomics-chameleon-hep-2seq-50k-001.json"] = 274, ["montage-chameleon-dss-075d-001.json"] = 444,
            ["seismology-chameleon-100p-001.json"] = 100,
        };
        Assert.Equal(expected.Keys.Order(), Directory.GetFiles(folder, "*.json").Select(Path.GetFileName).Order());
        var dir = Directory.CreateTempSubdirectory("taskmesh-repo-").FullName;
        try
        {
            foreach (var (file, edges) in expected)
            {
                var (code, stdout, stderr) = await CliTests.Taskmesh(dir, "import", "wfformat", Path.Combine(folder, file), "--out", Path.Combine(dir, "g.json"));
                Assert.True(code == 0, stderr);
                Assert.Contains($", {edges} edges ({edges} data)", stdout);
            }
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
