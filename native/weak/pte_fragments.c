/* Page-table fragments: the claim, the count, and the destructor exactly once.
 *
 * Mirrors src/PageCore/PageTables/AddressSpace.cs AllocFragment (ClaimIndex: Interlocked.Add on the cache word;
 * RetireExhausted: CAS of an exhausted word to 0), AllocFragmentPage (the page allocated, the ctor's plain stores of
 * the flags and PtFragCount, the CAS that publishes the word, and the release store of PtFragCount = 1 when another
 * page won), FreeFragment / DropFragment (a CAS loop that never goes below 0), Destroy / DestroyNow (Interlocked.And of
 * the flags, which must still say PageTable, then the page's free: a put of the allocation's reference) and
 * DestroyFragmentCache (at teardown, Interlocked.Exchange of the word, then Interlocked.Add of the unused fragments).
 * The page's allocation and free are PageArena's (PrepNewPage's release store of the count, PutTestZero).
 *
 * Threads: two threads each take a fragment (2 fragments per page), write their id into it, check it, and free it; a
 * speculative getter runs get_page_unless_zero (and then put) on the first thread's page-table page, as a PFN walker
 * may on any page; main tears the cache down after the joins. Each thread that allocates a page uses its own page.
 *
 * Invariant: each fragment has one holder at a time (F2: nobody else writes into it while it is held, and its page is
 * not freed under it); every page-table page that was allocated is destroyed exactly once and its page freed exactly
 * once (F3), after the last fragment was freed; no put is refused (the getter's references never mix with the
 * fragments': F5).
 *
 * LEGACY: src/PageCore/Legacy/LegacyPteFragments.cs, the powerpc allocator before 4231aba000f5 (seed 000): fragments
 * counted in the refcount; a new page is published by CAS with count 1 and then set_page_count(page, 2) (a release
 * store). The other thread claims fragment 1 from the published word and frees it (put_page_testzero 1 -> 0) before
 * that store: the page is freed while fragment 0 is live, then the store revives it; or the getter's 1 -> 2 is wiped
 * out by the store and its put takes a fragment's count. Any model, SC included.
 */
#include "weak.h"

#define FRAGS 2
#define ALLOC 1u      /* PageFlags.AllocatedHead */
#define PAGETABLE 4u  /* PageFlags.PageTable */
#define DEFERRED 32u  /* PageFlags.DeferredFree */
#define POISON 99

struct desc {
	atomic_int count;      /* RefCount */
	atomic_uint flags;     /* Flags */
	atomic_int frag_count; /* PtFragCount */
	atomic_int holder[FRAGS]; /* the fragments' contents: their holder's id, POISON once the page is freed */
	atomic_int dtor;       /* ghost: destructor runs (relaxed RMW, adds no order) */
	atomic_int frees;      /* ghost: frees of the page */
	int allocated;         /* written by the page's allocator thread, read after the joins */
};

static struct desc page[3];    /* page 1: thread 1's, page 2: thread 2's (page 0 unused) */
static atomic_long cache;      /* (page + 1) << 32 | next index */
static int refused;

/* PutTestZero(guess 1) for the page's allocation reference, and the getter's put: the put that reaches 0 frees. */
static void put_page(int p)
{
	int v = IL_CAS(page[p].count, 0, 1);
	if (v != 1) {
		while (true) {
			enum ref_put r = put_unless_last(&page[p].count, v);
			if (r == PUT_LIVE)
				return;
			if (r == PUT_UNDERFLOW) {
				refused = 1; /* a put at zero */
				return;
			}
			if (IL_CAS(page[p].count, 0, 1) == 1)
				break;
			v = VREAD(page[p].count);
		}
	}
	atomic_fetch_add_explicit(&page[p].frees, 1, memory_order_relaxed);
	for (int i = 0; i < FRAGS; i++)
		PLAIN_ST(page[p].holder[i], POISON); /* the page's next life */
}

/* PageArena.AllocPages(0) on this thread's page: PrepNewPage. */
static void alloc_page(int p)
{
	PLAIN_ST(page[p].flags, ALLOC);
	VWRITE(page[p].count, 1);
	page[p].allocated = 1;
}

#ifndef LEGACY
static void destroy_now(int p)
{
	unsigned old = IL_AND(page[p].flags, ~PAGETABLE);
	assert(old & PAGETABLE); /* "the page-table destructor ran twice" */
	atomic_fetch_add_explicit(&page[p].dtor, 1, memory_order_relaxed);
	put_page(p); /* _arena.FreePages(page, 0) */
}

/* Destroy: no fragment is freed through FreeFragmentDeferred here (the grace period is epoch_reclaim.c's). */
static void destroy(int p)
{
	assert((VREAD(page[p].flags) & DEFERRED) == 0);
	destroy_now(p);
}

