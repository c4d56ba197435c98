namespace TaskMesh.QuantumSim; internal static class Placeholder {}
