using System.Collections.Concurrent;
using Microsoft.Extensions.Logging.Abstractions;
using TaskMesh.Cluster;
using TaskMesh.Engine.Configuration;
using Xunit;

namespace TaskMesh.Tests.Cluster;

/// <summary>
/// The coordinator's dispatch without Orleans: workers are recording stand-ins for their grains, so
/// that credits, strategies, failover, poison and late outcomes can be checked exactly.
/// </summary>
public sealed class ClusterDispatcherTests
{
    /// <summary>A worker grain that keeps what it was sent (and can refuse it).</summary>
    private sealed class FakeWorker(string endpoint) : IWorkerGrain
    {
        public readonly string Endpoint = endpoint;
        public readonly ConcurrentQueue<WorkItem[]> Batches = new();
        public readonly ConcurrentQueue<long> Cancelled = new();
        public volatile bool Fail;
        /// <summary>Outcomes it answers the call with (the attempts that ended at once), or none.</summary>
        public Func<WorkItem[], WorkOutcome[]?>? Answer;

        public int Received => Batches.Sum(b => b.Length);

        public Task<WorkOutcome[]?> Run(WorkItem[] batch)
        {
            if (Fail) return Task.FromException<WorkOutcome[]?>(new InvalidOperationException("unreachable"));
            Batches.Enqueue(batch);
            return Task.FromResult(Answer?.Invoke(batch));
        }

        public Task Cancel(long[] keys)
        {
            foreach (var k in keys) Cancelled.Enqueue(k);
            return Task.CompletedTask;
        }

        public List<WorkItem> Items => Batches.SelectMany(b => b).ToList();
    }

    private sealed class Cluster : IAsyncDisposable
    {
        public readonly ClusterDispatcher Dispatcher;
        public readonly Dictionary<string, FakeWorker> Workers = new();
        private long _key;

        public Cluster(ClusterSettings settings)
        {
            Dispatcher = new ClusterDispatcher(settings, NullLogger.Instance);
            Dispatcher.Start(e => Workers[e]);
        }

        public FakeWorker Join(string endpoint, int slots, string[]? handlers = null, long memory = 1L << 30, int qubits = 25)
        {
            var w = Workers[endpoint] = new FakeWorker(endpoint);
            Dispatcher.Join(new WorkerInfo
            {
                Endpoint = endpoint, Silo = endpoint + "@1", Slots = slots, Cores = slots, MemoryBytes = memory, MaxQubits = qubits,
                Handlers = handlers ?? ["noop", "quantum"],
            });
            return w;
        }

        public RemoteWork Submit(string handler = "noop", int qubits = 0, long need = 0)
        {
            long key = Interlocked.Increment(ref _key);
            var work = new RemoteWork(key, new WorkItem { Key = key, TaskId = $"t{key}", Handler = handler, Attempt = 1, TimeoutMs = 1000 }, qubits, need);
            Dispatcher.Enqueue([work]);
            return work;
        }

        public void Succeed(FakeWorker w, IEnumerable<WorkItem> items)
            => Dispatcher.Report(w.Endpoint, items.Select(i => new WorkOutcome { Key = i.Key, Status = WorkStatus.Succeeded, Output = "\"" + i.TaskId + "\"" }).ToArray());

        public ValueTask DisposeAsync() => Dispatcher.DisposeAsync();
    }

    private static async Task Until(Func<bool> condition, string what)
    {
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (!condition())
        {
            if (DateTime.UtcNow > until) throw new TimeoutException($"waited too long for {what}");
            await Task.Delay(5);
        }
    }

    /// <summary>Long enough for the dispatcher to have sent whatever it was going to send.</summary>
    private static Task Settle() => Task.Delay(100);

