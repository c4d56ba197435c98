using TaskMesh.Engine.Observability;

namespace TaskMesh.Engine.Scheduling;

/// <summary>A scheduler thread of one run, with its own deque and its batch of unpublished completions.</summary>
internal sealed class Worker
{
    private readonly RunState _run;
    private readonly TaskCompletionSource _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public Worker(RunState run, int id)
    {
        _run = run;
        Id = id;
        Deque = new WorkStealingDeque(256);
    }

    public readonly int Id;
    public readonly WorkStealingDeque Deque;

    /// <summary>
    /// Tasks this worker ended and has not yet subtracted from the run's remaining count. Written on
    /// every task, so it sits on cache lines of its own: thieves read <see cref="Deque"/> next to it.
    /// </summary>
    public PaddedInt Unflushed;

    /// <summary>
    /// The ends of the tasks counted in <see cref="Unflushed"/>, for observers that take them in
    /// batches (null when none does); handed over by the same flush.
    /// </summary>
    public PackedTaskEnd[]? Ends;

    /// <summary>Entries in <see cref="Ends"/>; the other tasks of <see cref="Unflushed"/> were quick plain successes, counted only.</summary>
    public int Packed;

    public Task Exited => _exited.Task;

    /// <summary>Runs the worker loop on a scheduler thread (a parked one when there is one).</summary>
    public void Start() => WorkerThreads.Run(static s =>
    {
        var w = (Worker)s!;
        try { w._run.WorkerLoop(w); }
        finally { w._exited.TrySetResult(); }
    }, this);
}
