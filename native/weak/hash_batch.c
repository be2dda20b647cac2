/* The hash MMU's invalidation batch, drained inside the PTE lock.
 *
 * Mirrors src/PageCore/PageTables/AddressSpace.Hash.cs (PteUpdate: spin while Busy, CAS; HpteNeedFlush into the
 * thread's batch while in lazy-MMU mode; EnterLazyMmu / LeaveLazyMmu, which drains the batch still inside the PTE lock;
 * HashPage, the hash fault: Busy taken by CAS, Insert, a release store of the PTE with Hashed and the slot),
 * src/PageCore/Tlb/HashBatch.cs (Add, Flush: the invalidations, then Interlocked.MemoryBarrier as tlbsync),
 * src/PageCore/Tlb/HashMmu.cs (Insert: FindEntry, the claim CAS of V from 0, ClaimedAlone, Publish: WriteR, then a
 * release store of V; UpdatePermission: CAS of V to locked, WriteR, release store of V; InvalidateAt: CAS of V from
 * (valid, tag) to 0), src/PageCore/Tlb/MmuGather.cs Flush (DrainHashBatch, then CheckNoTranslation before the page is
 * put), and AddressSpace.Zap.cs ZapPteRange / AddressSpace.Map.cs SetIfNone
 * inside PteOffsetMapLock (the PTE lock: a CAS, a release store to unlock). The hash table is two slots (one per group);
 * eviction and the PMD walk are not needed here.
 *
 * Threads: a zapper unmaps the address (its PTE maps page 1 and is hashed in slot 0) in lazy-MMU mode and frees the
 * page through its gather; a faulting thread maps page 2 at the same address once the PTE is empty, then takes the hash
 * fault, which hashes the new PTE; another CPU's access takes a hash fault on whichever PTE it finds (the old one: its
 * entry refreshed by updatepp under the busy bit, which the zapper's update waits out and whose hashed bit it keeps; the
 * new one: inserted, or refreshed after the faulting thread's insert).
 *
 * Invariant: T2, at most one valid hash entry per address: the fault's insert never finds the old entry still valid
 * (HashMmu records that as a violation and refuses the insert); T1, the gather never frees page 1 while a hash entry
 * still translates the address to it; T3, the zapper's batch is empty when it releases the PTE lock.
 *
 * LEGACY: src/PageCore/Legacy/LegacyHashBatch.cs (seed 003, before "[POWERPC] Make tlb flush batch use lazy MMU mode"):
 * leaving lazy-MMU mode keeps the batch, which is drained only when the gather flushes, after the PTE lock was dropped.
 * The fault takes the lock after the zapper released it, maps page 2, and hashes it while the old entry of the address
 * is still valid: two valid entries for one address. Any model, SC included.
 */
#include "weak.h"

#define PRESENT 1UL
#define HASHED 2UL
#define BUSY 4UL
#define ACCESSED 8UL
#define SLOT_SHIFT 4
#define PFN_SHIFT 8
#define VALID (1UL << 63)
#define LOCKED (1UL << 62)
#define TAG_MASK ((1UL << 56) - 1)
#define GEN_ONE (1UL << 32)
#define GEN_MASK (((1UL << 31) - 1) << 32)
#define TAG 0x77UL /* (asid, va) of the address */

static atomic_ulong pte = PRESENT | HASHED | (0UL << SLOT_SHIFT) | (1UL << PFN_SHIFT); /* page 1, hashed in slot 0 */
static atomic_int ptl;                                    /* the PTE table's split lock */
static atomic_ulong v[2] = { VALID | TAG, 0 };            /* HPTE V words */
static atomic_ulong r[2] = { GEN_ONE | 1, 0 };            /* HPTE R words: generation | pfn */

/* The zapper's batch (thread-local: struct ppc64_tlb_batch). */
static int active, count;
static unsigned long batch_pte;

static void lock(void) { AWAIT(IL_CAS(ptl, 1, 0) == 0); }
static void unlock(void) { VWRITE(ptl, 0); }

/* HashMmu.InvalidateAt */
static void invalidate_at(int i)
{
	while (true) {
		unsigned long x = VREAD(v[i]);
		AWAIT(x != (LOCKED | TAG)); /* an updatepp of this very entry is in flight: spin */
		if (x != (VALID | TAG))
			return;
		if (IL_CAS(v[i], 0UL, x) == x)
			return;
	}
}

/* HashBatch.Flush */
static void flush(void)
{
	if (count == 0)
		return;
	invalidate_at((int)((batch_pte >> SLOT_SHIFT) & 1));
	count = 0;
	IL_FENCE(); /* tlbsync */
}

/* PteUpdate(ptep, va, ~0, value): returns the old PTE; queues the old entry's invalidation. */
static unsigned long pte_update(unsigned long value)
{
	unsigned long old;
	while (true) {
		old = VREAD(pte);
		AWAIT((old & BUSY) == 0); /* a hash fault holds the busy bit: spin */
		if (IL_CAS(pte, value, old) == old)
			break;
	}
	if (old & HASHED) { /* HpteNeedFlush */
#ifdef LEGACY
		bool batching = active > 0 || count > 0; /* LegacyHashBatch.Batching */
#else
		bool batching = active > 0;
#endif
		if (batching) {
			batch_pte = old; /* HashBatch.Add */
			count++;
		} else {
			invalidate_at((int)((old >> SLOT_SHIFT) & 1));
			IL_FENCE();
		}
	}
	return old;
}

