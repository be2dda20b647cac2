/* Rule 3 (seed 001): a walker that locks a page table through a snapshot of the PMD rechecks under that lock that the
 * PMD still holds the same value, and retries or gives up if not. Legacy (-DLEGACY): powerpc's 4K-hash pmd_same after
 * the "return 1" quick fix. A collapse replaces the table by a huge PMD under the table's lock.
 * Checked (P4): a writer never holds the lock of a table that the PMD no longer references. */
byte pmd = 1;              /* 1: table T1 linked; 2: a huge PMD */
bool ptl = false;          /* T1's split lock */
bool detached = false;

inline lock(l)   { atomic { !l -> l = true } }
inline unlock(l) { l = false }

proctype Collapser() {
  lock(ptl);
  atomic { pmd = 2; detached = true };   /* pmdp_collapse_flush + set_pmd_at, under the table's lock */
  unlock(ptl)
}

proctype Writer() {
  byte snap;
again:
  snap = pmd;                /* pmdp_get_lockless */
  if
  :: snap != 1 -> goto done  /* none or huge: pte_offset_map_lock returns NULL */
  :: else -> skip
  fi;
  lock(ptl);                 /* pte_lockptr(mm, &pmdval) */
#ifndef LEGACY
  if
  :: pmd != snap -> unlock(ptl); goto again   /* pmd_same failed: retry */
  :: else -> skip
  fi;
#endif
  assert(!detached);         /* set_pte_at into a table the PMD references */
  unlock(ptl);
done:
  skip
}

init {
  atomic { run Collapser(); run Writer() }
}
