/* Rule 4 (seed 004): a page table that a lockless walker may still reach is freed only after a grace period.
 * Legacy (-DLEGACY): a detached table (retracted, or a withdrawn deposit) is freed at once. Fixed: the freer waits for
 * every reader whose section began before the detach (the walker announces with a full fence, as an EpochDomain does).
 * Checked (P2): a walker inside its section never takes the lock of, or reads, a freed table. */
byte pmd = 1;          /* 1: the table is linked */
bool reading = false;  /* the walker is inside its read-side section */
bool freed = false;

proctype Walker() {
  byte snap;
  reading = true;      /* rcu_read_lock: the announce, a full fence */
  snap = pmd;
  if
  :: snap == 1 ->
     assert(!freed);   /* spin_lock(ptlock of the snapshot's table) */
     assert(!freed)    /* ptep_get: read an entry */
  :: else -> skip
  fi;
  reading = false      /* rcu_read_unlock */
}

proctype Freer() {
  pmd = 0;             /* detach: retract, or withdraw the deposit */
#ifndef LEGACY
  !reading;            /* synchronize: wait out readers that may hold the old PMD value */
#endif
  freed = true         /* pte_free / the deferred free */
}

init {
  atomic { run Walker(); run Freer() }
}
