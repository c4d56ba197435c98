using System.Runtime.InteropServices;
using TaskMesh.Host;

// Ctrl+C (SIGINT) and SIGTERM cancel the work in hand; the command prints what it has and exits 130.
using var cts = new CancellationTokenSource();
void OnSignal(PosixSignalContext ctx)
{
    ctx.Cancel = true;
    cts.Cancel();
}
using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, OnSignal);
using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, OnSignal);
return await Cli.RunAsync(args, Console.Out, Console.Error, cts.Token);
