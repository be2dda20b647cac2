/* Refcount transitions: the allocation's publication, get_page_unless_zero, page_ref_add, freeze/unfreeze and put.
 *
 * Mirrors src/PageCore/Descriptors/PageRef.cs (SetAllocated, Add, TryGetFromOne + TryGetUnlessZeroFrom, Freeze,
 * Unfreeze, TryPutFromTwo, PutUnlessLast, TryPutLast) as src/PageCore/PageArena.Refs.cs and PageArena.Alloc.cs call
 * them: PrepNewPage (order and flags by plain stores, then SetAllocated), GetPages (Add), TryGetPageUnlessZero (the
 * get, then IsAllocatedAfterGet, an acquire load of the flags), FreezeRefs/UnfreezeRefs, PutPage and PutFrom.
 *
 * Threads: the owner allocates the page (order 3, flags AllocatedHead, count 1), takes one more reference with
 * page_ref_add, freezes the page at its two references, changes the page's contents while frozen, unfreezes with 2, and
 * drops its two references (the put that reaches 0 frees). A speculative getter runs get_page_unless_zero on the page
 * at any moment and, when it got a reference, reads what the allocation published, reads the contents twice, and puts.
 *
 * Invariant: a get that succeeds sees the allocation's stores (order 3); nobody writes the contents while a getter holds
 * a reference (a freeze succeeds only when the count is exactly the owner's, and nothing gets a frozen page); the count
 * never goes below 0 (no put is refused) and exactly one put frees the page.
 *
 * LEGACY: page_ref_add as set_page_count (src/PageCore/Legacy/LegacyPageCount.cs: read the count, store count + 1, a
 * release store). The getter's CAS 1 -> 2 lands between the owner's read (1) and its store (2), and the store wipes it
 * out: the count says 2 while three references exist. The owner's freeze at 2 then succeeds while the getter holds a
 * reference and rewrites the contents under it, and the third put finds 0 (a put at zero). Any model, SC included.
 */
#include "weak.h"

#define ALLOC 1 /* PageFlags.AllocatedHead */

static atomic_int count;    /* RefCount */
static atomic_uint flags;   /* Flags */
static atomic_int order;    /* Order */
static atomic_int contents; /* what the owner writes while frozen (Index, Mapping, the page's data) */
static int owner_frees, owner_refused, getter_frees, getter_refused; /* each written by one thread, read after the joins */

/* PageArena.PutFrom after a first guess that found `seen`: PutUnlessLast, then the last put's flag check and TryPutLast.
 * Returns 1 when this put freed the page, -1 when it was refused (a put at zero, or on a page that is not allocated). */
static int put_from(int seen)
{
	while (true) {
		enum ref_put r = put_unless_last(&count, seen);
		if (r == PUT_LIVE)
			return 0;
		if (r == PUT_UNDERFLOW)
			return -1; /* RefPut.Underflow: refused, nothing written */
		if ((VREAD(flags) & ALLOC) == 0)
			return -1; /* the last reference on a page that is not allocated */
		if (IL_CAS(count, 0, 1) == 1) { /* TryPutLast */
			PLAIN_ST(flags, 0); /* FreeBlock */
			return 1;
		}
		seen = VREAD(count);
	}
}

/* PageArena.PutPage: TryPutFromTwo, then PutFrom. */
static int put_page(void)
{
	int seen = IL_CAS(count, 1, 2);
	return seen == 2 ? 0 : put_from(seen);
}

static void *owner(void *arg)
{
	/* PrepNewPage: order, flags, then SetAllocated (release). */
	PLAIN_ST(order, 3);
	PLAIN_ST(flags, ALLOC);
	VWRITE(count, 1);

	/* GetPages(pfn, 1): page_ref_add. */
#ifdef LEGACY
	int seen = VREAD(count); /* LegacyPageCount.AddBySetPageCount */
	VWRITE(count, seen + 1);
#else
	int v = VREAD(count);
	while (v > 0) {
		int s = IL_CAS(count, v + 1, v);
		if (s == v)
			break;
		v = s;
	}
	assert(v > 0); /* the owner holds a reference: never Dead */
#endif

	/* FreezeRefs(pfn, 2) .. UnfreezeRefs(pfn, 2). */
	if (IL_CAS(count, 0, 2) == 2) {
		PLAIN_ST(contents, 2);
		assert(VREAD(count) == 0); /* UnfreezeRefs' check: the page is still frozen (nothing gets a 0 count) */
		VWRITE(count, 2);
	}

	for (int i = 0; i < 2; i++) {
		int r = put_page();
		owner_frees += r == 1;
		owner_refused += r < 0;
	}
	return NULL;
}

static void *getter(void *arg)
{
	/* TryGetPageUnlessZero: TryGetFromOne, then TryGetUnlessZeroFrom. */
	int v = IL_CAS(count, 2, 1);
	if (v != 1) {
		while (true) {
			if (v <= 0)
				return NULL; /* Dead: free or frozen */
			int s = IL_CAS(count, v + 1, v);
			if (s == v)
				break;
			v = s;
		}
	}
	if ((VREAD(flags) & ALLOC) == 0) { /* IsAllocatedAfterGet, else UndoSpeculativeGet */
		int r = put_from(VREAD(count));
		getter_frees += r == 1;
		getter_refused += r < 0;
		return NULL;
	}
	assert(PLAIN_LD(order) == 3); /* the allocation's stores are visible to a successful get */
	int c1 = PLAIN_LD(contents);
	int c2 = PLAIN_LD(contents);
	assert(c1 == c2); /* nobody rewrote the page while this reference was held */
	int r = put_page();
	getter_frees += r == 1;
	getter_refused += r < 0;
	return NULL;
}

int main(void)
{
	pthread_t o, g;
	SPAWN(o, owner);
	SPAWN(g, getter);
	JOIN(o);
	JOIN(g);
	assert(owner_refused + getter_refused == 0); /* no put at zero */
	assert(owner_frees + getter_frees == 1);     /* exactly one put freed the page */
	assert(atomic_load(&count) == 0);
	return 0;
}
