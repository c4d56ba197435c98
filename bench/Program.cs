using TaskMesh.Bench.Api;
using TaskMesh.Bench.Cluster;
using TaskMesh.Bench.Dag;
using TaskMesh.Bench.Dashboard;
using TaskMesh.Bench.Micro;
using TaskMesh.Bench.Qsim;
using TaskMesh.Bench.Routing;
using TaskMesh.Bench.Store;
using TaskMesh.Bench.Stream;
using TaskMesh.Bench.Workflows;

// dotnet run -c Release --project bench -- <suite> [options]
//   dag   --shape all|NAME[,NAME] [--repeat 3] [--workers 2] [--systems taskmesh,tpl_tasks,tpl_dataflow] --json out.json
//   load  [--tasks 1000000] --json out.json        (1M-task graph file: validate and start)
//   stream [--tasks 1000000] [--shape independent,chain,window8] [--max-pending 4096] [--retain 10000] [--open-workers 2] --json out.json   (open runs fed while they go)
//   micro [BenchmarkDotNet options, e.g. --job short]
//   qsim  [--quick] [--large] [--repeat 1] [--fusion 3,4] --json out.json   (state-vector simulator)
//   quantum-calibration [--json out.json]           (quantum task durations against the handler's estimate)
//   routing --simulate [--world FILE] [--tasks 100000] [--train 5000] [--seed 1] --json out.json   (learned router against an oracle and fixed policies)
//   api   [--requests 2000] [--tasks 200000] [--seconds 3] --json out.json   (taskmesh serve: latency and throughput over the socket protocol and HTTP)
//   cluster [--workers 2] [--tasks 200000] [--requests 2000] [--seconds 5] --json out.json   (the cluster layer: remote throughput, latency, failure detection, failover)
//   dashboard [--tasks 100000] [--millis 5] [--slots 64] --json out.json   (the dashboard's run view following a large run in headless Chromium)
//   store [--url postgresql://…] [--tasks 20000] [--repeat 3] --json out.json   (the run store's writer: a run with every task recorded)
//   workflows [--dir examples/workflows] [--slots 8,16,32] [--time-scale 10] [--orders auto,fifo] [--repeat 3] --json out.json   (real workflows against list schedules)
if (args.Length == 0)
{
    Console.Error.WriteLine("usage: bench <dag|load|stream|store|api|cluster|dashboard|micro|qsim|quantum-calibration|routing|workflows> [options]  (see bench/README.md)");
    return 2;
}
return args[0] switch
{
    "dag" => DagSuite.Run(args[1..]),
    "load" => LoadSuite.Run(args[1..]),
    "stream" => StreamSuite.Run(args[1..]),
    "api" => ApiSuite.Run(args[1..]),
    "cluster" => ClusterSuite.Run(args[1..]),
    "dashboard" => DashboardSuite.Run(args[1..]),
    "micro" => MicroSuite.Run(args[1..]),
    "qsim" => QsimSuite.Run(args[1..]),
    "quantum-calibration" => QuantumCalibration.Run(args[1..]),
    "routing" => RoutingSuite.Run(args[1..]),
    "store" => StoreSuite.Run(args[1..]),
    "workflows" => WorkflowSuite.Run(args[1..]),
    _ => Usage(args[0]),
};

static int Usage(string suite)
{
    Console.Error.WriteLine($"unknown suite '{suite}' (dag, load, stream, store, api, cluster, dashboard, micro, qsim, quantum-calibration, routing, workflows)");
    return 2;
}
