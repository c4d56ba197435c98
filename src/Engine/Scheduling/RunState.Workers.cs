using System.Collections.Concurrent;
using System.Diagnostics;
using System.Runtime.CompilerServices;
using TaskMesh.Engine.Graph;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Observability;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Scheduling;

/// <summary>The worker loop: take a ready task, run it and the chain of successors it releases.</summary>
internal sealed partial class RunState
{
    // The loop methods below are compiled fully optimised at once: a run calls each of them a few
    // times only, each call looping over up to millions of tasks, so tiered compilation would keep
    // them in unoptimised or on-stack-replaced code for most of the work (measured: a 1M-task chain
    // ran 2.5x slower on reused scheduler threads until this).

    /// <summary>Completions a worker batches before subtracting them from the run's remaining count.</summary>
    private const int FlushEvery = 256;

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal void WorkerLoop(Worker w)
    {
        try
        {
            var spinner = new SpinWait();
            // The coarse clock at the end of this worker's last step, or 0 after an idle moment
            // (see RunInline): back-to-back tasks share one clock read.
            long tick = 0;
            while (!_cancelled)
            {
                int node = TryTake(w);
                if (node != NoTask)
                {
                    spinner.Reset();
                    RunChain(w, node, ref tick);
                    continue;
                }
                if (TryClaimRoots(out int start, out int end))
                {
                    spinner.Reset();
                    RunRoots(w, start, end, ref tick);
                    continue;
                }
                tick = 0;
                Flush(w);
                if (_stopping) break;
                if (!spinner.NextSpinWillYield)
                {
                    spinner.SpinOnce(sleep1Threshold: -1);
                    continue;
                }
                int epoch = _notifier.PrepareWait();
                if (MayHaveWork() || _stopping || _cancelled)
                    _notifier.CancelWait();
                else
                    _notifier.CommitWait(epoch);
                spinner.Reset();
            }
            Flush(w);
        }
        catch (Exception ex)
        {
            Fault(ex);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RunRoots(Worker w, int start, int end, ref long tick)
    {
        var inDegree = Graph.InDegree;
        for (int i = start; i < end && !_cancelled; i++)
        {
            if (inDegree[i] != 0) continue;
            if (_onReleased is { } released)
            {
                released.TaskReleased(i);
                tick = 0;
            }
            RunChain(w, i, ref tick);
        }
    }

    /// <summary>Runs a ready task and, inline, the chain of first-released successors after it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private void RunChain(Worker w, int node, ref long tick)
    {
        var route = Tasks.Route;
        var restored = _restored;
        do
        {
            // The skip marks exist once some task failed; the array is published before the
            // failed task's decrements (full fences), so a released successor sees it.
            int skip = Tasks.SkipCause is { } skips ? skips[node] : TaskTable.NoSkipCause;
            if (restored is not null && restored.Contains(node))
            {
                node = FinishRestored(w, node, restored);
                tick = 0;
            }
            else if (_cache is not null && skip == TaskTable.NoSkipCause && (Graph.FlagsOf(node) & NodeFlags.Cached) != 0 && TryFinishFromCache(w, node, out int next))
            {
                node = next;
                tick = 0;
            }
            else if (skip != TaskTable.NoSkipCause)
            {
                node = Finish(w, node, TaskOutcome.Skipped, skip);
                tick = 0;
            }
            else if (route[node] == RouteTable.Inline)
                node = RunInline(w, node, ref tick);
            else
            {
                Dispatch(node);
                node = NoTask;
                tick = 0;
                if (_onTasksEnded is not null) Flush(w);
            }
        }
        while (node != NoTask && !_cancelled);
        // A task left in hand at cancellation never started: it is reported as cancelled.
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private int RunInline(Worker w, int node, ref long tick)
    {
        var body = _inlineOf[Graph.HandlerIndex(node)]!;
        var ended = _onPlainAttemptEnded;
        var durations = Tasks.DurationMs;
        // Precise timing (two clock reads) when details are kept or an observer asks; the coarse
        // tick count (CoarseClock: a memory read) when observers only need to tell a slow task
        // from a quick one. A coarse start is the end of the worker's previous step when it came
        // straight before (`tick`, 0 after anything that may have waited): one read per task
        // instead of two, at the price of counting the sub-microsecond hand-over plus the observer
        // calls made as the previous task ended and released its successors.
        bool precise = durations is not null || _preciseInlineTiming;
        long t0 = precise ? Stopwatch.GetTimestamp()
            : _timeInline ? (tick != 0 ? tick : CoarseClock.Now)
            : 0;
        if (Tasks.StartMs is { } starts) starts[node] = (float)Stopwatch.GetElapsedTime(_startTimestamp, t0).TotalMilliseconds;
        _onAttemptStarted?.AttemptStarted(new AttemptStart(node, LocalName, 1));
        object? output;
        try
        {
            output = body(new TaskContext(this, node, 1));
        }
        catch (Exception ex)
        {
            tick = 0;
            return OnInlineFailure(w, node, ex, t0);
        }
        if (Tasks.HasExtras && Tasks.TryExtrasOf(node) is not null)
        {
            tick = 0;
            return OnInlineReport(w, node, output, t0);
        }
        if (Tasks.Outputs is { } outputs && (_keepAllOutputs || (Graph.FlagsOf(node) & NodeFlags.HasDataSuccessor) != 0))
            outputs[node] = output;
        if (durations is not null) durations[node] = (float)Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        if (_cache is not null && (Graph.FlagsOf(node) & NodeFlags.Cached) != 0) KeepInCache(node, output);
        if (t0 == 0) return Finish(w, node, TaskOutcome.Succeeded, TaskTable.NoSkipCause);
        TimeSpan elapsed;
        if (precise)
            elapsed = Stopwatch.GetElapsedTime(t0);
        else
        {
            tick = CoarseClock.Now;
            // The clock moved, so the task was not quick: the real tick count, read once, for its
            // end (the coarse one lags while its thread is kept off the CPU, which would make a
            // slow task look shorter than it was).
            if (tick != t0) tick = Math.Max(tick, Environment.TickCount64);
            elapsed = TimeSpan.FromMilliseconds(tick - t0);
        }
        // A task whose output feeds a data edge is not "plain": recorders keep its output.
        bool plain = (Graph.FlagsOf(node) & NodeFlags.HasDataSuccessor) == 0;
        if ((plain ? ended : _onAttemptEnded) is { } observers)
        {
            observers.AttemptEnded(new AttemptResult(node, LocalName, 1, AttemptOutcome.Succeeded, output, null, elapsed), plainInline: plain);
            tick = 0;   // those observers may take their time (a recorder keeps the output): not the next task's
        }
        // Quick (the coarse clock did not move) and plain: counted, not listed, when the batch observers allow it.
        bool quick = plain && _quickCounted && !precise && elapsed.Ticks == 0 && (node & (TaskEndBatch.ListedEvery - 1)) != 0;
        int next = Finish(w, node, TaskOutcome.Succeeded, TaskTable.NoSkipCause, elapsed, attemptUnreported: plain, quick: quick);
        // The clock moved while the task ran (at most once a millisecond for tiny tasks; every time
        // for longer ones): batched ends are handed over, so none waits long behind quick work.
        if (_onTasksEnded is not null && elapsed.Ticks >= TimeSpan.TicksPerMillisecond) Flush(w);
        return next;
    }

    internal string LocalName => _layerNames[0];

    /// <summary>
    /// A cache-enabled task: its key is computed from its handler, arguments and inputs; on a hit it
    /// ends as succeeded with the kept output, nothing run; on a miss the key is remembered so its
    /// successful output is kept when it ends.
    /// </summary>
    private bool TryFinishFromCache(Worker w, int node, out int next)
    {
        next = NoTask;
        if (_manualTasks?.Contains(node) == true) return false;
        string? variant = null;
        if (Prepared.HandlerOf(node).CacheVariant is { } variantOf)
        {
            byte route = Tasks.Route[node];
            variant = variantOf(Prepared.ParsedArgsOf(node), LayerAt(route == RouteTable.Inline ? RouteTable.Local : route));
        }
        if (TaskCacheKey.Of(Prepared, node, InputsOf(node), variant) is not string key) return false;
        if (_cache!.TryGet(key, out var output))
        {
            if (Tasks.Outputs is { } outputs) outputs[node] = output;
            Interlocked.Increment(ref _cachedCount);
            next = Finish(w, node, TaskOutcome.Succeeded, TaskTable.NoSkipCause, reusedFrom: "cache");
            return true;
        }
        LazyInitializer.EnsureInitialized(ref _cacheKeys, static () => new ConcurrentDictionary<int, string>())[node] = key;
        return false;
    }

    /// <summary>Keeps a cache-enabled task's successful output under the key computed before it ran.</summary>
    internal void KeepInCache(int node, object? output)
    {
        if (_cacheKeys is { } keys && keys.TryRemove(node, out var key))
            _cache!.Put(key, Graph.HandlerOfTask(node), Graph.IdOf(node), output);
    }

    /// <summary>A task done in an earlier run: its output restored for its data successors, nothing run.</summary>
    private int FinishRestored(Worker w, int node, RestoredTasks restored)
    {
        if (Tasks.Outputs is { } outputs) outputs[node] = restored.OutputOf(node);
        Interlocked.Increment(ref _restoredCount);
        return Finish(w, node, TaskOutcome.Succeeded, TaskTable.NoSkipCause, reusedFrom: "restored");
    }

    /// <summary>An inline attempt's duration from its start stamp (0 when it was not timed: nobody asked).</summary>
    private static TimeSpan InlineElapsed(long t0, bool precise)
        => t0 == 0 ? TimeSpan.Zero : precise ? Stopwatch.GetElapsedTime(t0) : TimeSpan.FromMilliseconds(CoarseClock.Now - t0);

    /// <summary>An inline attempt that failed, or reported a confidence or an escalation request: the policy decides.</summary>
    private int OnInlineFailure(Worker w, int node, Exception ex, long t0)
        => OnInlineAttemptEnded(w, new AttemptResult(node, LocalName, 1, AttemptOutcome.Failed, null, DescribeFailure(ex), InlineElapsed(t0, IsPrecise)));

    private int OnInlineReport(Worker w, int node, object? output, long t0)
    {
        var (confidence, request) = Tasks.ExtrasOf(node).TakeReports(1);
        return OnInlineAttemptEnded(w, new AttemptResult(node, LocalName, 1, AttemptOutcome.Succeeded, output, null, InlineElapsed(t0, IsPrecise), confidence, request));
    }

    private bool IsPrecise => Tasks.DurationMs is not null || _preciseInlineTiming;

    private int OnInlineAttemptEnded(Worker w, AttemptResult result)
    {
        int node = result.Task;
        Tasks.Attempts[node] = 1;
        var decision = Attempts.Decide(result);
        result = result with { Next = decision.Next };
        _onAttemptEnded?.AttemptEnded(result);
        if (decision.Next != AttemptNext.Complete)
        {
            Attempts.MoveInlineAttemptOn(node, result, decision);
            return NoTask;
        }
        if (Tasks.DurationMs is { } d) d[node] = (float)result.Duration.TotalMilliseconds;
        if (result.Succeeded)
        {
            if (Tasks.Outputs is { } outputs && (_keepAllOutputs || (Graph.FlagsOf(node) & NodeFlags.HasDataSuccessor) != 0))
                outputs[node] = result.Output;
            if (_cache is not null && (Graph.FlagsOf(node) & NodeFlags.Cached) != 0) KeepInCache(node, result.Output);
            return Finish(w, node, TaskOutcome.Succeeded, TaskTable.NoSkipCause, result.Duration);
        }
        if (Tasks.Errors is { } errors) errors[node] = result.Error;
        return Finish(w, node, result.TaskOutcome, TaskTable.NoSkipCause, result.Duration);
    }

    /// <summary>
    /// Records the task's outcome and releases its successors. Returns one successor for the
    /// caller to run inline (workers only), or <see cref="AttemptHost.NoTask"/>.
    /// </summary>
    /// <param name="attemptUnreported">The task's one attempt was a plain inline success that observers of
    /// <see cref="RunObserverInterests.AttemptEndedUnlessPlain"/> did not hear of.</param>
    /// <param name="quick">A quick plain success that batch observers count rather than list (<see cref="RunObserverInterests.QuickSuccessesCounted"/>).</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    internal int Finish(Worker? w, int node, TaskOutcome outcome, int skipCause, TimeSpan duration = default, string? reusedFrom = null, bool attemptUnreported = false,
        bool quick = false)
    {
        Tasks.Outcome[node] = (byte)outcome;
        bool propagate = outcome != TaskOutcome.Succeeded;
        if (propagate && outcome != TaskOutcome.Skipped) Interlocked.Increment(ref _failedCount);
        if (_onTaskEnded is not null || _onTasksEnded is not null && !quick)
            ReportEnd(w, quick, new PackedTaskEnd(node, outcome, LayerIndexOf(node), AttemptsOf(node),
                outcome == TaskOutcome.Skipped ? TaskTable.DecodeCause(skipCause) : NoTask, duration.Ticks, reusedFrom, attemptUnreported));
        int cause = outcome == TaskOutcome.Skipped ? skipCause : TaskTable.EncodeCause(node);
        int inline = NoTask;
        var succ = Graph.Succ;
        var kinds = Graph.SuccKind;
        var pending = Tasks.Pending;
        var inDegree = Graph.InDegree;
        var skips = propagate ? Tasks.SkipCauseForWriting() : null;
        int end = Graph.SuccStart[node + 1];
        for (int e = Graph.SuccStart[node]; e < end; e++)
        {
            int s = succ[e];
            // The skip mark is written before the decrement, whose full fence publishes it to
            // whichever thread sees the counter reach zero.
            if (propagate && (kinds is null || kinds[e] != (byte)EdgeKind.Soft))
                Interlocked.CompareExchange(ref skips![s], cause, TaskTable.NoSkipCause);
            // A successor with one predecessor is ready now: no counter to share, no atomic needed.
            // (With a skip mark to publish, the decrement's fence is kept.)
            if (inDegree[s] == 1 && !propagate || Interlocked.Decrement(ref pending[s]) == 0)
            {
                _onReleased?.TaskReleased(s);
                if (w is not null && inline == NoTask && Graph.PriorityByte(s) != (byte)TaskPriority.Low)
                    inline = s;
                else if (w is null && Ready.Ranks is not null && IsPlainDispatch(s))
                    Dispatch(s);   // into its layer's queue before this task's slot is freed, to compete for it (as in a list schedule)
                else
                    Enqueue(w, s);
            }
        }
        if (w is not null)
        {
            if (++w.Unflushed.Value == FlushEvery) Flush(w);
        }
        else if (Interlocked.Decrement(ref _remaining) == 0)
            _finished.TrySetResult();
        return inline;
    }

    /// <summary>
    /// True when a released task would go straight to a rank-ordered layer (a worker would only
    /// dispatch it: not inline, not skipped, restored or answered from the cache).
    /// </summary>
    private bool IsPlainDispatch(int node)
    {
        byte r = Tasks.Route[node];
        return r != RouteTable.Inline && Ready.RanksFor(r) is not null
            && (Tasks.SkipCause is not { } skips || Volatile.Read(ref skips[node]) == TaskTable.NoSkipCause)
            && _restored is null && (_cache is null || (Graph.FlagsOf(node) & NodeFlags.Cached) == 0);
    }

    /// <summary>
    /// A task's end to observers: at once to those that take ends one by one; into the worker's
    /// batch (handed over by <see cref="Flush"/>, before the task counts as done) for the others,
    /// or at once from a layer's thread.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReportEnd(Worker? w, bool quick, in PackedTaskEnd end)
    {
        _onTaskEnded?.TaskEnded(end.Unpack(_layerNames));
        if (_onTasksEnded is not { } batched) return;
        if (w is not null)
        {
            if (!quick) w.Ends![w.Packed++] = end;   // Finish counts it next (quick ones only that); Flush hands them over
        }
        else batched.TasksEnded(new TaskEndBatch(new ReadOnlySpan<PackedTaskEnd>(in end), _layerNames, RunId));
    }

    private void Flush(Worker w)
    {
        if (w.Unflushed.Value == 0) return;
        if (_onTasksEnded is { } batched)
        {
            batched.TasksEnded(new TaskEndBatch(new ReadOnlySpan<PackedTaskEnd>(w.Ends, 0, w.Packed), _layerNames, RunId, w.Unflushed.Value - w.Packed));
            w.Packed = 0;
        }
        int left = Interlocked.Add(ref _remaining, -w.Unflushed.Value);
        w.Unflushed.Value = 0;
        if (left == 0) _finished.TrySetResult();
    }
}
