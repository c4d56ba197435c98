using System.Diagnostics;
using Prometheus;

namespace TaskMesh.Engine.Observability;

/// <summary>
/// The process and the .NET runtime, read when scraped: CPU, memory, file descriptors (the
/// <c>process_*</c> names Prometheus client libraries share) and the GC, thread pool and lock
/// contention (<c>dotnet_*</c>). prometheus-net's own default set is not used: promtool rejects
/// some of its names.
/// </summary>
internal static class ProcessMetrics
{
    public static void Register(MetricFactory f, CollectorRegistry registry)
    {
        var cpu = f.CreateCounter("process_cpu_seconds_total", "Total user and system CPU time spent in seconds.");
        var resident = f.CreateGauge("process_resident_memory_bytes", "Resident memory size in bytes.");
        var virtualBytes = f.CreateGauge("process_virtual_memory_bytes", "Virtual memory size in bytes.");
        var start = f.CreateGauge("process_start_time_seconds", "Start time of the process since unix epoch in seconds.");
        var fds = f.CreateGauge("process_open_fds", "Number of open file descriptors.");
        var collections = f.CreateCounter("dotnet_gc_collections_total", "Garbage collections since the process started, by generation.", "generation");
        var heap = f.CreateGauge("dotnet_gc_heap_size_bytes", "Bytes of the managed heap after the last collection.");
        var committed = f.CreateGauge("dotnet_gc_committed_bytes", "Bytes of memory the GC has committed.");
        var allocated = f.CreateCounter("dotnet_gc_allocated_bytes_total", "Bytes allocated on the managed heap since the process started.");
        var pause = f.CreateCounter("dotnet_gc_pause_seconds_total", "Time the GC paused the process, in seconds.");
        var threads = f.CreateGauge("dotnet_threadpool_threads", "Threads of the thread pool.");
        var queue = f.CreateGauge("dotnet_threadpool_queue_length", "Work items queued to the thread pool and not started.");
        var completed = f.CreateCounter("dotnet_threadpool_completed_items_total", "Work items the thread pool completed.");
        var contention = f.CreateCounter("dotnet_monitor_lock_contentions_total", "Times a thread waited for a contended Monitor lock.");
        var generations = new[] { "0", "1", "2" };
        using (var p = Process.GetCurrentProcess()) start.Set(new DateTimeOffset(p.StartTime.ToUniversalTime()).ToUnixTimeMilliseconds() / 1000.0);

        registry.AddBeforeCollectCallback(() =>
        {
            cpu.IncTo(Environment.CpuUsage.TotalTime.TotalSeconds);
            resident.Set(Environment.WorkingSet);
            using (var p = Process.GetCurrentProcess()) virtualBytes.Set(p.VirtualMemorySize64);
            try { fds.Set(Directory.GetFileSystemEntries("/proc/self/fd").Length); }
            catch (IOException) { }
            catch (UnauthorizedAccessException) { }
            for (int g = 0; g < generations.Length; g++) collections.WithLabels(generations[g]).IncTo(GC.CollectionCount(g));
            var info = GC.GetGCMemoryInfo();
            heap.Set(info.HeapSizeBytes);
            committed.Set(info.TotalCommittedBytes);
            allocated.IncTo(GC.GetTotalAllocatedBytes());
            pause.IncTo(GC.GetTotalPauseDuration().TotalSeconds);
            threads.Set(ThreadPool.ThreadCount);
            queue.Set(ThreadPool.PendingWorkItemCount);
            completed.IncTo(ThreadPool.CompletedWorkItemCount);
            contention.IncTo(Monitor.LockContentionCount);
        });
    }
}
