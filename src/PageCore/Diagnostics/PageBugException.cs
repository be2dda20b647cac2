namespace PageCore;

/// <summary>
/// A bug report about one page: a misuse of the refcount or of the allocator that PageCore refused, with a dump of the
/// page's descriptor (the kernel's <c>VM_BUG_ON_PAGE</c> + <c>dump_page</c>, or a "Bad page state" report).
/// The operation that raised it changed nothing.
/// </summary>
public sealed class PageBugException : InvalidOperationException
{
    /// <summary>Creates a report.</summary>
    /// <param name="pfn">The page concerned.</param>
    /// <param name="operation">The kernel-named operation that was refused, e.g. <c>put_page</c>.</param>
    /// <param name="reason">What was wrong.</param>
    /// <param name="descriptorDump">The descriptor as text, see <see cref="DescriptorDump"/>.</param>
    public PageBugException(Pfn pfn, string operation, string reason, string descriptorDump)
        : base($"{operation}({pfn}): {reason}. {descriptorDump}")
    {
        Pfn = pfn;
        Operation = operation;
        Reason = reason;
        DescriptorDump = descriptorDump;
        Interlocked.Increment(ref s_reported);
        Action<PageBugException>? handlers = Reported;
        if (handlers is not null)
        {
            foreach (Action<PageBugException> h in handlers.GetInvocationList().Cast<Action<PageBugException>>())
            {
                try
                {
                    h(this);
                }
                catch (Exception)
                {
                    // A handler must not turn a bug report into another failure; the report goes on to its caller.
                }
            }
        }
    }

    private static long s_reported;

    /// <summary>
    /// Raised on the reporting thread whenever a bug report is created, before it is thrown or recorded (a hook for
    /// dumps and logs: <c>pagecore-stress run --dump-on-bug</c> writes a process dump from it). Handlers' exceptions are
    /// swallowed.
    /// </summary>
    public static event Action<PageBugException>? Reported;

    /// <summary>Bug reports created in this process so far (the <c>pagecore.bugs</c> instrument).</summary>
    public static long ReportedCount => Interlocked.Read(ref s_reported);

    /// <summary>The page concerned.</summary>
    public Pfn Pfn { get; }

    /// <summary>The operation that was refused, by its kernel name (<c>put_page</c>, <c>get_page</c>, <c>__free_pages</c>, ...).</summary>
    public string Operation { get; }

    /// <summary>What was wrong, in words.</summary>
    public string Reason { get; }

    /// <summary>The page's descriptor at the time of the report (flags, refcount, order, links, generation).</summary>
    public string DescriptorDump { get; }
}
