using System.Text.Json;
using TaskMesh.Server.Workers;
using Xunit;

namespace TaskMesh.Tests.Server;

/// <summary>Leases of external work: credits, results, a worker that leaves, late results, cancellation.</summary>
public sealed class WorkQueueTests
{
    private static ExternalWork Work(string id) => new(id, "py.f", JsonDocument.Parse("{}").RootElement.Clone(), 1);
    private static WorkResult Ok(int n) => new(true, WorkResult.OutputOf(JsonDocument.Parse(n.ToString()).RootElement), null, null);

    [Fact]
    public async Task AWorkerIsGrantedAtMostItsSlots_AndEachResultEndsItsAttempt()
    {
        var q = new WorkQueue();
        q.Declare("py.f");
        var a = new WorkerSession("a", ["py.f"], slots: 2);
        q.Attach(a);
        var works = Enumerable.Range(0, 5).Select(i => Work($"t{i}")).ToList();
        q.Enqueue(works.ToArray());

        var first = q.Lease(a);
        Assert.Equal(["t0", "t1"], first.Select(g => g.Work.TaskId));
        Assert.Empty(q.Lease(a));   // no credit left
        Assert.True(q.Complete(a, first[0].Lease, Ok(1)));
        Assert.Equal(1L, (long)(await works[0].Done).Output!);
        Assert.Equal(["t2"], q.Lease(a).Select(g => g.Work.TaskId));   // one slot came free
        Assert.Equal((2, 2), (q.Waiting, q.Leased));
    }

    [Fact]
    public async Task AWorkerThatLeaves_GivesItsLeasesBack_ToTheFront_AndItsLateResultsAreDropped()
    {
        var q = new WorkQueue();
        q.Declare("py.f");
        var a = new WorkerSession("a", ["py.f"], slots: 2);
        var b = new WorkerSession("b", ["py.f"], slots: 10);
        q.Attach(a);
        var works = Enumerable.Range(0, 4).Select(i => Work($"t{i}")).ToList();
        q.Enqueue(works.ToArray());
        var leasedByA = q.Lease(a);
        Assert.True(q.Complete(a, leasedByA[0].Lease, Ok(10)));   // t0 done by a

        Assert.Equal(1, q.Detach(a));   // t1 goes back
        Assert.False(q.Complete(a, leasedByA[1].Lease, Ok(99)));   // a's late result for t1: dropped
        Assert.False(works[1].IsDone);
        // Its connection's lease pusher, woken before it left, is granted nothing (a lease to it would never end).
        Assert.Empty(q.Lease(a));
        Assert.Equal((3, 0), (q.Waiting, q.Leased));

        q.Attach(b);
        var leasedByB = q.Lease(b);
        Assert.Equal(["t1", "t2", "t3"], leasedByB.Select(g => g.Work.TaskId));   // t1 first: it waited longest
        Assert.NotEqual(leasedByA[1].Lease, leasedByB[0].Lease);   // a new lease
        foreach (var (lease, _) in leasedByB) Assert.True(q.Complete(b, lease, Ok(2)));
        Assert.False(q.Complete(b, leasedByB[0].Lease, Ok(3)));   // reported twice: the second is dropped
        Assert.Equal(10L, (long)(await works[0].Done).Output!);
        Assert.Equal(2L, (long)(await works[1].Done).Output!);
    }

    [Fact]
    public async Task ACancelledAttempt_LeavesTheQueueOrFreesItsLease()
    {
        var q = new WorkQueue();
        q.Declare("py.f");
        var a = new WorkerSession("a", ["py.f"], slots: 1);
        q.Attach(a);
        var leased = Work("leased");
        var waiting = Work("waiting");
        q.Enqueue([leased, waiting]);
        var grant = Assert.Single(q.Lease(a));

        q.Cancel(waiting);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => waiting.Done);
        Assert.Equal(0, q.Waiting);
        q.Cancel(leased);
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => leased.Done);
        Assert.False(q.Complete(a, grant.Lease, Ok(1)));   // its result comes too late
        Assert.Equal(0, q.Leased);

        var next = Work("next");
        q.Enqueue([next]);
        Assert.Equal("next", Assert.Single(q.Lease(a)).Work.TaskId);   // the slot came back
    }
}
