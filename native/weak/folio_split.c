/* Folio split: the new pieces' tail links cleared before anything is unfrozen, the old head last.
 *
 * Mirrors src/PageCore/PageArena.Folios.cs SplitFolio (Freeze of the head at the caller's references; each new piece
 * prepared with plain stores of Order, Flags and Index and a release store clearing its CompoundInfo; then Unfreeze of
 * every piece, the old head last: release stores) against src/PageCore/PageArena.Refs.cs TryGetFolioSpeculative
 * (HeadPfnOf: an acquire load of the page's CompoundInfo; TryGetFromOne / TryGetUnlessZeroFrom on that head; HeadPfnOf
 * again, the identity recheck, then a plain load of the head's flags; PutFrom when it is not the folio wanted).
 *
 * Threads: the owner splits the order-1 folio {0, 1} (head 0, count 1: the owner's reference) into two order-0 pages;
 * a PFN walker (GUP-fast, a page-cache lookup) takes a speculative reference on the folio containing page 1.
 *
 * Invariant: a walker's reference on "the folio containing page 1" is on page 1's current head: if it holds head 0 for
 * page 1, the split did not happen (its freeze failed); if it holds page 1 itself, it sees page 1 prepared as a piece
 * (Index 1, published by the piece's unfreeze).
 *
 * LEGACY: the pieces unfrozen before their tail links are cleared. The walker reads page 1's link (head 0), gets the
 * old head after its unfreeze, rechecks the link (still head 0: not cleared yet), and takes page 1 for part of folio 0,
 * while the split is done and page 1 is a folio of its own. Any model, SC included.
 */
#include "weak.h"

#define ALLOC 1u    /* PageFlags.AllocatedHead */
#define COMPOUND 2u /* PageFlags.CompoundHead */

static atomic_int count[2] = { 1, 0 };
static atomic_uint flags[2] = { ALLOC | COMPOUND, 0 };
static atomic_int order[2] = { 1, 0 };
static atomic_long index_[2] = { 0, 0 };
static atomic_ulong compound[2] = { 0, (0UL << 1) | 1 }; /* page 1 is a tail of head 0 */
static int split_done, walker_head = -1;

static void *splitter(void *arg)
{
	if (IL_CAS(count[0], 0, 1) != 1) /* Freeze(head, expectedRefs = 1) */
		return NULL;             /* SplitResult.Busy */
	PLAIN_ST(order[1], 0);
	PLAIN_ST(flags[1], ALLOC);
	PLAIN_ST(index_[1], PLAIN_LD(index_[0]) + 1);
#ifndef LEGACY
	VWRITE(compound[1], 0UL);
#endif
	PLAIN_ST(order[0], 0);
	PLAIN_ST(flags[0], ALLOC);
	VWRITE(count[1], 1); /* Unfreeze the new piece */
	VWRITE(count[0], 1); /* Unfreeze the old head, last */
#ifdef LEGACY
	VWRITE(compound[1], 0UL); /* the tail link cleared after the pieces became gettable */
#endif
	split_done = 1;
	return NULL;
}

static int head_of(int p)
{
	unsigned long info = VREAD(compound[p]);
	return (info & 1) ? (int)(info >> 1) : p;
}

/* PutFrom for a reference this walker holds on a head the owner also holds: never the last. */
static void put(int h)
{
	int v = VREAD(count[h]);
	while (true) {
		assert(v > 1); /* the owner's reference is still there */
		int s = IL_CAS(count[h], v - 1, v);
		if (s == v)
			return;
		v = s;
	}
}

static void *walker(void *arg)
{
	for (int attempt = 0; attempt < 3; attempt++) {
		int h = head_of(1);
		int v = IL_CAS(count[h], 2, 1);
		bool taken = v == 1;
		while (!taken && v > 0) {
			int s = IL_CAS(count[h], v + 1, v);
			taken = s == v;
			v = s;
		}
		if (!taken) {
			if (head_of(1) != h)
				continue; /* a split finished: try again */
			return NULL;
		}
		bool same = head_of(1) == h;
		if (same && (PLAIN_LD(flags[h]) & ALLOC)) {
			walker_head = h;
			if (h == 1)
				assert(PLAIN_LD(index_[1]) == 1); /* the piece's setup is visible */
			return NULL;                        /* keeps its reference */
		}
		put(h);
		if (same)
			break;
	}
	return NULL;
}

int main(void)
{
	pthread_t s, w;
	SPAWN(s, splitter);
	SPAWN(w, walker);
	JOIN(s);
	JOIN(w);
	assert(!(walker_head == 0 && split_done)); /* page 1 taken for a part of folio 0 after the split */
	return 0;
}