/* HashMmu.Holds(asid, va, page 1) for the gather's T1 check (the fixed ReadSlot: R, V, R). */
static bool holds_page1(void)
{
	for (int i = 0; i < 2; i++) {
		if (VREAD(v[i]) != (VALID | TAG))
			continue;
		unsigned long r1 = VREAD(r[i]);
		unsigned long x = VREAD(v[i]);
		unsigned long r2 = VREAD(r[i]);
		if (x == (VALID | TAG) && r1 == r2 && (unsigned)r2 == 1)
			return true;
	}
	return false;
}

static void *zapper(void *arg)
{
	lock(); /* ZapPteRange: PteOffsetMapLock */
	active++; /* EnterLazyMmu */
	unsigned long old = pte_update(0); /* map.Set(i, Pte.None) */
#ifdef LEGACY
	active--; /* LegacyHashBatch.LeaveWithoutDrain */
#else
	if (--active == 0) /* LeaveLazyMmu */
		flush();
	assert(count == 0); /* T3: CheckBatchAtUnlock */
#endif
	unlock();
	/* MmuGather.Flush: DrainHashBatch, then the T1 check before the page is put. */
	flush();
	if (old & PRESENT)
		assert(!holds_page1()); /* T1 */
	return NULL;
}

/* HashMmu.FindEntry */
static int find_entry(int except)
{
	for (int i = 0; i < 2; i++) {
		unsigned long x = VREAD(v[i]);
		if (i != except && (x & TAG_MASK) == TAG && (x & (VALID | LOCKED)) != 0)
			return i;
	}
	return -1;
}

/* HashMmu.Insert (no eviction: a slot is free whenever no entry of the address is valid) */
static int insert(unsigned pfn)
{
	assert(find_entry(-1) < 0); /* T2: "a duplicate hash entry (seed 003)" */
	for (int i = 0; i < 2; i++) {
		if (VREAD(v[i]) == 0 && IL_CAS(v[i], LOCKED | TAG, 0UL) == 0) {
			if (find_entry(i) >= 0) { /* ClaimedAlone */
				VWRITE(v[i], 0UL);
				assert(0); /* T2: two inserts of one address at once */
			}
			unsigned long gen = (VREAD(r[i]) + GEN_ONE) & GEN_MASK; /* Publish: WriteR */
			VWRITE(r[i], gen | pfn);
			VWRITE(v[i], VALID | TAG);
			return i;
		}
	}
	return -1;
}

/* HashPage, without the PTE lock, inside an epoch section (the table is never freed here). */
static void hash_page(void)
{
	unsigned long old, busy;
	while (true) {
		old = VREAD(pte);
		if (!(old & PRESENT) || (old & BUSY))
			return; /* NotPresent (the fault path follows) or Busy (the access retries) */
		busy = old | BUSY | ACCESSED;
		if (IL_CAS(pte, busy, old) == old)
			break; /* busy is ours */
	}
	unsigned long final = busy & ~BUSY;
	int held = (int)((old >> SLOT_SHIFT) & 1);
	unsigned pfn = (unsigned)(old >> PFN_SHIFT);
	if (old & HASHED) { /* HashMmu.UpdatePermission of the recorded slot */
		if (IL_CAS(v[held], LOCKED | TAG, VALID | TAG) == (VALID | TAG)) {
			unsigned long h = VREAD(r[held]);
			assert((unsigned)h == pfn); /* T2: "a stale hash entry" */
			unsigned long gen = (VREAD(r[held]) + GEN_ONE) & GEN_MASK; /* WriteR */
			VWRITE(r[held], gen | pfn);
			VWRITE(v[held], VALID | TAG);
			VWRITE(pte, final);
			return;
		}
	}
	final &= ~HASHED; /* the recorded entry is gone */
	int slot = insert(pfn);
	if (slot >= 0)
		final = (final & ~(1UL << SLOT_SHIFT)) | ((unsigned long)slot << SLOT_SHIFT) | HASHED;
	VWRITE(pte, final); /* release: clears busy */
}

static void *faulter(void *arg)
{
	/* Fault -> FaultLocked under PteOffsetMapLock: maps page 2 if the PTE is none. */
	lock();
	bool mapped = false;
	if (VREAD(pte) == 0) {
		pte_update(PRESENT | (2UL << PFN_SHIFT));
		mapped = true;
	}
	unlock();
	if (mapped)
		hash_page();
	return NULL;
}

/* Another CPU's access to the address: its hash fault (on whichever PTE it finds). */
static void *accessor(void *arg)
{
	hash_page();
	return NULL;
}

int main(void)
{
	pthread_t z, f, a;
	SPAWN(z, zapper);
	SPAWN(f, faulter);
	SPAWN(a, accessor);
	JOIN(z);
	JOIN(f);
	JOIN(a);
	return 0;
}
