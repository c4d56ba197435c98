namespace TaskMesh.Engine.Store;

/// <summary>A store that cannot be used: not a TaskMesh store, corrupt, newer than this build, unwritable. The message names the file and the reason.</summary>
public sealed class StoreException(string message, Exception? inner = null) : Exception(message, inner);