    [Fact]
    public async Task AWorker_NeverHoldsMoreThanItsSlotsPlusThePrefetch_AndGetsMoreAsItAnswers()
    {
        // Queued before the worker joins (and kept queued while there is none), so the first send
        // sees all twenty: submitted after the join, the dispatcher may wake between two
        // submissions and send the first few alone.
        await using var c = new Cluster(new ClusterSettings { Prefetch = 3, BatchSize = 100, FallbackToLocal = false });
        var works = Enumerable.Range(0, 20).Select(_ => c.Submit()).ToList();
        var w = c.Join("w1:1", slots: 2);
        await Until(() => w.Received == 5, "the first five");
        await Settle();
        Assert.Equal(5, w.Received);                       // 2 slots + 3 prefetch, in one batch
        Assert.Single(w.Batches);
        Assert.Equal(15, c.Dispatcher.Queued);

        c.Succeed(w, w.Items.Take(2));                     // two answers: two more credits
        await Until(() => w.Received == 7, "two more");
        await Settle();
        Assert.Equal(7, w.Received);
        Assert.Equal("\"t1\"", (await works[0].Done.Task)!.Output);
    }

    [Fact]
    public async Task AnOutcome_OfAnAttemptTheWorkerNoLongerHolds_IsDropped()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0 });
        var w = c.Join("w1:1", slots: 1);
        var work = c.Submit();
        await Until(() => w.Received == 1, "the attempt sent");
        c.Succeed(w, w.Items);
        c.Succeed(w, w.Items);                             // the same outcome again
        c.Dispatcher.Report("ghost:9", [new WorkOutcome { Key = work.Key, Status = WorkStatus.Failed }]);
        Assert.Equal(WorkStatus.Succeeded, (await work.Done.Task)!.Status);
        Assert.Equal(2, c.Dispatcher.Dropped);
    }

    [Fact]
    public async Task OutcomesInTheAnswerToTheSendingCall_EndTheirAttempts_FreeTheirCredit_AndAreNotTakenTwice()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, BatchSize = 1 });
        var w = c.Join("w1:1", slots: 1);
        // Answers the call at once (a handler that runs inline there), as the real worker does.
        w.Answer = batch => batch.Select(i => new WorkOutcome { Key = i.Key, Status = WorkStatus.Succeeded, Output = "\"" + i.TaskId + "\"" }).ToArray();
        var works = Enumerable.Range(0, 5).Select(_ => c.Submit()).ToList();
        foreach (var work in works) Assert.Equal($"\"t{work.Key}\"", (await work.Done.Task.WaitAsync(TimeSpan.FromSeconds(10)))!.Output);
        Assert.Equal(5, w.Batches.Count);                  // one slot, no prefetch: each came after the last one's answer
        Assert.Equal(0, c.Dispatcher.Queued);
        c.Succeed(w, w.Items);                             // the same outcomes reported again: dropped
        Assert.Equal(5, c.Dispatcher.Dropped);
    }

    [Fact]
    public async Task ADeadWorker_ItsAttemptsGoToAnother_FirstInLine_AndItsLateOutcomesAreDropped()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, Strategy = ClusterStrategies.RoundRobin });
        var a = c.Join("a:1", slots: 2);
        var works = Enumerable.Range(0, 6).Select(_ => c.Submit()).ToList();
        await Until(() => a.Received == 2, "a's two");
        var b = c.Join("b:1", slots: 2);
        await Until(() => b.Received == 2, "b's two");
        var lost = new TaskCompletionSource<WorkerLoss>();
        c.Dispatcher.WorkerLost += l => lost.TrySetResult(l);

        c.Dispatcher.SiloDied("a:1@1", "declared dead by the cluster");
        var loss = await lost.Task;
        Assert.Equal(("a:1", 2, 0), (loss.Endpoint, loss.Requeued, loss.Poisoned));
        // b answers its two; the next it gets are a's two, before the two never sent.
        c.Succeed(b, b.Items);
        await Until(() => b.Received == 4, "a's attempts on b");
        Assert.Equal(a.Items.Select(i => i.Key), b.Items.Skip(2).Select(i => i.Key));
        // a's answers, arriving late, are dropped; b's count.
        c.Succeed(a, a.Items);
        Assert.Equal(2, c.Dispatcher.Dropped);
        c.Succeed(b, b.Items.Skip(2));
        await Until(() => b.Received == 6, "the rest on b");
        c.Succeed(b, b.Items.Skip(4));
        foreach (var w in works) Assert.Equal(WorkStatus.Succeeded, (await w.Done.Task)!.Status);
        // The dead member does not come back under the same identity.
        c.Dispatcher.Join(new WorkerInfo { Endpoint = "a:1", Silo = "a:1@1", Slots = 2, Handlers = ["noop"] });
        Assert.DoesNotContain(c.Dispatcher.Workers(), v => v.Endpoint == "a:1");
    }

    [Fact]
    public async Task AnAttempt_InFlightOnAsManyDeadWorkersAsThePoisonLimit_FailsAsPoison()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, PoisonLimit = 2, FallbackToLocal = false });
        var work = c.Submit();
        var first = c.Join("a:1", slots: 1);
        await Until(() => first.Received == 1, "sent to a");
        c.Dispatcher.SiloDied("a:1@1", "dead");
        var second = c.Join("b:1", slots: 1);
        await Until(() => second.Received == 1, "sent to b");
        c.Dispatcher.SiloDied("b:1@1", "dead");
        var outcome = (await work.Done.Task)!;
        Assert.Equal(WorkStatus.Failed, outcome.Status);
        Assert.StartsWith("poison: in flight on 2 workers that died", outcome.Error);
    }

    [Fact]
    public async Task ABatchAWorkerDidNotTake_IsSentElsewhere_AndThatWorkerGetsNothingMore()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, Strategy = ClusterStrategies.RoundRobin, FallbackToLocal = false });
        var a = c.Join("a:1", slots: 1);
        a.Fail = true;
        var b = c.Join("b:1", slots: 1);
        var first = c.Submit();
        var second = c.Submit();
        await Until(() => b.Received == 1, "one on b");
        c.Succeed(b, b.Items);
        await Until(() => b.Received == 2, "the refused one on b");
        c.Succeed(b, b.Items.Skip(1));
        Assert.Equal(WorkStatus.Succeeded, (await first.Done.Task)!.Status);
        Assert.Equal(WorkStatus.Succeeded, (await second.Done.Task)!.Status);
        Assert.Equal((1, 1), (c.Dispatcher.Totals().Workers, c.Dispatcher.Totals().Slots));
        // Once it joins again (it answered), it gets work again.
        a.Fail = false;
        c.Join("a:1", slots: 1);
        var third = c.Submit();
        var fourth = c.Submit();
        await Until(() => a.Received == 1, "a back in rotation");
    }

    [Theory]
    [InlineData(ClusterStrategies.LeastOutstanding, 3, 3)]   // the emptier worker first, until both hold as much per slot
    [InlineData(ClusterStrategies.RoundRobin, 4, 2)]         // in turn, whatever each holds
    public async Task TheStrategy_PicksTheWorker(string strategy, int onA, int onB)
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, Strategy = strategy, FallbackToLocal = false });
        var a = c.Join("a:1", slots: 4);
        for (int i = 0; i < 3; i++) c.Submit();
        await Until(() => a.Received == 3, "three on a");
        var b = c.Join("b:1", slots: 4);
        for (int i = 0; i < 3; i++) c.Submit();
        await Until(() => a.Received + b.Received == 6, "all sent");
        await Settle();
        Assert.Equal((onA, onB), (a.Received, b.Received));
    }

    [Fact]
    public async Task ACircuit_GoesOnlyToAWorkerThatCanHoldItsState_AndOneNoWorkerCanHold_Fails()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 4, Strategy = ClusterStrategies.ResourceAware });
        var small = c.Join("small:1", slots: 4, memory: 64L << 20, qubits: 22);
        var big = c.Join("big:1", slots: 4, memory: 1L << 30, qubits: 26);
        // 25 qubits (512 MB in single precision): only the big worker; one at a time, as its memory allows.
        var wide = Enumerable.Range(0, 3).Select(_ => c.Submit("quantum", 25, 512L << 20)).ToList();
        await Until(() => big.Received == 2, "two wide circuits on the big worker");
        await Settle();
        Assert.Equal(0, small.Received);
        Assert.Equal(2, big.Received);                      // the third waits for memory
        c.Succeed(big, big.Items.Take(1));
        await Until(() => big.Received == 3, "the third once memory freed");
        // A small circuit goes where the most memory is left.
        c.Succeed(big, big.Items.Skip(1));
        var narrow = c.Submit("quantum", 10, 8L << 10);
        await Until(() => big.Received == 4, "the narrow circuit");
        // Too wide for every worker, or a handler no worker runs: it fails at once, saying why.
        var tooWide = (await c.Submit("quantum", 30, 8L << 30).Done.Task)!;
        Assert.Equal(WorkStatus.Failed, tooWide.Status);
        Assert.Contains("no worker can hold a 30-qubit state vector", tooWide.Error);
        var unknown = (await c.Submit("hash").Done.Task)!;
        Assert.Equal("no worker of the cluster runs handler 'hash'", unknown.Error);
        Assert.Equal(0, small.Received);
    }

    [Fact]
    public async Task WithNoWorkerLeft_AttemptsRunLocally_UnlessTheSettingsSayWait()
    {
        await using (var c = new Cluster(new ClusterSettings()))
        {
            var work = c.Submit();
            Assert.Null(await work.Done.Task);              // null: run it on local
        }
        await using (var c = new Cluster(new ClusterSettings { FallbackToLocal = false }))
        {
            var work = c.Submit();
            await Settle();
            Assert.False(work.Done.Task.IsCompleted);
            var w = c.Join("late:1", slots: 1);
            await Until(() => w.Received == 1, "sent once a worker joined");
            c.Succeed(w, w.Items);
            Assert.Equal(WorkStatus.Succeeded, (await work.Done.Task)!.Status);
        }
    }

    [Fact]
    public async Task ADrainingWorker_GetsNothingNew()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, FallbackToLocal = false });
        var a = c.Join("a:1", slots: 1);
        var b = c.Join("b:1", slots: 1);
        c.Dispatcher.Leave("a:1");
        for (int i = 0; i < 3; i++) c.Submit();
        await Until(() => b.Received == 1, "one on b");
        c.Succeed(b, b.Items);
        await Until(() => b.Received == 2, "the next on b");
        await Settle();
        Assert.Equal(0, a.Received);
        Assert.Equal((1, 1), (c.Dispatcher.Totals().Workers, c.Dispatcher.Totals().Slots));
    }

    [Fact]
    public async Task ACancelledAttempt_LeavesTheQueue_OrItsWorkerIsToldToStopIt()
    {
        await using var c = new Cluster(new ClusterSettings { Prefetch = 0, FallbackToLocal = false });
        var w = c.Join("a:1", slots: 1);
        var running = c.Submit();
        var queued = c.Submit();
        await Until(() => w.Received == 1, "the first sent");
        c.Dispatcher.Cancel(queued);
        c.Dispatcher.Cancel(running);
        await Until(() => w.Cancelled.Count == 1, "the worker told");
        Assert.Equal(running.Key, Assert.Single(w.Cancelled));
        await Until(() => queued.Done.Task.IsCanceled && running.Done.Task.IsCanceled, "both attempts cancelled");
        Assert.Equal(0, c.Dispatcher.Queued);
        // The worker's answer for the cancelled attempt frees its credit; nothing else is sent.
        c.Succeed(w, w.Items);
        await Settle();
        Assert.Equal(1, w.Received);
    }
}
