namespace PageCore;

/// <summary>
/// A page-table fragment: fragment <see cref="Index"/> of the page-table page <see cref="Page"/> (the kernel's
/// <c>pte_t *</c> returned by <c>pte_fragment_alloc</c>).
/// </summary>
/// <param name="Page">The page the fragment is carved from.</param>
/// <param name="Index">The fragment's index in the page, 0..FragmentsPerPage-1.</param>
public readonly record struct PtFragment(Pfn Page, int Index);
