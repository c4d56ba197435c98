namespace TaskMesh.Learning; internal static class Placeholder {}
