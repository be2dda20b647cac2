/* Rule 5 (seed 003): invalidations of hash entries batched under a page-table lock are flushed before the lock is
 * released, so no second entry for the same virtual address can be inserted while the first still exists.
 * Legacy (-DLEGACY): the 2007 scheme, the batch drained only when the mmu_gather flushes, after the PTE lock.
 * Checked (T2): at most one valid hash entry for the address at any time. */
bool pte = true;       /* the PTE is present (and hashed: one valid entry below) */
byte hpte = 1;         /* valid hash entries for this virtual address */
bool ptl = false;      /* the PTE lock */

inline lock(l)   { atomic { !l -> l = true } }
inline unlock(l) { l = false }

proctype Zapper() {
  lock(ptl);
  pte = false;         /* ptep_get_and_clear under the lock; hpte_need_flush queues the invalidation */
#ifdef LEGACY
  unlock(ptl);
  hpte--;              /* tlb_finish_mmu: the batch flushed after the lock was dropped */
#else
  hpte--;              /* arch_leave_lazy_mmu_mode: the batch drained inside the lock */
  unlock(ptl);
#endif
}

proctype Faulter() {
  /* a store that the old (read-only) entry does not allow: the page-fault path, then hash_page */
  lock(ptl);
  if
  :: !pte ->
     pte = true;       /* do_anonymous_page installs a new PTE */
     atomic { assert(hpte == 0); hpte++ }   /* hpte_insert: no valid entry for this address may exist */
  :: else -> skip
  fi;
  unlock(ptl)
}

init {
  atomic { run Zapper(); run Faulter() }
}
