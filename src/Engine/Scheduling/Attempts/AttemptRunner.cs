using System.Diagnostics;
using TaskMesh.Engine.Handlers;
using TaskMesh.Engine.Layers;
using TaskMesh.Engine.Observability;

namespace TaskMesh.Engine.Scheduling.Attempts;

/// <summary>
/// Runs the attempts of a task that holds a layer slot: one attempt at a time with its timeout
/// (abandoning a handler that ignores cancellation), then the escalation policy decides —
/// complete, retry here after a back-off, escalate to a variant here, or move to another layer.
/// The inline path of the workers asks the same <see cref="Decide"/> and <see cref="Escalate"/>.
/// </summary>
internal sealed class AttemptRunner
{
    /// <summary>Escalations one task may have in a run; a policy asking for more is refused (the attempt completes).</summary>
    public const int MaxEscalationsPerTask = Escalation.EscalationLimits.MaxPerTask;

    private readonly AttemptHost _run;
    private readonly IEscalationPolicy _policy;
    private readonly RetryPolicy _retry;

    public AttemptRunner(AttemptHost run, IEscalationPolicy policy, RetryPolicy retry)
    {
        _run = run;
        _policy = policy;
        _retry = retry;
    }

    /// <summary>Runs attempts of <paramref name="node"/> in a slot of <paramref name="dispatcher"/>'s layer until the task completes or moves.</summary>
    public async Task RunInSlotAsync(int node, LayerDispatcher dispatcher)
    {
        var run = _run;
        var layer = dispatcher.Layer;
        var handler = run.HandlerOf(node);
        var timeout = run.TimeoutOf(node);
        byte route = run.RouteOfTask(node);
        long slotStart = Stopwatch.GetTimestamp();
        if (!run.StartInSlot(node))
        {
            // Cancelled while it waited for the slot: the handler is not started at all.
            run.CompleteGuarded(node, new AttemptResult(node, layer.Name, 0, AttemptOutcome.Cancelled, null, "cancelled before it started", TimeSpan.Zero), 0, null);
            return;
        }
        while (true)
        {
            int attempt = run.NextAttempt(node);
            if (attempt == 1) run.NoteFirstStart(node, slotStart);
            run.OnAttemptStartedObservers?.AttemptStarted(new AttemptStart(node, layer.Name, attempt));
            var result = await RunOneAsync(node, handler, layer, attempt, timeout).ConfigureAwait(false);
            var decision = Judge(layer, ref result);
            switch (decision.Next)
            {
                case AttemptNext.Retry:
                    try
                    {
                        await Task.Delay(decision.Delay, run.Options.TimeProvider, run.TokenOf(node)).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException)
                    {
                        Complete(node, result with { Outcome = AttemptOutcome.Cancelled, Output = null, Error = "cancelled while waiting to retry" }, slotStart);
                        return;
                    }
                    continue;
                case AttemptNext.Escalate:
                    byte target = Escalate(node, route, result, decision);
                    if (target == route) continue;
                    // Another layer: give this slot back and queue there.
                    run.ExtrasOf(node).Left(route, Stopwatch.GetElapsedTime(slotStart).TotalMilliseconds);
                    run.Redispatch(node, target, TimeSpan.Zero);
                    return;
                default:
                    Complete(node, result, slotStart);
                    return;
            }
        }
    }

    /// <summary>
    /// An attempt on a layer that takes batches (<see cref="LayerAttempt"/>) ended: the policy
    /// decides as for an attempt run in a slot, and the task completes or moves on — a retry or an
    /// escalation queues it again (after the back-off) rather than keeping the slot, so no attempt
    /// waits on a thread or a timer of its own. The caller gives the slot back afterwards.
    /// </summary>
    public void Settle(int node, LayerDispatcher dispatcher, AttemptResult result)
    {
        var run = _run;
        var decision = Judge(dispatcher.Layer, ref result);
        byte route = run.RouteOfTask(node);
        switch (decision.Next)
        {
            case AttemptNext.Retry:
                run.ExtrasOf(node).Left(route, result.Duration.TotalMilliseconds);
                run.Redispatch(node, route, decision.Delay);
                return;
            case AttemptNext.Escalate:
                byte target = Escalate(node, route, result, decision);
                run.ExtrasOf(node).Left(route, result.Duration.TotalMilliseconds);
                run.Redispatch(node, target, TimeSpan.Zero);
                return;
            default:
                Complete(node, result, result.Duration.TotalMilliseconds);   // the slot held this attempt alone
                return;
        }
    }

