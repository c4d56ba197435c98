using System.Runtime.InteropServices;
using TaskMesh.Host;

// Ctrl+C (SIGINT) and SIGTERM cancel the work in hand; the command prints what it has and exits
// 130. Commands observe the token while reading files, parsing, allocating and running; should one
// still be inside a step that cannot stop (a large allocation's first touch, say), the process
// exits 130 on its own after a grace period — 10 s, or what a command that drains asks for (serve:
// its runs' drain and the store's flush; worker: the attempts it holds) — or at once on a second
// signal. Outputs are written to a temporary file and renamed, so an exit at any point leaves no
// half-written file.
using var cts = new CancellationTokenSource();
var grace = new StopGrace();
int signals = 0;
void OnSignal(PosixSignalContext ctx)
{
    ctx.Cancel = true;
    if (Interlocked.Increment(ref signals) > 1)
    {
        Console.Error.WriteLine("taskmesh: cancelled (second signal)");
        Environment.Exit(ExitCodes.Cancelled);
    }
    cts.Cancel();
    var within = grace.Value;
    _ = Task.Delay(within).ContinueWith(_ =>
    {
        Console.Error.WriteLine($"taskmesh: cancelled (the command did not stop within {within.TotalSeconds:0.#} s)");
        Environment.Exit(ExitCodes.Cancelled);
    }, TaskScheduler.Default);
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return await Cli.RunAsync(args, Console.Out, Console.Error, cts.Token, grace);
