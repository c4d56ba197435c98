namespace TaskMesh.Engine.Graph;

/// <summary>
/// A per-task (or per-edge) column of a graph under construction that costs nothing until some
/// entry differs from the default: a million anonymous tasks with one handler and no options
/// allocate no id, handler, priority or option arrays at all. Once a graph is compiled from the
/// builder the array is shared with it; a later change copies it first (copy on write), so a
/// built graph never changes under its runs.
/// </summary>
internal struct Column<T>
{
    private T[]? _items;
    private bool _shared;
    private readonly T _default;

    public Column(T defaultValue) => _default = defaultValue;

    /// <summary>The values, or null while every entry is the default. May be longer than the count.</summary>
    public readonly T[]? Items => _items;

    public readonly T Get(int index) => _items is { } a && index < a.Length ? a[index] : _default;

    /// <summary>Sets entry <paramref name="index"/>; <paramref name="capacity"/> sizes the array when it is first made.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    public void Set(int index, T value, int capacity)
    {
        // The common case of a column nobody set, inlined: nothing to do.
        if (_items is null && EqualityComparer<T>.Default.Equals(value, _default)) return;
        SetSlow(index, value, capacity);
    }

    private void SetSlow(int index, T value, int capacity)
    {
        if (_items is null)
        {
            _items = new T[Math.Max(capacity, index + 1)];
            if (!EqualityComparer<T>.Default.Equals(_default, default)) Array.Fill(_items, _default);
        }
        else if (index >= _items.Length || _shared)
        {
            int size = Math.Max(_items.Length, index + 1);
            if (index >= _items.Length) size = Math.Max(size, _items.Length * 2);
            var copy = new T[size];
            Array.Copy(_items, copy, _items.Length);
            if (!EqualityComparer<T>.Default.Equals(_default, default)) Array.Fill(copy, _default, _items.Length, size - _items.Length);
            _items = copy;
            _shared = false;
        }
        _items[index] = value;
    }

    /// <summary>Sets entries [<paramref name="start"/>, <paramref name="start"/> + <paramref name="count"/>) to <paramref name="value"/>.</summary>
    public void Fill(int start, int count, T value, int capacity)
    {
        if (count == 0 || _items is null && EqualityComparer<T>.Default.Equals(value, _default)) return;
        Set(start + count - 1, value, capacity);   // sizes (or copies) the array once
        Array.Fill(_items!, value, start, count);
    }

    public void EnsureCapacity(int capacity)
    {
        if (_items is not null && _items.Length < capacity) Set(capacity - 1, Get(capacity - 1), capacity);
    }

    /// <summary>Hands the array to a compiled graph: from now on the builder copies before writing.</summary>
    public T[]? Share()
    {
        _shared = _items is not null;
        return _items;
    }
}

/// <summary>A growable array of ints (an edge list) that can be handed to a graph without copying.</summary>
internal struct IntList
{
    private int[] _items;
    private bool _shared;

    public IntList() => _items = [];

    public int Count { get; private set; }

    public readonly int this[int index] => _items[index];

    public readonly ReadOnlySpan<int> AsSpan() => _items.AsSpan(0, Count);

    public void Add(int value)
    {
        if (Count == _items.Length || _shared) Grow(Count + 1);
        _items[Count++] = value;
    }

    public void EnsureCapacity(int capacity)
    {
        if (capacity > _items.Length) Grow(capacity);
    }

    private void Grow(int needed)
    {
        var copy = new int[Math.Max(needed, Math.Max(16, _items.Length * 2))];
        Array.Copy(_items, copy, Count);
        _items = copy;
        _shared = false;
    }

    public int[] Share()
    {
        _shared = true;
        return _items;
    }
}
