using System.Threading.Channels;
using TaskMesh.Engine.Scheduling;

namespace TaskMesh.Server;

/// <summary>
/// A run's events handed to every subscriber (an SSE stream, a socket client): one pump reads the
/// run's own bounded channel (which drops rather than slows the run) and writes each event to
/// every subscriber's queue. A queue is bounded too (<see cref="SubscriberCapacity"/>): a
/// subscriber that falls that far behind is cut off — its stream ends with an <c>overflow</c>
/// mark — so one slow reader never makes the service hold more, nor slows the others.
/// A subscriber sees the events from when it subscribed; the run's state so far is read from the
/// API. When the run ends every stream ends.
/// </summary>
internal sealed class EventHub
{
    /// <summary>Events a subscriber may lag behind before it is cut off.</summary>
    public const int SubscriberCapacity = 4_096;

    private readonly object _gate = new();
    private readonly List<Subscription> _subscribers = [];
    private bool _ended;

    private readonly Action<bool>? _listening;

    /// <param name="source">The run's events.</param>
    /// <param name="listening">Told true when the first subscriber comes and false when the last goes (and at once: false), so the run writes events only while someone reads them.</param>
    public EventHub(ChannelReader<RunEvent> source, Action<bool>? listening = null)
    {
        _listening = listening;
        _listening?.Invoke(false);
        Pump = PumpAsync(source);
    }

    /// <summary>Tells the run whether anyone listens (under the gate, so that the last word is the count's).</summary>
    private void CountChanged(int before)
    {
        if (before == 0 && _subscribers.Count > 0) _listening?.Invoke(true);
        else if (before > 0 && _subscribers.Count == 0) _listening?.Invoke(false);
    }

    /// <summary>Ends when the run's event stream has (and every subscriber was told).</summary>
    public Task Pump { get; }

    /// <summary>A subscriber's queue; <see cref="Overflowed"/> once it fell behind and was cut off.</summary>
    public sealed class Subscription
    {
        private readonly Channel<RunEvent> _queue = Channel.CreateBounded<RunEvent>(new BoundedChannelOptions(SubscriberCapacity)
        {
            SingleReader = true,
            SingleWriter = true,
            FullMode = BoundedChannelFullMode.Wait,   // TryWrite fails when full: the hub cuts the subscriber off
        });

        public ChannelReader<RunEvent> Reader => _queue.Reader;
        public bool Overflowed { get; private set; }

        internal bool TryWrite(RunEvent e)
        {
            if (_queue.Writer.TryWrite(e)) return true;
            Overflowed = true;
            _queue.Writer.TryComplete();
            return false;
        }

        internal void End() => _queue.Writer.TryComplete();
    }

    public Subscription Subscribe()
    {
        var s = new Subscription();
        lock (_gate)
        {
            if (_ended) s.End();
            else
            {
                _subscribers.Add(s);
                CountChanged(_subscribers.Count - 1);
            }
        }
        return s;
    }

    public void Unsubscribe(Subscription s)
    {
        lock (_gate)
        {
            int before = _subscribers.Count;
            _subscribers.Remove(s);
            CountChanged(before);
        }
        s.End();
    }

    public int Subscribers
    {
        get { lock (_gate) return _subscribers.Count; }
    }

    private async Task PumpAsync(ChannelReader<RunEvent> source)
    {
        try
        {
            await foreach (var e in source.ReadAllAsync().ConfigureAwait(false))
            {
                lock (_gate)
                {
                    int before = _subscribers.Count;
                    for (int i = _subscribers.Count - 1; i >= 0; i--)
                        if (!_subscribers[i].TryWrite(e)) _subscribers.RemoveAt(i);
                    CountChanged(before);
                }
            }
        }
        finally
        {
            lock (_gate)
            {
                _ended = true;
                foreach (var s in _subscribers) s.End();
                _subscribers.Clear();
            }
        }
    }
}
