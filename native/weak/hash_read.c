/* The hash MMU's translation reads a slot as (R, V, R) with R's generation, against eviction and reuse.
 *
 * Mirrors src/PageCore/Tlb/HashMmu.cs TryTranslate (an acquire load of V matching, then TryReadEntry) and
 * src/PageCore/Tlb/HashMmu.Reads.cs ReadSlot / TryReadEntry (acquire loads of R, V, R; the entry when V is still the
 * address's and both R agree, retried while R changes under a matching V), against HashMmu.Insert's eviction (CAS of V
 * from the victim's valid value to locked, Publish: WriteR, which stores R with the next generation, then a release
 * store of V), InvalidateAt (CAS of V to 0) and Insert into a free slot (CAS of V from 0).
 *
 * Threads: a translation of address A (slot 0 holds A -> page 1, generation 1); the other CPUs' inserts evict A for B
 * (-> page 2), invalidate B, and insert A again (-> page 3): A -> B -> A in one slot.
 *
 * Invariant (the judge never lies): a translation of A returns a page A was mapped to by a publication whose V it saw:
 * page 1 with generation 1 or page 3 with generation 3, never B's page 2 (a torn entry: A's V with B's R).
 *
 * LEGACY: src/PageCore/Legacy/LegacyHashTranslate.cs: V, then R, no recheck. The translation reads A's V, the eviction
 * claims the slot and stores B's R, and the translation reads it: address A answered with B's page. Any model.
 */
#include "weak.h"

#define VALID (1UL << 63)
#define LOCKED (1UL << 62)
#define GEN_ONE (1UL << 32)
#define GEN_MASK (((1UL << 31) - 1) << 32)
#define TAG_A 0x11UL
#define TAG_B 0x22UL

static atomic_ulong v = VALID | TAG_A;
static atomic_ulong r = GEN_ONE | 1;
static unsigned long translated; /* the R the translation returned, 0 for a miss */

static void write_r(unsigned pfn)
{
	unsigned long gen = (VREAD(r) + GEN_ONE) & GEN_MASK;
	VWRITE(r, gen | pfn);
}

static void *translator(void *arg)
{
	if (VREAD(v) != (VALID | TAG_A))
		return NULL;
#ifdef LEGACY
	translated = VREAD(r); /* LoadR after LoadV: no recheck */
#else
	for (int attempt = 0; attempt < 3; attempt++) { /* TryReadEntry */
		unsigned long r1 = VREAD(r);
		unsigned long x = VREAD(v);
		unsigned long r2 = VREAD(r);
		if (x != (VALID | TAG_A))
			return NULL; /* SlotRead.Other: invalidated or reused since the match */
		if (r1 == r2) {
			translated = r2; /* SlotRead.Entry */
			return NULL;
		}
		/* SlotRead.Changed: read again */
	}
#endif
	return NULL;
}

static void *inserter(void *arg)
{
	/* Insert(B): both groups full, evict the primary group's victim, A's entry. */
	unsigned long old = VREAD(v);
	if ((old & VALID) && !(old & LOCKED) && IL_CAS(v, LOCKED | TAG_B, old) == old) {
		write_r(2); /* Publish */
		VWRITE(v, VALID | TAG_B);
	} else {
		return NULL;
	}
	/* Invalidate(B) */
	unsigned long x = VREAD(v);
	if (x == (VALID | TAG_B))
		IL_CAS(v, 0UL, x);
	/* Insert(A) into the free slot */
	if (VREAD(v) == 0 && IL_CAS(v, LOCKED | TAG_A, 0UL) == 0) {
		write_r(3);
		VWRITE(v, VALID | TAG_A);
	}
	return NULL;
}

int main(void)
{
	pthread_t t, i;
	SPAWN(t, translator);
	SPAWN(i, inserter);
	JOIN(t);
	JOIN(i);
	assert(translated == 0 || translated == (GEN_ONE | 1) || translated == ((3 * GEN_ONE) | 3));
	return 0;
}
