namespace TaskMesh.Tests; public class Smoke { [Xunit.Fact] public void Ok() { } }