    /// <summary>What follows an attempt: its cost counted, the handler's reports taken, the policy's decision, observers told.</summary>
    private EscalationDecision Judge(ExecutionLayer layer, ref AttemptResult result)
    {
        var run = _run;
        int node = result.Task;
        run.AddSpend(layer.PricePerSecond * result.Duration.TotalSeconds);
        if (run.TryExtrasOf(node) is { } extras)
        {
            var (confidence, request) = extras.TakeReports(result.Attempt);
            result = result with { Confidence = confidence, Request = result.Succeeded ? request : null };
        }
        var decision = Decide(result);
        result = result with { Next = decision.Next };
        run.OnAttemptEndedObservers?.AttemptEnded(result);
        return decision;
    }

    private void Complete(int node, AttemptResult result, long slotStart)
        => Complete(node, result, Stopwatch.GetElapsedTime(slotStart).TotalMilliseconds);

    /// <summary>The task's final outcome, after <paramref name="slotMs"/> in its last slot (and the time it spent in layers it left).</summary>
    private void Complete(int node, AttemptResult result, double slotMs)
    {
        var extras = _run.TryExtrasOf(node);
        double ms = (extras?.ElapsedMs ?? 0) + slotMs;
        string? note = null;
        if (extras?.Refusal is string refusal)
        {
            if (result.Succeeded) note = refusal;
            else result = result with { Error = $"{result.Error}; {refusal}" };
        }
        if (extras is { HasFallback: true } && result.Outcome is AttemptOutcome.Failed or AttemptOutcome.TimedOut)
        {
            // A low-confidence result stands when the escalated attempt could not improve on it.
            note = $"escalated attempt {result.Attempt} failed ({result.Error}); kept the result of attempt {extras.FallbackAttempt}";
            result = result with { Outcome = AttemptOutcome.Succeeded, Output = extras.FallbackOutput, Error = null };
        }
        _run.CompleteGuarded(node, result, ms, note);
    }

    /// <summary>The policy's decision for an attempt, bounded: unknown layers and runaway escalations are refused.</summary>
    public EscalationDecision Decide(in AttemptResult result)
    {
        if (result.Succeeded && result.Confidence is null && result.Request is null) return EscalationDecision.Complete;
        var run = _run;
        int node = result.Task;
        var extras = run.TryExtrasOf(node);
        int escalations = extras?.Escalations ?? 0;
        int attemptsHere = result.Attempt - (extras?.EscalatedAfterAttempt ?? 0);
        var spec = run.SpecOf(node);
        bool cancelled = run.IsCancelled(node);
        var context = new EscalationContext(run.GraphOf(node), run.IdOf(node), run.HandlerNameOf(node),
            Math.Max(0, run.RetriesOf(node) - (attemptsHere - 1)), escalations, spec?.MinConfidence,
            run.LayerNames, _retry, cancelled) with { Descriptor = run.HandlerOf(node) };
        EscalationDecision d;
        try
        {
            d = _policy.Decide(result, context);
        }
        catch (Exception)
        {
            // A faulty policy must not lose the task: its attempt stands.
            return EscalationDecision.Complete;
        }
        switch (d.Next)
        {
            case AttemptNext.Retry when result.Attempt >= byte.MaxValue || cancelled:
                return EscalationDecision.Complete;
            case AttemptNext.Escalate when escalations >= MaxEscalationsPerTask || cancelled:
                return EscalationDecision.Complete;
            case AttemptNext.Escalate when d.Layer is string l && run.RouteOf(l) < 0:
                return EscalationDecision.Complete;
            case AttemptNext.Escalate when d.Layer is string l && !CanRun(l, node):
                return EscalationDecision.Complete;
        }
        if (run.Budget is double budget && d.Next is AttemptNext.Retry or AttemptNext.Escalate)
        {
            // The next attempt, priced as this one took on the layer it would run on.
            string next = d.Next == AttemptNext.Escalate && d.Layer is string to ? to : result.Layer;
            double price = run.PriceOf(next);
            double expected = price * result.Duration.TotalSeconds;
            double spent = run.Spent;
            if (price > 0 && spent + expected > budget)
            {
                run.ExtrasOf(node).Refusal = string.Create(System.Globalization.CultureInfo.InvariantCulture,
                    $"{(d.Next == AttemptNext.Retry ? "retry" : "escalation")} to {next} refused: it would cost about {expected:0.######}, and {Math.Max(0, budget - spent):0.######} of the run's budget of {budget:0.######} is left");
                return EscalationDecision.Complete;
            }
        }
        return d;
    }

    // The one rule (ExecutionLayer.CanRun): the handler (a local-only one on local only) and the tags the task requires.
    private bool CanRun(string layer, int node)
    {
        int route = _run.RouteOf(layer);
        return route >= 0 && _run.LayerAt(route).CanRun(_run.HandlerOf(node), _run.SpecOf(node)?.Requires);
    }