static void retire_exhausted(long seen)
{
	long w = VREAD(cache);
	while ((w >> 32) == (seen >> 32) && ((w >> 32) == 0 || (int)(w & 0xffffffff) >= FRAGS)) {
		long now = IL_CAS(cache, 0L, w);
		if (now == w)
			return;
		w = now;
	}
}

static void alloc_fragment(int me, int *p, int *idx)
{
	while (true) {
		long claimed = IL_ADD(cache, 1L) - 1;
		int index = (int)(claimed & 0xffffffff);
		if ((claimed >> 32) == 0) { /* AllocFragmentPage(claimed + 1) */
			alloc_page(me);
			PLAIN_ST(page[me].flags, PLAIN_LD(page[me].flags) | PAGETABLE);
			PLAIN_ST(page[me].frag_count, FRAGS);
			long word = ((long)(me + 1) << 32) | 1;
			if (IL_CAS(cache, word, claimed + 1) != claimed + 1)
				VWRITE(page[me].frag_count, 1);
			*p = me;
			*idx = 0;
			return;
		}
		if (index < FRAGS) {
			if (index == FRAGS - 1)
				retire_exhausted(claimed + 1);
			*p = (int)(claimed >> 32) - 1;
			*idx = index;
			return;
		}
		retire_exhausted(claimed + 1);
	}
}

static void free_fragment(int p)
{
	int v = VREAD(page[p].frag_count); /* DropFragment */
	while (true) {
		assert(v > 0); /* "a double free": never written below 0 */
		int s = IL_CAS(page[p].frag_count, v - 1, v);
		if (s == v)
			break;
		v = s;
	}
	if (v - 1 == 0)
		destroy(p);
}

static void teardown(void)
{
	long w = IL_XCHG(cache, 0L);
	if ((w >> 32) != 0) {
		int p = (int)(w >> 32) - 1;
		int next = (int)(w & 0xffffffff) < FRAGS ? (int)(w & 0xffffffff) : FRAGS;
		if (IL_ADD(page[p].frag_count, -(FRAGS - next)) == 0)
			destroy(p);
	}
}
#else
static void alloc_fragment(int me, int *p, int *idx)
{
	while (true) {
		long w = VREAD(cache);
		if (w == 0) {
			alloc_page(me);
			long word = ((long)(me + 1) << 32) | 1;
			if (IL_CAS(cache, word, 0L) == 0)
				VWRITE(page[me].count, FRAGS); /* set_page_count(page, PTE_FRAG_NR) */
			*p = me;
			*idx = 0;
			return;
		}
		int next = (int)(w & 0xffff) + 1;
		if (IL_CAS(cache, next == FRAGS ? 0L : w + 1, w) == w) {
			*p = (int)(w >> 32) - 1;
			*idx = (int)(w & 0xffff);
			return;
		}
	}
}

static void free_fragment(int p)
{
	put_page(p); /* put_page_testzero frees the page */
}

static void teardown(void)
{
	long w = IL_XCHG(cache, 0L);
	if (w != 0)
		for (int i = (int)(w & 0xffff); i < FRAGS; i++)
			put_page((int)(w >> 32) - 1);
}
#endif

static void *user(void *arg)
{
	int me = (int)(long)arg, p, idx;
	alloc_fragment(me, &p, &idx);
	PLAIN_ST(page[p].holder[idx], me);
	assert(PLAIN_LD(page[p].holder[idx]) == me); /* nobody else holds it, and its page was not freed */
	free_fragment(p);
	return NULL;
}

/* get_page_unless_zero on page 1 (TryGetFromOne, TryGetUnlessZeroFrom, IsAllocatedAfterGet), then put. */
static void *getter(void *arg)
{
	int v = IL_CAS(page[1].count, 2, 1);
	if (v != 1) {
		while (true) {
			if (v <= 0)
				return NULL;
			int s = IL_CAS(page[1].count, v + 1, v);
			if (s == v)
				break;
			v = s;
		}
	}
	(void)VREAD(page[1].flags); /* taken or not, the reference is given back */
	put_page(1);
	return NULL;
}

int main(void)
{
	pthread_t a, b, g;
	pthread_create(&a, NULL, user, (void *)1L);
	pthread_create(&b, NULL, user, (void *)2L);
	SPAWN(g, getter);
	JOIN(a);
	JOIN(b);
	JOIN(g);
	teardown();
	assert(!refused);
	for (int p = 1; p <= 2; p++) {
		assert(atomic_load(&page[p].frees) == page[p].allocated); /* freed exactly once, if allocated */
#ifndef LEGACY
		assert(atomic_load(&page[p].dtor) == page[p].allocated); /* F3: the destructor exactly once */
#endif
		assert(atomic_load(&page[p].count) == 0);
	}
	return 0;
}
