using System.Numerics;
using System.Runtime.InteropServices;

namespace TaskMesh.Engine.Scheduling;

/// <summary>An int alone on its cache line pair: a counter one thread writes often, away from what others read.</summary>
[StructLayout(LayoutKind.Explicit, Size = 192)]
internal struct PaddedInt
{
    [FieldOffset(64)] public int Value;
}

/// <summary>A long alone on its cache line pair, so the owner's and the thieves' counters never share one.</summary>
[StructLayout(LayoutKind.Explicit, Size = 192)]
internal struct PaddedLong
{
    [FieldOffset(64)] public long Value;
}

/// <summary>
/// Chase–Lev work-stealing deque of task indices (the structure of Taskflow's
/// <c>wsq.hpp</c>): the owning worker pushes and pops at the bottom without contention; other
/// workers steal from the top with one compare-and-swap. Grows by doubling; never shrinks.
/// </summary>
internal sealed class WorkStealingDeque
{
    /// <summary>What a failed take leaves in its <c>out</c> item (no task has a negative index).</summary>
    public const int Empty = -1;

    private PaddedLong _top;
    private PaddedLong _bottom;
    private volatile int[] _items;

    public WorkStealingDeque(int capacity = 1024)
    {
        _items = new int[Math.Max(16, (int)BitOperations.RoundUpToPowerOf2((uint)capacity))];
    }

    /// <summary>Approximate count (exact for the owner when no thief is active).</summary>
    public long Count => Math.Max(0, Volatile.Read(ref _bottom.Value) - Volatile.Read(ref _top.Value));

    /// <summary>Owner only.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public void Push(int item)
    {
        long b = _bottom.Value;
        long t = Volatile.Read(ref _top.Value);
        var items = _items;
        if (b - t >= items.Length)
            items = Grow(items, b, t);
        items[b & (items.Length - 1)] = item;
        // Release: a thief that sees the new bottom also sees the item.
        Volatile.Write(ref _bottom.Value, b + 1);
    }

    /// <summary>Owner only: takes the most recently pushed item.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public bool TryPop(out int item)
    {
        long b = _bottom.Value - 1;
        var items = _items;
        // Full fence: the bottom store must be visible before top is read, or a thief and the
        // owner could both take the last item.
        Interlocked.Exchange(ref _bottom.Value, b);
        long t = Volatile.Read(ref _top.Value);
        if (t > b)
        {
            _bottom.Value = b + 1;
            item = Empty;
            return false;
        }
        item = items[b & (items.Length - 1)];
        if (t == b)
        {
            // Last item: race the thieves for it.
            bool won = Interlocked.CompareExchange(ref _top.Value, t + 1, t) == t;
            _bottom.Value = b + 1;
            if (!won) item = Empty;
            return won;
        }
        return true;
    }

    /// <summary>Any thread: takes the oldest item.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public bool TrySteal(out int item)
    {
        long t = Volatile.Read(ref _top.Value);
        Interlocked.MemoryBarrier();
        long b = Volatile.Read(ref _bottom.Value);
        if (t < b)
        {
            var items = _items;
            item = items[t & (items.Length - 1)];
            if (Interlocked.CompareExchange(ref _top.Value, t + 1, t) == t)
                return true;
        }
        item = Empty;
        return false;
    }

    private int[] Grow(int[] old, long b, long t)
    {
        var bigger = new int[old.Length * 2];
        for (long i = t; i < b; i++)
            bigger[i & (bigger.Length - 1)] = old[i & (old.Length - 1)];
        // Thieves still holding the old array read valid items: the owner never writes it again.
        _items = bigger;
        return bigger;
    }
}
