/* pte_offset_map_lock's pmd_same recheck under the PTE lock, against a table retraction.
 *
 * Mirrors src/PageCore/PageTables/AddressSpace.Walk.cs PteOffsetMapLock (an acquire load of the PMD, the table's split
 * lock found through that snapshot and taken: PtLock.TryLock, a CAS; then PmdSame against an acquire reload of the PMD;
 * unlock and retry when it changed) as AddressSpace.Map.cs SetIfNone uses it (map.Entry read, map.Set: a release store
 * of the PTE, PtLock.Unlock: a release store), against AddressSpace.Collapse.cs RetractTable (the PMD lock, an acquire
 * load of the PMD, the table's lock, the entries checked empty with plain loads, the PMD cleared by a release store
 * under both locks, unlocks). The epoch section around the walk and the table's deferred free (a grace period later)
 * are epoch_reclaim.c's protocol and are left out; so is the PMD lock, which only the retractor takes here.
 *
 * Threads: a mapper maps a page at an address whose PMD names table T; a retractor retracts T if it is empty.
 *
 * Invariant (P1/P4): a PTE is written only into the table the PMD references now: when the mapper reports the page
 * mapped, the PMD still names T and T's entry holds the page.
 *
 * LEGACY: src/PageCore/Legacy/LegacyPageTables.cs PmdSameQuickFix (seed 001: powerpc's hash__pmd_same "return 1").
 * The mapper snapshots the PMD (T); the retractor locks T, finds it empty, clears the PMD, unlocks; the mapper locks T,
 * skips the recheck, and writes its PTE into the detached table: the mapping is lost (and lands in a table that will be
 * freed). Any model, SC included.
 */
#include "weak.h"

#define TABLE_T 0x1001UL /* a PMD entry naming table T (present, table) */
#define PAGE 0x2003UL    /* a PTE mapping the page */

static atomic_ulong pmd = TABLE_T;
static atomic_int ptl;    /* T's split lock (PageDescriptor.Lock of T's page) */
static atomic_ulong pte;  /* T's entry for the address */
static int mapped;

static void lock(void)
{
	AWAIT(IL_CAS(ptl, 1, 0) == 0); /* PtLock.TryLock: spins while held (the lock is never freed here) */
}

static bool pmd_same(unsigned long snapshot, unsigned long now)
{
#ifdef LEGACY
	(void)snapshot;
	(void)now;
	return true;
#else
	return snapshot == now;
#endif
}

static void *mapper(void *arg)
{
	for (int attempt = 0; attempt < 2; attempt++) {
		unsigned long snap = VREAD(pmd);
		if (snap != TABLE_T)
			return NULL; /* no table: map.IsNull, MapPage goes back to PteAlloc (not modelled) */
		lock();
		if (pmd_same(snap, VREAD(pmd))) {
			if (VREAD(pte) == 0) { /* map.Entry.IsNone */
				VWRITE(pte, PAGE); /* map.Set */
				mapped = 1;
			}
			VWRITE(ptl, 0);
			return NULL;
		}
		VWRITE(ptl, 0);
	}
	return NULL;
}

static void *retractor(void *arg)
{
	if (VREAD(pmd) != TABLE_T)
		return NULL;
	lock();
	if (PLAIN_LD(pte) == 0)
		VWRITE(pmd, 0UL); /* pmdp_collapse_flush under both locks */
	VWRITE(ptl, 0);
	return NULL;
}

int main(void)
{
	pthread_t m, r;
	SPAWN(m, mapper);
	SPAWN(r, retractor);
	JOIN(m);
	JOIN(r);
	assert(!mapped || (atomic_load(&pmd) == TABLE_T && atomic_load(&pte) == PAGE)); /* the mapping is reachable */
	return 0;
}
