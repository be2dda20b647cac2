namespace PageCore.Benchmarks;

/// <summary>
/// Persistent workers: the caller is worker 0, the others wait for a generation number to move, run their share,
/// and count down. No thread is created inside a measured invocation.
/// </summary>
internal sealed class WorkerGang : IDisposable
{
    private readonly Thread[] _threads;
    private Action<int>? _work;
    private long _generation;
    private int _pending;
    private volatile bool _stop;

    public WorkerGang(int threads)
    {
        _threads = new Thread[threads - 1];
        for (int i = 0; i < _threads.Length; i++)
        {
            int index = i + 1;
            _threads[i] = new Thread(() => Loop(index)) { IsBackground = true, Name = $"bench-worker-{index}" };
            _threads[i].Start();
        }
    }

    public void Run(Action<int> work)
    {
        _work = work;
        Volatile.Write(ref _pending, _threads.Length);
        Interlocked.Increment(ref _generation);
        work(0);
        var spin = new SpinWait();
        while (Volatile.Read(ref _pending) != 0)
        {
            spin.SpinOnce(sleep1Threshold: -1);
        }
    }

    public void Dispose()
    {
        _stop = true;
        Interlocked.Increment(ref _generation);
        foreach (Thread t in _threads) t.Join();
    }

    private void Loop(int index)
    {
        long seen = 0;
        while (true)
        {
            var spin = new SpinWait();
            while (Volatile.Read(ref _generation) == seen)
            {
                spin.SpinOnce(sleep1Threshold: -1);
            }

            seen = Volatile.Read(ref _generation);
            if (_stop)
            {
                return;
            }

            _work!(index);
            Interlocked.Decrement(ref _pending);
        }
    }
}
