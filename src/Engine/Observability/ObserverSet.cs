using System.Runtime.CompilerServices;
using TaskMesh.Engine.Routing;
using TaskMesh.Engine.Scheduling;
using TaskMesh.Engine.Scheduling.Attempts;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// The observers of one run, fixed when it starts. The per-task calls are compiled fully optimised
/// at once (like the scheduler loops): a run makes millions of them within its first milliseconds. The scheduler holds a null reference when
/// there are none, so the hot path pays one null check. An observer that throws is detached
/// (its slot set to null) and its first fault kept; the run goes on.
/// </summary>
internal sealed class ObserverSet
{
    private readonly IRunObserver?[] _observers;
    private readonly List<string> _faults = new();

    private readonly RunObserverInterests[] _interests;

    private ObserverSet(IRunObserver[] observers)
    {
        _observers = observers;
        _interests = new RunObserverInterests[observers.Length];
        ReadInterests();
    }

    /// <summary>Reads what each observer wants (after <see cref="RunStarted"/>: an observer may decide per run).</summary>
    public void ReadInterests()
    {
        Interests = RunObserverInterests.None;
        for (int i = 0; i < _observers.Length; i++)
        {
            _interests[i] = _observers[i]?.Interests ?? RunObserverInterests.None;
            Interests |= _interests[i];
        }
    }

    /// <summary>What at least one observer wants.</summary>
    public RunObserverInterests Interests { get; private set; }

    /// <summary>True when every observer that wants <paramref name="interest"/> also wants <paramref name="with"/>.</summary>
    public bool AllWith(RunObserverInterests interest, RunObserverInterests with)
    {
        foreach (var i in _interests)
            if ((i & interest) != 0 && (i & with) == 0) return false;
        return true;
    }

    /// <summary>This set when some observer wants <paramref name="interest"/>, else null (the hot path checks null only).</summary>
    public ObserverSet? For(RunObserverInterests interest) => (Interests & interest) != 0 ? this : null;

    /// <summary>The set for <paramref name="observers"/>, or null when there are none.</summary>
    public static ObserverSet? Create(IEnumerable<IRunObserver> observers)
    {
        var array = observers.Where(o => o is not null).Distinct().ToArray();
        return array.Length == 0 ? null : new ObserverSet(array);
    }

    /// <summary>Faults of detached observers, one line each.</summary>
    public IReadOnlyList<string> Faults
    {
        get { lock (_faults) return _faults.ToArray(); }
    }

    private void Detach(int i, IRunObserver o, Exception ex)
    {
        if (Interlocked.CompareExchange(ref _observers[i], null, o) != o) return;
        lock (_faults) _faults.Add($"{o.GetType().Name} was detached: {ex.GetType().Name}: {ex.Message}");
    }

    public void RunStarted(RunStart run)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if (_observers[i] is not { } o) continue;
            try { o.OnRunStarted(run); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void TaskReleased(int task)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if ((_interests[i] & RunObserverInterests.TaskReleased) == 0 || _observers[i] is not { } o) continue;
            try { o.OnTaskReleased(task); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    public void TaskRouted(int task, in RouteDecision decision)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if ((_interests[i] & RunObserverInterests.TaskRouted) == 0 || _observers[i] is not { } o) continue;
            try { o.OnTaskRouted(task, decision); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void AttemptStarted(in AttemptStart attempt)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if ((_interests[i] & RunObserverInterests.AttemptStarted) == 0 || _observers[i] is not { } o) continue;
            try { o.OnAttemptStarted(attempt); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    /// <param name="result">The attempt.</param>
    /// <param name="plainInline">A plain success of an inline task: only observers that want every attempt get it.</param>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void AttemptEnded(in AttemptResult result, bool plainInline = false)
    {
        var need = plainInline ? RunObserverInterests.AttemptEnded : RunObserverInterests.AttemptEnded | RunObserverInterests.AttemptEndedUnlessPlain;
        for (int i = 0; i < _observers.Length; i++)
        {
            if ((_interests[i] & need) == 0 || _observers[i] is not { } o) continue;
            try { o.OnAttemptEnded(result); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void TaskEnded(in TaskEnd end)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            // An observer that asked for batches gets the task's end in one (TasksEnded) only.
            if ((_interests[i] & (RunObserverInterests.TaskEnded | RunObserverInterests.TaskEndedInBatches)) != RunObserverInterests.TaskEnded || _observers[i] is not { } o) continue;
            try { o.OnTaskEnded(end); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    /// <summary>Ends for the observers that take them in batches.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public void TasksEnded(TaskEndBatch ends)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if ((_interests[i] & RunObserverInterests.TaskEndedInBatches) == 0 || _observers[i] is not { } o) continue;
            try { o.OnTasksEnded(ends); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    public void Escalated(EscalationRecord escalation)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if (_observers[i] is not { } o) continue;
            try { o.OnEscalated(escalation); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }

    public void RunEnded(RunRecord record)
    {
        for (int i = 0; i < _observers.Length; i++)
        {
            if (_observers[i] is not { } o) continue;
            try { o.OnRunEnded(record); } catch (Exception ex) { Detach(i, o, ex); }
        }
    }
}