    /// <summary>
    /// An inline attempt whose policy wants another one (a retry, maybe after a back-off, or an
    /// escalation): none of which may stall a worker, so the task moves to a layer's dispatcher —
    /// the escalation recorded, the time spent inline counted when it leaves the local layer.
    /// Static and open runs alike.
    /// </summary>
    public void MoveInlineAttemptOn(int node, in AttemptResult result, in EscalationDecision decision)
    {
        byte next = Escalate(node, RouteTable.Local, result, decision);
        if (next != RouteTable.Local) _run.ExtrasOf(node).Left(RouteTable.Local, result.Duration.TotalMilliseconds);
        _run.Redispatch(node, next, decision.Delay);
    }

    /// <summary>
    /// Carries out a retry or escalation decision for <paramref name="node"/>, whose attempt ran on
    /// <paramref name="route"/>: records the escalation, remembers a fallback output, and returns
    /// the route of the next attempt.
    /// </summary>
    public byte Escalate(int node, byte route, in AttemptResult result, in EscalationDecision decision)
    {
        if (decision.Next != AttemptNext.Escalate) return route;
        var run = _run;
        string here = run.LayerNames[route];
        var x = run.ExtrasOf(node);
        x.EscalatedAfterAttempt = result.Attempt;
        if (result.Succeeded)
        {
            x.FallbackOutput = result.Output;
            x.HasFallback = true;
            x.FallbackAttempt = result.Attempt;
        }
        byte target = route;
        string to;
        if (decision.Layer is string l && l != here)
        {
            target = (byte)run.RouteOf(l);
            to = l;
            x.Variant = null;
        }
        else
        {
            x.Variant = decision.Variant;
            to = decision.Variant ?? here;
        }
        run.RecordEscalation(node, decision.From ?? here, to, decision.Trigger!, decision.Reason!, result.Confidence,
            result.Succeeded ? OutputSummary.Of(result.Output) : result.Error, decision.Rule);
        return target;
    }

    private async Task<AttemptResult> RunOneAsync(int node, HandlerDescriptor handler, ExecutionLayer layer, int attempt, TimeSpan timeout)
    {
        var run = _run;
        long started = Stopwatch.GetTimestamp();
        using var timeoutCts = new CancellationTokenSource(timeout, run.Options.TimeProvider);
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(run.TokenOf(node), timeoutCts.Token);
        var token = linked.Token;
        var invocation = new LayerInvocation(handler, new TaskContext(run, node, attempt));

        if (layer.Cooperative)
        {
            // It neither blocks nor ignores its token: awaited here, no thread hop, no watch of its own.
            try
            {
                return Result(AttemptOutcome.Succeeded, await layer.ExecuteAsync(invocation, token).ConfigureAwait(false), null);
            }
            catch (Exception ex)
            {
                return Ended(ex);
            }
        }

        // Off the dispatcher's thread: a handler that blocks synchronously must not keep us
        // from noticing its timeout.
        Task<object?> work = Task.Run(() => layer.ExecuteAsync(invocation, token).AsTask(), CancellationToken.None);

        if (!work.IsCompleted)
        {
            var cancelRequested = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (token.Register(static s => ((TaskCompletionSource)s!).TrySetResult(), cancelRequested))
            {
                if (await Task.WhenAny(work, cancelRequested.Task).ConfigureAwait(false) != work)
                {
                    var grace = Task.Delay(run.Options.CancelGracePeriod, run.Options.TimeProvider);
                    if (await Task.WhenAny(work, grace).ConfigureAwait(false) != work)
                    {
                        // The handler ignores its token: abandon it, and observe its eventual fault.
                        _ = work.ContinueWith(static t => _ = t.Exception, TaskContinuationOptions.OnlyOnFaulted);
                        if (run.IsCancelled(node))
                            return Result(AttemptOutcome.Cancelled, null, "cancelled; the handler ignored cancellation and was abandoned");
                        return Result(AttemptOutcome.TimedOut, null,
                            $"timed out after {timeout.TotalSeconds:0.###}s; the handler ignored cancellation and was abandoned after {run.Options.CancelGracePeriod.TotalSeconds:0.###}s");
                    }
                }
            }
        }

        if (work.IsCompletedSuccessfully)
            return Result(AttemptOutcome.Succeeded, work.Result, null);
        return Ended(work.Exception?.InnerException ?? new OperationCanceledException());

        // An attempt that threw: cancelled (the run or the task), timed out, or failed.
        AttemptResult Ended(Exception ex)
        {
            if (ex is OperationCanceledException)
            {
                if (run.IsCancelled(node)) return Result(AttemptOutcome.Cancelled, null, "cancelled");
                if (timeoutCts.IsCancellationRequested) return Result(AttemptOutcome.TimedOut, null, $"timed out after {timeout.TotalSeconds:0.###}s");
            }
            return Result(AttemptOutcome.Failed, null, RunState.DescribeFailure(ex));
        }

        AttemptResult Result(AttemptOutcome outcome, object? output, string? error)
            => new(node, layer.Name, attempt, outcome, output, error, Stopwatch.GetElapsedTime(started));
    }
}
